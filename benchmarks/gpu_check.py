"""The steps of `gpu_check.sh` on a CUDA machine, each in its own process with a time limit.

    python benchmarks/gpu_check.py [--python PY] [--budget 470]

Uses only the standard library, so it reports even when the environment it checks is
broken: every step runs `--python` (the interpreter with vae_zoo and TensorFlow) as a
subprocess. Steps, in order:

1. `detect`: TensorFlow's GPUs (with `nvidia-smi`'s names when it is there). Without a
   GPU the other steps are skipped and the exit status is 0: the JSON says so.
2. `tests`: the device-dependent tests: `tests/test_distribute.py` (strategies),
   `tests/test_fast_path.py` (XLA and steps per execution, mixed precision) and the
   mixed-precision head test.
3. `train_default`: `train_throughput.py --rounds 1`: numpy, tf.data, `vae-zoo train`
   and the plain path on one GPU, each beside the keras.io-style baseline.
4. `train_mixed_float16`: the in-process paths under the `mixed_float16` policy.
5. `train_mirrored`: the in-process paths under `MirroredStrategy` (one GPU).
6. `eval`: `eval_throughput.py --epochs 1` (IW log-likelihood, K = 1000, 1,000 digits).

Each step gets its own limit, and none runs past the whole budget (`--budget` seconds
from the start of the shell script, less the install): a step that would is skipped.
One JSON line goes to stdout: the machine, the GPUs, each step's status (`ok`,
`failed`, `timeout`, `skipped`), seconds and figures. Exit status 1 when the install or
a step failed or timed out, else 0 (also without a GPU, when TensorFlow runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = "benchmarks/train_throughput.py"
DETECT = (
    "import json, tensorflow as tf\n"
    "gpus = tf.config.list_physical_devices('GPU')\n"
    "details = [tf.config.experimental.get_device_details(g) for g in gpus]\n"
    "print(json.dumps({'tensorflow': tf.__version__,\n"
    "                  'built_with_cuda': tf.test.is_built_with_cuda(),\n"
    "                  'gpus': [d.get('device_name', g.name) for g, d in zip(gpus, details)],\n"
    "                  'compute_capability': [list(d.get('compute_capability', ()))\n"
    "                                         for d in details]}))\n"
)
# (name, seconds at most, arguments after the interpreter)
STEPS = (
    ("tests", 150, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_distribute.py",
                    "tests/test_fast_path.py",
                    "tests/test_heads.py::test_learned_scale_mixed_precision_computes_in_float32"]),
    ("train_default", 120, [TRAIN, "--rounds", "1"]),
    ("train_mixed_float16", 45, [TRAIN, "--rounds", "1", "--paths", "numpy", "tf.data", "plain",
                                 "--policy", "mixed_float16"]),
    ("train_mirrored", 45, [TRAIN, "--rounds", "1", "--paths", "numpy", "tf.data",
                            "--strategy", "mirrored"]),
    ("eval", 60, ["benchmarks/eval_throughput.py", "--epochs", "1"]),
)
DETECT_SECONDS = 60


def run(command, limit):
    """`(status, seconds, stdout, stderr)` of a command in its own process group, killed
    with its children when it runs past `limit` seconds."""
    start = time.perf_counter()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    try:
        out, err = process.communicate(timeout=max(1.0, limit))
        status = "ok" if process.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        status = "timeout"
    return status, round(time.perf_counter() - start, 1), out, err


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def figures(name, out):
    """The figures worth keeping from a step's output."""
    if name == "tests":
        lines = [line for line in out.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
        return {"summary": lines[-1].strip("= ") if lines else None}
    report = last_json(out)
    if report is None:
        return {}
    if name == "eval":
        return {"flop_limit_seconds": report.get("flop_limit_seconds"),
                "results": [{k: r.get(k) for k in ("config", "seconds", "images_per_s",
                                                  "times_flop_limit", "mean_log_likelihood")}
                            for r in report.get("results", [])]}
    keep = ("path", "impl", "examples_per_s", "speedup", "whole_run_s", "whole_run_speedup",
            "max_epoch_over_median", "fraction_of_matmul_peak", "jit_compile", "test_elbo")
    return {"gpus": report.get("gpus"), "matmul_peak_gflops": report.get("matmul_peak_gflops"),
            "stall_ok": report.get("stall_ok"),
            "results": [{k: r.get(k) for k in keep if k in r} for r in report.get("results", [])]}


def tail(text, chars=600):
    text = text.strip()
    return text[-chars:] if text else None


def machine():
    """The host: platform, CPU model and vector ISA (`machine.cpu`, no TensorFlow import),
    CPUs, Python."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import cpu

    return {"platform": platform.platform(), **cpu(), "cpu_count": os.cpu_count(),
            "python": platform.python_version()}


def nvidia_smi():
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] or None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter with vae_zoo and TensorFlow installed")
    parser.add_argument("--budget", type=float, default=470,
                        help="seconds for everything, the install included")
    parser.add_argument("--install", default="skipped", help="the install's status (from the shell)")
    parser.add_argument("--install-seconds", type=float, default=0)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget - args.install_seconds
    started = time.perf_counter()

    report = {"benchmark": "gpu_check", "machine": machine(), "nvidia_smi": nvidia_smi(),
              "install": {"status": args.install, "seconds": args.install_seconds},
              "python": args.python}
    steps = []
    if args.install == "failed":
        status, seconds, out, err = "skipped", 0.0, "", "the install failed"
    else:
        status, seconds, out, err = run([args.python, "-c", DETECT],
                                        min(DETECT_SECONDS, deadline - time.monotonic()))
    found = last_json(out) if status == "ok" else None
    gpus = (found or {}).get("gpus", [])
    report.update({"gpu_found": bool(gpus), "gpus": gpus,
                   "tensorflow": (found or {}).get("tensorflow"),
                   "tensorflow_built_with_cuda": (found or {}).get("built_with_cuda")})
    steps.append({"name": "detect", "status": status, "seconds": seconds,
                  "figures": found or {}, "error": None if status == "ok" else tail(err)})
    for name, limit, arguments in STEPS:
        left = deadline - time.monotonic()
        if not gpus:
            steps.append({"name": name, "status": "skipped", "reason": "no GPU found"})
        elif left < min(limit, 30):
            steps.append({"name": name, "status": "skipped", "reason": "time budget spent"})
        else:
            print(f"gpu_check: {name} (at most {min(limit, left):.0f} s)", file=sys.stderr, flush=True)
            status, seconds, out, err = run([args.python, *arguments], min(limit, left))
            steps.append({"name": name, "status": status, "seconds": seconds,
                          "figures": figures(name, out),
                          "error": None if status == "ok" else tail(err or out)})
    report["steps"] = steps
    report["seconds"] = round(time.perf_counter() - started + args.install_seconds, 1)
    failed = [s["name"] for s in steps if s["status"] in ("failed", "timeout")]
    report["ok"] = bool(gpus) and not failed
    report["note"] = ("no GPU found: GPU steps skipped" if not gpus and steps[0]["status"] == "ok"
                      else f"failed: {', '.join(failed)}" if failed else "all steps ran")
    print(json.dumps(report), flush=True)
    return 1 if failed or args.install == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
