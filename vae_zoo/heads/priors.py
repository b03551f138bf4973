"""Priors p(z) and p(z|y) as Keras 3 layers holding whatever parameters they learn.

A prior layer returns, from `distribution()`, a `tfd.Distribution` with batch shape
`[]` and event shape `latent_shape` (broadcasting against a posterior of batch `[B]`).
Conditional priors (p(z|y)) take the conditioning tensor and return batch `[B]`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import networks
from vae_zoo.heads.posteriors import DiagonalGaussianPosterior
from vae_zoo.registry import Registry

tfd = tfp.distributions

PRIORS = Registry("prior")


class Prior(keras.layers.Layer):
    """Base class. Args: latent_shape: tuple, the event shape of z."""

    def __init__(self, latent_shape, **kwargs):
        super().__init__(**kwargs)
        self.latent_shape = tuple(int(d) for d in latent_shape)

    def distribution(self, condition=None, latent_shape=None):
        """p(z): batch `[]` (or `[B]` when conditional), event `latent_shape`.

        `latent_shape` overrides the event shape for priors over latent maps that
        adapt to the image size (fully-convolutional models); others ignore it.
        """
        raise NotImplementedError

    def call(self, condition=None):
        return self.distribution(condition)

    def get_config(self):
        return {**super().get_config(), "latent_shape": self.latent_shape}


@keras.saving.register_keras_serializable(package="vae_zoo")
@PRIORS.register("standard_normal")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I): batch `[]`, event `latent_shape`. No parameters."""

    def distribution(self, condition=None, latent_shape=None):
        latent_shape = tuple(latent_shape or self.latent_shape)
        return tfd.Independent(
            tfd.Normal(loc=tf.zeros(latent_shape, tf.float32), scale=1.0),
            reinterpreted_batch_ndims=len(latent_shape),
        )


@keras.saving.register_keras_serializable(package="vae_zoo")
@PRIORS.register("mixture_of_gaussians")
class MixtureOfGaussiansPrior(Prior):
    """Learned mixture of K diagonal Gaussians p(z) = Σ_k π_k N(z; μ_k, diag σ_k²).

    A richer prior for when the aggregate posterior has holes that N(0, I) would fill
    with bad samples. Trainable: mixture logits (start at 0, uniform π), means μ_k
    (start N(0, 1) from `seed`, so models are reproducible) and raw scales s_k with
    σ_k = softplus(s_k) + `scale_floor` (start at σ = 1). The distribution is
    `MixtureSameFamily(Categorical(logits), Independent(Normal(μ, σ), 1))`: batch
    `[]`, event `latent_shape` (flat latents only). No closed-form KL exists: the ELBO
    uses the Monte-Carlo estimate log q(z) − log p(z) (automatic in `objectives`).

    Args:
        latent_shape: tuple `(d,)`.
        num_components: int >= 1, K.
        scale_floor: float in [0, 1), lower bound on σ.
        seed: int, seeds the initial means.

    Example:
    ```python
    prior = MixtureOfGaussiansPrior((16,), num_components=10)
    prior.build(None)
    p = prior.distribution()              # batch [], event [16]
    p.log_prob(tf.zeros([8, 16]))         # [8]
    ```

    Reference: Tomczak & Welling, "VAE with a VampPrior", arXiv:1705.07120 (the
    mixture-of-Gaussians prior as a baseline).
    """

    def __init__(self, latent_shape, num_components=10, scale_floor=1e-3, seed=0, **kwargs):
        super().__init__(latent_shape, **kwargs)
        if len(self.latent_shape) != 1:
            raise ValueError(
                f"mixture_of_gaussians needs a flat latent shape (d,), got {self.latent_shape}"
            )
        if int(num_components) < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        if not 0 <= scale_floor < 1:
            raise ValueError(f"scale_floor must be in [0, 1) (σ starts at 1), got {scale_floor}")
        self.num_components = int(num_components)
        self.scale_floor = float(scale_floor)
        self.seed = int(seed)

    def build(self, input_shape=None):
        shape = (self.num_components,) + self.latent_shape  # [K, d]
        raw_one = float(tfp.math.softplus_inverse(1.0 - self.scale_floor))
        common = dict(dtype="float32", autocast=False)  # float32 under mixed precision
        self.mixture_logits = self.add_weight(
            name="mixture_logits", shape=shape[:1], initializer="zeros", **common
        )
        self.means = self.add_weight(
            name="means",
            shape=shape,
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed),
            **common,
        )
        self.raw_scales = self.add_weight(
            name="raw_scales",
            shape=shape,
            initializer=keras.initializers.Constant(raw_one),
            **common,
        )

    def distribution(self, condition=None, latent_shape=None):
        if not self.built:
            self.build(None)
        scales = tf.math.softplus(tf.convert_to_tensor(self.raw_scales)) + self.scale_floor
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.convert_to_tensor(self.mixture_logits)),
            components_distribution=tfd.Independent(
                tfd.Normal(loc=tf.convert_to_tensor(self.means), scale=scales),
                reinterpreted_batch_ndims=1,
            ),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_components": self.num_components,
            "scale_floor": self.scale_floor,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="vae_zoo")
