"""Importance-weighted log-likelihood at scale: K = 1000 samples on 1,000 test digits.

What it measures
----------------
`vae_zoo.evaluate.log_likelihood(model, x, num_samples=1000)` for the `mnist_dense`
recipe's model (784-512-256, latent 32, Bernoulli; trained here for `--epochs` epochs on
the embedded sample so its posteriors are realistic, though the cost does not depend on
the weights) on the 1,000 test digits of the embedded sample, statically binarized:
10⁶ decoder passes. Reported for the default path (plain `tf.function` graph per chunk
of samples) and with the chunk's log-weights compiled by XLA (`jit_compile=True`), each
timed after one untimed warm-up call on 100 images (tracing and compilation):

- `seconds`, `images_per_s`: wall time of the whole evaluation;
- `flop_limit_seconds`: the decoder's cost alone at the machine's measured matmul
  peak, 2 × (decoder multiply-adds) × 10⁶ ÷ peak, and `× limit` = seconds ÷ that;
- `peak_rss_mb`: the process's peak resident memory (`ru_maxrss`) after each
  evaluation, everything included (Python, TensorFlow, the model, the data);
- `mean_log_likelihood`: the estimate itself, in nats (both paths must agree within
  the Monte-Carlo noise);
- `profile`: where the default path's time goes, from one chunk of the default size
  (100 images × k samples) timed in parts, each its own `tf.function`, best of 10,
  scaled to the whole evaluation and given as × the FLOP limit: `decoder` (the
  decoder network: every matmul), `likelihood` (log p(x|z) from the decoder's output,
  the head's `log_prob_of_draws`, XLA-fused as the evaluation runs it: for Bernoulli,
  an exponential of every decoded pixel and a logarithm per group of pixels) and
  `rest` (the whole chunk's log-weights minus both: sampling, prior and posterior
  densities; the encoder runs once per batch, not per chunk).

Run (about 1 minute on 2 cores):
    python benchmarks/eval_throughput.py
    python benchmarks/eval_throughput.py --samples 5000 --images 200
    python benchmarks/eval_throughput.py --chunk-size 200   # larger chunks, more memory

A table goes to stderr; one JSON line goes to stdout.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from machine import best_seconds, environment, matmul_peak_gflops  # noqa: E402
from vae_zoo import data, evaluate, heads, objectives, recipes, runs  # noqa: E402



def log(*args):
    print(*args, file=sys.stderr, flush=True)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def decoder_flops(model):
    """2 × multiply-adds of one decoder pass (its Dense and Conv layers)."""
    macs = 0
    for layer in model.decoder._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Dense):
            macs += int(np.prod(layer.kernel.shape))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            raise ValueError("decoder_flops counts dense decoders only")
    return 2 * macs


def chunk_profile(model, x, num_samples, limit, chunk_size=None):
    """Seconds of the whole evaluation by part, scaled from one chunk (of `chunk_size`
    samples, default evaluate's)."""
    xb = tf.constant(x[:100])
    k = min(chunk_size or objectives.iw_chunk_size(len(xb), model.likelihood_params_per_example),
            num_samples)
    seed = tf.constant([0, 1])
    z = tf.reshape(model.encode(xb).sample(k, seed=seed), [k * len(xb), -1])
    params = model.decoder(z)
    weights_of = model.importance_weights_of(xb)  # q(z|x) once per batch, as evaluated
    with heads.fused_likelihoods():  # as `evaluate.log_likelihood` traces
        seconds = {
            "chunk": best_seconds(tf.function(lambda: weights_of(k, seed)), trials=10),
            "decoder": best_seconds(tf.function(lambda: model.decoder(z)), trials=10),
            "likelihood": best_seconds(tf.function(
                lambda: model.likelihood.log_prob_of_draws(model.likelihood(params), xb, k)),
                trials=10),
        }
    scale = num_samples * len(x) / (k * len(xb))  # chunks in the whole evaluation
    whole = {name: value * scale for name, value in seconds.items()}
    whole["rest"] = whole["chunk"] - whole["decoder"] - whole["likelihood"]
    return {"chunk_samples": int(k), "chunk_images": int(len(xb)),
            **{f"{name}_s": round(value, 2) for name, value in whole.items()},
            **{f"{name}_times_limit": round(value / limit, 2) for name, value in whole.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a .keras file or run folder (default: train the "
                        "mnist_dense recipe's model for --epochs epochs)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, help="importance samples per chunk "
                        "(default: evaluate's, about 4 M decoded elements per chunk)")
    args = parser.parse_args(argv)

    if args.model:
        model = runs.load_model(args.model)
    else:
        recipe = recipes.load("mnist_dense", [f"train.epochs={args.epochs}"])
        model = recipes.compile_model(recipes.build_model(recipe), recipe)
        model.fit(recipes.build_datasets(recipe)[0], epochs=args.epochs, verbose=0)
    x = data.load_embedded_mnist()["x_test"][: args.images]
    x = (np.random.default_rng(0).random(x.shape) < x / 255.0).astype("float32")[..., None]
    peak = matmul_peak_gflops()
    limit = decoder_flops(model) * args.samples * len(x) / (peak * 1e9)
    log(f"eval_throughput: {args.model or 'mnist_dense'}, K={args.samples}, {len(x)} images; matmul peak "
        f"{peak:.0f} GFLOP/s; FLOP limit {limit:.2f} s")

    results = []
    for name, jit in (("vae_zoo", False), ("xla", True)):
        options = dict(num_samples=args.samples, chunk_size=args.chunk_size, jit_compile=jit)
        evaluate.log_likelihood(model, x[:100], **options)
        start = time.perf_counter()
        ll = evaluate.log_likelihood(model, x, **options)
        seconds = time.perf_counter() - start
        results.append({
            "config": name,
            "jit_compile": jit,
            "seconds": round(seconds, 2),
            "images_per_s": round(len(x) / seconds, 1),
            "times_flop_limit": round(seconds / limit, 2),
            "peak_rss_mb": round(peak_rss_mb()),
            "mean_log_likelihood": round(float(ll.mean()), 3),
        })
        r = results[-1]
        log(f"{name:>8}: {r['seconds']:6.2f} s  {r['images_per_s']:7.1f} images/s  "
            f"{r['times_flop_limit']:5.2f}× FLOP limit  peak RSS {r['peak_rss_mb']} MB  "
            f"log p(x) {r['mean_log_likelihood']:.3f}")
    profile = chunk_profile(model, x, args.samples, limit, args.chunk_size)
    log("profile of the default path, × FLOP limit: " + ", ".join(
        f"{name} {profile[f'{name}_times_limit']:.2f}" for name in
        ("decoder", "likelihood", "rest", "chunk")) + f" (chunks of {profile['chunk_images']}"
        f" images × {profile['chunk_samples']} samples)")
    print(json.dumps({
        "benchmark": "eval_throughput",
        "model": args.model or f"mnist_dense recipe, trained {args.epochs} epochs",
        "num_samples": args.samples,
        "chunk_size": args.chunk_size,
        "images": int(len(x)),
        "matmul_peak_gflops": round(peak, 1),
        "decoder_flops_per_sample": decoder_flops(model),
        "flop_limit_seconds": round(limit, 2),
        "results": results,
        "profile": profile,
        "note": "peak_rss_mb is cumulative: the second row includes the first's peak",
        **environment(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
