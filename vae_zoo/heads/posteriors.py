"""Posterior heads q(z|x): diagonal Gaussian, full-covariance Gaussian, categorical."""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import distributions  # also registers the MVN-vs-Normal KL
from vae_zoo.heads.base import POSTERIORS, DistributionHead, as_float32

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="vae_zoo")
@POSTERIORS.register("diagonal_gaussian")
class DiagonalGaussianPosterior(DistributionHead):
    """Diagonal Gaussian q(z|x) = N(μ, diag σ²) with σ = softplus(s) + `scale_floor`.

    Params `[B, ..., 2 * d]` are split on the last axis into μ and s. The result has
    batch shape `[B]` and event shape `[..., d]` (`Independent` over every non-batch
    axis), so `log_prob(z)` is `[B]`.

    Args:
        scale_floor: float, lower bound on σ, keeps log q finite.

    Example:
    ```python
    q = DiagonalGaussianPosterior()(tf.zeros([8, 2 * 32]))  # batch [8], event [32]
    ```
    """

    def __init__(self, scale_floor: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.scale_floor = float(scale_floor)

    def params_shape(self, event_shape) -> tuple:
        event_shape = tuple(event_shape)
        return event_shape[:-1] + (2 * event_shape[-1],)

    def call(self, params):
        params = as_float32(params)
        loc, raw_scale = tf.split(params, 2, axis=-1)
        scale = tf.math.softplus(raw_scale) + self.scale_floor
        return tfd.Independent(
            distributions.PhiloxNormal(loc=loc, scale=scale),
            reinterpreted_batch_ndims=params.shape.rank - 1,
        )

    def get_config(self):
        return {**super().get_config(), "scale_floor": self.scale_floor}


@keras.saving.register_keras_serializable(package="vae_zoo")
@POSTERIORS.register("full_covariance_gaussian")
class FullCovarianceGaussianPosterior(DistributionHead):
    """Full-covariance Gaussian q(z|x) = N(μ, L Lᵀ) for flat latents z ∈ R^d.

    Params `[B, d + d(d+1)/2]` are μ followed by the d(d+1)/2 entries of the lower
    triangle of L (`tfp.math.fill_triangular`); the diagonal of L is
    softplus(·) + `scale_floor`, so L is a valid Cholesky factor. The result is a
    `tfd.MultivariateNormalTriL` with batch `[B]`, event `[d]`.

    KL(q || N(μ_p, diag σ_p²)) against the `standard_normal` prior is analytic: this
    package registers it with TFP (`vae_zoo.distributions`) (`tfd.kl_divergence`), which has no closed form for an
    MVN against an `Independent(Normal)`. Against other priors the model falls back to
    the one-sample Monte-Carlo KL.

    Args:
        scale_floor: float, lower bound on the diagonal of L (keeps log q finite).

    Example:
    ```python
    head = FullCovarianceGaussianPosterior()
    head.params_shape((8,))                   # (44,) = 8 + 36
    q = head(tf.zeros([16, 44]))              # batch [16], event [8]
    ```
    """

    def __init__(self, scale_floor: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.scale_floor = float(scale_floor)

    def params_shape(self, event_shape) -> tuple:
        event_shape = tuple(event_shape)
        if len(event_shape) != 1:
            raise ValueError(
                "full_covariance_gaussian needs a flat latent shape (d,), got "
                f"{event_shape}; use diagonal_gaussian for spatial latents"
            )
        d = event_shape[0]
        return (d + d * (d + 1) // 2,)

    @staticmethod
    def latent_dim(num_params: int) -> int:
        """d such that d + d(d+1)/2 == num_params (ValueError if there is none)."""
        d = (math.isqrt(9 + 8 * num_params) - 3) // 2
        if d < 1 or d + d * (d + 1) // 2 != num_params:
            raise ValueError(
                f"full_covariance_gaussian params must have d + d(d+1)/2 entries, got "
                f"{num_params}"
            )
        return d

    def call(self, params):
        params = as_float32(params)
        if params.shape.rank != 2:
            raise ValueError(
                "full_covariance_gaussian needs flat params [B, d + d(d+1)/2], got shape "
                f"{params.shape}"
            )
        d = self.latent_dim(params.shape[-1])
        loc, raw_tril = params[:, :d], params[:, d:]
        tril = tfp.math.fill_triangular(raw_tril)  # [B, d, d], lower triangular
        raw_diag = tf.linalg.diag_part(tril)
        diag = tf.math.softplus(raw_diag) + self.scale_floor
        # tril with its diagonal replaced (`set_diag`'s gradient does not compile
        # under XLA with a dynamic batch size; adding a diagonal matrix does).
        scale_tril = tril + tf.linalg.diag(diag - raw_diag)
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril)

    def get_config(self):
        return {**super().get_config(), "scale_floor": self.scale_floor}


@keras.saving.register_keras_serializable(package="vae_zoo")
@POSTERIORS.register("categorical")
class CategoricalPosterior(DistributionHead):
    """Independent one-hot categoricals q(z|x) over latents `[..., C]` (C classes each).

    Params `[B, ..., C]` are logits, one row of C per latent variable. The result is
    `Independent(OneHotCategorical(logits, dtype=float32))` with batch `[B]` and event
    `[..., C]` (e.g. `[L, C]` for L latents): samples are float32 one-hot vectors,
    `mean()` is the probabilities and `mode()` the one-hot argmax. Samples carry no
    gradient: train with the score-function estimator, or with `relaxed`.

    KL(q || p) against `uniform_categorical` (or any `Independent(OneHotCategorical)`
    over the same axes) is analytic in TFP: Σ_latents Σ_c q_c (log q_c − log p_c).

    Example:
    ```python
    head = CategoricalPosterior()
    head.params_shape((20, 10))               # (20, 10)
    q = head(tf.zeros([8, 20, 10]))           # batch [8], event [20, 10]
    q.sample(seed=[0, 0])                     # [8, 20, 10], one-hot float32
    ```
    """

    def params_shape(self, event_shape) -> tuple:
        event_shape = tuple(event_shape)
        if len(event_shape) < 2 or event_shape[-1] < 2:
            raise ValueError(
                "categorical latents need a shape (..., num_categories) with at least "
                f"2 categories, got {event_shape}"
            )
        return event_shape

    def call(self, params):
        logits = as_float32(params)
        return tfd.Independent(
            tfd.OneHotCategorical(logits=logits, dtype=tf.float32),
            reinterpreted_batch_ndims=logits.shape.rank - 2,
        )

    def relaxed(self, params, temperature):
        """The Concrete / Gumbel-softmax relaxation of `call(params)` at `temperature`.

        `Independent(RelaxedOneHotCategorical(temperature, logits))`: batch `[B]`, event
        `[..., C]`, reparameterized samples on the simplex that approach one-hot
        vectors as temperature → 0 (Jang et al. 2017, arXiv:1611.01144; Maddison et al.
        2017, arXiv:1611.00712).
        """
        logits = as_float32(params)
        return tfd.Independent(
            tfd.RelaxedOneHotCategorical(tf.cast(temperature, tf.float32), logits=logits),
            reinterpreted_batch_ndims=logits.shape.rank - 2,
        )
