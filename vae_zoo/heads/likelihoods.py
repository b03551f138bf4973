"""Likelihood heads p(x|z): Bernoulli, three Gaussians and two 8-bit distributions.

Each head declares its support (`support_problem`) and the parameters a serving
signature returns (`parameter_names`); see `vae_zoo.heads.base`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo.distributions import (
    EIGHT_BIT_ATOL,
    DiscretizedLogisticMixture,
    LogitBernoulli,
    bernoulli_log_prob_of_draws,
    eight_bit_values,
    fused_bernoulli_log_prob_of_draws,
)
from vae_zoo.heads.base import LIKELIHOODS, LikelihoodHead, as_float32, fusing_likelihoods

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(LikelihoodHead):
    """Bernoulli p(x|z) parameterized by logits (numerically safe at any logit).

    Params `[B, *data_shape, 1]` are logits; the result has batch `[B]`, event
    `data_shape`, samples in {0., 1.} (float32) and mean sigmoid(logits).
    `log_prob(x) = Σ x·l − softplus(l)`, which is also the usual binary cross-entropy
    for grey-level x in [0, 1] (then not a normalized density: binarize to report NLL).
    """

    parameter_names = ("logits",)
    support = "a Bernoulli likelihood needs binary data (0 or 1)"
    support_digits = 4

    def outside_support(self, x):
        x = tf.convert_to_tensor(x, tf.float32)
        return tf.not_equal(x, 0.0) & tf.not_equal(x, 1.0)

    def call(self, params):
        logits = as_float32(params)[..., 0]
        return self._independent(LogitBernoulli(logits=logits, dtype=tf.float32), params)

    def log_prob_of_draws(self, likelihood, x, num_samples):
        """`LikelihoodHead.log_prob_of_draws` from the logits, without copies of x
        (`vae_zoo.distributions.bernoulli_log_prob_of_draws`; compiled by XLA within
        `fused_likelihoods()`)."""
        bernoulli = getattr(likelihood, "distribution", None)
        if not isinstance(bernoulli, LogitBernoulli) or bernoulli.logits is None:
            return super().log_prob_of_draws(likelihood, x, num_samples)
        fn = fused_bernoulli_log_prob_of_draws if fusing_likelihoods() else bernoulli_log_prob_of_draws
        return fn(bernoulli.logits, x)


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(LikelihoodHead):
    """Gaussian p(x|z) = N(μ(z), scale²) with a fixed `scale` for every element.

    Params `[B, *data_shape, 1]` are the means. Batch `[B]`, event `data_shape`.

    Args:
        scale: float > 0, the fixed standard deviation.
    """

    parameter_names = ("loc", "scale")

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not scale > 0:
            raise ValueError(f"gaussian likelihood scale must be > 0, got {scale}")
        self.scale = float(scale)

    def call(self, params):
        loc = as_float32(params)[..., 0]
        return self._independent(tfd.Normal(loc=loc, scale=self.scale), params)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("gaussian_learned_scale")
class GaussianLearnedScaleLikelihood(LikelihoodHead):
    """Gaussian p(x|z) = N(μ(z), σ²) with one learned σ shared by all elements.

    σ = softplus(s) + `scale_floor`, s a trainable scalar initialised so that σ starts
    at `initial_scale`. Params `[B, *data_shape, 1]` are the means. Batch `[B]`, event
    `data_shape`.

    Args:
        initial_scale: float > scale_floor, σ at initialisation.
        scale_floor: float >= 0, lower bound on σ.
    """

    parameter_names = ("loc", "scale")

    def __init__(self, initial_scale: float = 1.0, scale_floor: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if not initial_scale > scale_floor >= 0:
            raise ValueError(
                "gaussian_learned_scale needs initial_scale > scale_floor >= 0, got "
                f"initial_scale={initial_scale}, scale_floor={scale_floor}"
            )
        self.initial_scale = float(initial_scale)
        self.scale_floor = float(scale_floor)

    def build(self, input_shape=None):
        raw = tfp.math.softplus_inverse(self.initial_scale - self.scale_floor)
        self.raw_scale = self.add_weight(
            name="raw_scale",
            shape=(),
            initializer=keras.initializers.Constant(float(raw)),
            dtype="float32",
            autocast=False,  # stays float32 under a mixed-precision policy
        )

    @property
    def scale(self):
        return tf.math.softplus(tf.convert_to_tensor(self.raw_scale)) + self.scale_floor

    def call(self, params):
        loc = as_float32(params)[..., 0]
        return self._independent(tfd.Normal(loc=loc, scale=self.scale), params)

    def get_config(self):
        return {
            **super().get_config(),
            "initial_scale": self.initial_scale,
            "scale_floor": self.scale_floor,
        }


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("gaussian_per_pixel")
class GaussianPerPixelLikelihood(LikelihoodHead):
    """Gaussian p(x|z) = N(μ(z), σ(z)²) with μ and σ predicted for every element.

    Params `[B, *data_shape, 2]` are μ and s, σ = softplus(s) + `scale_floor`. Batch
    `[B]`, event `data_shape`. `log_prob` is a density: on 8-bit data it is not a
    probability of the observed values (it grows without bound as σ → 0 on constant
    pixels, hence the floor); use `categorical_256` or `discretized_logistic_mixture`
    to report bits/dim.

    Args:
        scale_floor: float >= 0, lower bound on σ.
    """

    parameter_names = ("loc", "scale")

    params_per_element = 2

    def __init__(self, scale_floor: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if not scale_floor >= 0:
            raise ValueError(f"gaussian_per_pixel scale_floor must be >= 0, got {scale_floor}")
        self.scale_floor = float(scale_floor)

    def call(self, params):
        params = as_float32(params)
        loc, raw_scale = params[..., 0], params[..., 1]
        scale = tf.math.softplus(raw_scale) + self.scale_floor
        return self._independent(tfd.Normal(loc=loc, scale=scale), params)

    def get_config(self):
        return {**super().get_config(), "scale_floor": self.scale_floor}


# ----------------------------------------------------------------------------------
# 8-bit likelihoods: distributions over exactly the 256 float32 values k/255 (see
# `vae_zoo.distributions.EIGHT_BIT_ATOL`).


class EightBitLikelihood(LikelihoodHead):
    """Base of the heads over the 8-bit grid {0, 1/255, ..., 1}."""

    @property
    def support(self):
        return f"an 8-bit likelihood ({type(self).__name__}) needs values k/255 in [0, 1]"

    def outside_support(self, x):
        x = tf.convert_to_tensor(x, tf.float32)
        k = tf.round(x * 255.0)
        return (tf.abs(x - k / 255.0) > EIGHT_BIT_ATOL) | (k < 0) | (k > 255)


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("categorical_256")
class Categorical256Likelihood(EightBitLikelihood):
    """256-way categorical p(x|z) per element over the 8-bit values {0, 1/255, ..., 1}.

    Params `[B, *data_shape, 256]` are logits; the result is
    `Independent(FiniteDiscrete(outcomes=k/255, logits))` with batch `[B]`, event
    `data_shape`. `log_prob(x)` takes x ∈ {k/255} (see `EIGHT_BIT_ATOL`), `mean()` is
    the exact Σ_k p_k k/255 and samples are k/255 in float32. A uniform categorical
    gives exactly 8 bits/dim.
    """

    parameter_names = ("logits",)  # [..., 256] over the values k/255
    params_per_element = 256

    def call(self, params):
        logits = as_float32(params)
        return self._independent(
            tfd.FiniteDiscrete(eight_bit_values(), logits=logits, atol=EIGHT_BIT_ATOL, rtol=0.0),
            params,
        )


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("discretized_logistic_mixture")
class DiscretizedLogisticMixtureLikelihood(EightBitLikelihood):
    """Discretized mixture of logistics p(x|z) for 8-bit data (PixelCNN++).

    Each element is an independent mixture of `num_components` (K) logistics
    discretized to {0, 1/255, ..., 1} with the edge bins taking the tails
    (`DiscretizedLogisticMixture`). Channels are independent given z (no
    channel autoregression as in PixelCNN++'s RGB coupling).

    Params `[B, *data_shape, 3K]` are split on the last axis into mixture logits,
    locations μ (data units: x ∈ [0, 1]) and raw scales s, scale = softplus(s) +
    `scale_floor` (softplus ≈ exp for small scales, as PixelCNN++'s log-scales, but
    cannot overflow). Batch `[B]`, event `data_shape`; `log_prob(x)` takes
    x ∈ {k/255} (see `EIGHT_BIT_ATOL`); `mean()` is exact (255·K sigmoids per
    element); samples are k/255.

    Args:
        num_components: int >= 1, K.
        scale_floor: float > 0, lower bound on the logistic scales. The default 5e-4
            is PixelCNN++'s bound exp(−7) on its [−1, 1] scale.

    Example:
    ```python
    head = DiscretizedLogisticMixtureLikelihood(num_components=5)
    head.params_shape((32, 32, 3))            # (32, 32, 3, 15)
    p = head(tf.zeros([8, 32, 32, 3, 15]))    # batch [8], event [32, 32, 3]
    ```

    Reference: Salimans, Karpathy, Chen & Kingma, "PixelCNN++", arXiv:1701.05517.
    """

    parameter_names = ("logits", "loc", "scale")  # [..., K] each

    def __init__(self, num_components: int = 5, scale_floor: float = 5e-4, **kwargs):
        super().__init__(**kwargs)
        if int(num_components) < 1:
            raise ValueError(
                f"discretized_logistic_mixture num_components must be >= 1, got {num_components}"
            )
        if not scale_floor > 0:
            raise ValueError(
                f"discretized_logistic_mixture scale_floor must be > 0, got {scale_floor}"
            )
        self.num_components = int(num_components)
        self.scale_floor = float(scale_floor)
        self.params_per_element = 3 * self.num_components

    def call(self, params):
        params = as_float32(params)
        logits, loc, raw_scale = tf.split(params, 3, axis=-1)  # [B, *data_shape, K] each
        scale = tf.math.softplus(raw_scale) + self.scale_floor
        return self._independent(DiscretizedLogisticMixture(logits, loc, scale), params)

    def get_config(self):
        return {
            **super().get_config(),
            "num_components": self.num_components,
            "scale_floor": self.scale_floor,
        }
