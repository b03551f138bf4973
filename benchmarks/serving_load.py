"""Serving load test: N threads × M requests of mixed signatures against an exported SavedModel.

What it measures
----------------
The SavedModel that `vae-zoo export` wrote (default: the shipped
`saved_models/mnist_dense`, its highest version) is loaded once with
`tf.saved_model.load`, and requests go through its signature functions
(`loaded.signatures[name](**inputs)`), the same SignatureDefs TF Serving runs. The
requests cycle through the signatures: `serving_default` (reconstruct), `encode`,
`decode`, `sample` and `log_likelihood`, each on a batch of `--batch` examples
(test digits of the embedded MNIST sample for a 28×28×1 model, random binary data of
the model's input shape otherwise; labels for a conditional model), `sample` drawing
`--batch` images and `log_likelihood` using `--samples` importance samples. Request i
uses seed i, so every request has one exact answer.

First every request is sent once from this thread alone (this also warms the functions
up) and its outputs are kept. Then `--threads` threads each send `--requests` requests
(thread t sends requests t·M … t·M + M − 1), all starting together; each request's
wall-clock latency is recorded, every exception counts as an error, and every result is
compared with the single-threaded one for that request (`mismatches`: any output not
bit-for-bit equal).

This is not TF Serving itself (its binary is not installable from PyPI or Debian, see
README.md "Export and serving"): it measures the exported graph under concurrent calls
from one process, without HTTP or gRPC overhead.

How to run
----------
    cd /work/main && .venv/bin/python benchmarks/serving_load.py
    # options: --export saved_models/mnist_dense --threads 4 --requests 250 --batch 8 --samples 50

What the figures mean
---------------------
A table goes to stderr; exactly one JSON line goes to stdout:

    {"benchmark": "serving_load", "export": "...", "threads": 4, "requests_per_thread": 250,
     "requests": 1000, "batch": 8, "seconds": ..., "requests_per_s": ..., "p50_ms": ...,
     "p99_ms": ..., "errors": 0, "mismatches": 0, "per_signature": {...}, ...}

- `requests_per_s`: requests completed / wall time of the concurrent phase (all
  threads), errors included. Mixed signatures differ a lot in cost
  (`log_likelihood` decodes batch × samples images), so compare runs with the same
  options only.
- `p50_ms`, `p99_ms`: median and 99th percentile of per-request latency over all
  requests of the concurrent phase; `per_signature` gives the count and median per
  signature.
- `errors`: requests that raised (`error_examples` holds the first messages);
  `mismatches`: requests whose outputs differ from the single-threaded call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import environment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIX = ("serving_default", "encode", "decode", "sample", "log_likelihood")


def _data(info, batch, rng):
    """`[batch, *input_shape]` float32 examples for the model."""
    shape = tuple(info["input_shape"])
    if shape == (28, 28, 1):
        from vae_zoo import data

        x = data.load_arrays("mnist_sample", "test")[0].round()
        return x[rng.choice(len(x), batch, replace=False)]
    return (rng.random((batch, *shape)) < 0.5).astype(np.float32)


def _latents(info, batch, rng):
    shape = tuple(info["latent_shape"])
    if info["family"] == "discrete":  # one-hot categoricals [L, C]
        return np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], (batch, *shape[:-1]))]
    return rng.standard_normal((batch, *shape)).astype(np.float32)


def make_requests(info, count, batch=8, num_samples=50, seed=0):
    """`[(signature name, inputs dict)]`: `count` requests cycling through `MIX`."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    condition = info["condition"]
    requests = []
    for i in range(count):
        name = MIX[i % len(MIX)]
        inputs = {}
        if name in ("serving_default", "encode", "log_likelihood"):
            inputs["x"] = _data(info, batch, rng)
        if name == "decode":
            inputs["z"] = _latents(info, batch, rng)
        if name in ("sample", "log_likelihood"):
            inputs["num_samples"] = np.int32(batch if name == "sample" else num_samples)
            inputs["seed"] = np.int32(i)
        if condition is not None:
            if condition["name"] == "label":
                labels = rng.integers(0, condition["size"], batch).astype(np.int32)
                inputs["label"] = labels[0] if name == "sample" else labels
            else:
                vectors = rng.random((batch, condition["size"])).astype(np.float32)
                inputs["condition"] = vectors[0] if name == "sample" else vectors
        requests.append((name, {k: tf.constant(v) for k, v in inputs.items()}))
    return requests


