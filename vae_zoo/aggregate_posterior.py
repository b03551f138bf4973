"""Penalties on the aggregate posterior q(z) = (1/N) Σ_n q(z|x_n), estimated on a minibatch.

Pure functions of a batch's posterior q(z|x) (batch `[B]`, any Gaussian with event
`latent_shape`, flattened to D dimensions where needed) and its samples, in nats:

- `total_correlation_terms`: the KL term split into index-code mutual information,
  total correlation and dimension-wise KL by minibatch-weighted sampling (β-TC-VAE,
  Chen et al. 2018, arXiv:1802.04942);
- `dip_covariance`, `dip_penalty`: the covariance of the encoder means (DIP-VAE-I) or of
  q(z) (DIP-VAE-II) pushed towards the identity (Kumar et al. 2018, arXiv:1711.00848);
- `mmd_u_statistic` with `rbf_kernel` and `imq_kernel`: the unbiased maximum mean
  discrepancy between samples of q(z) and of p(z) (Gretton et al. 2012; InfoVAE, Zhao
  et al. 2017, arXiv:1706.02262; WAE, Tolstikhin et al. 2018, arXiv:1711.01558).

The batch-level estimates (`dip_penalty`, `mmd_u_statistic`) are scalars: a training
objective adds them to every example's loss, so the batch mean of the loss carries them
once (under a `tf.distribute` strategy, each replica estimates them on its own examples).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def _flatten_event(t, event_rank):
    """`[..., *event]` → `[..., D]`."""
    if event_rank == 1:
        return t
    shape = tf.shape(t)
    return tf.reshape(t, tf.concat([shape[:-event_rank], [-1]], 0))


def marginals(q):
    """The one-dimensional marginals of a Gaussian q(z|x): `tfd.Normal`, batch `[B, D]`.

    For a diagonal or full-covariance Gaussian the marginal of dimension d is
    N(μ_d, Σ_dd), whatever the correlations.
    """
    rank = len(q.event_shape)
    return tfd.Normal(_flatten_event(q.mean(), rank), _flatten_event(q.stddev(), rank))


def total_correlation_terms(q, z, log_prior, dataset_size):
    """The KL term of the ELBO split three ways (Chen et al. 2018, arXiv:1802.04942).

    With log q(z) and log Π_d q(z_d) estimated by minibatch-weighted sampling over the
    batch of M examples from a data set of N,
    `log q(z_i) ≈ log Σ_j q(z_i|x_j) − log(N·M)` (and the same per dimension d), the
    per-example terms are

    - "mutual_info": log q(z_i|x_i) − log q(z_i) (index-code mutual information);
    - "total_correlation": log q(z_i) − Σ_d log q(z_i,d);
    - "dimension_kl": Σ_d log q(z_i,d) − log p(z_i) (Σ_d KL(q(z_d) || p(z_d)) for a
      factorized prior).

    They telescope: their sum is log q(z_i|x_i) − log p(z_i), the one-sample estimate
    of KL(q(z|x_i) || p(z)) they decompose, so the offsets below cancel in the loss.

    Each term carries an offset, and it does not vanish as M grows. With D latent
    dimensions:

    - at M = N (the batch is the data), the exact log q(z_i) is log Σ_j q(z_i|x_j)
      − log N, so the estimates are the exact terms plus log N (mutual_info),
      (D − 1) log N (total_correlation) and −D log N (dimension_kl);
    - when the batch's posteriors do not overlap (sharp codes, M ≪ N), each log-sum is
      its own term, and for a diagonal q the total correlation estimate sits at
      (D − 1) log(N·M), however independent the dimensions are.

    The offsets depend on N, M and D only, not on the weights: the gradients, and so
    training, do not see them; compare their changes, not their levels.

    Args:
        q: Gaussian q(z|x), batch `[M]`, event `latent_shape`.
        z: one sample of q per example, `[M, *latent_shape]`.
        log_prior: `[M]` log p(z_i).
        dataset_size: N, the number of training examples.

    Returns:
        dict of `[M]` tensors: "mutual_info", "total_correlation", "dimension_kl".
    """
    rank = len(q.event_shape)
    log_qz_pairs = q.log_prob(tf.expand_dims(z, 1))  # [M, M]: [i, j] = log q(z_i | x_j)
    flat_z = _flatten_event(z, rank)
    log_qzd_pairs = marginals(q).log_prob(flat_z[:, None, :])  # [M, M, D]
    batch = tf.cast(tf.shape(z)[0], tf.float32)
    log_nm = tf.math.log(float(dataset_size) * batch)
    log_qz = tf.reduce_logsumexp(log_qz_pairs, axis=1) - log_nm  # [M]
    log_prod_qzd = tf.reduce_sum(tf.reduce_logsumexp(log_qzd_pairs, axis=1) - log_nm, axis=-1)
    log_qz_x = tf.linalg.diag_part(log_qz_pairs)  # log q(z_i | x_i)
    return {
        "mutual_info": log_qz_x - log_qz,
        "total_correlation": log_qz - log_prod_qzd,
        "dimension_kl": log_prod_qzd - log_prior,
    }


def _posterior_covariances(q):
    """Cov of q(z|x) per example, `[B, D, D]`: a full-covariance q's own, else diagonal."""
    rank = len(q.event_shape)
    if rank == 1:
        try:
            return q.covariance()
        except NotImplementedError:  # `Independent(Normal)`: the variances
            pass
    return tf.linalg.diag(_flatten_event(q.variance(), rank))


