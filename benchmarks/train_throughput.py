"""Training throughput of vae_zoo on every path a user takes, each beside a keras.io-style VAE fed the same way.

What it measures, in one process, interleaved
---------------------------------------------
The model is the `mnist_dense` recipe's (`DenseVAE` 784-512-256, latent 32, Bernoulli,
Adam 1e-3, batch 128; `--arch conv`: the `mnist_conv` recipe's), trained on
`--examples` digits of the embedded MNIST sample, statically binarized once (a fixed
seed), as `[N, 784]` float32 (`[N, 28, 28, 1]` for conv). The baseline is the keras.io
example's VAE with the same architecture (`baselines/keras_io_vae.py`: Sampling layer,
GradientTape `train_step`, summed BCE + KL, default `compile`). The paths (`--paths`):

- `numpy`: `model.fit(x, batch_size=128)` on the array, vae_zoo with its defaults
  (XLA, 32 steps per call; arrays go through `vae_zoo.training.arrays`) and the baseline
  (Keras' own array pipeline);
- `tf.data`: both fed the same kind of `tf.data.Dataset` (`from_tensor_slices`,
  `shuffle` over all examples, `batch(128)`, `prefetch(AUTOTUNE)`);
- `cli`: `vae-zoo train <recipe> --quiet` as a subprocess on the same digits (written
  to an `.npz` with 1,000 statically binarized test digits, `data.binarize = "none"`,
  the IW evaluation, per-epoch diagnostics and image grids switched off; the recipe's
  validation pass, checkpoints, TensorBoard logs and final pictures stay, as a user
  gets them) against `baselines/keras_io_train.py` as a subprocess (loads the `.npz`,
  `fit` on the array), both timed as whole commands;
- `plain`: vae_zoo's plain path (`jit_compile=False, steps_per_execution=1`) on the
  array, for reference; its baseline is the `numpy` one.

For each run: the wall time of every epoch (between consecutive epoch ends, so a stall
between epochs counts; the first from the start of `fit`; for `vae-zoo train` from the
epoch summaries of its TensorBoard log) and of the whole run (building, compiling and
`fit`; for `cli` the whole command, Python and TensorFlow start-up included). Reported
per path and implementation:

- `examples_per_s`: the steady state, the median over all epochs after the first of all
  rounds of examples ÷ epoch seconds; `speedup`: ÷ the baseline's on the same path;
- `whole_run_s`: the median over rounds of the whole run, compilation included;
  `whole_run_speedup`: the baseline's ÷ this one;
- `max_epoch_over_median`: the largest epoch after the first ÷ the median of those
  epochs, the worst round (the performance issue asks for at most 1.5 on every path);
- `fraction_of_matmul_peak` (dense): examples/s × training FLOPs per example (matmul
  multiply-adds × 2 × 3 for forward and backward: 6.54 MFLOP) ÷ the float32 matmul peak
  measured in the same run (`machine.py`);
- `fraction_of_machine_limit` (dense): examples/s × the machine's limit per example,
  the matmul FLOPs at that peak plus the Adam update's memory traffic (7 float32 per
  parameter per step: θ, g, m, v read, θ, m, v written; 1.09 M parameters, shared by
  the batch of 128) at the memory bandwidth measured in the same run;
- `test_elbo` (in-process vae_zoo runs): the mean ELBO of 1,000 test digits after
  training, so the fast paths can be seen to train as well as the plain one.

Each round builds every model afresh and runs each path's two configurations one after
the other (the order alternating between rounds), so slow phases of a shared machine
hit both alike. `--policy mixed_float16` and `--strategy mirrored` (all visible GPUs,
or the CPU) apply to every configuration, for GPU machines (`gpu_check.sh`); the `cli`
path takes the strategy, not the policy.

Run (about 2 minutes on 2 cores):
    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --rounds 1 --epochs 3 --examples 500   # smoke

A table goes to stderr; one JSON line goes to stdout.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before tensorflow is imported

import argparse  # noqa: E402
import gc  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from baselines import keras_io_vae  # noqa: E402
from machine import (  # noqa: E402
    ADAM_BYTES_PER_PARAMETER,
    environment,
    matmul_peak_gflops,
    memory_bandwidth_gbs,
)
from vae_zoo import data, evaluate, recipes  # noqa: E402
from vae_zoo.models import MODELS  # noqa: E402

RECIPES = {"dense": "mnist_dense", "conv": "mnist_conv"}
PATHS = ("numpy", "tf.data", "cli", "plain")
PLAIN = ["train.jit_compile=false", "train.steps_per_execution=1"]
# `vae-zoo train` without the extras a recipe can switch off.
CLI_OVERRIDES = ["data.binarize=none", "evaluate.num_samples=0", "evaluate.examples=1",
                 "output.images_every=0", "output.diagnostics=false", "output.grid_size=1"]
BATCH_SIZE = 128
SEED = 0
TEST_DIGITS = 1000
STALL_LIMIT = 1.5


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def _dense_layers(hidden_units, latent_dim, pixels):
    """(inputs, outputs) of every Dense layer of the dense benchmark model: the encoder
    to q's 2 × latent_dim parameters, the decoder back to the pixels."""
    encoder = [pixels, *hidden_units, 2 * latent_dim]
    decoder = [latent_dim, *reversed(hidden_units), pixels]
    return [(a, b) for sizes in (encoder, decoder) for a, b in zip(sizes, sizes[1:])]


