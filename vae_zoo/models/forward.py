"""What a model hands its training objective: the batch (`Batch`) and one draw through
the model (`Forward`).

An objective (`vae_zoo.models.training_objectives`) computes every training term from
these two and nothing else; a family that trains differently (a quantized code, a
discrete code, a ladder of latents, a critic of the code) fills in more of the record
in its `forward`, never the terms. The ELBO's terms from a record are `elbo_terms`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import objectives

tfd = tfp.distributions


@dataclasses.dataclass(frozen=True)
class Forward:
    """One draw of a batch through the model (`VAE.forward`).

    Attributes:
        x: the data, `[B, *input_shape]` float32.
        q: q(z|x), batch `[B]`, event `latent_shape`.
        z: the draw of q, `[B, *latent_shape]` (reparameterized where q allows).
        likelihood: p(x|z) at z, batch `[B]`.
        reconstruction: log p(x|z), `[B]`.
        prior: p(z), the distribution z is scored under.
        layers: `((q_l, p_l, z_l), ...)`: the KL term is Σ_l KL(q_l || p_l) (z_l for a
            Monte-Carlo estimate); one layer `(q, prior, z)` but in a ladder of latents.
        analytic_kl: use the closed-form KL where TFP registers one.
        parts: the family's own entries, named in its `forward` (a critic of z, the
            encoder's output before quantization, a baseline, ...).
    """

    x: tf.Tensor
    q: tfd.Distribution
    z: tf.Tensor
    likelihood: tfd.Distribution
    reconstruction: tf.Tensor
    prior: tfd.Distribution
    layers: tuple
    analytic_kl: bool = True
    parts: dict = dataclasses.field(default_factory=dict)


def forward_record(x, q, z, likelihood, prior, analytic_kl, **parts) -> Forward:
    """The record of one draw with a single latent layer `(q, prior, z)`."""
    return Forward(x=x, q=q, z=z, likelihood=likelihood, reconstruction=likelihood.log_prob(x),
                   prior=prior, layers=((q, prior, z),), analytic_kl=analytic_kl, parts=parts)


def elbo_terms(record: Forward) -> dict:
    """The ELBO's terms of one draw, `[B]` each, in nats (`objectives.elbo_terms`):
    "elbo", "reconstruction" (log p(x|z)) and "kl" (Σ over the layers; analytic where
    registered, else the draw's log q − log p); with several layers also "kl_1" ...
    "kl_L", bottom first."""
    return objectives.elbo_terms(record.reconstruction, record.layers, record.analytic_kl)


class Batch:
    """One batch as a model hands it to its objective.

    Attributes:
        x: the data, `[B, *input_shape]` float32; y: the condition (None but in
            conditional families).
        training: True in `train_step` (a family's training-only state, such as a
            codebook or a baseline, moves in `forward` then), False in `test_step`.
        seed: a stateless seed for the batch's first draw, or None for the model's
            next one (tests fix it).
        step: the optimizer's step (0 before `compile`): what schedules read.
        num_samples: K, the model's importance samples per bound.
    """

    def __init__(self, model, inputs, training=False, seed=None):
        x, *condition = inputs
        self.x = tf.convert_to_tensor(x, tf.float32)
        self.y = condition[0] if condition else None
        self.training = bool(training)
        self.seed = seed
        self.num_samples = model.num_samples
        optimizer = getattr(model, "optimizer", None)
        self.step = tf.constant(0, tf.int64) if optimizer is None else optimizer.iterations
        self._model = model

    def draw_seed(self, seed=None) -> tf.Tensor:
        """`seed` as a stateless seed, or the model's next one."""
        return self._model.draw_seed(seed)

    def forward(self, seed=None) -> Forward:
        """One draw through the model (`VAE.forward`)."""
        return self._model.forward(self.x, self.y, seed, training=self.training)

    def decode(self, z) -> tfd.Distribution:
        """p(x|z) for latents z `[B, *latent_shape]` (a relaxed code, say)."""
        return self._model.decode(z, self.y)

    def importance_terms(self, num_samples, seed=None) -> dict:
        """`VAE.importance_terms` of the batch: `[K, B]` log-densities of K draws."""
        return self._model.importance_terms(self.x, num_samples, self.y, seed)

    def draw_latents(self, num_samples, seed=None) -> tuple[Any, tf.Tensor]:
        """q(z|x) and K draws of it, `[K, B, *latent_shape]`."""
        seed = self._model.draw_seed(seed)
        q = self._model.encode(self.x, self.y)
        return q, q.sample(num_samples, seed=seed)

    def score_latents(self, q, z) -> dict:
        """`VAE.score_latents` at draws z `[K, B, ...]` of q."""
        return self._model.score_latents(self.x, q, z, self.y)
