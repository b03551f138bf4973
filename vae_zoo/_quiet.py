"""Import TensorFlow with its start-up C++ log lines held back.

TF 2.21 writes several log lines to stderr at import (oneDNN, CUDA stubs, CPU
features) and at device initialization that no environment variable silences
(tensorflow/tensorflow#100442); they would bury vae_zoo's one-line errors. They are
replayed if the import fails, and always shown with VAE_ZOO_DEBUG=1 or when
TensorFlow was imported before vae_zoo.
"""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow(init_devices=False):
    """Import TensorFlow (and optionally initialize devices) without its log noise."""
    if os.environ.get("VAE_ZOO_DEBUG") or ("tensorflow" in sys.modules and not init_devices):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
