"""Base classes of the distribution heads and their registries.

A head is a Keras 3 layer that turns a parameter tensor into a `tfd.Distribution`. It
declares everything the rest of the package asks of it, so nothing outside its own
class needs editing when a head is added:

- `params_shape(event_shape)`: the parameter tensor the body must produce;
- `call(params)`: the distribution;
- `outside_support(x)` (likelihoods): where data `x` lie outside the distribution's
  support; from it `support_problem(x)` (numpy, why, in one line, or None) and
  `support_check(x)` (the same check inside a graph); runs, evaluation and the
  serving signatures refuse such data;
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

import contextlib
import threading

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo.registry import Registry

tfd = tfp.distributions

POSTERIORS = Registry("posterior")
LIKELIHOODS = Registry("likelihood")

_fusion = threading.local()


@contextlib.contextmanager
def fused_likelihoods():
    """Within it, `LikelihoodHead.log_prob_of_draws` may run as one XLA-compiled
    function (Bernoulli: `vae_zoo.distributions.fused_bernoulli_log_prob_of_draws`).

    What is traced within it holds an XLA-compiled function: `evaluate.log_likelihood`
    traces its bound here. Outside (training steps, serving signatures), plain
    TensorFlow ops: TF Serving runs a SavedModel's XLA-compiled functions only when
    started with `--xla_cpu_compilation_enabled`. Per thread.
    """
    previous = getattr(_fusion, "on", False)
    _fusion.on = True
    try:
        yield
    finally:
        _fusion.on = previous


def fusing_likelihoods() -> bool:
    """Whether the calling thread is inside `fused_likelihoods()`."""
    return getattr(_fusion, "on", False)


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
    order) and, when their support is not every finite x, `support` (what it is, in
    words) and `outside_support`.
    """

    params_per_element = 1
    parameter_names: tuple = ()
    # What the support is, as the start of a one-line message ("a Bernoulli likelihood
    # needs binary data (0 or 1)"); None: every finite value. Values in the message
    # are given to `support_digits` significant digits.
    support: str | None = None
    support_digits = 6

    def params_shape(self, event_shape) -> tuple:
        return tuple(event_shape) + (self.params_per_element,)

    def outside_support(self, x):
        """Where float32 data `x` (array or tensor) lie outside the support: bool
        tensor of x's shape (TensorFlow ops, so eager and graph code share it)."""
        raise NotImplementedError(f"{type(self).__name__} sets support but not outside_support")

    def support_problem(self, x) -> str | None:
        """Why data `x` (array-like) lie outside this likelihood's support, or None."""
        if self.support is None:
            return None
        x = np.asarray(x, dtype=np.float32)
        bad = np.asarray(self.outside_support(x))
        if bad.any():
            return f"{self.support}, got {first_bad(x, bad, self.support_digits)}"
        return None

    def support_check(self, x, name="x"):
        """`support_problem` as a check for a graph (see `check_assertions`): "`name`
        lies outside the support of the likelihood: <support>, got N values like V";
        None for a head without support limits. (No apostrophes: an assertion's
        message escapes them.)"""
        if self.support is None:
            return None
        x = tf.convert_to_tensor(x, tf.float32)
        bad = self.outside_support(x)
        count = tf.reduce_sum(tf.cast(bad, tf.int64))
        words = f"{name} lies outside the support of the likelihood: {self.support}, got"
        return tf.reduce_any(bad), (words, count, "values like", first_where(x, bad))

    def log_prob_of_draws(self, likelihood, x, num_samples):
        """log p(x_b | z_kb) `[K, B]` for K decoded draws per example.

        Args:
            likelihood: what this head returned for the draws' parameters, batch
                `[K·B]`, sample-major (row k·B + b decodes draw k of example b).
            x: `[B, *data_shape]`, the examples.
            num_samples: K (int or int32 scalar tensor).

        This default scores K copies of x; a head may compute the same values
        without them (`BernoulliLikelihood`), and within `fused_likelihoods()` as one
        XLA-compiled function.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        tiled = tf.tile(x, [num_samples] + [1] * (x.shape.rank - 1))  # [K*B, ...]
        return tf.reshape(likelihood.log_prob(tiled), [num_samples, tf.shape(x)[0]])

    @staticmethod
    def _independent(dist, params):
        # params [B, *event, k]: every axis but the batch and the trailing k is event.
        return tfd.Independent(dist, reinterpreted_batch_ndims=params.shape.rank - 2)


def first_bad(x, bad, digits=6) -> str:
    """`"N values like V"` for the entries of `x` where `bad` holds (V to `digits`
    significant digits)."""
    return f"{int(bad.sum())} values like {float(np.asarray(x)[bad][0]):.{digits}g}"


# ---------------------------------------------------------------------- input checks
# A check is `(failed, parts)`: a bool scalar tensor, and the one-line message naming
# the problem as a tuple of words (str) and scalar number tensors (the values that
# fail). It runs eagerly (`first_failure`: the message, for a ValueError) or in a
# graph (`check_assertions`). Only XLA-compatible ops compute it, so a check inside an
# XLA-compiled function is dropped (XLA ignores assertions) rather than failing to
# compile; everywhere else (serving signatures, input pipelines, plain steps) it runs.


def first_where(values, bad):
    """The first entry of `values` where `bad` holds, a scalar tensor (0 when none)."""
    values, bad = tf.reshape(values, [-1]), tf.reshape(bad, [-1])
    index = tf.argmax(tf.cast(tf.concat([bad, [True]], 0), tf.int32))  # the first True
    return tf.gather(tf.concat([values, tf.zeros([1], values.dtype)], 0), index)


def finite_check(values, name):
    """The check "`name` must be finite, got nan" (see `check_assertions`)."""
    bad = ~tf.math.is_finite(values)
    return tf.reduce_any(bad), (f"{name} must be finite, got", first_where(values, bad))


def _text(part) -> str:
    if isinstance(part, str):
        return part
    value = np.asarray(part).item()
    if isinstance(value, float):
        return np.format_float_positional(value, trim="-")
    return str(value)


def first_failure(checks) -> str | None:
    """Eagerly: the message of the first failed check, or None."""
    for failed, parts in checks:
        if bool(failed):
            return " ".join(_text(part) for part in parts)
    return None


def check_assertions(checks) -> list:
    """In a graph: one assertion per check, each run after the previous one (so the
    first failed check names the problem). It fails with an `InvalidArgumentError`
    reading `assertion failed: [words] [value] ...` (see `failed_check`)."""
    assertions = []
    for failed, parts in checks:
        with tf.control_dependencies(assertions):
            assertions = [tf.debugging.Assert(tf.logical_not(failed), list(parts))]
    return assertions


def failed_check(error) -> str | None:
    """The message of the check that failed in an `InvalidArgumentError` (from a graph
    or an input pipeline), joined as `first_failure` joins it, or None."""
    for line in str(error).splitlines():
        _, found, rest = line.partition("assertion failed: [")
        if found and rest.endswith("]"):
            return " ".join(rest[:-1].split("] ["))
    return None
