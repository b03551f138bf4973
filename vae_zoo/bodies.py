"""Encoder and decoder bodies as registered parts, like the heads and priors.

A body is a spec: a registered name and its options (`{"name": "conv", "filters":
(32, 64), ...}`), validated once, with a `get_config`. It builds the Keras layers of
a model for the shapes the heads ask for (`vae_zoo.networks` holds the layers), and
never builds a distribution.

- `encoder(input_shape, params_shape)`: x `[B, *input_shape]` → the posterior head's
  parameters `[B, *params_shape]`;
- `decoder(input_shape, latent_shape, params_shape)`: z `[B, *latent_shape]` → the
  likelihood head's parameters `[B, *params_shape]`, `input_shape + (k,)` for k
  parameters per element;
- `trunk(input_shape)`: the encoder without its projection (x → features), for
  families that project the features themselves (the ladder of `HierarchicalVAE`).

Registered: "dense" (`DenseBody`: an MLP over the flattened input, the decoder its
mirror), "conv" (`ConvBody`: strided convolutions around a dense bottleneck, the
decoder transposed convolutions) and "fully_conv" (`FullyConvBody`: convolutions only,
a latent map for any image size divisible by the stride).

Example:
```python
body = BODIES.build({"name": "conv", "filters": (32, 64), "kernel_sizes": (3, 3),
                     "strides": (2, 2), "dense_units": (256,)})
body.check((28, 28, 1))
encoder = body.encoder((28, 28, 1), params_shape=(64,))  # μ and σ of a 32-d z
decoder = body.decoder((28, 28, 1), latent_shape=(32,), params_shape=(28, 28, 1, 1))
```
"""

from __future__ import annotations

import keras

from vae_zoo import networks
from vae_zoo.registry import Registry

BODIES = Registry("body")


def sizes(name, values, allow_empty=True):
    """`values` as a tuple of ints, each >= 1 (at least one unless `allow_empty`); a
    one-line ValueError naming `name` otherwise."""
    values = tuple(int(v) for v in values)
    if (not values and not allow_empty) or any(v < 1 for v in values):
        what = "sizes" if allow_empty else "at least one size"
        raise ValueError(f"{name} must list {what}, each >= 1, got {values}")
    return values


def check_input_shape(input_shape):
    """One example's shape as a tuple of ints >= 1; a one-line ValueError otherwise."""
    input_shape = tuple(int(d) for d in input_shape)
    if not input_shape or min(input_shape) < 1:
        raise ValueError(f"input_shape must be non-empty and positive, got {input_shape}")
    return input_shape


def from_arguments(name, arguments):
    """The body `name` from a family's flat constructor arguments: each of its options
    taken from `arguments` where it is there."""
    body = BODIES.get(name)
    return body(**{key: arguments[key] for key in body.options if key in arguments})


class Body:
    """Base of the registered bodies: the options of one body (`options`, name →
    default; every option a tuple of sizes unless named in `scalar_options`) and the
    layers it builds.

    Subclasses define `options`, `_layers_of_trunk` and `decoder`; `check` where an
    input shape can be wrong for them.
    """

    registry_name: str
    options: dict = {}
    scalar_options: tuple = ("activation",)

    def __init__(self, **options):
        unknown = set(options) - set(self.options)
        if unknown:
            raise TypeError(f"body {self.registry_name!r} got an unexpected option "
                            f"{sorted(unknown)[0]!r}; it takes {', '.join(self.options)}")
        for name, default in self.options.items():
            value = options.get(name, default)
            if name not in self.scalar_options:
                value = sizes(name, value)
            setattr(self, name, value)

    def check(self, input_shape):
        """A one-line ValueError if this body cannot take examples of `input_shape`."""

    def trunk(self, input_shape, name="trunk"):
        """x `[B, *input_shape]` → features `[B, F]`: the encoder before its projection."""
        return keras.Sequential(self._layers_of_trunk(input_shape), name=name)

    def encoder(self, input_shape, params_shape, name="encoder"):
        """x `[B, *input_shape]` → `[B, *params_shape]`: the trunk, then a projection."""
        return keras.Sequential(self._layers_of_trunk(input_shape)
                                + networks.projection(params_shape), name=name)

    def decoder(self, input_shape, latent_shape, params_shape, name="decoder"):
        """z `[B, *latent_shape]` → `[B, *params_shape]`."""
        raise NotImplementedError

    def _layers_of_trunk(self, input_shape):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.registry_name, **{key: getattr(self, key) for key in self.options}}

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


