"""Training objectives and their pieces, in nats, per example: all objective maths.

Pure functions of distributions and tensors (no models), so every family and every
driver computes a bound the same way (docs/theory.md):

- `kl_divergence(q, p, z)`: analytic KL(q || p) when TFP has a registered closed form,
  otherwise the one-sample Monte-Carlo estimate log q(z) − log p(z) at the given z.
- `elbo_terms`, `beta_elbo_loss`: ELBO = E_q[log p(x|z)] − KL(q(z|x) || p(z)) with one
  reparameterized sample (Kingma & Welling 2014, eq. 7) and the loss −(rec − β·KL).
- `log_importance_weights`, `importance_metrics`: the weights of the importance-weighted
  objectives (Burda et al. 2016) with β inside each, and the metrics reported beside
  them.
- `miwae_bound`, `ciwae_bound`, `piwae_surrogate`: the multiply, combination and
  partially importance-weighted objectives of Rainforth et al. 2018 from log-weights.
- `capacity_loss`: −log p(x|z) + γ |KL − C|, the controlled-capacity loss (Burgess et al.
  2018); C comes from `vae_zoo.schedules.CapacitySchedule`.
- `score_function_surrogate`, `zero_with_gradient`, `relaxed_surrogate`: the
  REINFORCE and Gumbel-softmax surrogates of discrete latents.
- `permute_dims`, `factor_vae_loss`, `discriminator_loss`: FactorVAE's total-correlation
  penalty estimated by a discriminator of q(z) against its dimension-wise shuffle.
- `importance_weighted_bound`: log (1/K) Σ_k w_k from log-weights; K = 1 is the ELBO.
- `chunked_iw_bound` (one batch, graph-safe) and `iw_log_likelihood` (a data set):
  the same bound for large K, K samples taken a chunk at a time so memory is that of a
  chunk; `vae_zoo.evaluate` and the serving signatures both use them.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

# Decoder outputs (chunk × batch × likelihood parameters per example) per chunk: bounds
# the peak memory of a chunked importance-weighted bound.
DEFAULT_MAX_ELEMENTS = 1 << 22


def has_analytic_kl(q, p) -> bool:
    """Whether TFP registers a closed-form KL(q || p) for these distribution types."""
    try:
        tfd.kl_divergence(q, p)
    except NotImplementedError:
        return False
    return True


def kl_divergence(q, p, z=None, analytic=True):
    """KL(q || p) per example, `[B]` (batch shape of q broadcast with p).

    Args:
        q, p: distributions with the same event shape.
        z: a sample from q, `[B, *event]`, used for the Monte-Carlo fallback.
        analytic: use the closed form when TFP registers one.
    """
    if analytic:
        try:
            return tfd.kl_divergence(q, p)
        except NotImplementedError:
            pass
    if z is None:
        raise ValueError("Monte-Carlo KL needs a sample z from q")
    return q.log_prob(z) - p.log_prob(z)


def elbo_terms(reconstruction, layers, analytic_kl=True):
    """The ELBO and its two terms, each `[B]` in nats.

    Args:
        reconstruction: log p(x|z) at one reparameterized sample z ~ q(z|x), `[B]`.
        layers: `((q_l, p_l, z_l), ...)`: the KL term is Σ_l KL(q_l || p_l), each at
            its sample z_l for the Monte-Carlo estimate; one layer `(q, prior, z)`
            for a single latent.
        analytic_kl: the closed-form KL where TFP registers one.

    Returns:
        dict with "reconstruction", "kl" and "elbo" = reconstruction − kl; with
        several layers also each layer's KL, "kl_1" ... "kl_L" (first layer first).
    """
    kls = [kl_divergence(q, p, z, analytic=analytic_kl) for q, p, z in layers]
    kl = kls[0] if len(kls) == 1 else tf.add_n(kls)
    terms = {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
    if len(kls) > 1:
        terms.update({f"kl_{i + 1}": kl_i for i, kl_i in enumerate(kls)})
    return terms


def beta_elbo_loss(reconstruction, kl, beta):
    """−(log p(x|z) − β · KL), `[B]`: the loss of the β-weighted ELBO."""
    return -(reconstruction - beta * kl)


def importance_weighted_bound(log_weights, axis=0):
    """log (1/K) Σ_k exp(log_weights) along `axis` (the K samples), stably."""
    k = tf.cast(tf.shape(log_weights)[axis], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=axis) - tf.math.log(k)


def log_importance_weights(log_likelihood, log_prior, log_posterior, beta=1.0):
    """log w_k = log p(x|z_k) − β (log q(z_k|x) − log p(z_k)), the shape of its inputs.

    At β = 1 these are log p(x, z_k) / q(z_k|x), the log-weights of every
    importance-weighted bound below; β ≠ 1 weights the prior-to-posterior ratio.
    """
    return log_likelihood - beta * (log_posterior - log_prior)


def importance_metrics(log_likelihood, log_prior, log_posterior):
    """What every importance-weighted objective reports, from `[K, B]` samples.

    Returns:
        dict of `[B]`: "iw_bound" (IWAE over the K samples, β = 1), and "elbo",
        "reconstruction", "kl" averaged over the K samples (Monte-Carlo KL).
    """
    kl = log_posterior - log_prior  # [K, B]
    return {
        "iw_bound": importance_weighted_bound(log_likelihood - kl),
        "elbo": tf.reduce_mean(log_likelihood - kl, axis=0),
        "reconstruction": tf.reduce_mean(log_likelihood, axis=0),
        "kl": tf.reduce_mean(kl, axis=0),
    }


def miwae_bound(log_weights, num_bounds):
    """MIWAE(M, K): the mean of M importance-weighted bounds of K samples each.

    Rainforth et al. 2018 (arXiv:1802.04537): for a fixed budget of M·K samples, fewer
    samples per bound (smaller K) give the encoder a gradient with a higher
    signal-to-noise ratio. M = 1 is IWAE(K); K = 1 is the ELBO averaged over M samples.

    Args:
        log_weights: `[M·K, B]`; bound m takes samples m·K to m·K + K − 1.
        num_bounds: M (a Python int dividing the number of samples).

    Returns:
        `[B]`.
    """
    shape = tf.shape(log_weights)
    groups = tf.reshape(log_weights, tf.concat([[num_bounds, shape[0] // num_bounds], shape[1:]], 0))
    return tf.reduce_mean(importance_weighted_bound(groups, axis=1), axis=0)  # [B]


def ciwae_bound(log_weights, beta):
    """CIWAE: β · ELBO + (1 − β) · IWAE(K), both from the same K samples, `[B]`.

    Rainforth et al. 2018 (arXiv:1802.04537); the ELBO is the mean of the K
    log-weights. β = 1 is that ELBO, β = 0 is IWAE(K). (This β is CIWAE's, not the
    model's KL weight.)

    Args:
        log_weights: `[K, B]`.
        beta: float in [0, 1].
    """
    return beta * tf.reduce_mean(log_weights, axis=0) + (1.0 - beta) * importance_weighted_bound(
        log_weights
    )


def piwae_surrogate(log_weights, generative_log_weights, num_bounds):
    """PIWAE's surrogate (Rainforth et al. 2018, arXiv:1802.04537), `[B]`.

    PIWAE trains the encoder φ on MIWAE(M, K) and the generative model θ (decoder,
    likelihood, prior) on IWAE(M·K), from the same M·K samples. One gradient of one
    scalar does both when
    `S = MIWAE(w) − MIWAE(w') + IWAE(w')`, where w are the log-weights and w' the same
    values computed with the samples z and log q(z|x) held fixed (`tf.stop_gradient`):
    w' depends on θ only, and on θ exactly as w does (θ enters only through
    log p_θ(x|z) + log p_θ(z) at the same z). So ∇_φ S = ∇_φ MIWAE(w) (the last two
    terms have no φ path), ∇_θ S = ∇_θ MIWAE(w) − ∇_θ MIWAE(w') + ∇_θ IWAE(w') =
    ∇_θ IWAE(w), and the value of S is IWAE(M·K).

    Args:
        log_weights: `[M·K, B]` log-weights with every gradient path.
        generative_log_weights: `[M·K, B]` the same values with z and log q(z|x) held
            fixed (computed from `tf.stop_gradient(z)`).
        num_bounds: M.
    """
    return (miwae_bound(log_weights, num_bounds) - miwae_bound(generative_log_weights, num_bounds)
            + importance_weighted_bound(generative_log_weights))


def capacity_loss(reconstruction, kl, capacity, gamma):
    """−log p(x|z) + γ |KL − C|, `[B]`: the controlled-capacity loss of Burgess et al.
    2018 (arXiv:1804.03599), per example, with C the current capacity in nats."""
    return -reconstruction + gamma * tf.abs(kl - capacity)


def zero_with_gradient(t):
    """`t − stop_gradient(t)`: value 0, gradient that of `t`."""
    return t - tf.stop_gradient(t)


def score_function_surrogate(loss, log_q, signal, baseline):
    """`loss` plus a term of value 0 whose gradient is −(f − b) ∇_φ log q(z|x).

    The score-function (REINFORCE) estimator for a z with no reparameterization:
    unbiased whenever the baseline b does not depend on z, since E_q[∇ log q] = 0
    (Williams 1992; docs/theory.md, "Score-function and relaxed gradients").

    Args:
        loss: `[B]`, whose other gradients (decoder, analytic KL) are kept.
        log_q: `[B]` log q(z|x) at the sample z.
        signal: `[B]` learning signal f (e.g. log p(x|z)); no gradient flows through it.
        baseline: `[B]` baseline b; no gradient flows through it here.
    """
    advantage = tf.stop_gradient(signal - baseline)
    return loss - advantage * zero_with_gradient(log_q)


def relaxed_surrogate(relaxed_reconstruction, kl, beta):
    """−(log p(x|z̃) − β · KL): the Gumbel-softmax loss at a relaxed sample z̃ (biased
    for the ELBO; Jang et al. 2017, Maddison et al. 2017)."""
    return beta_elbo_loss(relaxed_reconstruction, kl, beta)


def permute_dims(z, seed):
    """Each latent dimension shuffled on its own across the batch: `[B, D] -> [B, D]`.

    Column j of the result is column j of `z` under its own uniformly random
    permutation π_j of the B rows, so every dimension keeps its values (its marginal)
    while the dimensions of a row come from different examples: samples of
    q̄(z) = Π_j q(z_j) when the rows are samples of q(z) (Kim & Mnih 2018,
    arXiv:1802.05983, Algorithm 1). Stateless: the same seed gives the same shuffle.

    Args:
        z: `[B, D]` samples.
        seed: a `[2]` int32 stateless seed.
    """
    keys = tf.random.stateless_uniform(tf.shape(z), seed)  # [B, D]
    rows = tf.transpose(tf.argsort(keys, axis=0))  # [D, B]: π_j, uniform per dimension
    return tf.transpose(tf.gather(tf.transpose(z), rows, batch_dims=1))  # z[π_j(i), j]


def factor_vae_loss(reconstruction, kl, tc, beta, gamma):
    """−(log p(x|z) − β · KL) + γ · TC, `[B]`: the FactorVAE loss (Kim & Mnih 2018).

    Args:
        reconstruction, kl: `[B]` ELBO terms.
        tc: `[B]` the discriminator's logit at z ~ q(z|x), log D(z)/(1 − D(z)), whose
            mean over the batch estimates the total correlation KL(q(z) || Π_j q(z_j)).
        beta, gamma: the KL's and the total correlation's weights.
    """
    return beta_elbo_loss(reconstruction, kl, beta) + gamma * tc


def discriminator_loss(logits, permuted_logits):
    """The discriminator's cross-entropy, `[B]`: −½ [log D(z) + log(1 − D(z̃))].

    D(z) = sigmoid(logit) is the probability that z is a sample of q(z) rather than of
    the dimension-wise shuffle q̄(z); at its optimum logit = log q(z)/q̄(z).

    Args:
        logits: `[B]` logits at samples z of q(z).
        permuted_logits: `[B]` logits at shuffled samples z̃ (`permute_dims`).
    """
    return 0.5 * (tf.nn.softplus(-logits) + tf.nn.softplus(permuted_logits))


def bits_per_dim(nats, num_dims):
    """Convert a log-likelihood in nats to bits per dimension (negated: lower is better)."""
    return -nats / (num_dims * math.log(2.0))


# ----------------------------------------------------------------- chunked IW bound


def iw_chunk_size(batch_size, elements_per_example, max_elements=DEFAULT_MAX_ELEMENTS):
    """Importance samples per chunk so that a chunk decodes at most `max_elements`
    likelihood parameters (at least 1). Works on ints and on int32 tensors."""
    if isinstance(batch_size, int):
        return max(1, max_elements // (max(batch_size, 1) * elements_per_example))
    return tf.maximum(1, max_elements // (tf.maximum(batch_size, 1) * elements_per_example))


def chunked_iw_bound(log_weights_fn, batch_size, num_samples, chunk_size, seed, first_chunk=0):
    """log (1/K) Σ_k w_k for one batch, K = `num_samples` taken `chunk_size` at a time.

    A running log-sum-exp over the chunks: eagerly a Python loop over chunks (each of
    static size); inside a `tf.function` (a serving signature) one `tf.while_loop`.

    Args:
        log_weights_fn: `fn(k, seed_pair) -> [k, B]` log-weights of k fresh samples.
        batch_size: B (int or int32 scalar tensor).
        num_samples: K (int or int32 scalar tensor), >= 1.
        chunk_size: samples per chunk (int or int32 scalar tensor), >= 1.
        seed: int (or int32 scalar); chunk i draws with the seed pair
            `(seed, first_chunk + i)`.

    Returns:
        `[B]` float32.
    """
    if tf.executing_eagerly() and isinstance(num_samples, int) and isinstance(chunk_size, int):
        # The same loop in Python: each chunk's size is a Python int, so a compiled
        # (XLA) `log_weights_fn` sees static shapes.
        running = None
        for i, start in enumerate(range(0, num_samples, chunk_size)):
            size = min(chunk_size, num_samples - start)
            weights = log_weights_fn(size, tf.constant([int(seed), first_chunk + i], tf.int32))
            lse = tf.reduce_logsumexp(weights, 0)
            running = lse if running is None else tf.reduce_logsumexp(tf.stack([running, lse]), 0)
        return running - math.log(num_samples)
    k = tf.convert_to_tensor(num_samples, tf.int32)
    chunk = tf.minimum(tf.convert_to_tensor(chunk_size, tf.int32), k)
    seed = tf.convert_to_tensor(seed, tf.int32)

    def body(i, running):
        size = tf.minimum(chunk, k - i * chunk)
        weights = log_weights_fn(size, tf.stack([seed, first_chunk + i]))
        total = tf.reduce_logsumexp(tf.stack([running, tf.reduce_logsumexp(weights, 0)]), 0)
        return i + 1, total

    _, total = tf.while_loop(
        lambda i, _: i * chunk < k,
        body,
        (tf.constant(0), tf.fill([batch_size], tf.constant(-np.inf, tf.float32))),
        parallel_iterations=1,  # one chunk in memory at a time
    )
    return total - tf.cast(tf.math.log(tf.cast(k, tf.float64)), tf.float32)


def batch_bound_of(weights_of):
    """`fn(xb, yb, num_samples, chunk_size, seed, first_chunk) -> [B]`: one batch's
    `chunked_iw_bound` with the log-weights `weights_of(xb, yb)`, a
    `fn(k, seed_pair) -> [k, B]` (a model's `importance_weights_of`, or
    `per_batch(log_weights_fn)`).

    Called eagerly with Python counts, its chunks run in a Python loop; wrapped in a
    `tf.function` and given int32 tensors, in one `tf.while_loop`.
    """

    def batch_bound(xb, yb, num_samples, chunk_size, seed, first_chunk):
        size = xb.shape[0] if xb.shape[0] is not None else tf.shape(xb)[0]
        return chunked_iw_bound(weights_of(xb, yb), size, num_samples, chunk_size, seed,
                                first_chunk=first_chunk)

    return batch_bound


def per_batch(log_weights_fn):
    """`weights_of` (see `batch_bound_of`) from `log_weights_fn(x, k, y=..., seed=...)`
    (a model's `log_importance_weights`, possibly compiled): each chunk computes
    everything from x."""
    return lambda xb, yb: lambda k, seed_pair: log_weights_fn(xb, k, y=yb, seed=seed_pair)


def iw_log_likelihood(log_weights_fn, x, num_samples, elements_per_example, y=None,
                      batch_size=None, chunk_size=None, seed=0, batch_bound=None):
    """Per-example importance-weighted bound on log p(x) over a data set, numpy `[N]`.

    Batches of `batch_size` examples (default min(N, 100)); each batch's K samples in
    chunks (default: `iw_chunk_size`). Seeds: batch b, chunk i draws with
    `(seed, b · chunks_per_batch + i)`, so one batch matches `chunked_iw_bound`.

    Args:
        log_weights_fn: `fn(x, k, y=..., seed=...) -> [k, B]` (a model's
            `log_importance_weights`, possibly compiled).
        x: numpy `[N, ...]` float32; y: conditioning `[N, ...]` or None.
        elements_per_example: likelihood parameters decoded per example.
        batch_bound: what computes one batch (default
            `batch_bound_of(per_batch(log_weights_fn))` called eagerly); e.g. a
            `tf.function` around it, whose chunks then run in one `tf.while_loop`
            instead of a Python loop with eager steps between them.
    """
    batch_size = int(batch_size or min(len(x), 100))
    if chunk_size is None:
        chunk_size = iw_chunk_size(batch_size, elements_per_example)
    chunk_size = int(min(chunk_size, num_samples))
    chunks = math.ceil(num_samples / chunk_size)
    batch_bound = batch_bound or batch_bound_of(per_batch(log_weights_fn))
    results = []
    for b, start in enumerate(range(0, len(x), batch_size)):
        xb = tf.constant(x[start:start + batch_size])
        yb = None if y is None else y[start:start + batch_size]
        results.append(batch_bound(xb, yb, num_samples, chunk_size, seed, b * chunks).numpy())
    return np.concatenate(results)