def dense_training_flops(hidden_units=(512, 256), latent_dim=32, pixels=784):
    """FLOPs to train on one example: 2 × multiply-adds × 3 (forward and backward)."""
    return 2 * sum(a * b for a, b in _dense_layers(hidden_units, latent_dim, pixels)) * 3


def dense_parameters(hidden_units=(512, 256), latent_dim=32, pixels=784):
    """Weights and biases of the dense benchmark model (encoder and decoder)."""
    return sum(a * b + b for a, b in _dense_layers(hidden_units, latent_dim, pixels))


def dense_limit_seconds_per_example(peak_gflops, bandwidth_gbs):
    """The machine's limit for one example of the dense benchmark: its matmul FLOPs at
    the matmul peak plus its share of one Adam update's memory traffic."""
    matmuls = dense_training_flops() / (peak_gflops * 1e9)
    update = ADAM_BYTES_PER_PARAMETER * dense_parameters() / (bandwidth_gbs * 1e9)
    return matmuls + update / BATCH_SIZE


def binarized_digits(examples, seed=SEED):
    """`(train, test)` uint8 {0, 255} images `[N, 28, 28]`: `examples` training digits
    and the 1,000 test digits of the embedded sample, each drawn once."""
    mnist = data.load_embedded_mnist()
    if not 1 <= examples <= len(mnist["x_train"]):
        raise ValueError(f"--examples must be in [1, {len(mnist['x_train'])}], got {examples}")
    return (data.static_binarize(mnist["x_train"][:examples], seed),
            data.static_binarize(mnist["x_test"][:TEST_DIGITS], seed + 1))


def as_inputs(images, arch):
    """uint8 images as the model's float32 inputs: `[N, 784]` (dense), `[N, 28, 28, 1]`."""
    x = images.astype("float32") / 255.0
    return x.reshape(len(x), -1) if arch == "dense" else x[..., None]


class Settings:
    """What every run of one invocation shares: architecture, data, epochs, policy and
    strategy."""

    def __init__(self, arch, train_images, test_images, epochs, policy, strategy, workdir,
                 overrides=()):
        self.arch, self.epochs, self.policy = arch, epochs, policy
        self.overrides = list(overrides)  # recipe overrides of every vae_zoo configuration
        self.x, self.x_test = as_inputs(train_images, arch), as_inputs(test_images, arch)
        self.strategy_name = strategy
        self.strategy = tf.distribute.MirroredStrategy() if strategy == "mirrored" else None
        self.npz = Path(workdir) / f"digits-{arch}.npz"
        np.savez(self.npz, x_train=train_images, x_test=test_images)
        self.workdir = Path(workdir)

    def scope(self):
        return self.strategy.scope() if self.strategy else _NoScope()


