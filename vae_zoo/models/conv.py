"""Convolutional VAE: strided convolutions down to a latent vector, transposed back up."""

from __future__ import annotations

import keras

from vae_zoo import bodies
from vae_zoo.models.base import MODELS
from vae_zoo.models.family import Family, check_latent_dim, compose

# Named architectures: constructor arguments (all but input_shape), see `ConvVAE.preset`.
PRESETS = {
    # 28×28×1 → 14×14×32 → 7×7×64 → 256 → z; small enough to train fast on a CPU.
    "mnist": dict(
        input_shape=(28, 28, 1),
        latent_dim=32,
        filters=(32, 64),
        kernel_sizes=(3, 3),
        strides=(2, 2),
        dense_units=(256,),
        likelihood="bernoulli",
    ),
    # The 64×64×3 architecture of the course notes: 5×5 conv 32 /2 → 3×3 conv 64 /2 →
    # 3×3 conv 128 /2 → flatten (8·8·128) → dense 1024 → μ, σ of a 256-d z; decoder
    # dense 1024 → dense 8·8·128 → reshape → transposed convs 64, 32, 3 (kernels 3, 3, 5).
    "celeba64": dict(
        input_shape=(64, 64, 3),
        latent_dim=256,
        filters=(32, 64, 128),
        kernel_sizes=(5, 3, 3),
        strides=(2, 2, 2),
        dense_units=(1024,),
        likelihood="gaussian_learned_scale",
    ),
}


@keras.saving.register_keras_serializable(package="vae_zoo")
@MODELS.register("conv")
class ConvVAE(Family):
    """VAE with a strided-convolution encoder and a transposed-convolution decoder.

    Encoder: `Conv2D(f, k, s, "same")` for each (filter, kernel size, stride) → Flatten
    → `Dense(u)` for u in dense_units → dense μ, σ of z `[B, latent_dim]`
    (`bodies.ConvBody`). Decoder, the mirror image (`networks.conv_decoder`):
    `Dense(u)` for u in reversed(dense_units) → Dense → Reshape to the smallest
    feature map `[B, H/S, W/S, filters[-1]]` → `Conv2DTranspose` with filters, kernel
    sizes and strides reversed, the last one producing the likelihood's parameters
    `[B, H, W, C, k]`. S, the product of strides, must divide H and W.

    Presets: `ConvVAE.preset("mnist")` (28×28×1) and `ConvVAE.preset("celeba64")`, the
    64×64×3 architecture of the course notes (5×5 conv 32 → 3×3 conv 64 → 3×3 conv 128,
    all stride 2 → dense 1024 → 256-d z); arguments in `PRESETS`.

    Args:
        input_shape: tuple `(H, W, C)`, H and W divisible by the product of strides.
        latent_dim: int > 0, size of z.
        filters: sequence of ints, encoder convolution channels (decoder reversed).
        kernel_sizes: sequence of ints, one per convolution.
        strides: sequence of ints, one per convolution.
        dense_units: sequence of ints, dense layers between the feature map and z.
        likelihood: name or spec of a p(x|z) head in `vae_zoo.heads.LIKELIHOODS`.
        posterior: name or spec of a q(z|x) head in `vae_zoo.heads.POSTERIORS`.
        prior: name or spec of a prior in `vae_zoo.heads.PRIORS`.
        activation: hidden-layer activation.
        **kwargs: the shared arguments (beta, analytic_kl, objective, num_samples,
            seed) and Keras layer arguments; see `Family`.

    Example:
    ```python
    model = ConvVAE(input_shape=(32, 32, 3), latent_dim=64, filters=(32, 64),
                    kernel_sizes=(3, 3), strides=(2, 2), dense_units=(256,))
    model = ConvVAE.preset("celeba64", beta=0.5)
    q = model.encode(x)        # batch [B], event [256]
    x_new = model.sample(16)   # [16, 64, 64, 3]
    ```

    Reference: Kingma & Welling, "Auto-Encoding Variational Bayes", arXiv:1312.6114.
    """

    # Small arguments that build a working model (the shared family tests use them).
    example_arguments = dict(input_shape=(8, 8, 1), latent_dim=2, filters=(4, 4),
                             kernel_sizes=(3, 3), strides=(2, 2), dense_units=(8,))

    def __init__(
        self,
        input_shape,
        latent_dim,
        filters=(32, 64, 128),
        kernel_sizes=(5, 3, 3),
        strides=(2, 2, 2),
        dense_units=(1024,),
        likelihood="bernoulli",
        posterior="diagonal_gaussian",
        prior="standard_normal",
        activation="relu",
        **kwargs,
    ):
        body = bodies.ConvBody(filters=filters, kernel_sizes=kernel_sizes, strides=strides,
                               dense_units=dense_units, activation=activation)
        super().__init__(**compose(input_shape, (check_latent_dim(latent_dim),), body,
                                   posterior, likelihood, prior), **kwargs)

    @classmethod
    def preset(cls, name, **overrides):
        """The architecture `PRESETS[name]` ("mnist", "celeba64"), with `overrides` applied."""
        if name not in PRESETS:
            raise ValueError(
                f"unknown ConvVAE preset {name!r}; choose one of: {', '.join(PRESETS)}"
            )
        return cls(**{**PRESETS[name], **overrides})