@PRIORS.register("uniform_categorical")
class UniformCategoricalPrior(Prior):
    """p(z) uniform over one-hot categoricals: batch `[]`, event `latent_shape`.

    `latent_shape` is `(..., C)`: every latent variable (each row of C) is an
    independent uniform one-hot categorical over C classes, so
    log p(z) = −(number of latents) · log C for any one-hot z. Samples are float32
    one-hot vectors. No parameters. KL(q || p) to a `categorical` posterior is analytic.

    Example:
    ```python
    p = UniformCategoricalPrior((20, 10)).distribution()   # batch [], event [20, 10]
    p.sample(4, seed=[0, 0])                               # [4, 20, 10]
    ```
    """

    def __init__(self, latent_shape, **kwargs):
        super().__init__(latent_shape, **kwargs)
        if len(self.latent_shape) < 2 or self.latent_shape[-1] < 2:
            raise ValueError(
                "uniform_categorical needs a latent shape (..., num_categories) with at "
                f"least 2 categories, got {self.latent_shape}"
            )

    def distribution(self, condition=None, latent_shape=None):
        return tfd.Independent(
            tfd.OneHotCategorical(logits=tf.zeros(self.latent_shape, tf.float32), dtype=tf.float32),
            reinterpreted_batch_ndims=len(self.latent_shape) - 1,
        )


@keras.saving.register_keras_serializable(package="vae_zoo")
@PRIORS.register("conditional_gaussian")
class ConditionalGaussianPrior(Prior):
    """Learned p(z|y) = N(μ(y), diag σ(y)²): an MLP maps the condition to μ and σ.

    `distribution(c)` takes the condition vector `[B, k]` (one-hot labels for a
    class-conditional model) and returns batch `[B]`, event `latent_shape`, so the KL
    to a diagonal Gaussian q(z|x, y) stays analytic.

    Args:
        latent_shape: tuple, event shape of z.
        hidden_units: sequence of ints, hidden widths of the MLP (`()`: affine in y).
        activation: hidden-layer activation.
        scale_floor: float, lower bound on σ.

    Example:
    ```python
    prior = ConditionalGaussianPrior((8,), hidden_units=(32,))
    p = prior.distribution(tf.one_hot([3, 7], 10))  # batch [2], event [8]
    ```
    """

    conditional = True  # the model passes it the condition

    def __init__(self, latent_shape, hidden_units=(64,), activation="relu", scale_floor=1e-4,
                 **kwargs):
        super().__init__(latent_shape, **kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.scale_floor = float(scale_floor)
        # The same split/softplus/Independent map as a diagonal-Gaussian posterior.
        self.gaussian = DiagonalGaussianPosterior(self.scale_floor)
        self.network = networks.mlp_encoder(
            self.hidden_units, self.gaussian.params_shape(self.latent_shape), activation,
            name="prior_network",
        )

    def build(self, condition_shape=None):
        # The condition's size is known at the first call (the model's dummy pass).
        if condition_shape is not None:
            self.network.build(condition_shape)

    def distribution(self, condition=None):
        if condition is None:
            raise ValueError(
                "the conditional_gaussian prior p(z|y) needs a condition; use it with "
                "ConditionalVAE"
            )
        condition = tf.convert_to_tensor(condition)
        if condition.shape.rank != 2 or not condition.dtype.is_floating:
            raise ValueError(
                "the conditional_gaussian prior p(z|y) takes float condition vectors [B, k] "
                f"(one-hot labels), got {condition.dtype.name} {condition.shape}"
            )
        return self.gaussian(self.network(condition))  # batch [B], event latent_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "activation": self.activation,
            "scale_floor": self.scale_floor,
        }