class _NoScope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def vae_zoo_model(settings, plain):
    """The recipe's model for inputs like `settings.x`, compiled as its recipe compiles it."""
    recipe = recipes.load(RECIPES[settings.arch], settings.overrides + (PLAIN if plain else []))
    kwargs = {key: tuple(value) if isinstance(value, list) else value
              for key, value in recipe["model"].items() if key != "family"}
    model = MODELS.get(recipe["model"]["family"])(
        input_shape=settings.x.shape[1:], seed=recipe["train"]["seed"], **kwargs)
    return recipes.compile_model(model, recipe)


def shuffled_dataset(x):
    """What a tf.data user writes: slices, a full shuffle, batches, prefetch."""
    return (tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=SEED)
            .batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE))


class EpochEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


def run_in_process(settings, path, impl):
    """One training run in this process; its epoch times and whole-run time."""
    keras.backend.clear_session()  # also resets the dtype policy: set it again
    keras.mixed_precision.set_global_policy(settings.policy)
    keras.utils.set_random_seed(SEED)
    feed = shuffled_dataset(settings.x) if path == "tf.data" else settings.x
    start = time.perf_counter()
    with settings.scope():
        if impl == "baseline":
            model = keras_io_vae.build(settings.arch, input_shape=settings.x.shape[1:])
        else:
            model = vae_zoo_model(settings, plain=path == "plain")
    timer = EpochEnds()
    kwargs = {} if path == "tf.data" else {"batch_size": BATCH_SIZE}
    fit_start = time.perf_counter()
    model.fit(feed, epochs=settings.epochs, verbose=0, callbacks=[timer], **kwargs)
    whole = time.perf_counter() - start
    epochs = np.diff([fit_start, *timer.ends]).tolist()
    result = {"first_epoch_s": epochs[0], "steady_epoch_s": epochs[1:], "whole_run_s": whole,
              "jit_compile": bool(model.jit_compile),
              "steps_per_execution": int(model.steps_per_execution)}
    if impl == "vae_zoo":
        result["test_elbo"] = float(np.mean(evaluate.elbo(model, settings.x_test, seed=SEED)["elbo"]))
    del model, feed
    gc.collect()
    return result


def cli_command(settings, impl, output):
    if impl == "baseline":
        command = [sys.executable, str(HERE / "baselines" / "keras_io_train.py"), str(settings.npz),
                   "--epochs", str(settings.epochs), "--arch", settings.arch,
                   "--batch-size", str(BATCH_SIZE)]
        return command + (["--strategy", "mirrored"] if settings.strategy else [])
    overrides = [f"data.dataset={settings.npz}", f"data.batch_size={BATCH_SIZE}",
                 f"train.epochs={settings.epochs}", *CLI_OVERRIDES, *settings.overrides]
    command = [sys.executable, "-m", "vae_zoo", "train", RECIPES[settings.arch], "--quiet",
               "--overwrite", "--output", str(output)]
    command += [part for o in overrides for part in ("--set", o)]
    return command + (["--strategy", "mirrored"] if settings.strategy else [])


def tensorboard_epoch_ends(run_folder):
    """Wall times at which `vae-zoo train` wrote each epoch's training summary."""
    ends = {}
    for events in glob.glob(str(Path(run_folder) / "logs" / "train" / "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(events):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if any(value.tag == "epoch_loss" for value in event.summary.value):
                ends[event.step] = event.wall_time
    return [ends[step] for step in sorted(ends)]


def run_cli(settings, path, impl):
    """One training run as a command; its epoch times and whole-command time."""
    output = settings.workdir / f"run-{settings.arch}"
    command = cli_command(settings, impl, output)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    whole = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[1:4])} ... failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    if impl == "baseline":
        report = json.loads(done.stdout.strip().splitlines()[-1])
        epochs = np.diff([report["fit_start_s"], *report["epoch_end_s"]]).tolist()
        first, jit = epochs[0], report["jit_compile"]
        steady, steps = epochs[1:], 1
    else:
        ends = tensorboard_epoch_ends(output)
        if len(ends) != settings.epochs:
            raise RuntimeError(f"found {len(ends)} epoch summaries in {output}, expected "
                               f"{settings.epochs}")
        recipe = json.loads((output / "recipe.json").read_text())
        first, steady = None, np.diff(ends).tolist()  # no clock at the start of fit
        jit, steps = recipe["train"]["jit_compile"], recipe["train"]["steps_per_execution"]
    return {"first_epoch_s": first, "steady_epoch_s": steady, "whole_run_s": whole,
            "jit_compile": jit, "steps_per_execution": steps}


