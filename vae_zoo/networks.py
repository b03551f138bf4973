"""Encoder and decoder bodies: plain Keras layers, no distributions.

A body maps an input to a parameter tensor of a given shape (`params_shape`, asked of
the head that will read it). Bodies end with that projection so a head only reshapes
and constrains.

Layers: `dense_layers`, `conv_layers` and `projection` (what `vae_zoo.bodies` assembles
into encoders), `mlp_*` (any shape, flattened), `conv_decoder` (transposed convolutions
from a dense bottleneck, fixed image size), `fully_conv_*` (convolutions only, any image
size divisible by the stride) and `masked_conv_net` (causal in raster order, for
autoregressive priors over a latent map).
"""

from __future__ import annotations

import math

import keras
import numpy as np


def dense_layers(units, activation="relu"):
    """`Dense(u, activation)` for u in `units`."""
    return [keras.layers.Dense(int(u), activation=activation) for u in units]


def conv_layers(filters, kernel_sizes, strides, activation="relu"):
    """`Conv2D(f, k, s, "same", activation)` per entry of filters/kernel_sizes/strides."""
    return [
        keras.layers.Conv2D(int(f), int(k), strides=int(s), padding="same", activation=activation)
        for f, k, s in zip(filters, kernel_sizes, strides, strict=True)
    ]


def projection(params_shape):
    """The last layers of a body: a linear `Dense` to a head's parameters, reshaped to
    `params_shape`."""
    return [keras.layers.Dense(math.prod(params_shape)), keras.layers.Reshape(tuple(params_shape))]


def mlp_encoder(hidden_units, params_shape, activation="relu", name="encoder"):
    """MLP body `[B, *input_shape] -> [B, *params_shape]` (input flattened first)."""
    layers = [keras.layers.Flatten(), *dense_layers(hidden_units, activation)]
    return keras.Sequential(layers + projection(params_shape), name=name)


def mlp_decoder(hidden_units, params_shape, activation="relu", name="decoder"):
    """MLP body `[B, latent_dim] -> [B, *params_shape]`; list `hidden_units` input-side first."""
    return keras.Sequential(dense_layers(hidden_units, activation) + projection(params_shape),
                            name=name)


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


def check_conv_layers(image_shape, filters, kernel_sizes, strides):
    """Raise `ValueError` unless `image_shape` is `(H, W, C)` with H and W divisible by
    the total stride, and filters, kernel sizes and strides are equally long, non-empty."""
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {image_shape}")
    if not filters or not len(filters) == len(kernel_sizes) == len(strides):
        raise ValueError(
            "filters, kernel_sizes and strides must be non-empty and equally long, got "
            f"{tuple(filters)}, {tuple(kernel_sizes)}, {tuple(strides)}"
        )
    stride = total_stride(strides)
    if image_shape[0] % stride or image_shape[1] % stride:
        raise ValueError(
            f"image size {image_shape[0]}x{image_shape[1]} is not divisible by the total "
            f"stride {stride} (the product of strides {tuple(strides)})"
        )


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
    layers = dense_layers(dense_units, activation)
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


def fully_conv_encoder(input_channels, filters, kernel_sizes, strides, params_channels,
                       activation="relu", name="encoder"):
    """All-convolutional body `[B, H, W, C] -> [B, H / S, W / S, params_channels]`.

    `Conv2D(f, k, s, "same")` per entry of filters/kernel_sizes/strides, then a 1×1
    `Conv2D(params_channels)` projection at every position. No layer fixes H or W, so
    the same weights encode any image whose sides are divisible by S, the product of
    strides.
    """
    layers = [keras.Input(shape=(None, None, int(input_channels)))]
    layers += conv_layers(filters, kernel_sizes, strides, activation)
    layers.append(keras.layers.Conv2D(int(params_channels), 1))
    return keras.Sequential(layers, name=name)


def fully_conv_decoder(latent_channels, filters, kernel_sizes, strides, output_channels,
                       params_per_element, activation="relu", name="decoder"):
    """All-convolutional body `[B, h, w, latent_channels] -> [B, h·S, w·S, C, k]`.

    `Conv2DTranspose(f, k, s, "same")` per entry of filters/kernel_sizes/strides
    (listed input-side first, e.g. `(64, 32)` for an encoder `(32, 64)`), then a 1×1
    `Conv2D(C · k)` projection and `SplitChannels(k)`, k = `params_per_element`. Any
    h, w.
    """
    layers = [keras.Input(shape=(None, None, int(latent_channels)))]
    layers += [
        keras.layers.Conv2DTranspose(
            int(f), int(k), strides=int(s), padding="same", activation=activation
        )
        for f, k, s in zip(filters, kernel_sizes, strides, strict=True)
    ]
    layers += [
        keras.layers.Conv2D(int(output_channels) * int(params_per_element), 1),
        SplitChannels(params_per_element),
    ]
    return keras.Sequential(layers, name=name)


