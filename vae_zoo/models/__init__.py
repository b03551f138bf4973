"""Model families. Each is a thin constructor over `VAE`, registered in `MODELS`."""

from vae_zoo.models.base import MODELS, VAE
from vae_zoo.models.conditional import ConditionalGaussianPrior, ConditionalVAE
from vae_zoo.models.conv import ConvVAE
from vae_zoo.models.dense import DenseVAE
from vae_zoo.models.discrete import DiscreteVAE
from vae_zoo.models.fully_conv import FullyConvVAE
from vae_zoo.models.gaussian_mixture import GaussianMixture  # EM baseline, not a VAE

__all__ = [
    "MODELS",
    "VAE",
    "DenseVAE",
    "ConvVAE",
    "FullyConvVAE",
    "ConditionalVAE",
    "ConditionalGaussianPrior",
    "DiscreteVAE",
    "GaussianMixture",
]
