"""Distribution heads: Keras 3 layers that turn parameter tensors into TFP distributions.

A head knows how many parameters it needs (`params_shape`) and how to turn a parameter
tensor into a distribution (`call`). Bodies (`vae_zoo.networks`) end with a projection
to `params_shape`; heads never hold the projection, so the same head serves dense,
convolutional and fully-convolutional bodies.

Shapes. For an input batch of B examples:
- posterior heads take params `[B, *latent_shape[:-1], k * latent_shape[-1]]` and
  return q(z|x) with batch shape `[B]` and event shape `latent_shape`;
- likelihood heads take params `[B, *data_shape, k]` (k parameters per data element) and
  return p(x|z) with batch shape `[B]` and event shape `data_shape`.

All heads compute in float32 whatever the layer's compute dtype (mixed precision safe).

`tfp.layers` needs Keras 2; these are small Keras 3 layers. A Keras 3 layer may return a
`tfd.Distribution` when called from a subclassed model (eagerly or inside
`tf.function`), which is how `vae_zoo.models` uses them; they cannot be outputs of a
functional model.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo.registry import Registry

tfd = tfp.distributions

POSTERIORS = Registry("posterior")
LIKELIHOODS = Registry("likelihood")


def _as_float32(params):
    return tf.cast(params, tf.float32)


class DistributionHead(keras.layers.Layer):
    """Base class: `params_shape(event_shape)` and `call(params) -> tfd.Distribution`."""

    def params_shape(self, event_shape) -> tuple:
        raise NotImplementedError

    def compute_output_spec(self, *args, **kwargs):  # pragma: no cover - not symbolic
        raise TypeError(
            f"{type(self).__name__} returns a tfd.Distribution and cannot be used in a "
            "functional model; call it from a subclassed model."
        )


# ----------------------------------------------------------------------------------
# Posteriors q(z|x)


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
        params = _as_float32(params)
        loc, raw_scale = tf.split(params, 2, axis=-1)
        scale = tf.math.softplus(raw_scale) + self.scale_floor
        return tfd.Independent(
            tfd.Normal(loc=loc, scale=scale),
            reinterpreted_batch_ndims=params.shape.rank - 1,
        )

    def get_config(self):
        return {**super().get_config(), "scale_floor": self.scale_floor}


# ----------------------------------------------------------------------------------
# Likelihoods p(x|z)


class LikelihoodHead(DistributionHead):
    """Base class of p(x|z) heads: `params_per_element` parameters per data element."""

    params_per_element = 1

    def params_shape(self, event_shape) -> tuple:
        return tuple(event_shape) + (self.params_per_element,)

    @staticmethod
    def _independent(dist, params):
        # params [B, *event, k]: every axis but the batch and the trailing k is event.
        return tfd.Independent(dist, reinterpreted_batch_ndims=params.shape.rank - 2)


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(LikelihoodHead):
    """Bernoulli p(x|z) parameterized by logits (numerically safe at any logit).

    Params `[B, *data_shape, 1]` are logits; the result has batch `[B]`, event
    `data_shape`, samples in {0., 1.} (float32) and mean sigmoid(logits).
    `log_prob(x) = Σ x·l − softplus(l)`, which is also the usual binary cross-entropy
    for grey-level x in [0, 1] (then not a normalized density: binarize to report NLL).
    """

    def call(self, params):
        logits = _as_float32(params)[..., 0]
        return self._independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), params)


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(LikelihoodHead):
    """Gaussian p(x|z) = N(μ(z), scale²) with a fixed `scale` for every element.

    Params `[B, *data_shape, 1]` are the means. Batch `[B]`, event `data_shape`.

    Args:
        scale: float > 0, the fixed standard deviation.
    """

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not scale > 0:
            raise ValueError(f"gaussian likelihood scale must be > 0, got {scale}")
        self.scale = float(scale)

    def call(self, params):
        loc = _as_float32(params)[..., 0]
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
        loc = _as_float32(params)[..., 0]
        return self._independent(tfd.Normal(loc=loc, scale=self.scale), params)

    def get_config(self):
        return {
            **super().get_config(),
            "initial_scale": self.initial_scale,
            "scale_floor": self.scale_floor,
        }
