"""Conditional VAE: encoder q(z|x, y), decoder p(x|z, y), prior p(z) or p(z|y).

y is a class label (one-hot encoded inside the model) or any conditioning vector. The
encoder sees y beside x, the decoder sees it beside z, and the prior is either the
fixed N(0, I) or a small network p(z|y) (`ConditionalGaussianPrior`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from vae_zoo import heads, networks
from vae_zoo.models.base import MODELS
from vae_zoo.models.family import Family

BODIES = ("dense", "conv")


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
    Out-of-range labels raise ValueError eagerly and a `tf.debugging` assertion in
    graph mode; XLA (`jit_compile=True`) drops assertions, so they are not checked there.

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
        input_shape = tuple(int(d) for d in input_shape)
        latent_dim = int(latent_dim)
        hidden_units = tuple(int(u) for u in hidden_units)
        filters, kernel_sizes, strides, dense_units = (
            tuple(int(v) for v in values)
            for values in (filters, kernel_sizes, strides, dense_units)
        )
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if not input_shape or min(input_shape) < 1:
            raise ValueError(f"input_shape must be non-empty and positive, got {input_shape}")
        if (num_classes is None) == (condition_dim is None):
            raise ValueError("give exactly one of num_classes (labels) and condition_dim (vectors)")
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if condition_dim is not None and int(condition_dim) < 1:
            raise ValueError(f"condition_dim must be >= 1, got {condition_dim}")
        if body not in BODIES:
            raise ValueError(f"body must be one of {BODIES}, got {body!r}")
        if body == "conv" and len(input_shape) != 3:
            raise ValueError(f"the conv body needs (H, W, C) images, got input_shape {input_shape}")
        # Read by encode/decode/dummy_inputs, which the base constructor already runs.
        self.num_classes = None if num_classes is None else int(num_classes)
        self.condition_dim = None if condition_dim is None else int(condition_dim)
        self.body = body
        # Layers.
        posterior_head = heads.POSTERIORS.build(posterior)
        likelihood_head = heads.LIKELIHOODS.build(likelihood)
        prior_layer = heads.PRIORS.build(prior, latent_shape=(latent_dim,))
        posterior_params = posterior_head.params_shape((latent_dim,))
        likelihood_params = likelihood_head.params_shape(input_shape)
        if body == "dense":
            encoder = networks.mlp_encoder(hidden_units, posterior_params, activation)
            decoder = networks.mlp_decoder(hidden_units[::-1], likelihood_params, activation)
        else:
            encoder = networks.conv_encoder(
                filters, kernel_sizes, strides, dense_units, posterior_params, activation
            )
            decoder = networks.conv_decoder(
                input_shape, filters[::-1], kernel_sizes[::-1], strides[::-1],
                dense_units[::-1], likelihood_params[-1], activation,
            )
        # Wiring (the condition is joined to x and z in encode/decode).
        super().__init__(
            encoder=encoder,
            decoder=decoder,
            posterior=posterior_head,
            likelihood=likelihood_head,
            prior=prior_layer,
            input_shape=input_shape,
            **kwargs,
        )

    # ------------------------------------------------------------------ condition

    def condition(self, y):
        """The condition vector c(y), float32 `[B, k]`: one-hot labels, or y as is.

        Raises ValueError for a missing y, a wrong shape, or (eagerly) a label outside
        `[0, num_classes)`; inside a `tf.function` the range is checked by a
        `tf.debugging` assertion.
        """
        if y is None:
            raise ValueError(
                f"{type(self).__name__} needs the condition y (labels or vectors) with x"
            )
        y = tf.convert_to_tensor(y)
        if self.num_classes is None:
            if y.shape.rank != 2 or y.shape[-1] != self.condition_dim:
                raise ValueError(
                    f"condition y must have shape [B, {self.condition_dim}], got {y.shape}"
                )
            return tf.cast(y, tf.float32)
        if y.dtype.is_floating and y.shape.rank == 2 and y.shape[-1] == self.num_classes:
            return tf.cast(y, tf.float32)  # already one-hot (or soft) labels
        if y.shape.rank == 2 and y.shape[-1] == 1:
            y = y[:, 0]
        if y.shape.rank != 1:
            raise ValueError(f"labels y must have shape [B], got {y.shape}")
        labels = tf.cast(y, tf.int32)  # [B]
        message = f"labels must lie in [0, {self.num_classes})"
        if tf.executing_eagerly():
            values = labels.numpy()
            bad = values[(values < 0) | (values >= self.num_classes)]
            if bad.size:
                raise ValueError(f"{message}, got label {bad[0]}")
        elif not self.jit_compile:  # XLA drops assertions (with a warning): skip them
            with tf.control_dependencies([
                tf.debugging.assert_non_negative(labels, message=message),
                tf.debugging.assert_less(labels, self.num_classes, message=message),
            ]):
                labels = tf.identity(labels)
        return tf.one_hot(labels, self.num_classes)  # [B, num_classes]

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
        return self.posterior(self.encoder(self._join(x, self.condition(y))))

    def decode(self, z, y=None):
        """p(x|z, y): batch `[B]`, event `input_shape`."""
        z = tf.convert_to_tensor(z, tf.float32)
        return self.likelihood(self.decoder(tf.concat([z, self.condition(y)], axis=-1)))

    def prior_distribution(self, y=None):
        """p(z|y): batch `[B]` for a learned conditional prior, `[]` for a fixed one."""
        if getattr(self.prior, "conditional", False):
            return self.prior.distribution(self.condition(y))
        return self.prior.distribution()

    def sample(self, n, y=None, seed=None):
        """`n` draws of E[x|z, y], z ~ p(z|y): `[n, *input_shape]`.

        Args:
            n: int, number of samples.
            y: one label (an int, used for all n) or n labels `[n]`; for a model
                conditioned on vectors, one `[condition_dim]` vector or `[n, condition_dim]`.
            seed: int or None.

        Example: `model.sample(8, y=3)`; `model.sample(10, y=np.arange(10), seed=0)`.
        """
        if y is None:
            raise ValueError("ConditionalVAE.sample needs y, e.g. model.sample(8, y=3)")
        y = tf.convert_to_tensor(y)
        if y.shape.rank == (0 if self.num_classes else 1):  # one condition for all n
            y = tf.broadcast_to(y, tf.concat([[n], tf.shape(y)], 0))
        elif isinstance(n, int) and y.shape[0] is not None and y.shape[0] != n:
            raise ValueError(f"sample got {y.shape[0]} conditions for n={n} samples")
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
