"""Evaluation: importance-weighted log-likelihood and ELBO on held-out data.

`log_likelihood(model, x, num_samples=K)` returns, per example, the importance-weighted
bound log (1/K) Σ_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al. 2016): a lower
bound on log p(x) that tightens as K grows and equals the ELBO in expectation at K = 1.
The K samples are processed in chunks with a running log-sum-exp, so memory is bounded
by the chunk, not by K: K = 1000 or 5000 on MNIST runs in a few hundred MB.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import tensorflow as tf

from vae_zoo import objectives

# Decoded elements (chunk × batch × prod(input_shape)) per chunk: bounds peak memory.
DEFAULT_MAX_ELEMENTS = 1 << 22


def _compiled(model, name, fn):
    """One `tf.function` per model and evaluation routine, traced once per shape."""
    cache = model.__dict__.setdefault("_vae_zoo_eval_fns", {})
    if name not in cache:
        cache[name] = tf.function(fn, reduce_retracing=True)
    return cache[name]


def _batches(x, batch_size):
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def _check_inputs(model, x):
    x = np.asarray(x)
    if x.shape[1:] != tuple(model.data_shape):
        raise ValueError(
            f"data shape {x.shape[1:]} does not match the model's input shape "
            f"{tuple(model.data_shape)}"
        )
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("data contains NaN or infinite values")
    return x


def log_likelihood(model, x, num_samples=1000, batch_size=None, chunk_size=None, seed=0, y=None):
    """Per-example importance-weighted bound on log p(x), in nats.

    Args:
        model: a `vae_zoo.models.VAE`.
        x: array `[N, *input_shape]` (float in the model's data range, or uint8 / 255).
        num_samples: K, importance samples per example.
        batch_size: examples per pass (default: min(N, 100)).
        chunk_size: importance samples per pass (default: as many as fit in
            `DEFAULT_MAX_ELEMENTS` decoded elements).
        seed: int, makes the estimate reproducible.
        y: conditioning array `[N, ...]` for conditional models.

    Returns:
        numpy array `[N]`: log (1/K) Σ_k w_k for each example.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    x = _check_inputs(model, x)
    batch_size = int(batch_size or min(len(x), 100))
    elements = math.prod(model.data_shape)
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_MAX_ELEMENTS // (batch_size * elements))
    chunk_size = int(min(chunk_size, num_samples))
    log_weights_fn = _compiled(model, "log_weights", model.log_importance_weights)

    results = []
    call = 0
    ys = _batches(y, batch_size) if y is not None else itertools.repeat(None)
    for xb, yb in zip(_batches(x, batch_size), ys):
        xb = tf.constant(xb)
        running = None  # logsumexp of the log-weights seen so far, [B]
        for start in range(0, num_samples, chunk_size):
            k = min(chunk_size, num_samples - start)
            seed_pair = tf.constant([seed, call], tf.int32)
            call += 1
            chunk = tf.reduce_logsumexp(log_weights_fn(xb, k, y=yb, seed=seed_pair), axis=0)
            running = chunk if running is None else tf.reduce_logsumexp(
                tf.stack([running, chunk]), axis=0
            )
        results.append((running - math.log(num_samples)).numpy())
    return np.concatenate(results)


def elbo(model, x, batch_size=None, seed=0, y=None):
    """Per-example ELBO terms on `x` (one posterior sample): dict of `[N]` numpy arrays."""
    x = _check_inputs(model, x)
    batch_size = int(batch_size or min(len(x), 500))
    elbo_fn = _compiled(model, "elbo", model.elbo)
    parts = []
    ys = _batches(y, batch_size) if y is not None else itertools.repeat(None)
    for i, (xb, yb) in enumerate(zip(_batches(x, batch_size), ys)):
        parts.append(elbo_fn(tf.constant(xb), y=yb, seed=tf.constant([seed, i], tf.int32)))
    return {key: np.concatenate([p[key].numpy() for p in parts]) for key in parts[0]}


def summarize(model, x, num_samples=1000, seed=0, y=None):
    """Mean test ELBO, its terms, IW log-likelihood and bits/dim: a dict of floats."""
    terms = elbo(model, x, seed=seed, y=y)
    ll = log_likelihood(model, x, num_samples=num_samples, seed=seed, y=y)
    dims = math.prod(model.data_shape)
    return {
        "examples": int(len(ll)),
        "num_samples": int(num_samples),
        "elbo": float(terms["elbo"].mean()),
        "reconstruction": float(terms["reconstruction"].mean()),
        "kl": float(terms["kl"].mean()),
        "log_likelihood": float(ll.mean()),
        "bits_per_dim": float(objectives.bits_per_dim(ll.mean(), dims)),
    }