def schedule(paths):
    """Per round, the runs `(path, implementation)` in order: each path's two
    configurations side by side; the plain path's baseline is the numpy one."""
    runs = []
    for path in paths:
        if path == "plain":
            runs.append([(path, "vae_zoo")]
                        + ([] if "numpy" in paths else [("numpy", "baseline")]))
        else:
            runs.append([(path, "baseline"), (path, "vae_zoo")])
    return runs


def summarize(settings, key, results, machine):
    """The figures of one `(path, implementation)` over its rounds."""
    path, impl = key
    examples = len(settings.x)
    steady = [s for r in results for s in r["steady_epoch_s"]]
    worst = max((max(r["steady_epoch_s"]) / statistics.median(r["steady_epoch_s"])
                 for r in results if r["steady_epoch_s"]), default=None)
    firsts = [r["first_epoch_s"] for r in results if r["first_epoch_s"] is not None]
    row = {
        "arch": settings.arch,
        "path": path,
        "impl": impl,
        "examples_per_s": round(statistics.median(examples / s for s in steady), 1) if steady else None,
        "examples_per_s_min": round(examples / max(steady), 1) if steady else None,
        "whole_run_s": round(statistics.median(r["whole_run_s"] for r in results), 3),
        "first_epoch_s": round(statistics.median(firsts), 3) if firsts else None,
        "median_epoch_s": round(statistics.median(steady), 4) if steady else None,
        "max_epoch_over_median": round(worst, 2) if worst is not None else None,
        "timed_epochs": len(steady),
        "rounds": len(results),
        "jit_compile": results[0]["jit_compile"],
        "steps_per_execution": results[0]["steps_per_execution"],
    }
    if "test_elbo" in results[0]:
        row["test_elbo"] = round(statistics.mean(r["test_elbo"] for r in results), 2)
    if settings.arch == "dense" and row["examples_per_s"]:
        flops = dense_training_flops()
        row["training_flops_per_example"] = flops
        peak, bandwidth = machine
        row["fraction_of_matmul_peak"] = round(row["examples_per_s"] * flops / (peak * 1e9), 3)
        limit = dense_limit_seconds_per_example(peak, bandwidth)
        row["fraction_of_machine_limit"] = round(row["examples_per_s"] * limit, 3)
    return row


def compare(rows):
    """Each vae_zoo row's ratios to the baseline on its path (`plain`: the numpy one)."""
    baselines = {(r["arch"], r["path"]): r for r in rows if r["impl"] == "baseline"}
    for row in rows:
        if row["impl"] != "vae_zoo":
            continue
        base = baselines[(row["arch"], "numpy" if row["path"] == "plain" else row["path"])]
        row["baseline_examples_per_s"] = base["examples_per_s"]
        row["speedup"] = (round(row["examples_per_s"] / base["examples_per_s"], 2)
                          if row["examples_per_s"] and base["examples_per_s"] else None)
        row["baseline_whole_run_s"] = base["whole_run_s"]
        row["whole_run_speedup"] = round(base["whole_run_s"] / row["whole_run_s"], 2)


