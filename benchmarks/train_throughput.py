"""Steady-state training throughput of the dense benchmark VAE (examples per second).

What it measures
----------------
Wall-clock training speed of `model.fit` for the dense benchmark architecture

    DenseVAE(input_shape=(28, 28, 1), latent_dim=32, hidden_units=(512, 256),
             likelihood="bernoulli")       # 784-512-256 encoder, mirrored decoder

compiled with `keras.optimizers.Adam(1e-3)`, batch size 128, on the embedded MNIST
sample (`vae_zoo.data.load_embedded_mnist()`, train split, 5000 images), for each
requested combination of

- `jit_compile` (the `model.compile` argument): False (plain `tf.function` graph), True
  (XLA) and/or "auto" (Keras decides; on a CPU-only machine it resolves to False);
- input feed:
  - "dataset": `vae_zoo.data.make_dataset(x, binarize="dynamic", batch_size=128,
    drop_remainder=True, seed=0)`, i.e. the package's tf.data pipeline (cache,
    reshuffle each epoch, fresh Bernoulli binarization of every batch, prefetch);
  - "numpy": in-memory float32 numpy arrays, binarized once up front, passed as
    `model.fit(x, batch_size=128)`. The array is cut to 4992 images (39 full batches,
    like `drop_remainder=True`), so both feeds train on the same number of examples
    per epoch and no odd-sized last batch triggers a retrace / XLA recompilation.

Every configuration gets a fresh model (after `keras.utils.set_random_seed(0)`) and is
trained by one `model.fit(..., epochs=warmup + epochs, verbose=0)` call in this one
process. A Keras callback records each epoch's wall time with `time.perf_counter()` in
`on_epoch_begin` / `on_epoch_end`. The first `--warmup` epochs (tracing, graph building,
XLA compilation, filling the tf.data cache) are discarded; the remaining `--epochs`
epochs are the timed ones.

How to run
----------
    cd /work/main && PYTHONPATH=/work/main python benchmarks/train_throughput.py
    # options: --epochs 5 --warmup 1 --jit {auto,on,off,both} --feed {dataset,numpy,both}

`--jit both` (default) runs jit_compile=False then jit_compile=True; `--feed both` runs
every jit setting with each feed.

What the figures mean
---------------------
A human-readable table goes to stderr; exactly one JSON line goes to stdout at the end:

    {"benchmark": "train_throughput", "model": "dense_784-512-256_z32_bernoulli",
     "batch_size": 128, "results": [{"jit_compile": false, "feed": "dataset",
     "examples_per_s": ..., "epoch_seconds": [...], ...}, ...],
     "tensorflow": "...", "keras": "...", "cpu_count": ...}

- `examples_per_s`: median over the timed epochs of (examples per epoch / epoch wall
  time). It includes everything `fit` does in an epoch (input pipeline, forward and
  backward pass, Adam update, metric updates, callbacks) -- the training speed a user
  sees, not a pure-kernel FLOP rate. Higher is better.
- `epoch_seconds`: wall time of each timed epoch (warm-up epochs excluded; they are in
  `warmup_seconds`, the first one including tracing / compilation time).
- `jit_compile`: the value Keras actually used (`model.jit_compile` after `compile`;
  Keras may silently downgrade a requested True, or resolve "auto");
  `jit_compile_requested` is what was asked for.
- If training fails for a configuration (e.g. XLA cannot compile the train step), that
  result has `"examples_per_s": null` and an `"error"` string (exception type and the
  first lines of its message) instead of crashing the run.

Figures are machine-specific (CPU count, thread pools, other load): compare
configurations within one run rather than across machines.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before tensorflow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from vae_zoo import data  # noqa: E402
from vae_zoo.models import DenseVAE  # noqa: E402

BATCH_SIZE = 128
LEARNING_RATE = 1e-3
MODEL_KWARGS = dict(
    input_shape=(28, 28, 1), latent_dim=32, hidden_units=(512, 256), likelihood="bernoulli"
)
MODEL_NAME = "dense_784-512-256_z32_bernoulli"
SEED = 0
ERROR_LINES = 5  # lines of an exception message kept in the JSON


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time (`time.perf_counter`) of every epoch of `fit`."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Steady-state training throughput of the dense benchmark VAE."
    )
    parser.add_argument(
        "--epochs", type=int, default=5, help="timed epochs (default 5)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1,
        help="untimed warm-up epochs, including tracing/compilation (default 1)",
    )
    parser.add_argument(
        "--jit", choices=("auto", "on", "off", "both"), default="both",
        help="jit_compile setting(s): both = off then on (default both)",
    )
    parser.add_argument(
        "--feed", choices=("dataset", "numpy", "both"), default="dataset",
        help="input feed(s): tf.data pipeline and/or in-memory numpy (default dataset)",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def jit_settings(choice):
    return {"off": [False], "on": [True], "auto": ["auto"], "both": [False, True]}[choice]


def feed_settings(choice):
    return ["dataset", "numpy"] if choice == "both" else [choice]


def make_inputs(feed, x_uint8):
    """`(fit_x, fit_kwargs, examples_per_epoch)` for one feed."""
    steps = len(x_uint8) // BATCH_SIZE
    if feed == "dataset":
        ds = data.make_dataset(
            x_uint8,
            binarize="dynamic",
            batch_size=BATCH_SIZE,
            drop_remainder=True,
            seed=SEED,
        )
        return ds, {}, steps * BATCH_SIZE
    # In-memory numpy: one fixed Bernoulli draw, float32 [N, 28, 28, 1] in {0, 1},
    # cut to whole batches.
    rng = np.random.default_rng(SEED)
    x = x_uint8[: steps * BATCH_SIZE, ..., np.newaxis].astype(np.float32) / 255.0
    x = (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)
    return x, {"batch_size": BATCH_SIZE, "shuffle": True}, len(x)


def format_error(err):
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    head = "\n".join(lines[:ERROR_LINES])
    return f"{type(err).__name__}: {head}" if head else type(err).__name__


def run_one(jit, feed, x_uint8, warmup, epochs):
    keras.utils.set_random_seed(SEED)
    result = {
        "jit_compile_requested": jit,
        "jit_compile": None,
        "feed": feed,
        "examples_per_s": None,
        "epoch_seconds": [],
    }
    timer = EpochTimer()
    try:
        fit_x, fit_kwargs, examples = make_inputs(feed, x_uint8)
        result["examples_per_epoch"] = examples
        result["steps_per_epoch"] = examples // BATCH_SIZE
        model = DenseVAE(**MODEL_KWARGS)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.compile(
                optimizer=keras.optimizers.Adam(LEARNING_RATE), jit_compile=jit
            )
        result["jit_compile"] = bool(model.jit_compile)
        notes = [str(w.message) for w in caught if "jit" in str(w.message).lower()]
        if notes:
            result["compile_warnings"] = notes
        model.fit(
            fit_x, epochs=warmup + epochs, verbose=0, callbacks=[timer], **fit_kwargs
        )
    except Exception as err:  # noqa: BLE001 - recorded in the JSON, run continues
        result["error"] = format_error(err)
        result["epochs_completed"] = len(timer.seconds)
        log(f"\n[jit_compile={jit!r} feed={feed}] FAILED after "
            f"{len(timer.seconds)} epoch(s):")
        log("".join(traceback.format_exception_only(type(err), err)).strip()[:4000])
        return result
    result["warmup_seconds"] = [round(s, 4) for s in timer.seconds[:warmup]]
    timed = timer.seconds[warmup:]
    result["epoch_seconds"] = [round(s, 4) for s in timed]
    rates = [examples / s for s in timed]
    result["examples_per_s"] = round(statistics.median(rates), 1)
    result["examples_per_s_min"] = round(min(rates), 1)
    result["examples_per_s_max"] = round(max(rates), 1)
    return result


def print_table(results):
    header = (
        f"{'jit_compile':>12} {'feed':>8} {'ex/s (median)':>14} {'min':>9} {'max':>9}"
        f" {'warm-up s':>10}  timed epoch seconds"
    )
    log("\n" + header)
    log("-" * len(header))
    for r in results:
        jit = r["jit_compile_requested"]
        jit_label = str(jit) if r["jit_compile"] in (None, jit) else f"{jit}->{r['jit_compile']}"
        if r["examples_per_s"] is None:
            log(f"{jit_label:>12} {r['feed']:>8} {'FAILED':>14}  {r['error'].splitlines()[0]}")
            continue
        warm = sum(r["warmup_seconds"])
        secs = " ".join(f"{s:.3f}" for s in r["epoch_seconds"])
        log(
            f"{jit_label:>12} {r['feed']:>8} {r['examples_per_s']:>14,.0f}"
            f" {r['examples_per_s_min']:>9,.0f} {r['examples_per_s_max']:>9,.0f}"
            f" {warm:>10.2f}  {secs}"
        )
    log("")


def main(argv=None):
    args = parse_args(argv)
    # Keras warns that fit's default shuffle=True is ignored for a tf.data.Dataset
    # (the pipeline shuffles itself); it is noise here.
    warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")
    x_uint8 = data.load_embedded_mnist()["x_train"]  # uint8 [5000, 28, 28]
    log(
        f"train_throughput: {MODEL_NAME}, batch {BATCH_SIZE}, Adam({LEARNING_RATE:g}), "
        f"{len(x_uint8)} MNIST train images, warm-up {args.warmup} + timed "
        f"{args.epochs} epochs; TF {tf.__version__}, Keras {keras.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    results = []
    for feed in feed_settings(args.feed):
        for jit in jit_settings(args.jit):
            log(f"  running jit_compile={jit!r} feed={feed} ...")
            results.append(run_one(jit, feed, x_uint8, args.warmup, args.epochs))
    print_table(results)
    summary = {
        "benchmark": "train_throughput",
        "model": MODEL_NAME,
        "batch_size": BATCH_SIZE,
        "optimizer": f"Adam({LEARNING_RATE:g})",
        "train_images": int(len(x_uint8)),
        "warmup_epochs": args.warmup,
        "timed_epochs": args.epochs,
        "statistic": "median over timed epochs of examples_per_epoch / epoch_seconds",
        "results": results,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
