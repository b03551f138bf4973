"""Model families: the base `VAE` and thin constructors over it, registered in `MODELS`.

Every module of this package is imported here, so a new family registers itself by
existing (`@MODELS.register(...)` in its own module): nothing else needs editing.
"""

import importlib
import pkgutil

from vae_zoo.heads.priors import ConditionalGaussianPrior  # defined with the priors
from vae_zoo.models.base import MODELS, VAE
from vae_zoo.models.family import Family
from vae_zoo.models.conditional import ConditionalVAE
from vae_zoo.models.conv import ConvVAE
from vae_zoo.models.dense import DenseVAE
from vae_zoo.models.discrete import DiscreteVAE
from vae_zoo.models.fully_conv import FullyConvVAE
from vae_zoo.models.gaussian_mixture import GaussianMixture  # EM baseline, not a VAE
from vae_zoo.models.vqvae import VQVAE

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "MODELS",
    "VAE",
    "Family",
    "DenseVAE",
    "ConvVAE",
    "FullyConvVAE",
    "ConditionalVAE",
    "ConditionalGaussianPrior",
    "DiscreteVAE",
    "VQVAE",
    "GaussianMixture",
]