def measure(settings, paths, rounds, machine):
    runs = schedule(paths)
    results = {}
    for round_index in range(rounds):
        for group in runs:
            for key in (group if round_index % 2 == 0 else list(reversed(group))):
                run = run_cli if key[0] == "cli" else run_in_process
                log(f"round {round_index + 1}/{rounds}: {settings.arch} {key[0]} {key[1]}")
                results.setdefault(key, []).append(run(settings, *key))
    rows = [summarize(settings, key, found, machine) for key, found in results.items()]
    compare(rows)
    order = {p: i for i, p in enumerate(PATHS)}
    return sorted(rows, key=lambda r: (order[r["path"]], r["impl"] != "baseline"))


def print_table(rows):
    def number(value, spec):
        return "" if value is None else format(value, spec)

    log(f"\n{'arch':>5} {'path':>8} {'impl':>9} {'ex/s':>8} {'×base':>6} {'run s':>7} "
        f"{'×base':>6} {'epoch 1':>7} {'max/med':>7} {'of peak':>7} {'of limit':>8} {'ELBO':>8}  "
        f"jit steps")
    for r in rows:
        share = r.get("fraction_of_matmul_peak")
        log(f"{r['arch']:>5} {r['path']:>8} {r['impl']:>9} {number(r['examples_per_s'], ',.0f'):>8} "
            f"{number(r.get('speedup'), '.2f'):>6} {r['whole_run_s']:>7.2f} "
            f"{number(r.get('whole_run_speedup'), '.2f'):>6} {number(r['first_epoch_s'], '.2f'):>7} "
            f"{number(r['max_epoch_over_median'], '.2f'):>7} {number(share, '.0%'):>7} "
            f"{number(r.get('fraction_of_machine_limit'), '.0%'):>8} "
            f"{number(r.get('test_elbo'), '.2f'):>8}  {str(r['jit_compile']):>5} "
            f"{r['steps_per_execution']:>3}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", nargs="+", choices=list(RECIPES), default=["dense"])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--examples", type=int, default=3000,
                        help="training digits of the embedded sample (at most 5000)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per run (>= 2)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every configuration")
    parser.add_argument("--policy", default="float32",
                        help="Keras dtype policy of the in-process runs, e.g. mixed_float16")
    parser.add_argument("--strategy", choices=("none", "mirrored"), default="none",
                        help="train under tf.distribute.MirroredStrategy (all visible GPUs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="recipe override for every vae_zoo configuration, as `vae-zoo "
                             "train --set` takes it (repeatable; the plain path's own win)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not steady state)")
    if args.policy != "float32" and "cli" in args.paths:
        parser.error("--policy applies to the in-process paths; leave out cli (--paths)")
    warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")

    train_images, test_images = binarized_digits(args.examples)
    peak, bandwidth = matmul_peak_gflops(), memory_bandwidth_gbs()
    log(f"matmul peak: {peak:.0f} GFLOP/s float32, memory {bandwidth:.1f} GB/s; TF "
        f"{tf.__version__}, Keras "
        f"{keras.__version__}, {os.cpu_count()} CPUs, GPUs: "
        f"{len(tf.config.list_physical_devices('GPU'))}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="train_throughput-") as workdir:
        for arch in args.arch:
            settings = Settings(arch, train_images, test_images, args.epochs, args.policy,
                                args.strategy, workdir, args.overrides)
            rows += measure(settings, args.paths, args.rounds, (peak, bandwidth))
    keras.mixed_precision.set_global_policy("float32")
    print_table(rows)
    worst = max((r["max_epoch_over_median"] for r in rows
                 if r["max_epoch_over_median"] is not None), default=None)
    print(json.dumps({
        "benchmark": "train_throughput",
        "matmul_peak_gflops": round(peak, 1),
        "memory_bandwidth_gbs": round(bandwidth, 1),
        "batch_size": BATCH_SIZE,
        "train_images": args.examples,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "paths": args.paths,
        "policy": args.policy,
        "strategy": args.strategy,
        "overrides": args.overrides,
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "statistic": "examples_per_s: median over epochs after the first of examples / "
                     "epoch seconds; whole_run_s: median over rounds, compilation included",
        "stall_limit": STALL_LIMIT,
        "stall_ok": worst is None or worst <= STALL_LIMIT,
        "results": rows,
        **environment(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
