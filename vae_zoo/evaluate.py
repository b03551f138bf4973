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

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import objectives
from vae_zoo.heads import fused_likelihoods
from vae_zoo.models.conditional import label_dtype_problem, not_class_numbers
from vae_zoo.objectives import DEFAULT_MAX_ELEMENTS  # noqa: F401  (chunk memory bound)

tfd = tfp.distributions


def _compiled(model, name, fn, jit_compile=False):
    """One `tf.function` per model, evaluation routine and XLA setting, traced once per
    shape."""
    cache = model.__dict__.setdefault("_vae_zoo_eval_fns", {})
    key = (name, bool(jit_compile))
    if key not in cache:
        cache[key] = tf.function(fn, reduce_retracing=True, jit_compile=bool(jit_compile))
    return cache[key]


def _batches(x, batch_size):
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def _check_inputs(model, x, y=None):
    x = np.asarray(x)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"no data to evaluate (got an array of shape {x.shape})")
    if x.shape[1:] != tuple(model.data_shape):
        raise ValueError(
            f"data shape {x.shape[1:]} does not match the model's input shape "
            f"{tuple(model.data_shape)}"
        )
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
            or x.dtype == np.bool_):
        raise ValueError(f"data must be numbers (float, or uint8 in 0..255), got dtype {x.dtype}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("data contains NaN or infinite values")
    problem = model.likelihood.support_problem(x)
    if problem:
        raise ValueError(f"data do not fit the model's likelihood: {problem}")
    if model.conditional:
        model.check_condition(y, len(x))  # before anything is traced: one-line errors
    elif y is not None and len(np.atleast_1d(y)) != len(x):
        raise ValueError(f"{len(np.atleast_1d(y))} labels for {len(x)} examples")
    return x


def _count(name, value, default=None):
    """`value` as an int >= 1 (`default` when None); TypeError or ValueError naming
    `name` otherwise."""
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def label_out_of_range(model, y):
    """The first entry of `y` that is not a class number of a class-conditional model
    (NaN, fractional, outside `[0, num_classes)`), or None (also for models without
    `num_classes`). ValueError for labels that are not numbers."""
    num_classes = getattr(model, "num_classes", None)
    y = np.asarray(y)
    if num_classes is None or not y.size:
        return None
    problem = label_dtype_problem(y.dtype)
    if problem:
        raise ValueError(problem)
    bad = y[np.asarray(not_class_numbers(y, num_classes))]
    return bad[0] if bad.size else None


def log_likelihood(model, x, num_samples=1000, batch_size=None, chunk_size=None, seed=0, y=None,
                   jit_compile=False, verbose=0):
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
        jit_compile: compile the log-weights of a chunk with XLA. Off by default:
            a chunk is a few large matmuls, which TensorFlow's own (oneDNN) kernels
            run faster on CPU than XLA's (`benchmarks/eval_throughput.py`). Either
            way a likelihood head that can (Bernoulli) scores a chunk's draws as one
            XLA-compiled function (`heads.fused_likelihoods`).
        verbose: 1 shows a progress bar with the time left (`keras.utils.Progbar`,
            counting examples, advanced after each batch), 2 one line when done, 0
            nothing.

    Returns:
        numpy array `[N]`: log (1/K) Σ_k w_k for each example.
    """
    num_samples = _count("num_samples", num_samples)
    x = _check_inputs(model, x, y)
    batch_size = _count("batch_size", batch_size, min(len(x), 100))
    chunk_size = None if chunk_size is None else _count("chunk_size", chunk_size)
    if jit_compile:
        # XLA needs static shapes: a batch's chunks run in a Python loop, each chunk a
        # compiled call of its own size.
        batch_bound = objectives.batch_bound_of(objectives.per_batch(
            _compiled(model, "log_weights", model.log_importance_weights, True)))
    else:
        batch_bound = _graph_batch_bound(model)
    if verbose:
        batch_bound = _counted(batch_bound, len(x), num_samples, verbose)
    with fused_likelihoods():  # traced here: the likelihood's element-wise work fused by XLA
        return objectives.iw_log_likelihood(
            model.log_importance_weights, x, num_samples, model.likelihood_params_per_example,
            y=y, batch_size=batch_size, chunk_size=chunk_size, seed=seed,
            batch_bound=batch_bound,
        )


def _graph_batch_bound(model):
    """One batch's bound as one `tf.function` call (`objectives.batch_bound_of`, cached
    per model): its chunks run in a `tf.while_loop`, without eager steps between them.

    Counts and seeds are passed as int32 tensors, so the function is traced once per
    batch shape, not once per K or seed. Same draws, same numbers as the Python loop.
    """
    compiled = _compiled(model, "iw_batch", objectives.batch_bound_of(model.importance_weights_of))

    def batch_bound(xb, yb, k, chunk, seed, first_chunk):
        counts = (tf.constant(int(v), tf.int32) for v in (k, chunk, seed, first_chunk))
        return compiled(xb, yb, *counts)

    return batch_bound


def _counted(batch_bound, examples, num_samples, verbose):
    """`batch_bound` advancing a progress bar over `examples` by each batch's size."""
    print(f"importance-weighted log-likelihood, K = {num_samples}:", flush=True)
    bar = keras.utils.Progbar(examples, verbose=verbose, unit_name="example")
    done = 0

    def counted(xb, *args):
        nonlocal done
        bound = batch_bound(xb, *args)
        done += int(xb.shape[0])
        bar.update(done)
        return bound

    return counted


