"""Conditional VAE: encoder q(z|x, y), decoder p(x|z, y), prior p(z) or p(z|y).

y is a class label (one-hot encoded inside the model) or any conditioning vector. The
encoder sees y beside x, the decoder sees it beside z, and the prior is either the
fixed N(0, I) or a small network p(z|y) (`ConditionalGaussianPrior`).
"""

from __future__ import annotations

import inspect
import math

import keras
import numpy as np
import tensorflow as tf

from vae_zoo.heads.base import (
    check_assertions,
    failed_check,
    finite_check,
    first_failure,
    first_where,
)
from vae_zoo.models.base import MODELS
from vae_zoo.models.family import Family, body_of, check_latent_dim, compose


def not_class_numbers(labels, num_classes):
    """Where `labels` (numbers: array or tensor) are not class numbers in
    `[0, num_classes)`: NaN, infinite, fractional or out of range (bool tensor).

    Compared in the labels' own dtype (integers as int64), so an int64 label beyond
    the int32 range is refused rather than wrapped by a cast.
    """
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_integer:
        labels = tf.cast(labels, tf.int64)
        return (labels < 0) | (labels >= num_classes)
    return ~_whole(labels) | (labels < 0) | (labels >= num_classes)


def _whole(values):
    return tf.math.is_finite(values) & tf.equal(values, tf.round(values))


def label_dtype_problem(dtype) -> str | None:
    """Why labels of `dtype` (NumPy or TensorFlow) cannot be class numbers, or None."""
    if isinstance(dtype, np.dtype):
        numeric, name = dtype.kind in "iuf", str(dtype)  # "<U1" for strings
    else:
        dtype = tf.as_dtype(dtype)
        numeric, name = dtype.is_integer or dtype.is_floating, dtype.name
    return None if numeric else f"labels must be integer class numbers, got dtype {name}"


def label_checks(labels, num_classes):
    """The checks of `vae_zoo.heads.base.check_assertions` for labels (a tensor of
    numbers), in order: "labels must be integers, got 2.5" (NaN, fractional) and
    "labels must lie in [0, 10), got label 12"."""
    checks = []
    if labels.dtype.is_floating:
        fractional = ~_whole(labels)
        checks.append((tf.reduce_any(fractional),
                       ("labels must be integers, got", first_where(labels, fractional))))
    outside = not_class_numbers(labels, num_classes)
    checks.append((tf.reduce_any(outside), (f"labels must lie in [0, {num_classes}), got label",
                                            first_where(labels, outside))))
    return checks