@BODIES.register("dense")
class DenseBody(Body):
    """An MLP: the input flattened, `Dense(h)` for h in `hidden_units`; the decoder
    mirrors it (`Dense(h)` for h in reversed `hidden_units`). Any input shape. A latent
    that is not a vector (the categories of `DiscreteVAE`) is flattened first."""

    options = {"hidden_units": (512, 256), "activation": "relu"}

    def _layers_of_trunk(self, input_shape):
        return [keras.layers.Flatten()] + networks.dense_layers(self.hidden_units, self.activation)

    def decoder(self, input_shape, latent_shape, params_shape, name="decoder"):
        mlp = networks.mlp_decoder(self.hidden_units[::-1], params_shape, self.activation,
                                   name=name if len(latent_shape) == 1 else "mlp")
        if len(latent_shape) == 1:
            return mlp
        return keras.Sequential([keras.layers.Flatten(), mlp], name=name)


@BODIES.register("conv")
class ConvBody(Body):
    """Strided convolutions `Conv2D(f, k, s, "same")` around a dense bottleneck
    (`Dense(u)` for u in `dense_units`); the decoder is the mirror image, transposed
    convolutions with every list reversed (`networks.conv_decoder`). Images `(H, W, C)`
    whose H and W the total stride divides."""

    options = {"filters": (32, 64), "kernel_sizes": (3, 3), "strides": (2, 2),
               "dense_units": (256,), "activation": "relu"}

    def check(self, input_shape):
        networks.check_conv_layers(input_shape, self.filters, self.kernel_sizes, self.strides)

    def _layers_of_trunk(self, input_shape):
        return (networks.conv_layers(self.filters, self.kernel_sizes, self.strides,
                                     self.activation)
                + [keras.layers.Flatten()]
                + networks.dense_layers(self.dense_units, self.activation))

    def decoder(self, input_shape, latent_shape, params_shape, name="decoder"):
        return networks.conv_decoder(
            input_shape, self.filters[::-1], self.kernel_sizes[::-1], self.strides[::-1],
            self.dense_units[::-1], params_shape[-1], self.activation, name=name)


@BODIES.register("fully_conv")
class FullyConvBody(Body):
    """Convolutions only: `Conv2D(f, k, s, "same")` per layer and a 1×1 projection at
    every position, so the latent is a map `(H/S, W/S, c)` and one set of weights takes
    any image whose sides the total stride S divides; the decoder is the mirror image
    (`networks.fully_conv_decoder`)."""

    options = {"filters": (32, 64), "kernel_sizes": (3, 3), "strides": (2, 2),
               "activation": "relu"}

    def check(self, input_shape):
        networks.check_conv_layers(input_shape, self.filters, self.kernel_sizes, self.strides)

    @property
    def total_stride(self) -> int:
        return networks.total_stride(self.strides)

    def encoder(self, input_shape, params_shape, name="encoder"):
        return networks.fully_conv_encoder(input_shape[-1], self.filters, self.kernel_sizes,
                                           self.strides, params_shape[-1], self.activation,
                                           name=name)

    def decoder(self, input_shape, latent_shape, params_shape, name="decoder"):
        return networks.fully_conv_decoder(
            latent_shape[-1], self.filters[::-1], self.kernel_sizes[::-1], self.strides[::-1],
            input_shape[-1], params_shape[-1], self.activation, name=name)
