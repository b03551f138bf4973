"""A VAE written the way the keras.io example writes one, as the speed baseline.

The structure follows the keras.io "Variational AutoEncoder" example (a `Sampling`
layer drawing z = μ + exp(½ log σ²)·ε, functional encoder and decoder models, a
`keras.Model` subclass whose `train_step` opens a `tf.GradientTape`, sums the binary
cross-entropy over pixels and the analytic Gaussian KL over latent dimensions, averages
both over the batch, and applies Adam through `optimizer.apply_gradients`; `compile`
with its defaults). Only the architecture is ours: the dense and conv MNIST
architectures of `recipes/mnist_dense.toml` and `recipes/mnist_conv.toml`, so the two
implementations do the same arithmetic per example.

Nothing here is used by vae_zoo itself.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers, ops


class Sampling(layers.Layer):
    """z = μ + σ·ε with ε ~ N(0, I), from `(z_mean, z_log_var)`."""

    def __init__(self, seed=1337, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        # dtype: so that it also runs under a mixed-precision policy (keras.io's draws float32).
        epsilon = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype,
                                      seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


def _encoder_head(features, latent_dim):
    z_mean = layers.Dense(latent_dim, name="z_mean")(features)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(features)
    return z_mean, z_log_var, Sampling()([z_mean, z_log_var])


def dense_encoder_decoder(latent_dim=32, hidden_units=(512, 256), input_shape=(28, 28, 1)):
    """784-512-256-z encoder and its mirror image, sigmoid output, for images
    `input_shape` (or flat vectors: `(784,)`)."""
    inputs = keras.Input(shape=input_shape)
    h = layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for units in hidden_units:
        h = layers.Dense(units, activation="relu")(h)
    encoder = keras.Model(inputs, _encoder_head(h, latent_dim), name="encoder")

    latent = keras.Input(shape=(latent_dim,))
    h = latent
    for units in reversed(hidden_units):
        h = layers.Dense(units, activation="relu")(h)
    h = layers.Dense(math.prod(input_shape), activation="sigmoid")(h)
    if len(input_shape) > 1:
        h = layers.Reshape(input_shape)(h)
    decoder = keras.Model(latent, h, name="decoder")
    return encoder, decoder


def conv_encoder_decoder(latent_dim=32, filters=(32, 64), dense_units=256, input_shape=(28, 28, 1)):
    """28×28×1 → 3×3 convs 32, 64 (stride 2) → dense 256 → z, and the mirror image."""
    if tuple(input_shape) != (28, 28, 1):
        raise ValueError(f"the conv baseline takes 28x28x1 images, got {input_shape}")
    inputs = keras.Input(shape=(28, 28, 1))
    h = inputs
    for f in filters:
        h = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Dense(dense_units, activation="relu")(layers.Flatten()(h))
    encoder = keras.Model(inputs, _encoder_head(h, latent_dim), name="encoder")

    latent = keras.Input(shape=(latent_dim,))
    h = layers.Dense(dense_units, activation="relu")(latent)
    h = layers.Dense(7 * 7 * filters[-1], activation="relu")(h)
    h = layers.Reshape((7, 7, filters[-1]))(h)
    for f in reversed(filters[:-1]):
        h = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu")(h)
    outputs = layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid")(h)
    decoder = keras.Model(latent, outputs, name="decoder")
    return encoder, decoder


class KerasIoVAE(keras.Model):
    """The keras.io example's VAE model: custom `train_step`, three loss trackers."""

    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def train_step(self, data):
        with tf.GradientTape() as tape:
            z_mean, z_log_var, z = self.encoder(data)
            reconstruction = self.decoder(z)
            # the example's images are [B, 28, 28, 1]: BCE over the channel axis, summed
            # over the pixels; a trailing axis of 1 does the same for flat [B, 784] data
            bce = keras.losses.binary_crossentropy(data[..., None], reconstruction[..., None])
            reconstruction_loss = ops.mean(ops.sum(bce, axis=tuple(range(1, len(bce.shape)))))
            kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
            kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
            total_loss = reconstruction_loss + kl_loss
        grads = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total_loss_tracker.update_state(total_loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {
            "loss": self.total_loss_tracker.result(),
            "reconstruction_loss": self.reconstruction_loss_tracker.result(),
            "kl_loss": self.kl_loss_tracker.result(),
        }


def build(architecture="dense", latent_dim=32, input_shape=(28, 28, 1)):
    """A compiled keras.io-style VAE ("dense" or "conv"), Adam(1e-3), default compile,
    for inputs of `input_shape` (the dense one also takes flat `(784,)`)."""
    pair = dense_encoder_decoder if architecture == "dense" else conv_encoder_decoder
    model = KerasIoVAE(*pair(latent_dim=latent_dim, input_shape=tuple(input_shape)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model
