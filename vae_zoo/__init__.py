"""vae_zoo: variational autoencoders for Keras 3 with TensorFlow Probability distributions."""

__version__ = "0.1.0"