def elbo(model, x, batch_size=None, seed=0, y=None):
    """Per-example ELBO terms on `x` (one posterior sample): dict of `[N]` numpy arrays."""
    x = _check_inputs(model, x, y)
    batch_size = _count("batch_size", batch_size, min(len(x), 500))
    elbo_fn = _compiled(model, "elbo", model.elbo)
    parts = []
    ys = _batches(y, batch_size) if y is not None else itertools.repeat(None)
    for i, (xb, yb) in enumerate(zip(_batches(x, batch_size), ys)):
        parts.append(elbo_fn(tf.constant(xb), y=yb, seed=tf.constant([seed, i], tf.int32)))
    return {key: np.concatenate([p[key].numpy() for p in parts]) for key in parts[0]}


def _posterior_batch(model, x, y=None):
    """E_q[z|x], stddev of q and the per-dimension KL (or None) for one batch."""
    q = model.encode(x, y)
    p = model.prior_distribution(y)
    mean = tf.reshape(q.mean(), [tf.shape(x)[0], -1])  # [B, d]
    stddev = tf.reshape(q.stddev(), [tf.shape(x)[0], -1])  # [B, d]
    kl = None
    if isinstance(q, tfd.Independent) and isinstance(p, tfd.Independent):
        if isinstance(q.distribution, tfd.Normal) and isinstance(p.distribution, tfd.Normal):
            kl = tf.reshape(tfd.kl_divergence(q.distribution, p.distribution), [tf.shape(x)[0], -1])
    return mean, stddev, kl


def posterior_statistics(model, x, y=None, batch_size=500, threshold=0.01):
    """Per-dimension statistics of the posterior over a data set.

    Returns a dict:
        "mean": `[N, d]` E_q[z|x] (latents flattened);
        "stddev": `[N, d]` posterior standard deviations;
        "activity": `[d]` Var_x(E_q[z_d|x]) (Burda et al. 2016);
        "active_units": number of dimensions with activity > `threshold` (0.01);
        "kl_per_dim": `[d]` mean KL per latent dimension in nats, when q and p both
            factorize over dimensions (diagonal Gaussians), else None.
    """
    x = _check_inputs(model, x, y)
    batch_size = _count("batch_size", batch_size)
    means, stddevs, kls = [], [], []
    ys = _batches(y, batch_size) if y is not None else itertools.repeat(None)
    for xb, yb in zip(_batches(x, batch_size), ys):
        mean, stddev, kl = _posterior_batch(model, tf.constant(xb), yb)
        means.append(mean.numpy())
        stddevs.append(stddev.numpy())
        kls.append(None if kl is None else kl.numpy())
    mean = np.concatenate(means)
    activity = mean.var(axis=0)
    return {
        "mean": mean,
        "stddev": np.concatenate(stddevs),
        "activity": activity,
        "active_units": int((activity > threshold).sum()),
        "kl_per_dim": None if kls[0] is None else np.concatenate(kls).mean(axis=0),
    }


