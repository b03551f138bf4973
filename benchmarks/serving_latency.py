"""Serving latency: p50 / p99 of `encode` and `reconstruct` through a loaded SavedModel.

What it measures
----------------
The SavedModel `vae-zoo export` wrote (default: the shipped `saved_models/mnist_dense`,
highest version) is loaded with `tf.saved_model.load`, and its `encode` and
`reconstruct` signatures (the SignatureDefs TF Serving runs) are called one request at
a time from one thread on test digits of the embedded MNIST sample, at batch 1 and
batch 64. Each (signature, batch) pair gets `--warmup` untimed calls, then
`--requests` timed calls; a call's latency is the wall time until its outputs are numpy
arrays. Reported: p50, p99 and mean in milliseconds, and examples/s at p50.

This is the graph TF Serving would run, called in-process: no HTTP/gRPC, batching or
queueing (the `tensorflow_model_server` binary is not installable here, see README.md
"Export and serving"); `benchmarks/serving_load.py` covers concurrent mixed requests.

Run (about 20 seconds):
    python benchmarks/serving_latency.py
    python benchmarks/serving_latency.py --export saved_models/mnist_dense --requests 500

A table goes to stderr; one JSON line goes to stdout.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import environment  # noqa: E402
from vae_zoo import data  # noqa: E402
from vae_zoo import export as export_lib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIGNATURES = ("encode", "reconstruct")
BATCHES = (1, 64)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", default=str(ROOT / "saved_models" / "mnist_dense"))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)

    folder = export_lib.find_export(Path(args.export))
    if folder is None:
        raise SystemExit(f"error: no SavedModel at {args.export}")
    info = export_lib.metadata(folder)
    if tuple(info["input_shape"]) != (28, 28, 1) or info["condition"] is not None:
        raise SystemExit("error: serving_latency feeds MNIST digits to an unconditional "
                         "28x28x1 model")
    signatures = tf.saved_model.load(str(folder)).signatures
    digits = data.load_arrays("mnist_sample", "test")[0].round().astype(np.float32)

    results = []
    for name in SIGNATURES:
        fn = signatures[name]
        for batch in BATCHES:
            x = [tf.constant(digits[i * batch:(i + 1) * batch]) for i in range(8)]
            for i in range(args.warmup):
                fn(x=x[i % 8])
            latencies = []
            for i in range(args.requests):
                start = time.perf_counter()
                outputs = {k: v.numpy() for k, v in fn(x=x[i % 8]).items()}
                latencies.append(time.perf_counter() - start)
            assert all(np.isfinite(v).all() for v in outputs.values())
            ms = np.array(latencies) * 1000
            p50 = float(np.percentile(ms, 50))
            results.append({
                "signature": name,
                "batch": batch,
                "p50_ms": round(p50, 3),
                "p99_ms": round(float(np.percentile(ms, 99)), 3),
                "mean_ms": round(float(ms.mean()), 3),
                "examples_per_s_at_p50": round(batch / p50 * 1000, 1),
            })
            r = results[-1]
            log(f"{name:>12} batch {batch:>3}: p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms"
                f"  mean {r['mean_ms']:7.3f} ms  {r['examples_per_s_at_p50']:>9,.0f} examples/s")
    print(json.dumps({
        "benchmark": "serving_latency",
        "export": str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder),
        "requests": args.requests,
        "results": results,
        **environment(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
