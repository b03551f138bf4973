"""Autoregressive priors over a latent map `[h, w, c]`, in raster order.

Masked convolutions (`networks.masked_conv_net`, PixelCNN-style, van den Oord et al.
2016, arXiv:1601.06759) predict each position from the positions before it; sampling
is ancestral, one pass per position. `SpatialAutoregressivePrior` ("spatial_
autoregressive") is a Gaussian over a `FullyConvVAE`'s continuous map,
`AutoregressiveCategoricalPrior` ("autoregressive_categorical") a categorical over a
`VQVAE`'s codes. Registered in `PRIORS` beside the flat priors of
`vae_zoo.heads.priors`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import networks
from vae_zoo.distributions import LatentMapAutoregressive
from vae_zoo.heads.priors import PRIORS, Prior

tfd = tfp.distributions


class MaskedConvMapPrior(Prior):
    """Base of the autoregressive priors over a latent map `[h, w, c]` (raster order).

    Holds the causal body (`networks.masked_conv_net`: `num_layers` masked
    convolutions of `filters` channels and an odd `kernel_size`, then a 1×1 projection
    to `params_channels`, starting at zero) and the distribution over the map: a
    subclass's `conditionals(z)` gives p(z_i | z_<i) for every position i at once,
    wrapped in `LatentMapAutoregressive` (`log_prob` in one pass, sampling in one pass
    per position).
    """

    def __init__(self, latent_shape, filters, kernel_size, num_layers, activation,
                 params_channels, **kwargs):
        super().__init__(latent_shape, **kwargs)
        if int(kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.num_layers = int(num_layers)
        self.activation = activation
        self.network = networks.masked_conv_net(
            self.latent_shape[-1], self.filters, self.kernel_size, self.num_layers,
            int(params_channels), activation,
        )

    def network_outputs(self, z):
        """The body's outputs for maps z `[..., h, w, c]`: float32 `[N, h, w, params]`,
        N the product of the leading axes."""
        flat = tf.reshape(z, tf.concat([[-1], tf.shape(z)[-3:]], 0))  # [N, h, w, c]
        return tf.cast(self.network(flat), tf.float32)

    def conditionals(self, z):
        raise NotImplementedError

    def distribution(self, condition=None, latent_shape=None):
        latent_shape = tuple(latent_shape or self.latent_shape)
        height, width, _ = latent_shape
        return LatentMapAutoregressive(
            self.conditionals,
            sample0=tf.zeros(latent_shape, tf.float32),
            num_steps=height * width,  # one pass settles one more position
        )

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "num_layers": self.num_layers,
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package="vae_zoo")
@PRIORS.register("spatial_autoregressive")
class SpatialAutoregressivePrior(MaskedConvMapPrior):
    """Learned autoregressive Gaussian prior over a latent map `[h, w, c]`.

    The remedy for the fully-convolutional VAE's prior mismatch: N(0, I) makes every
    latent position independent, while the posteriors of neighbouring positions are
    correlated. Here, with positions i in raster order (row by row),

        p(z) = Π_i N(z_i; μ(z_<i), diag σ²(z_<i)),

    where masked convolutions (`networks.masked_conv_net`, PixelCNN-style) predict each
    position's c means and scales from the positions above and to its left. `log_prob`
    is exact in one network pass; sampling takes one pass per position
    (`tfd.Autoregressive`). The output layer starts at zero, so the prior starts as
    exactly N(0, I). No closed-form KL exists: the ELBO uses the Monte-Carlo estimate
    log q(z) − log p(z) at the posterior sample (automatic in `objectives`).

    Convolutional, so one set of weights is a prior for maps of any size: `distribution`
    uses `latent_shape` for sampling; `log_prob` accepts z `[..., h', w', c]`.

    Args:
        latent_shape: tuple `(h, w, c)`, the latent map.
        filters: int, channels of the hidden masked convolutions.
        kernel_size: odd int, their kernel size.
        num_layers: int >= 1, masked convolutions before the output layer.
        activation: hidden activation.
        scale_floor: float in [0, 1), lower bound on σ.

    Example:
    ```python
    prior = SpatialAutoregressivePrior((7, 7, 4))
    p = prior.distribution()          # event [7, 7, 4]
    p.log_prob(tf.zeros([8, 7, 7, 4]))  # [8]
    p.sample(2, seed=[0, 0])          # [2, 7, 7, 4], 49 sequential passes
    ```

    Reference: van den Oord et al., "Pixel Recurrent Neural Networks",
    arXiv:1601.06759 (masked convolutions); a learned autoregressive prior over a
    latent map as in "Neural Discrete Representation Learning", arXiv:1711.00937.
    """

    def __init__(self, latent_shape, filters=32, kernel_size=3, num_layers=2,
                 activation="relu", scale_floor=1e-3, **kwargs):
        latent_shape = tuple(int(d) for d in latent_shape)
        if len(latent_shape) != 3:
            raise ValueError(
                f"spatial_autoregressive needs a latent map (h, w, c), got {latent_shape}"
            )
        if not 0 <= scale_floor < 1:
            raise ValueError(f"scale_floor must be in [0, 1), got {scale_floor}")
        self.scale_floor = float(scale_floor)
        super().__init__(latent_shape, filters, kernel_size, num_layers, activation,
                         params_channels=2 * latent_shape[-1], **kwargs)
        # σ = softplus(s + offset) + floor is 1 where the network outputs s = 0.
        self.scale_offset = float(tfp.math.softplus_inverse(1.0 - self.scale_floor))

    def conditionals(self, z):
        """p(z_i | z_<i) for every position i at once: batch `z.shape[:-3]`, event `[h, w, c]`."""
        z = tf.convert_to_tensor(z, tf.float32)
        loc, raw_scale = tf.split(self.network_outputs(z), 2, axis=-1)  # [N, h, w, c] each
        scale = tf.math.softplus(raw_scale + self.scale_offset) + self.scale_floor
        return tfd.Independent(
            tfd.Normal(tf.reshape(loc, tf.shape(z)), tf.reshape(scale, tf.shape(z))),
            reinterpreted_batch_ndims=3,
        )

    def get_config(self):
        return {**super().get_config(), "scale_floor": self.scale_floor}


@keras.saving.register_keras_serializable(package="vae_zoo")
@PRIORS.register("autoregressive_categorical")
class AutoregressiveCategoricalPrior(MaskedConvMapPrior):
    """Learned PixelCNN prior over a map of categorical codes, one-hot `[h, w, K]`.

    The prior of a VQ-VAE (`vae_zoo.models.VQVAE`): with positions i in raster order,

        p(k) = Π_i Cat(k_i; softmax(f(k_<i))),

    where masked convolutions (`networks.masked_conv_net`, the same causal body as
    `SpatialAutoregressivePrior`) read the one-hot codes above and to the left of each
    position and output its K logits. `log_prob` is exact in one network pass;
    sampling is ancestral, one pass per position (`tfd.Autoregressive`, every pass
    with the same noise, so settled positions keep their codes). The output layer
    starts at zero, so the prior starts uniform: log p(k) = −h·w·log K.

    Args:
        latent_shape: tuple `(h, w, K)`: the code map and the number of codes.
        filters: int, channels of the hidden masked convolutions.
        kernel_size: odd int, their kernel size.
        num_layers: int >= 1, masked convolutions before the output layer.
        activation: hidden activation.

    Example:
    ```python
    prior = AutoregressiveCategoricalPrior((7, 7, 64))
    p = prior.distribution()                    # batch [], event [7, 7, 64]
    codes = p.sample(2, seed=[0, 0])            # [2, 7, 7, 64] one-hot, 49 passes
    p.log_prob(codes)                           # [2]
    ```

    Reference: van den Oord et al., "Neural Discrete Representation Learning",
    arXiv:1711.00937 (a PixelCNN prior over VQ-VAE codes); "Pixel Recurrent Neural
    Networks", arXiv:1601.06759 (masked convolutions).
    """

    def __init__(self, latent_shape, filters=32, kernel_size=3, num_layers=2,
                 activation="relu", **kwargs):
        latent_shape = tuple(int(d) for d in latent_shape)
        if len(latent_shape) != 3 or latent_shape[-1] < 2:
            raise ValueError(
                "autoregressive_categorical needs a code map (h, w, num_codes) with at "
                f"least 2 codes, got {latent_shape}"
            )
        super().__init__(latent_shape, filters, kernel_size, num_layers, activation,
                         params_channels=latent_shape[-1], **kwargs)

    def conditionals(self, z):
        """p(k_i | k_<i) for every position i at once: batch `z.shape[:-3]`, event `[h, w, K]`."""
        z = tf.convert_to_tensor(z, tf.float32)
        logits = tf.reshape(self.network_outputs(z), tf.shape(z))
        return tfd.Independent(
            tfd.OneHotCategorical(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=2
        )