@keras.saving.register_keras_serializable(package="vae_zoo")
@MODELS.register("conditional")
class ConditionalVAE(Family):
    """Conditional VAE: q(z|x, y), p(x|z, y) and p(z) = N(0, I) or a learned p(z|y).

    The condition y is either a class label (give `num_classes`: integer labels `[B]`
    are one-hot encoded inside the model; float one-hot rows `[B, num_classes]` are
    also accepted) or a float vector (give `condition_dim`: `[B, condition_dim]`, used
    as is). Call it c, `[B, k]`. The dense body reads `concat(flatten(x), c)`; the conv
    body reads x with c appended as k constant channels. Both decoders read
    `concat(z, c)`. Training maximizes E_q[log p(x|z, y)] − β KL(q(z|x, y) || p(z|y))
    through the base `VAE`; batches are `(x, y)` pairs. (The structured-output notation,
    modelling p(y|x) with q(z|x, y), p(y|x, z) and p(z|x), swaps the letters: here the
    output is the image x and the condition is y.)

    Which prior: with the fixed N(0, I), putting the class in z costs only ~log K nats,
    so the encoder may do it and the decoder then partly ignores y (samples drawn for
    label k are not always k's). A learned p(z|y) draws z where label k's posteriors
    lie, so samples follow the label either way; `recipes/mnist_cvae.toml` measures both.

    Conditions are checked on every path, with a one-line message: labels must be
    integer class numbers in `[0, num_classes)` (NaN, 2.5 and values beyond int32 are
    refused, not cast), condition rows finite, one per example. Eagerly a bad condition
    is a ValueError; in a graph not compiled by XLA (the serving signatures, a plain
    step) an `InvalidArgumentError`. XLA drops assertions, so `fit`, `evaluate` and
    `predict` check arrays before they start and a `tf.data.Dataset` in its input
    pipeline (and raise the ValueError); only other inputs (generators) reach an XLA
    step unchecked.

    Args:
        input_shape: tuple, one example's shape (`(H, W, C)` for the conv body).
        latent_dim: int > 0, size of z.
        num_classes: int >= 2, number of classes of integer labels y.
        condition_dim: int >= 1, size of float condition vectors y (instead of labels).
        body: "dense" (MLP) or "conv" (strided convolutions).
        hidden_units: dense body: encoder widths (decoder reversed).
        filters, kernel_sizes, strides: conv body: one entry per encoder convolution
            (decoder reversed; the total stride must divide H and W).
        dense_units: conv body: dense widths after the convolutions (decoder reversed).
        likelihood: name or spec of a p(x|z, y) head in `vae_zoo.heads.LIKELIHOODS`.
        posterior: name or spec of a q(z|x, y) head in `vae_zoo.heads.POSTERIORS`.
        prior: name or spec in `vae_zoo.heads.PRIORS`: "standard_normal" (fixed),
            "conditional_gaussian" (learned p(z|y), e.g.
            `{"name": "conditional_gaussian", "hidden_units": [32]}`), or any
            unconditional prior.
        activation: hidden-layer activation.
        **kwargs: the shared arguments (beta, analytic_kl, objective, num_samples,
            seed) and Keras layer arguments; see `Family`.

    Example:
    ```python
    model = ConditionalVAE(input_shape=(28, 28, 1), latent_dim=16, num_classes=10)
    model.compile(optimizer="adam")
    model.fit(vae_zoo.data.load("mnist_sample", with_labels=True), epochs=10)
    q = model.encode(x, y)           # batch [B], event [16]
    threes = model.sample(8, y=3)    # [8, 28, 28, 1]
    ```

    Reference: Sohn, Lee & Yan, "Learning Structured Output Representation using Deep
    Conditional Generative Models", NeurIPS 2015; Kingma et al., "Semi-Supervised
    Learning with Deep Generative Models", arXiv:1406.5298 (model M2).
    """

    # Small arguments that build a working model (the shared family tests use them).
    example_arguments = dict(input_shape=(8, 8, 1), latent_dim=2, num_classes=3,
                             hidden_units=(8,))

    conditional = True

    def __init__(
        self,
        input_shape,
        latent_dim,
        num_classes=None,
        condition_dim=None,
        body="dense",
        hidden_units=(512, 256),
        filters=(32, 64),
        kernel_sizes=(3, 3),
        strides=(2, 2),
        dense_units=(256,),
        likelihood="bernoulli",
        posterior="diagonal_gaussian",
        prior="standard_normal",
        activation="relu",
        **kwargs,
    ):
        if (num_classes is None) == (condition_dim is None):
            raise ValueError("give exactly one of num_classes (labels) and condition_dim (vectors)")
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if condition_dim is not None and int(condition_dim) < 1:
            raise ValueError(f"condition_dim must be >= 1, got {condition_dim}")
        parts = compose(input_shape, (check_latent_dim(latent_dim),), body_of(body, locals()),
                        posterior, likelihood, prior)
        # Read by encode/decode/dummy_inputs, which the base constructor already runs.
        self.num_classes = None if num_classes is None else int(num_classes)
        self.condition_dim = None if condition_dim is None else int(condition_dim)
        self.body = body
        # The condition is joined to x and z in encode/decode.
        super().__init__(**parts, **kwargs)

    # ------------------------------------------------------------------ condition

    def condition(self, y, num_examples=None):
        """The condition vector c(y), float32 `[B, k]`: one-hot labels, or y as is.

        Args:
            y: labels `[B]` (or `[B, 1]`, or float one-hot rows `[B, num_classes]`), or
                condition vectors `[B, condition_dim]`.
            num_examples: the batch size y must have (int or scalar tensor), or None.

        Raises ValueError (one line) for a missing y, a wrong shape or dtype, and,
        eagerly, for the problems of `condition_checks`; in a graph these are
        assertions (`InvalidArgumentError`), which XLA drops.
        """
        if tf.executing_eagerly():
            self.check_condition(y, num_examples)
        y = self.condition_tensor(y)
        if not tf.executing_eagerly():  # XLA drops these assertions, others run them
            with tf.control_dependencies(check_assertions(self.condition_checks(y, num_examples))):
                y = tf.identity(y)
        if y.shape.rank == 2:
            return tf.cast(y, tf.float32)  # vectors, or already one-hot (or soft) labels
        return tf.one_hot(tf.cast(y, tf.int32), self.num_classes)  # [B, num_classes]

    def condition_tensor(self, y):
        """y as a tensor of labels `[B]` or of condition rows `[B, k]`, its static shape
        and dtype checked (ValueError, one line)."""
        y = self._as_tensor(y)
        if self.num_classes is None:
            if y.shape.rank != 2 or y.shape[-1] != self.condition_dim or not y.dtype.is_floating:
                raise ValueError(
                    f"condition y must be float vectors of shape [B, {self.condition_dim}], "
                    f"got {y.dtype.name} {y.shape}"
                )
            return y
        if y.dtype.is_floating and y.shape.rank == 2 and y.shape[-1] == self.num_classes:
            return y  # already one-hot (or soft) labels
        if y.shape.rank == 2 and y.shape[-1] == 1:
            y = y[:, 0]
        if y.shape.rank != 1:
            raise ValueError(f"labels y must have shape [B], got {y.shape}")
        problem = label_dtype_problem(y.dtype)
        if problem:
            raise ValueError(problem)
        return y

    def _as_tensor(self, y):
        """`tf.convert_to_tensor(y)`, refusing a missing y and labels that are not numbers
        (named by NumPy's dtype, "<U1", before TensorFlow makes them strings)."""
        if y is None:
            raise ValueError(self._missing_condition())
        if self.num_classes and not tf.is_tensor(y):
            problem = label_dtype_problem(np.asarray(y).dtype)
            if problem:
                raise ValueError(problem)
        return tf.convert_to_tensor(y)

    def condition_checks(self, y, num_examples=None):
        """The run-time checks of a condition tensor (from `condition_tensor`), as
        `(failed, message)` pairs (see `vae_zoo.heads.base.check_assertions`): labels
        are class numbers, rows are finite, and there are `num_examples` of them."""
        checks = []
        if num_examples is not None:
            count = tf.shape(y, out_type=tf.int64)[0]
            num_examples = tf.cast(num_examples, tf.int64)
            what = "labels for" if self.num_classes else "conditions for"
            checks.append((tf.not_equal(count, num_examples),
                           (count, what, num_examples, "examples")))
        if y.shape.rank == 1:
            return checks + label_checks(y, self.num_classes)
        return checks + [finite_check(y, "labels" if self.num_classes else "condition vectors")]

    def check_condition(self, y, num_examples=None):
        """Eagerly: raise ValueError (one line) unless `y` (array or tensor) conditions
        `num_examples` examples (None: any number)."""
        problem = first_failure(self.condition_checks(self.condition_tensor(y), num_examples))
        if problem:
            raise ValueError(problem)

    def _missing_condition(self):
        if self.num_classes:
            return f"{type(self).__name__} needs class labels y, one per example"
        return f"{type(self).__name__} needs condition vectors y [B, {self.condition_dim}]"

    def _join(self, x, c):
        """The encoder's input: `[B, D + k]` (dense) or `[B, H, W, C + k]` (conv)."""
        x = tf.convert_to_tensor(x, tf.float32)
        if self.body == "dense":
            return tf.concat([tf.reshape(x, (-1, math.prod(self.data_shape))), c], axis=-1)
        height, width = self.data_shape[:2]
        channels = tf.tile(c[:, None, None, :], [1, height, width, 1])  # [B, H, W, k]
        return tf.concat([x, channels], axis=-1)

    # ------------------------------------------------------------------ public API

    def encode(self, x, y=None):
        """q(z|x, y): batch `[B]`, event `[latent_dim]`."""
        x = tf.convert_to_tensor(x, tf.float32)
        return self.posterior(self.encoder(self._join(x, self.condition(y, tf.shape(x)[0]))))

    def decode(self, z, y=None):
        """p(x|z, y): batch `[B]`, event `input_shape`."""
        z = tf.convert_to_tensor(z, tf.float32)
        c = self.condition(y, tf.shape(z)[0])
        return self.likelihood(self.decoder(tf.concat([z, c], axis=-1)))

    def prior_distribution(self, y=None):
        """p(z|y): batch `[B]` for a learned conditional prior, `[]` for a fixed one."""
        if getattr(self.prior, "conditional", False):
            return self.prior.distribution(self.condition(y))
        return self.prior.distribution()

    def sample(self, num_samples, y=None, seed=None):
        """`num_samples` draws of E[x|z, y], z ~ p(z|y): `[num_samples, *input_shape]`.

        Args:
            num_samples: int, number of samples.
            y: one label (an int, used for all samples) or one per sample `[n]`; for a
                model conditioned on vectors, one `[condition_dim]` vector or
                `[n, condition_dim]`.
            seed: int or None.

        Example: `model.sample(8, y=3)`; `model.sample(10, y=np.arange(10), seed=0)`.
        """
        if y is None:
            raise ValueError("ConditionalVAE.sample needs y, e.g. model.sample(8, y=3)")
        n = num_samples
        y = self._as_tensor(y)
        if y.shape.rank == (0 if self.num_classes else 1):  # one condition for all n
            y = tf.broadcast_to(y, tf.concat([[n], tf.shape(y)], 0))
        elif isinstance(n, int) and y.shape[0] is not None and y.shape[0] != n:
            raise ValueError(f"sample got {y.shape[0]} conditions for num_samples={n}")
        seed = self.draw_seed(seed)
        prior = self.prior_distribution(y)
        z = prior.sample(seed=seed) if prior.batch_shape.rank else prior.sample(n, seed=seed)
        return self.decode(z, y).mean()

    def call(self, inputs, training=False):
        x, y = inputs
        return self.reconstruct(x, y)

    # ------------------------------------------------------------------ training

    def dummy_inputs(self):
        x = tf.zeros((1,) + self.data_shape, tf.float32)
        if self.num_classes:
            return x, tf.zeros((1,), tf.int32)
        return x, tf.zeros((1, self.condition_dim), tf.float32)

    def unpack_inputs(self, data):
        """`(x, y)` from a batch `(x, y)` (a dataset or `fit(x, y)`)."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is None and isinstance(x, (tuple, list)) and len(x) == 2:
            x, y = x
        if y is None:
            raise ValueError(
                "ConditionalVAE trains on (x, y) batches but got no y: load data with "
                "with_labels=True or call fit(x, y)"
            )
        return (x, y)

    # XLA steps drop assertions: Keras' loops check the conditions before the step.

    def fit(self, *args, **kwargs):
        return self._with_checked_conditions(super().fit, args, kwargs)

    def evaluate(self, *args, **kwargs):
        return self._with_checked_conditions(super().evaluate, args, kwargs)

    def predict(self, *args, **kwargs):
        return self._with_checked_conditions(super().predict, args, kwargs)

    def _with_checked_conditions(self, method, args, kwargs):
        """Call Keras' `fit`, `evaluate` or `predict` with the conditions of its data
        (and validation data) checked: arrays before it starts, a `tf.data.Dataset` in
        its input pipeline. A failed check is a one-line ValueError."""
        bound = inspect.signature(method).bind(*args, **kwargs)
        for name in ("x", "validation_data"):
            data = bound.arguments.get(name)
            if name == "x" and bound.arguments.get("y") is not None:
                data = (data, bound.arguments["y"])
            if isinstance(data, tf.data.Dataset):
                bound.arguments[name] = data.map(self._checked_batch)
            elif isinstance(data, (tuple, list)):
                x, y = self.unpack_inputs(data)
                self.check_condition(y, len(x))
        try:
            return method(*bound.args, **bound.kwargs)
        except tf.errors.InvalidArgumentError as error:
            message = failed_check(error)
            if message is None or not ("label" in message or "condition" in message):
                raise
            raise ValueError(message) from None

    @tf.autograph.experimental.do_not_convert  # errors stay one line
    def _checked_batch(self, *batch):
        """A dataset's batch, passed on after its condition checks (a map function:
        tf.data runs it outside the step, so XLA never drops the assertions)."""
        data = batch if len(batch) > 1 else batch[0]
        x, y = self.unpack_inputs(data)
        checks = self.condition_checks(self.condition_tensor(y), tf.shape(x)[0])
        with tf.control_dependencies(check_assertions(checks)):
            return tf.nest.map_structure(tf.identity, data)
