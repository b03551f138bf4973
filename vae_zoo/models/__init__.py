"""Model families. Each is a thin constructor over `VAE`, registered in `MODELS`."""

from vae_zoo.models.base import MODELS, VAE
from vae_zoo.models.dense import DenseVAE

__all__ = ["MODELS", "VAE", "DenseVAE"]
