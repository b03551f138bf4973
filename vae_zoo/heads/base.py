"""Base classes of the distribution heads and their registries.

A head is a Keras 3 layer that turns a parameter tensor into a `tfd.Distribution`. It
declares everything the rest of the package asks of it, so nothing outside its own
class needs editing when a head is added:

- `params_shape(event_shape)`: the parameter tensor the body must produce;
- `call(params)`: the distribution;
- `support_problem(x)` (likelihoods): why data `x` lie outside the distribution's
  support, in one line, or None; runs, evaluation and export refuse such data;
- `parameter_names` (likelihoods): the TFP parameters a serving signature returns
  beside the mean (`decode`).

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
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo.registry import Registry

tfd = tfp.distributions

POSTERIORS = Registry("posterior")
LIKELIHOODS = Registry("likelihood")


def as_float32(params):
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


class LikelihoodHead(DistributionHead):
    """Base class of p(x|z) heads: `params_per_element` parameters per data element.

    Subclasses set `parameter_names` (the TFP parameters of the distribution, in
    order) and override `support_problem` when their support is not every finite x.
    """

    params_per_element = 1
    parameter_names: tuple = ()

    def params_shape(self, event_shape) -> tuple:
        return tuple(event_shape) + (self.params_per_element,)

    def support_problem(self, x) -> str | None:
        """Why data `x` (array-like) lie outside this likelihood's support, or None.

        The base accepts any finite value (Gaussian heads).
        """
        return None

    @staticmethod
    def _independent(dist, params):
        # params [B, *event, k]: every axis but the batch and the trailing k is event.
        return tfd.Independent(dist, reinterpreted_batch_ndims=params.shape.rank - 2)


def first_bad(x, bad, digits=6) -> str:
    """`"N values like V"` for the entries of `x` where `bad` holds (V to `digits`
    significant digits)."""
    return f"{int(bad.sum())} values like {float(np.asarray(x)[bad][0]):.{digits}g}"