def _numpy(outputs):
    return {key: value.numpy() for key, value in outputs.items()}


def run(export=None, threads=4, requests=50, batch=8, num_samples=50, seed=0):
    """Run the load test; returns the result dict (the JSON line)."""
    import tensorflow as tf

    from vae_zoo import export as export_lib

    export = Path(export or ROOT / "saved_models" / "mnist_dense")
    folder = export_lib.find_export(export)
    if folder is None:
        raise FileNotFoundError(f"no SavedModel at {export}")
    info = export_lib.metadata(folder)
    signatures = tf.saved_model.load(str(folder)).signatures
    plan = make_requests(info, threads * requests, batch, num_samples, seed)

    expected = [_numpy(signatures[name](**inputs)) for name, inputs in plan]  # one thread

    latencies = [None] * len(plan)
    failures = []
    mismatched = []
    start = threading.Barrier(threads + 1)

    def worker(t):
        start.wait()
        for i in range(t * requests, (t + 1) * requests):
            name, inputs = plan[i]
            began = time.perf_counter()
            try:
                outputs = _numpy(signatures[name](**inputs))
            except Exception as error:  # noqa: BLE001 - every failure is counted
                failures.append(f"{name}: {type(error).__name__}: {str(error).strip()[:200]}")
                continue
            finally:
                latencies[i] = time.perf_counter() - began
            if outputs.keys() != expected[i].keys() or not all(
                np.array_equal(outputs[k], expected[i][k]) for k in outputs
            ):
                mismatched.append(i)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - began

    ms = np.array(latencies) * 1000.0
    per_signature = {}
    for name in MIX:
        picked = ms[[i for i, (n, _) in enumerate(plan) if n == name]]
        if len(picked):
            per_signature[name] = {"count": int(len(picked)), "p50_ms": round(float(np.median(picked)), 3)}
    return {
        "benchmark": "serving_load",
        "export": str(folder),
        "family": info["family"],
        "threads": threads,
        "requests_per_thread": requests,
        "requests": len(plan),
        "batch": batch,
        "importance_samples": num_samples,
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(plan) / seconds, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "errors": len(failures),
        "error_examples": failures[:3],
        "mismatches": len(mismatched),
        "per_signature": per_signature,
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", default=str(ROOT / "saved_models" / "mnist_dense"),
                        help="model base folder or version folder")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--requests", type=int, default=250, help="requests per thread")
    parser.add_argument("--batch", type=int, default=8, help="examples per request")
    parser.add_argument("--samples", type=int, default=50, help="importance samples of log_likelihood")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.threads, args.requests, args.batch, args.samples) < 1:
        parser.error("--threads, --requests, --batch and --samples must be >= 1")
    from vae_zoo._quiet import import_tensorflow

    import_tensorflow(init_devices=True)
    result = run(args.export, args.threads, args.requests, args.batch, args.samples, args.seed)
    table = [
        f"export {result['export']} ({result['family']}), {result['threads']} threads x "
        f"{result['requests_per_thread']} requests, batch {result['batch']}",
        f"  requests/s  {result['requests_per_s']:.1f}",
        f"  p50 latency {result['p50_ms']:.2f} ms",
        f"  p99 latency {result['p99_ms']:.2f} ms",
        f"  errors      {result['errors']}",
        f"  mismatches  {result['mismatches']} (vs single-threaded calls)",
    ] + [f"  {name:<16}{v['count']:>5} requests, p50 {v['p50_ms']:.2f} ms"
         for name, v in result["per_signature"].items()]
    print("\n".join(table), file=sys.stderr)
    print(json.dumps({**result, **environment()}))
    return 1 if result["errors"] or result["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
