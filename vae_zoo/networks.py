"""Encoder and decoder bodies: plain Keras layers, no distributions.

A body maps an input to a parameter tensor of a given shape (`params_shape`, asked of
the head that will read it). Bodies end with that projection so a head only reshapes
and constrains.
"""

from __future__ import annotations

import math

import keras


def mlp_encoder(hidden_units, params_shape, activation="relu", name="encoder"):
    """MLP body `[B, *input_shape] -> [B, *params_shape]` (input flattened first)."""
    layers = [keras.layers.Flatten()]
    layers += [keras.layers.Dense(int(u), activation=activation) for u in hidden_units]
    layers += [
        keras.layers.Dense(math.prod(params_shape)),
        keras.layers.Reshape(tuple(params_shape)),
    ]
    return keras.Sequential(layers, name=name)


def mlp_decoder(hidden_units, params_shape, activation="relu", name="decoder"):
    """MLP body `[B, latent_dim] -> [B, *params_shape]`; list `hidden_units` input-side first."""
    layers = [keras.layers.Dense(int(u), activation=activation) for u in hidden_units]
    layers += [
        keras.layers.Dense(math.prod(params_shape)),
        keras.layers.Reshape(tuple(params_shape)),
    ]
    return keras.Sequential(layers, name=name)


@keras.saving.register_keras_serializable(package="vae_zoo")
class SplitChannels(keras.layers.Layer):
    """`[B, H, W, C·k] -> [B, H, W, C, k]`, for any H and W (unlike a static Reshape)."""

    def __init__(self, params_per_element, **kwargs):
        super().__init__(**kwargs)
        self.params_per_element = int(params_per_element)

    def call(self, x):
        shape = keras.ops.shape(x)
        k = self.params_per_element
        return keras.ops.reshape(x, (shape[0], shape[1], shape[2], x.shape[-1] // k, k))

    def compute_output_shape(self, input_shape):
        k = self.params_per_element
        return tuple(input_shape[:-1]) + (input_shape[-1] // k, k)

    def get_config(self):
        return {**super().get_config(), "params_per_element": self.params_per_element}


def total_stride(strides) -> int:
    return math.prod(int(s) for s in strides)


def conv_encoder(filters, kernel_sizes, strides, dense_units, params_shape, activation="relu",
                 name="encoder"):
    """Strided-conv body `[B, H, W, C] -> [B, *params_shape]`.

    `Conv2D(f, k, s, "same")` per entry of filters/kernel_sizes/strides, then Flatten,
    `Dense(u)` per entry of dense_units, and the projection to `params_shape`.
    """
    layers = [
        keras.layers.Conv2D(int(f), int(k), strides=int(s), padding="same", activation=activation)
        for f, k, s in zip(filters, kernel_sizes, strides, strict=True)
    ]
    layers.append(keras.layers.Flatten())
    layers += [keras.layers.Dense(int(u), activation=activation) for u in dense_units]
    layers += [
        keras.layers.Dense(math.prod(params_shape)),
        keras.layers.Reshape(tuple(params_shape)),
    ]
    return keras.Sequential(layers, name=name)


def conv_decoder(image_shape, filters, kernel_sizes, strides, dense_units, params_per_element,
                 activation="relu", name="decoder"):
    """Transposed-conv body `[B, latent_dim] -> [B, H, W, C, params_per_element]`.

    `Dense(u)` per entry of dense_units, a dense layer to the smallest feature map
    `(H / S, W / S, filters[0])` (S the product of strides), then one
    `Conv2DTranspose(f, k, s, "same")` per entry of filters/kernel_sizes/strides, the
    last one with `C · params_per_element` channels and no activation. `filters` is
    listed input-side first (e.g. `(128, 64, 32)` for an encoder `(32, 64, 128)`);
    the last transposed convolution's filters are replaced by the output channels.
    """
    height, width, channels = image_shape
    stride = total_stride(strides)
    if height % stride or width % stride:
        raise ValueError(
            f"image size {height}x{width} is not divisible by the total stride {stride}"
        )
    start = (height // stride, width // stride, int(filters[0]))
    layers = [keras.layers.Dense(int(u), activation=activation) for u in dense_units]
    layers += [
        keras.layers.Dense(math.prod(start), activation=activation),
        keras.layers.Reshape(start),
    ]
    out_filters = list(filters[1:]) + [channels * int(params_per_element)]
    for i, (f, k, s) in enumerate(zip(out_filters, kernel_sizes, strides, strict=True)):
        last = i == len(out_filters) - 1
        layers.append(
            keras.layers.Conv2DTranspose(
                int(f), int(k), strides=int(s), padding="same",
                activation=None if last else activation,
            )
        )
    layers.append(SplitChannels(params_per_element))
    return keras.Sequential(layers, name=name)
