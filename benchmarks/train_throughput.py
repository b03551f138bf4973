"""Training throughput of the dense and conv MNIST recipes against a keras.io-style VAE.

What it measures, side by side in one process
---------------------------------------------
- `matmul_peak_gflops`: the machine's float32 dense matmul rate (8 products of
  1024×1024 matrices, with TensorFlow's kernel and with XLA's, the best of several
  timed runs), the ceiling any training step is compared with.
- For each architecture (`dense`: the `mnist_dense` recipe, 784-512-256 encoder, latent
  32, mirrored decoder, Bernoulli; `conv`: the `mnist_conv` recipe), steady-state
  training examples/s of:
  - `baseline`: the keras.io-style VAE of the same architecture in
    `benchmarks/baselines/keras_io_vae.py` (Sampling layer, GradientTape train_step,
    summed BCE + KL, default `compile`), fed the way the keras.io example feeds it:
    `fit(numpy_array, batch_size=128)`;
  - `vae_zoo_plain`: the vae_zoo model with `jit_compile=False, steps_per_execution=1`
    (a plain `tf.function` step per batch), fed by the recipe's tf.data pipeline;
  - `vae_zoo`: the vae_zoo model compiled as `vae-zoo train` compiles the recipe (its
    defaults: XLA, several steps per execution) and fed by the same pipeline.
- The fraction of the matmul peak the dense runs reach: examples/s × FLOPs per
  training example (forward multiply-adds × 2 FLOPs × 3 for forward + backward;
  6.54 MFLOP for the dense architecture) ÷ peak.
- Accuracy of the fast path: after timing, `vae_zoo` and `vae_zoo_plain` have trained
  the same number of epochs from the same seed; their test ELBO (1,000 test digits,
  fixed binarization) is reported side by side.

All runs are interleaved: every model is warmed up (one epoch: tracing, XLA
compilation, cache fill), then `--rounds` rounds each train every model for
`--epochs` epochs, so slow phases of a shared machine hit every configuration alike.
The figure per configuration is the median over all its timed epochs of
(examples per epoch ÷ epoch wall time); an epoch is one pass over the 5,000 embedded
training digits.

Run (about 1–2 minutes on 2 cores):
    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --arch dense --rounds 2 --epochs 2   # quicker

A table goes to stderr; one JSON line goes to stdout.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before tensorflow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from baselines import keras_io_vae  # noqa: E402
from machine import environment, matmul_peak_gflops  # noqa: E402
from vae_zoo import data, evaluate, recipes  # noqa: E402

RECIPES = {"dense": "mnist_dense", "conv": "mnist_conv"}
BATCH_SIZE = 128
SEED = 0


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def dense_training_flops(hidden_units=(512, 256), latent_dim=32, pixels=784):
    """FLOPs to train on one example: 2 × multiply-adds × 3 (forward and backward)."""
    sizes = [pixels, *hidden_units]
    encoder = sum(a * b for a, b in zip(sizes, sizes[1:])) + sizes[-1] * 2 * latent_dim
    decoder_sizes = [latent_dim, *reversed(hidden_units), pixels]
    decoder = sum(a * b for a, b in zip(decoder_sizes, decoder_sizes[1:]))
    return 2 * (encoder + decoder) * 3


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class Config:
    """One model and its feed; `train(epochs)` returns the wall time of each epoch."""

    def __init__(self, name, arch, recipe, x_grey):
        self.name, self.arch = name, arch
        keras.utils.set_random_seed(SEED)
        if name == "baseline":
            self.model = keras_io_vae.build(arch)
            self.fit_args = (x_grey,)
            self.fit_kwargs = {"batch_size": BATCH_SIZE}
        else:
            overrides = [] if name == "vae_zoo" else [
                "train.jit_compile=false", "train.steps_per_execution=1"
            ]
            recipe = recipes.load(RECIPES[arch], overrides)
            self.model = recipes.compile_model(recipes.build_model(recipe), recipe)
            train, _ = recipes.build_datasets(recipe)
            self.fit_args, self.fit_kwargs = (train,), {}
            self.recipe = recipe
        self.examples = len(x_grey)
        self.seconds = []
        self.epochs_trained = 0

    def train(self, epochs, timed=True):
        timer = EpochTimer()
        self.model.fit(
            *self.fit_args, epochs=self.epochs_trained + epochs,
            initial_epoch=self.epochs_trained, verbose=0, callbacks=[timer], **self.fit_kwargs,
        )
        self.epochs_trained += epochs
        if timed:
            self.seconds += timer.seconds

    def summary(self):
        rates = [self.examples / s for s in self.seconds]
        return {
            "config": self.name,
            "arch": self.arch,
            "examples_per_s": round(statistics.median(rates), 1),
            "examples_per_s_min": round(min(rates), 1),
            "examples_per_s_max": round(max(rates), 1),
            "timed_epochs": len(rates),
            "jit_compile": bool(self.model.jit_compile),
            "steps_per_execution": int(self.model.steps_per_execution),
        }


def test_elbo(config, x_test):
    return float(np.mean(evaluate.elbo(config.model, x_test, seed=SEED)["elbo"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per round")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")

    mnist = data.load_embedded_mnist()
    x_grey = (mnist["x_train"][..., None] / 255.0).astype("float32")
    rng = np.random.default_rng(SEED)
    x_test = (rng.random(mnist["x_test"].shape) < mnist["x_test"] / 255.0)
    x_test = x_test.astype("float32")[..., None]

    peak = matmul_peak_gflops()
    log(f"matmul peak: {peak:.0f} GFLOP/s float32; TF {tf.__version__}, Keras "
        f"{keras.__version__}, {os.cpu_count()} CPUs")
    results, accuracy = [], {}
    for arch in args.arch:
        configs = [Config(name, arch, None, x_grey)
                   for name in ("baseline", "vae_zoo_plain", "vae_zoo")]
        for config in configs:
            config.train(1, timed=False)
        for _ in range(args.rounds):
            for config in configs:
                config.train(args.epochs)
        summaries = [c.summary() for c in configs]
        base = summaries[0]["examples_per_s"]
        for s in summaries:
            s["vs_baseline"] = round(s["examples_per_s"] / base, 2)
            if arch == "dense":
                flops = dense_training_flops()
                s["training_flops_per_example"] = flops
                s["fraction_of_matmul_peak"] = round(s["examples_per_s"] * flops / (peak * 1e9), 3)
        results += summaries
        plain, fast = configs[1], configs[2]
        accuracy[arch] = {
            "epochs": fast.epochs_trained,
            "test_elbo_vae_zoo": round(test_elbo(fast, x_test), 2),
            "test_elbo_vae_zoo_plain": round(test_elbo(plain, x_test), 2),
        }

    log(f"\n{'arch':>6} {'config':>14} {'ex/s':>9} {'min':>8} {'max':>8} {'× base':>7} "
        f"{'of peak':>8}  jit  steps/exec")
    for r in results:
        peak_share = f"{r['fraction_of_matmul_peak']:.0%}" if "fraction_of_matmul_peak" in r else ""
        log(f"{r['arch']:>6} {r['config']:>14} {r['examples_per_s']:>9,.0f} "
            f"{r['examples_per_s_min']:>8,.0f} {r['examples_per_s_max']:>8,.0f} "
            f"{r['vs_baseline']:>7.2f} {peak_share:>8}  {str(r['jit_compile']):>5} "
            f"{r['steps_per_execution']:>4}")
    for arch, a in accuracy.items():
        log(f"{arch}: test ELBO after {a['epochs']} epochs: vae_zoo {a['test_elbo_vae_zoo']:.2f}, "
            f"plain path {a['test_elbo_vae_zoo_plain']:.2f} nats")
    print(json.dumps({
        "benchmark": "train_throughput",
        "matmul_peak_gflops": round(peak, 1),
        "batch_size": BATCH_SIZE,
        "train_images": int(len(x_grey)),
        "statistic": "median over timed epochs of examples_per_epoch / epoch_seconds",
        "results": results,
        "accuracy": accuracy,
        **environment(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
