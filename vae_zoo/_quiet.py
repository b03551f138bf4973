"""Import TensorFlow with its C++ log lines held back.

TF 2.21 writes several log lines to stderr at import (oneDNN, CUDA stubs, CPU
features) that no environment variable silences (tensorflow/tensorflow#100442); they
would bury vae_zoo's one-line errors. They are replayed if the import fails. Later
lines (device initialization, "oneDNN supports DT_INT64 only on platforms with
AVX-512" while training, all of them ERROR lines that change nothing) do obey
`TF_CPP_MIN_LOG_LEVEL`, which `quiet_logs` sets to 3 unless it is set already. All of
them are shown with VAE_ZOO_DEBUG=1, and the import's when TensorFlow was imported
before vae_zoo (import vae_zoo first, as the notebooks do).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

COMMAND = "vae-zoo"
_COMMAND_MODULES = ("vae_zoo", "vae_zoo.__main__", "vae_zoo.drivers.cli")


def quiet_logs():
    """Keep TensorFlow's C++ log lines below FATAL out of stderr (before it is imported;
    not with VAE_ZOO_DEBUG=1, nor when TF_CPP_MIN_LOG_LEVEL is set already)."""
    if not os.environ.get("VAE_ZOO_DEBUG"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _module_run_by_m(argv):
    """The module of `python ... -m MODULE ...` in the interpreter's own arguments, or None."""
    words = iter(argv[1:])
    for word in words:
        if word in ("-X", "-W", "--check-hash-based-pycs"):
            next(words, None)  # the option's value
        elif word.startswith("-m"):
            return word[2:] or next(words, None)
        elif not word.startswith("-") or word in ("-", "-c") or word.startswith("-c"):
            return None  # a script, a command or stdin: not a module
    return None


def started_as_command() -> bool:
    """Whether this interpreter runs the `vae-zoo` command: its console script, or
    `python -m vae_zoo` (`python -m vae_zoo.drivers.cli`)."""
    if Path(sys.argv[0]).stem in (COMMAND, f"{COMMAND}-script"):
        return True
    return _module_run_by_m(getattr(sys, "orig_argv", [])) in _COMMAND_MODULES


def import_tensorflow(init_devices=False):
    """Import TensorFlow (and optionally initialize devices) without its log noise."""
    if os.environ.get("VAE_ZOO_DEBUG") or ("tensorflow" in sys.modules and not init_devices):
        return
    quiet_logs()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded interpreters)
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            if init_devices:
                tf.config.list_logical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            sys.stderr.flush()
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
