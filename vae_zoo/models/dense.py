"""Dense (MLP) VAE: the encoder flattens the input, the decoder mirrors the encoder."""

from __future__ import annotations

import keras

from vae_zoo import bodies
from vae_zoo.models.base import MODELS
from vae_zoo.models.family import Family, check_latent_dim, compose


@keras.saving.register_keras_serializable(package="vae_zoo")
@MODELS.register("dense")
class DenseVAE(Family):
    """VAE with multilayer-perceptron encoder and decoder, for any input shape.

    The encoder is `Flatten → Dense(h) for h in hidden_units → Dense(posterior
    params)`; the decoder mirrors it: `Dense(h) for h in reversed(hidden_units) →
    Dense(likelihood params) → Reshape(input_shape)`.

    Args:
        input_shape: tuple, one example's shape: `(28, 28, 1)` images or `(D,)` vectors.
        latent_dim: int > 0, size of z.
        hidden_units: sequence of ints, encoder layer widths (decoder reversed).
        likelihood: name of a p(x|z) head in `vae_zoo.heads.LIKELIHOODS`, or
            `{"name": ..., **options}` (e.g. `{"name": "gaussian", "scale": 0.1}`).
        posterior: name or spec of a q(z|x) head in `vae_zoo.heads.POSTERIORS`.
        prior: name or spec of a prior in `vae_zoo.heads.PRIORS`.
        activation: hidden-layer activation.
        **kwargs: the shared arguments (beta, analytic_kl, objective, num_samples,
            seed) and Keras layer arguments; see `Family`.

    Example:
    ```python
    model = DenseVAE(input_shape=(28, 28, 1), latent_dim=32, hidden_units=(512, 256))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=10, batch_size=128)
    ```

    Reference: Kingma & Welling, "Auto-Encoding Variational Bayes", arXiv:1312.6114.
    """

    # Small arguments that build a working model (the shared family tests use them).
    example_arguments = dict(input_shape=(8, 8, 1), latent_dim=2, hidden_units=(8,))

    def __init__(
        self,
        input_shape,
        latent_dim,
        hidden_units=(512, 256),
        likelihood="bernoulli",
        posterior="diagonal_gaussian",
        prior="standard_normal",
        activation="relu",
        **kwargs,
    ):
        body = bodies.DenseBody(hidden_units=hidden_units, activation=activation)
        super().__init__(**compose(input_shape, (check_latent_dim(latent_dim),), body,
                                   posterior, likelihood, prior), **kwargs)
