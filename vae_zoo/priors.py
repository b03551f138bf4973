"""Priors p(z) as Keras 3 layers holding whatever parameters they learn.

A prior layer returns, from `distribution()`, a `tfd.Distribution` with batch shape
`[]` and event shape `latent_shape` (broadcasting against a posterior of batch `[B]`).
Conditional priors (p(z|y)) take the conditioning tensor and return batch `[B]`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo.registry import Registry

tfd = tfp.distributions

PRIORS = Registry("prior")


class Prior(keras.layers.Layer):
    """Base class. Args: latent_shape: tuple, the event shape of z."""

    def __init__(self, latent_shape, **kwargs):
        super().__init__(**kwargs)
        self.latent_shape = tuple(int(d) for d in latent_shape)

    def distribution(self, condition=None):
        """p(z): batch `[]` (or `[B]` when conditional), event `latent_shape`."""
        raise NotImplementedError

    def call(self, condition=None):
        return self.distribution(condition)

    def get_config(self):
        return {**super().get_config(), "latent_shape": self.latent_shape}


@keras.saving.register_keras_serializable(package="vae_zoo")
@PRIORS.register("standard_normal")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I): batch `[]`, event `latent_shape`. No parameters."""

    def distribution(self, condition=None):
        zeros = tf.zeros(self.latent_shape, tf.float32)
        return tfd.Independent(
            tfd.Normal(loc=zeros, scale=1.0),
            reinterpreted_batch_ndims=len(self.latent_shape),
        )