@keras.saving.register_keras_serializable(package="vae_zoo")
class MaskedConv2D(keras.layers.Conv2D):
    """`Conv2D` ("same", stride 1) whose output at a position sees only earlier positions.

    Positions are ordered row by row (raster order). The kernel is multiplied by a fixed
    mask: type "A" hides the centre and everything after it (use it first, on the
    data), type "B" keeps the centre (use it on features already computed by masked
    layers). The channels of one position are one block, not ordered among themselves.

    Args:
        filters: int, output channels.
        kernel_size: odd int.
        mask_type: "A" or "B".
        **kwargs: other `Conv2D` arguments (activation, initializers, ...).

    Reference: van den Oord et al., "Pixel Recurrent Neural Networks", arXiv:1601.06759.
    """

    def __init__(self, filters, kernel_size, mask_type="B", **kwargs):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        kwargs.update(padding="same", strides=1)
        super().__init__(filters, kernel_size, **kwargs)
        self.mask_type = mask_type

    def build(self, input_shape):
        super().build(input_shape)
        height, width = self.kernel_size
        mask = np.ones((height, width, 1, 1), "float32")
        mask[height // 2, width // 2 + (self.mask_type == "B"):] = 0.0  # centre row
        mask[height // 2 + 1:] = 0.0  # rows below
        self.kernel_mask = mask

    def convolution_op(self, inputs, kernel):
        mask = keras.ops.cast(self.kernel_mask, kernel.dtype)
        return super().convolution_op(inputs, kernel * mask)

    def get_config(self):
        return {**super().get_config(), "mask_type": self.mask_type}


def masked_conv_net(channels, filters, kernel_size, num_layers, params_channels,
                    activation="relu", name="masked_conv_net"):
    """Causal body `[B, h, w, channels] -> [B, h, w, params_channels]`, any h, w.

    The output at a position depends only on the inputs at earlier positions (raster
    order): `MaskedConv2D(filters, kernel_size, "A")`, then `num_layers − 1` ×
    `MaskedConv2D(filters, kernel_size, "B")`, then a 1×1 projection initialised to
    zero (so the body starts by outputting zeros).
    """
    if int(num_layers) < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers = [keras.Input(shape=(None, None, int(channels)))]
    layers += [
        MaskedConv2D(int(filters), int(kernel_size), "A" if i == 0 else "B", activation=activation)
        for i in range(int(num_layers))
    ]
    layers.append(keras.layers.Conv2D(int(params_channels), 1, kernel_initializer="zeros"))
    return keras.Sequential(layers, name=name)


def made_degrees(event_size, hidden_units, reverse=False):
    """MADE's degrees: `(input degrees [d], [hidden degrees [h] per layer])`.

    Inputs get 1..d (d..1 with `reverse`); hidden units cycle through 1..max(d − 1, 1),
    so every degree is present when a layer is wide enough. Output i (of degree
    deg_in[i]) may see hidden unit j only if deg_out[i] > deg_hidden[j], and hidden
    unit j may see input i only if deg_hidden[j] >= deg_in[i]: output i depends on the
    inputs of lower degree only.
    """
    inputs = np.arange(1, event_size + 1)
    if reverse:
        inputs = inputs[::-1]
    hidden = [np.arange(int(units)) % max(event_size - 1, 1) + 1 for units in hidden_units]
    return inputs, hidden


def made_masks(event_size, hidden_units, reverse=False):
    """The 0/1 masks of MADE's kernels, `[in, out]` each, float32: one per hidden layer
    and the output layer's `[h_last, d]` (the same for each output per dimension)."""
    inputs, hidden = made_degrees(event_size, hidden_units, reverse)
    masks, previous = [], inputs
    for degrees in hidden:
        masks.append((degrees[None, :] >= previous[:, None]).astype("float32"))
        previous = degrees
    masks.append((inputs[None, :] > previous[:, None]).astype("float32"))
    return masks


@keras.saving.register_keras_serializable(package="vae_zoo")
class MADE(keras.layers.Layer):
    """Masked autoencoder for distribution estimation, with an optional context.

    `[..., d]` inputs (and a context `[..., c]` broadcasting with them) → `[..., d,
    params_per_dimension]`: output i depends on inputs of lower degree only (inputs
    1..d in order, or d..1 with `reverse`), and on the context without restriction.
    Each hidden layer and the output layer is a masked dense layer (kernel ⊙ mask,
    `made_masks`) plus, when a context is given, an unmasked dense projection of it
    (so even the first outputs, which see no input, depend on the context). The output
    layer starts at zero kernels (its bias at `output_bias`, one value per parameter), so a flow
    built on it starts from the same map for every input.

    Args:
        event_size: d.
        hidden_units: sequence of ints, widths of the hidden layers (at least one).
        params_per_dimension: outputs per input dimension (2: a shift and a scale).
        context_size: c, or 0 for no context.
        reverse: order the inputs d..1 (alternate between stacked flows).
        activation: hidden activation.
        output_bias: sequence of `params_per_dimension` floats, the output bias's start.

    Example:
    ```python
    made = MADE(4, hidden_units=(16,), context_size=3)
    out = made(tf.zeros([8, 4]), tf.zeros([8, 3]))   # [8, 4, 2]
    ```

    Reference: Germain et al., "MADE: Masked Autoencoder for Distribution Estimation",
    arXiv:1502.03509; the context as in Kingma et al., arXiv:1606.04934.
    """

    def __init__(self, event_size, hidden_units=(64,), params_per_dimension=2, context_size=0,
                 reverse=False, activation="elu", output_bias=None, **kwargs):
        super().__init__(**kwargs)
        self.event_size = int(event_size)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.params_per_dimension = int(params_per_dimension)
        self.context_size = int(context_size)
        self.reverse = bool(reverse)
        self.activation = activation
        self.output_bias = tuple(float(b) for b in (output_bias or (0.0,) * self.params_per_dimension))
        if self.event_size < 1 or not self.hidden_units or min(self.hidden_units) < 1:
            raise ValueError(
                f"MADE needs event_size >= 1 and hidden layers of >= 1 units, got "
                f"{self.event_size} and {self.hidden_units}"
            )
        if len(self.output_bias) != self.params_per_dimension:
            raise ValueError(f"output_bias needs {self.params_per_dimension} values, got {self.output_bias}")
        self.masks = made_masks(self.event_size, self.hidden_units, self.reverse)
        self.activation_fn = keras.activations.get(activation)

    def build(self, input_shape=None):
        sizes = (self.event_size,) + self.hidden_units
        self.kernels, self.biases, self.context_kernels = [], [], []
        for i, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.kernels.append(self.add_weight(name=f"kernel_{i}", shape=(size_in, size_out),
                                                initializer="glorot_uniform"))
            self.biases.append(self.add_weight(name=f"bias_{i}", shape=(size_out,),
                                               initializer="zeros"))
            if self.context_size:
                self.context_kernels.append(self.add_weight(
                    name=f"context_kernel_{i}", shape=(self.context_size, size_out),
                    initializer="glorot_uniform",
                ))
        outputs = self.event_size * self.params_per_dimension
        self.output_kernel = self.add_weight(name="output_kernel", shape=(sizes[-1], outputs),
                                             initializer="zeros")
        if self.context_size:  # the first outputs see no hidden unit, but see the context
            self.output_context_kernel = self.add_weight(
                name="output_context_kernel", shape=(self.context_size, outputs),
                initializer="zeros",
            )
        self.output_bias_weight = self.add_weight(
            name="output_bias", shape=(outputs,),
            initializer=keras.initializers.Constant(
                np.tile(np.asarray(self.output_bias, "float32"), self.event_size)
            ),
        )

    def call(self, inputs, context=None):
        hidden = inputs
        for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            hidden = keras.ops.matmul(hidden, kernel * self.masks[i]) + bias
            if self.context_size:
                hidden = hidden + keras.ops.matmul(context, self.context_kernels[i])
            hidden = self.activation_fn(hidden)
        # Each input dimension's parameters are adjacent: output i·k + j is parameter j
        # of dimension i, with dimension i's mask.
        mask = np.repeat(self.masks[-1], self.params_per_dimension, axis=1)
        out = keras.ops.matmul(hidden, self.output_kernel * mask) + self.output_bias_weight
        if self.context_size:
            out = out + keras.ops.matmul(context, self.output_context_kernel)
        shape = keras.ops.shape(out)
        return keras.ops.reshape(out, (*shape[:-1], self.event_size, self.params_per_dimension))

    def get_config(self):
        return {
            **super().get_config(),
            "event_size": self.event_size,
            "hidden_units": self.hidden_units,
            "params_per_dimension": self.params_per_dimension,
            "context_size": self.context_size,
            "reverse": self.reverse,
            "activation": self.activation,
            "output_bias": self.output_bias,
        }
