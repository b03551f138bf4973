"""Train the keras.io-style VAE on an .npz file, as a command: the baseline of `vae-zoo train`.

    python benchmarks/baselines/keras_io_train.py DATA.npz [--epochs 12] [--arch dense]
        [--batch-size 128] [--strategy none|mirrored]

Reads `x_train` (uint8 images `[N, 28, 28]`, scaled to [0, 1]; flat `[N, 784]` for the
dense architecture, `[N, 28, 28, 1]` for conv), builds `keras_io_vae.build(arch)` and
calls `fit(x, epochs=..., batch_size=..., verbose=0)` the way the keras.io example trains
(it shows a progress bar; `vae-zoo train` is timed with `--quiet` alike). Prints one JSON
line: the seconds from the script's start (before TensorFlow is imported) to `fit`, and
to the end of each epoch, so the caller can take epoch times from the differences.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help=".npz file with x_train")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--arch", choices=("dense", "conv"), default="dense")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--strategy", choices=("none", "mirrored"), default="none")
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    import keras_io_vae

    with np.load(args.data) as npz:
        x = npz["x_train"].astype("float32") / 255.0
    x = x.reshape(len(x), -1) if args.arch == "dense" else x.reshape(len(x), 28, 28, 1)
    keras.utils.set_random_seed(0)
    if args.strategy == "mirrored":
        with tf.distribute.MirroredStrategy().scope():
            model = keras_io_vae.build(args.arch, input_shape=x.shape[1:])
    else:
        model = keras_io_vae.build(args.arch, input_shape=x.shape[1:])

    ends = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: ends.append(time.perf_counter() - STARTED))
    fit_start = time.perf_counter() - STARTED
    model.fit(x, epochs=args.epochs, batch_size=args.batch_size, verbose=0, callbacks=[record])
    print(json.dumps({"fit_start_s": round(fit_start, 4),
                      "epoch_end_s": [round(t, 4) for t in ends],
                      "jit_compile": bool(model.jit_compile),
                      "examples": int(len(x))}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