def dip_covariance(q, variant="i"):
    """The covariance DIP-VAE pushes towards the identity, `[D, D]`.

    Kumar et al. 2018 (arXiv:1711.00848): "i" is Cov_p(x)[μ_φ(x)], the covariance of the
    encoder means over the batch; "ii" is the covariance of the aggregate posterior,
    Cov_q(z)[z] = E_p(x)[Σ_φ(x)] + Cov_p(x)[μ_φ(x)]. Batch averages with 1/B.

    Args:
        q: Gaussian q(z|x), batch `[B]`.
        variant: "i" or "ii".
    """
    means = _flatten_event(q.mean(), len(q.event_shape))  # [B, D]
    batch = tf.cast(tf.shape(means)[0], means.dtype)
    centered = means - tf.reduce_mean(means, axis=0)
    covariance = tf.matmul(centered, centered, transpose_a=True) / batch  # [D, D]
    if variant == "ii":
        covariance += tf.reduce_mean(_posterior_covariances(q), axis=0)
    return covariance


def dip_penalty(covariance, lambda_od, lambda_d):
    """λ_od Σ_{i≠j} Cov_ij² + λ_d Σ_i (Cov_ii − 1)², a scalar (Kumar et al. 2018)."""
    diagonal = tf.linalg.diag_part(covariance)
    off_diagonal = covariance - tf.linalg.diag(diagonal)
    return lambda_od * tf.reduce_sum(tf.square(off_diagonal)) + lambda_d * tf.reduce_sum(
        tf.square(diagonal - 1.0)
    )


def _squared_distances(a, b):
    """‖a_i − b_j‖², `[n, m]` for `[n, D]` and `[m, D]` (differences, no cancellation)."""
    return tf.reduce_sum(tf.square(a[:, None, :] - b[None, :, :]), axis=-1)


def rbf_kernel(a, b, bandwidth):
    """exp(−‖a − b‖² / C), `[n, m]`, with C = `bandwidth` (2σ² of a Gaussian kernel)."""
    return tf.exp(-_squared_distances(a, b) / bandwidth)


def imq_kernel(a, b, bandwidth):
    """C / (C + ‖a − b‖²), `[n, m]`: the inverse multiquadric kernel of WAE, C = `bandwidth`."""
    return bandwidth / (bandwidth + _squared_distances(a, b))


KERNELS = {"rbf": rbf_kernel, "imq": imq_kernel}


def _off_diagonal_sum(kernel_matrix):
    return tf.reduce_sum(kernel_matrix) - tf.reduce_sum(tf.linalg.diag_part(kernel_matrix))


def mmd_u_statistic(x, y, kernel="imq", bandwidth=None):
    """The unbiased estimate of MMD²(P, Q) from samples x ~ P and y ~ Q, a scalar.

    `1/(n(n−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j)
    − 2/(nm) Σ_{i,j} k(x_i, y_j)`, the U-statistic MMD²_u of Gretton et al. 2012 (JMLR 13):
    zero in expectation when P = Q (so it can be slightly negative), positive when they
    differ.

    Args:
        x: `[n, *event]` samples (e.g. of q(z) over a batch), n >= 2.
        y: `[m, *event]` samples (e.g. of p(z)), m >= 2.
        kernel: "imq" or "rbf" (`KERNELS`).
        bandwidth: the kernel's C; default 2·D, D the flattened dimension (WAE's
            2·d·σ² for a prior of unit variance).
    """
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    rank = x.shape.rank - 1
    x, y = _flatten_event(x, rank), _flatten_event(y, rank)
    if bandwidth is None:
        bandwidth = 2.0 * tf.cast(tf.shape(x)[-1], x.dtype)
    k = KERNELS[kernel]
    n = tf.cast(tf.shape(x)[0], x.dtype)
    m = tf.cast(tf.shape(y)[0], y.dtype)
    k_xx, k_yy = k(x, x, bandwidth), k(y, y, bandwidth)
    # (A batch of one has no pairs: its within term is 0 rather than 0/0.)
    within_x = _off_diagonal_sum(k_xx) / tf.maximum(n * (n - 1.0), 1.0)
    within_y = _off_diagonal_sum(k_yy) / tf.maximum(m * (m - 1.0), 1.0)
    return within_x + within_y - 2.0 * tf.reduce_mean(k(x, y, bandwidth))

