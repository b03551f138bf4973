"""Training from an image folder: throughput and peak memory as the folder grows.

What it measures
----------------
For each size (default 10,000 and 100,000 images) a folder of 28×28 grey PNGs (the
embedded MNIST digits, repeated, in 10 class subfolders) is written to a temporary
folder. Then, for each cache mode, one fresh process trains from it with
`vae-zoo train` (the `mnist_dense` recipe with a small model: hidden_units [64],
latent 2, no evaluation or pictures), two epochs:

- `stream` (`data.cache_budget_mb = 0`): the images are decoded from disk on every
  pass, the file order shuffled;
- `cache` (the default budget, `CACHE_BUDGET_MB`): the decoded images are cached in
  memory after the first pass (they fit: 100,000 × 784 bytes = 75 MiB).

Per run: the folder scan (listing and each PNG's header, once per process), the
wall time and training examples/s of each epoch (a Keras callback times them; the test
split is evaluated as part of it; epoch 1 includes tracing and compiling, epoch 2 is
the steady state), and the process's peak resident memory (its own
`ru_maxrss`, from `os.wait4`), so each figure belongs to one size and mode.

Run (about 5 minutes on 2 cores, most of it writing 100,000 PNGs):
    python benchmarks/data_streaming.py
    python benchmarks/data_streaming.py --sizes 2000 --modes stream   # quicker

A table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, environment  # noqa: E402

RECIPE = [
    "--set", "train.epochs=2", "--set", "model.hidden_units=[64]",
    "--set", "model.latent_dim=2", "--set", "evaluate.num_samples=0",
    "--set", "output.diagnostics=false", "--set", "output.images_every=0",
    "--set", "output.grid_size=4", "--set", "data.batch_size=128",
]


_DIGITS = {}


def _digits():
    """The embedded digits and labels, read without importing vae_zoo (TensorFlow)."""
    import importlib.util
    import io

    import numpy as np

    if not _DIGITS:
        spec = importlib.util.find_spec("vae_zoo")
        npz = Path(spec.origin).parent / "datasets" / "mnist_sample.npz"
        with np.load(io.BytesIO(npz.read_bytes())) as arrays:
            _DIGITS["x"] = np.concatenate([arrays["x_train"], arrays["x_test"]])
            _DIGITS["y"] = np.concatenate([arrays["y_train"], arrays["y_test"]])
    return _DIGITS["x"], _DIGITS["y"]


def _write(job):
    """Write PNGs `start..stop` of the folder (a worker process)."""
    from PIL import Image

    root, start, stop = job
    x, y = _digits()
    for i in range(start, stop):
        Image.fromarray(x[i % len(x)]).save(Path(root) / str(y[i % len(x)]) / f"{i:06d}.png")
    return stop - start


def make_folder(root: Path, size: int, workers: int) -> float:
    for label in range(10):
        (root / str(label)).mkdir(parents=True)
    start = time.perf_counter()
    chunk = -(-size // (workers * 4))
    jobs = [(str(root), i, min(i + chunk, size)) for i in range(0, size, chunk)]
    with ProcessPoolExecutor(workers) as pool:
        assert sum(pool.map(_write, jobs)) == size
    return time.perf_counter() - start


def child(folder: str, budget: str, output: str) -> None:
    """One training run in this process; prints one JSON line."""
    import keras

    from vae_zoo import data
    from vae_zoo.data import own
    from vae_zoo.drivers import cli, runs

    start = time.perf_counter()
    shape = data.input_shape_of(folder)  # the scan, cached for the run below
    scan = time.perf_counter() - start
    times = {}

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            times[epoch] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times[epoch] = time.perf_counter() - times[epoch]

    callbacks = runs._fit_callbacks
    runs._fit_callbacks = lambda *args: [EpochTimer()] + callbacks(*args)
    overrides = ["--set", f"data.dataset={folder}"] + RECIPE
    if budget != "default":
        overrides += ["--set", f"data.cache_budget_mb={budget}"]
    status = cli.main(["train", "mnist_dense", *overrides, "--output", output, "--quiet"])
    folder_files = len(own.scan_folder(Path(folder).absolute()).files)
    train = folder_files - folder_files // own.HOLDOUT_EVERY
    print(json.dumps({"status": status, "shape": shape, "scan_s": scan,
                      "epoch_s": [times[0], times[1]], "train_examples": train,
                      "examples_per_s": [train / times[0], train / times[1]],
                      "total_s": time.perf_counter() - start}))


def run_child(folder: Path, budget: str, output: Path) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", str(folder), "--budget", budget,
         "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    # wait4: this child's own resource usage (peak RSS), not all children's together
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read(), proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: KiB
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--modes", default="stream,cache")
    parser.add_argument("--workers", type=int, default=2, help="processes writing PNGs")
    parser.add_argument("--child")
    parser.add_argument("--budget", default="default")
    parser.add_argument("--output")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.budget, args.output)
        return
    env = environment()
    budgets = {"stream": "0", "cache": "default"}
    rows = []
    print(describe(env), file=sys.stderr)
    print(f"{'images':>8} {'mode':>7} {'write s':>8} {'scan s':>7} {'epoch 1 s':>10} "
          f"{'epoch 2 s':>10} {'ex/s 1':>8} {'ex/s 2':>8} {'peak RSS MiB':>13}",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            folder = Path(tmp) / f"png{size}"
            write = make_folder(folder, size, args.workers)
            for mode in args.modes.split(","):
                r = run_child(folder, budgets[mode], Path(tmp) / f"run{size}{mode}")
                (e1, e2), (x1, x2) = r["epoch_s"], r["examples_per_s"]
                print(f"{size:>8} {mode:>7} {write:>8.1f} {r['scan_s']:>7.1f} {e1:>10.1f} "
                      f"{e2:>10.1f} {x1:>8.0f} {x2:>8.0f} {r['peak_rss_mib']:>13.0f}",
                      file=sys.stderr, flush=True)
                rows.append({"images": size, "mode": mode, "write_s": write, **r})
    print(json.dumps({"benchmark": "data_streaming", "results": rows, **env}))


if __name__ == "__main__":
    main()
