#!/usr/bin/env bash
# vae_zoo on a CUDA machine in one command: install, GPU detection, the device-dependent
# tests and the training and evaluation benchmarks on one GPU, in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh [--venv DIR]
#
# Installs the checkout with its `gpu` and `dev` extras (TensorFlow with CUDA, pytest)
# into a fresh virtual environment (DIR, else $VENV, else .venv-gpu), then runs the
# steps of benchmarks/gpu_check.py, each with a time limit. One JSON line goes to
# stdout (machine, GPUs, each step's status and figures); progress goes to stderr.
#
#   PYTHON=path/to/python   use this interpreter (vae_zoo and TensorFlow installed):
#                           no virtual environment, no install
#   BOOT_PYTHON=python3     the interpreter that creates the virtual environment
#   INSTALL_TIMEOUT=240     seconds for the install; BUDGET=470 seconds for everything
#
# Without a GPU it says so ("gpu_found": false), skips the GPU steps and exits 0.
set -u
cd "$(dirname "$0")/.." || exit 1

venv="${VENV:-.venv-gpu}"
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="${2:?--venv needs a folder}"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

boot="${BOOT_PYTHON:-python3}"
install=skipped
install_seconds=0
driver="${PYTHON:-}"
if [ -z "${PYTHON:-}" ]; then
  start=$(date +%s)
  echo "gpu_check: installing .[gpu,dev] into $venv" >&2
  if timeout "${INSTALL_TIMEOUT:-240}" bash -c \
      '"$1" -m venv "$2" && "$2/bin/python" -m pip install -q --upgrade pip &&
       "$2/bin/python" -m pip install -q -e ".[gpu,dev]"' _ "$boot" "$venv" >&2; then
    install=ok
    driver="$venv/bin/python"
  else
    install=failed
    driver="$boot"  # the driver needs only the standard library
  fi
  install_seconds=$(( $(date +%s) - start ))
  PYTHON="$venv/bin/python"
fi

exec "$driver" benchmarks/gpu_check.py --python "$PYTHON" --budget "${BUDGET:-470}" \
  --install "$install" --install-seconds "$install_seconds"