def summarize(model, x, num_samples=1000, seed=0, y=None, verbose=0):
    """Test ELBO and its terms, IW log-likelihood, bits/dim, active units, KL per dim.

    `verbose` shows the progress of the IW log-likelihood, the long part
    (`log_likelihood`). Returns a dict of floats (and the list "kl_per_dim" when
    defined).
    """
    terms = elbo(model, x, seed=seed, y=y)
    ll = log_likelihood(model, x, num_samples=num_samples, seed=seed, y=y, verbose=verbose)
    stats = posterior_statistics(model, x, y=y)
    dims = math.prod(model.data_shape)
    kl_per_dim = stats["kl_per_dim"]
    return {
        "examples": int(len(ll)),
        "num_samples": int(num_samples),
        "elbo": float(terms["elbo"].mean()),
        "reconstruction": float(terms["reconstruction"].mean()),
        "kl": float(terms["kl"].mean()),
        "log_likelihood": float(ll.mean()),
        "bits_per_dim": float(objectives.bits_per_dim(ll.mean(), dims)),
        "latent_dim": int(stats["activity"].shape[0]),
        "active_units": stats["active_units"],
        "kl_per_dim": None if kl_per_dim is None else [round(float(v), 4) for v in kl_per_dim],
    }


# Failure modes of docs/theory.md ("Failure modes and β"), with the remedy each calls for.
POSTERIOR_COLLAPSE = "posterior collapse"
UNCOMPRESSED_CODE = "uncompressed code"
REMEDIES = {
    POSTERIOR_COLLAPSE: "the decoder ignores z; lower beta (or anneal it with KLAnnealing)",
    UNCOMPRESSED_CODE: "q(z|x) lies far from p(z), so prior samples are poor; raise beta",
}


def diagnose(model, x, y=None, collapse_fraction=0.1, collapse_kl=0.5, marginal_kl_max=2.0,
             stddev_min=0.1):
    """Check a model for the two failure modes of docs/theory.md.

    - Posterior collapse (ignored code): at most `collapse_fraction` of the latent
      dimensions are active, or the mean KL is below `collapse_kl` nats: q(z|x) ≈ p(z).
    - Uncompressed code: each q(z|x) is a near-point (median posterior σ over active
      dimensions below `stddev_min`), or the aggregate posterior q(z) = E_x q(z|x)
      sits far from the prior (KL from a Gaussian fitted to q(z), per dimension, to
      N(0, 1) above `marginal_kl_max` nats on average over active dimensions). Either
      way z ~ p(z) lands where the decoder was never trained, so prior samples are poor.

    Defaults were set on dense MNIST models (latent 8–16): healthy β = 1 models show
    median σ ≈ 0.4–0.5 and ≈ 0.01–0.5 nats/dim, β = 0 shows σ ≈ 0.03 and ≈ 17–23
    nats/dim, β = 20 shows KL ≈ 0.1 nats.

    Returns:
        dict with "kl", "active_units", "latent_dim", "marginal_kl_per_dim",
        "median_stddev" (posterior σ over active dimensions), "kl_per_dim" (or None)
        and "mode": None, POSTERIOR_COLLAPSE or UNCOMPRESSED_CODE.
    """
    stats = posterior_statistics(model, x, y=y)
    kl = float(elbo(model, x, y=y)["kl"].mean())
    mean, stddev = stats["mean"], stats["stddev"]
    active = stats["activity"] > 0.01
    aggregate_mean = mean.mean(axis=0)
    aggregate_var = mean.var(axis=0) + (stddev**2).mean(axis=0)
    marginal_kl = 0.5 * (aggregate_var + aggregate_mean**2 - 1.0 - np.log(aggregate_var))
    latent_dim = int(active.shape[0])
    result = {
        "kl": kl,
        "active_units": stats["active_units"],
        "latent_dim": latent_dim,
        "marginal_kl_per_dim": float(marginal_kl[active].mean()) if active.any() else 0.0,
        "median_stddev": float(np.median(stddev[:, active])) if active.any() else float("nan"),
        "kl_per_dim": stats["kl_per_dim"],
        "mode": None,
    }
    if stats["active_units"] <= collapse_fraction * latent_dim or kl < collapse_kl:
        result["mode"] = POSTERIOR_COLLAPSE
    elif result["median_stddev"] < stddev_min or result["marginal_kl_per_dim"] > marginal_kl_max:
        result["mode"] = UNCOMPRESSED_CODE
    return result
