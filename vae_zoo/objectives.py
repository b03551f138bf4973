"""Training objectives and their pieces, in nats, per example.

- `kl_divergence(q, p, z)`: analytic KL(q || p) when TFP has a registered closed form,
  otherwise the one-sample Monte-Carlo estimate log q(z) − log p(z) at the given z.
- `elbo_terms`: ELBO = E_q[log p(x|z)] − KL(q(z|x) || p(z)) with one reparameterized
  sample (Kingma & Welling 2014, eq. 7).
- `importance_weighted_bound`: log (1/K) Σ_k w_k from log-weights
  log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x); a lower bound on log p(x) that
  tightens as K grows (Burda et al. 2016). K = 1 is the ELBO.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


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


def elbo_terms(x, q, z, likelihood, prior, analytic_kl=True):
    """The ELBO and its two terms, each `[B]` in nats.

    Args:
        x: data `[B, *data_shape]`.
        q: q(z|x), batch `[B]`.
        z: one reparameterized sample of q, `[B, *latent_shape]`.
        likelihood: p(x|z) at that z, batch `[B]`, event `data_shape`.
        prior: p(z).

    Returns:
        dict with "reconstruction" (log p(x|z)), "kl" and "elbo" = reconstruction − kl.
    """
    reconstruction = likelihood.log_prob(x)
    kl = kl_divergence(q, prior, z, analytic=analytic_kl)
    return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}


def importance_weighted_bound(log_weights, axis=0):
    """log (1/K) Σ_k exp(log_weights) along `axis` (the K samples), stably."""
    k = tf.cast(tf.shape(log_weights)[axis], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=axis) - tf.math.log(k)


def bits_per_dim(nats, num_dims):
    """Convert a log-likelihood in nats to bits per dimension (negated: lower is better)."""
    return -nats / (num_dims * math.log(2.0))
