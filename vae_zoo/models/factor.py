"""FactorVAE: the ELBO plus a total-correlation penalty estimated by a discriminator.

The total correlation TC(z) = KL(q(z) || Π_j q(z_j)) of the aggregate posterior
q(z) = E_x q(z|x) measures how far the latent dimensions are from independent. It has
no closed form, so a discriminator D(z) learns to tell samples of q(z) (z ~ q(z|x)
over a batch) from samples of Π_j q(z_j) (the same batch with each dimension shuffled
on its own, `objectives.permute_dims`). At its optimum its logit is the log density
ratio log q(z)/Π_j q(z_j), whose mean over z ~ q(z) is TC. The VAE minimizes
−ELBO + γ·TC through that logit; the discriminator minimizes its cross-entropy with its
own optimizer (the base model's auxiliary-part hooks, one `train_step`). Both losses
are the registered objective "factor_vae"'s, from the critic and the shuffle the model
hands it in its `forward` record.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from vae_zoo import bodies, networks, objectives
from vae_zoo.models.base import MODELS
from vae_zoo.models.family import Family, body_of, check_latent_dim, compose
from vae_zoo.models.forward import elbo_terms
from vae_zoo.models.training_objectives import OBJECTIVES, Objective, Option


@OBJECTIVES.register("factor_vae")
class FactorVAEObjective(Objective):
    """FactorVAE's two losses (Kim & Mnih 2018, arXiv:1802.05983), per example: the
    VAE's −(log p(x|z) − β·KL) + γ·ℓ(z), with ℓ the critic's logit at z ~ q(z|x)
    ("tc"), and the critic's cross-entropy at z held fixed and its dimension-wise
    shuffle ("discriminator_loss"). Option `gamma` (γ, 10); `FactorVAE` sets it from
    its own argument."""

    options = {"gamma": Option(float, 10.0, minimum=0.0)}
    metric_names = ("tc", "discriminator_loss")
    family = "factor"

    def terms(self, batch, beta):
        record = batch.forward(batch.seed)
        critic, permute = record.parts["critic"], record.parts["permute"]
        terms = elbo_terms(record)
        terms["tc"] = critic(record.z)
        terms["loss"] = objectives.factor_vae_loss(terms["reconstruction"], terms["kl"],
                                                   terms["tc"], beta, self.values["gamma"])
        fixed = tf.stop_gradient(record.z)
        terms["discriminator_loss"] = objectives.discriminator_loss(
            critic(fixed), critic(permute(fixed, batch.draw_seed())))
        return terms


@keras.saving.register_keras_serializable(package="vae_zoo")
@MODELS.register("factor")
class FactorVAE(Family):
    """FactorVAE: a VAE whose latent dimensions are pushed towards independence.

    Loss per example: −(log p(x|z) − β·KL(q(z|x) || p(z))) + γ·ℓ(z), z ~ q(z|x), where
    ℓ is the logit of the discriminator D(z) = sigmoid(ℓ(z)), so ℓ = log D/(1 − D) and
    its batch mean is the density-ratio estimate of the total correlation of q(z).
    The discriminator, an MLP `discriminator_units → 1` with leaky ReLUs, minimizes
    −½ [log D(z) + log(1 − D(z̃))], z̃ the batch with every dimension permuted on its
    own (in the graph, seeded from the model's seed generator), with z held fixed:
    its gradient reaches only the discriminator, and the VAE loss's only the VAE
    (`VAE.auxiliary_parts`). Its optimizer, Adam(`discriminator_learning_rate`,
    β₁ = 0.5, β₂ = 0.9) as in the paper, is created by `compile` and saved with the
    model (`discriminator_optimizer`). Metrics: the VAE's, "tc" (the estimate) and
    "discriminator_loss". `elbo`, evaluation and serving are the plain VAE's.

    The shuffled samples come from the same batch as z (the paper draws a second
    batch); under a `tf.distribute` strategy each replica shuffles its own share.

    Args:
        input_shape: tuple, one example's shape (`(H, W, C)` for the conv body).
        latent_dim: int >= 2, size of z.
        gamma: float >= 0, γ, the weight of the total correlation (0: a β-VAE whose
            discriminator only watches).
        body: "dense" (MLP) or "conv" (strided convolutions).
        hidden_units: dense body: encoder widths (decoder reversed).
        filters, kernel_sizes, strides: conv body: one entry per encoder convolution
            (decoder reversed; the total stride must divide H and W).
        dense_units: conv body: dense widths after the convolutions (decoder reversed).
        likelihood: name or spec of a p(x|z) head in `vae_zoo.heads.LIKELIHOODS`.
        posterior: name or spec of a q(z|x) head in `vae_zoo.heads.POSTERIORS`.
        prior: name or spec of a prior in `vae_zoo.heads.PRIORS`.
        activation: hidden-layer activation of the encoder and decoder.
        discriminator_units: sequence of ints, the discriminator's hidden widths (the
            paper: six layers of 1000).
        discriminator_learning_rate: float > 0, its Adam learning rate.
        **kwargs: the shared arguments beta, analytic_kl and seed (the objective is
            fixed) and Keras layer arguments; see `Family`.

    Example:
    ```python
    model = FactorVAE(input_shape=(64, 64, 1), latent_dim=10, gamma=40.0, body="conv",
                      filters=(32, 32, 64, 64), kernel_sizes=(4, 4, 4, 4),
                      strides=(2, 2, 2, 2), dense_units=(128,))
    model.compile(optimizer=keras.optimizers.Adam(1e-4))  # also makes D's optimizer
    model.fit(x_train, epochs=10, batch_size=64)
    ```

    Reference: Kim & Mnih, "Disentangling by Factorising", arXiv:1802.05983.
    """

    # Small arguments that build a working model (the shared family tests use them).
    example_arguments = dict(input_shape=(8, 8, 1), latent_dim=2, hidden_units=(8,),
                             discriminator_units=(8,))

    shared_arguments = ("beta", "analytic_kl", "seed")

    def __init__(
        self,
        input_shape,
        latent_dim,
        gamma=10.0,
        body="dense",
        hidden_units=(512, 256),
        filters=(32, 64),
        kernel_sizes=(3, 3),
        strides=(2, 2),
        dense_units=(256,),
        likelihood="bernoulli",
        posterior="diagonal_gaussian",
        prior="standard_normal",
        activation="relu",
        discriminator_units=(1000,) * 6,
        discriminator_learning_rate=1e-4,
        **kwargs,
    ):
        discriminator_units = bodies.sizes("discriminator_units", discriminator_units,
                                           allow_empty=False)
        latent_dim = check_latent_dim(latent_dim, minimum=2,
                                      why=" (the total correlation of one dimension is 0)")
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not discriminator_learning_rate > 0:
            raise ValueError(f"discriminator_learning_rate must be > 0, "
                             f"got {discriminator_learning_rate}")
        parts = compose(input_shape, (latent_dim,), body_of(body, locals()), posterior,
                        likelihood, prior)
        self.gamma = float(gamma)
        self.discriminator_learning_rate = float(discriminator_learning_rate)
        self.discriminator = networks.mlp_encoder(
            discriminator_units, (1,), "leaky_relu", name="discriminator"
        )
        super().__init__(**parts, objective={"name": "factor_vae", "gamma": self.gamma},
                         **kwargs)

    def build(self, input_shape=None):
        if self.built:
            return
        # The discriminator's weights, before the base model locks its state by building.
        self.discriminator.build((None,) + self.latent_shape)
        super().build(input_shape)

    # ------------------------------------------------------------------ discriminator

    def discriminator_logits(self, z):
        """ℓ(z) = log D(z)/(1 − D(z)), `[B]` float32, for latent samples `[B, latent_dim]`."""
        return tf.cast(self.discriminator(z), tf.float32)[:, 0]

    def permute_latents(self, z, seed):
        """The batch with each latent dimension permuted on its own (`permute_dims`)."""
        return objectives.permute_dims(z, seed)

    def auxiliary_parts(self):
        return {"discriminator": self.discriminator}

    def make_auxiliary_optimizer(self, name):
        return keras.optimizers.Adam(self.discriminator_learning_rate, beta_1=0.5, beta_2=0.9)

    # ------------------------------------------------------------------ training

    def forward(self, x, y=None, seed=None, training=False):
        """The base record with the objective's parts: "critic" (`discriminator_logits`)
        and "permute" (`permute_latents`)."""
        record = super().forward(x, y, seed, training)
        return dataclasses.replace(record, parts={"critic": self.discriminator_logits,
                                                  "permute": self.permute_latents})
