"""The objectives that penalize the aggregate posterior q(z) or the KL term: β-TC-VAE,
DIP-VAE-I and -II, InfoVAE, WAE-MMD and controlled capacity, registered in
`vae_zoo.models.training_objectives.OBJECTIVES` beside the ELBO and its bounds. Their
maths are in `vae_zoo.aggregate_posterior` and `vae_zoo.objectives`.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import aggregate_posterior, objectives
from vae_zoo.models.forward import elbo_terms
from vae_zoo.models.training_objectives import OBJECTIVES, Objective, Option
from vae_zoo.schedules import CapacitySchedule


def _broadcast(scalar, like):
    """A batch-level scalar as `[B]` (the shape of `like`), for the per-example terms."""
    return tf.broadcast_to(scalar, tf.shape(like))


def _split_seed(batch, seed):
    """Two independent stateless seeds from `seed` (or the model's next one)."""
    pair = tfp.random.split_seed(batch.draw_seed(seed), 2)
    return pair[0], pair[1]


def _prior_samples(prior, like, seed):
    """As many samples of p(z) as `like` `[B, *latent_shape]` has rows: one per example
    for a prior conditioned per example (batch `[B]`), else B draws."""
    if len(prior.batch_shape) == 0:
        return prior.sample(tf.shape(like)[0], seed=seed)
    return prior.sample(seed=seed)


@OBJECTIVES.register("beta_tc")
class BetaTC(Objective):
    """β-TC-VAE (Chen et al. 2018, arXiv:1802.04942): −log p(x|z) + α·MI + β·TC + γ·KL_d.

    The KL term split into index-code mutual information, total correlation and
    dimension-wise KL, estimated by minibatch-weighted sampling
    (`aggregate_posterior.total_correlation_terms`), with the data set's size N.
    α = β = γ = 1 is the ELBO with a Monte-Carlo KL. Options: `alpha` (1), `beta` (6),
    `gamma` (1), `dataset_size` (N, required). Reports "mutual_info",
    "total_correlation" and "dimension_kl" (batch means of the per-example estimates).
    """

    options = {
        "alpha": Option(float, 1.0, minimum=0.0),
        "beta": Option(float, 6.0, minimum=0.0),
        "gamma": Option(float, 1.0, minimum=0.0),
        "dataset_size": Option(int, minimum=1),
    }
    metric_names = ("mutual_info", "total_correlation", "dimension_kl")
    mean_field = True

    def terms(self, batch, beta):
        record = batch.forward(batch.seed)
        terms = elbo_terms(record)
        split = aggregate_posterior.total_correlation_terms(
            record.q, record.z, record.prior.log_prob(record.z), self.values["dataset_size"])
        v = self.values
        penalty = (v["alpha"] * split["mutual_info"] + v["beta"] * split["total_correlation"]
                   + v["gamma"] * split["dimension_kl"])
        return {**terms, **split, "loss": -terms["reconstruction"] + beta * penalty}


class _DIPVAE(Objective):
    """DIP-VAE (Kumar et al. 2018, arXiv:1711.00848): the β-ELBO loss plus
    λ_od Σ_{i≠j} Cov_ij² + λ_d Σ_i (Cov_ii − 1)² of a batch covariance
    (`aggregate_posterior.dip_covariance`). Reports "dip_penalty"."""

    variant = "i"
    metric_names = ("dip_penalty",)
    mean_field = True

    def terms(self, batch, beta):
        record = batch.forward(batch.seed)
        terms = elbo_terms(record)
        covariance = aggregate_posterior.dip_covariance(record.q, self.variant)
        penalty = _broadcast(aggregate_posterior.dip_penalty(
            covariance, self.values["lambda_od"], self.values["lambda_d"]), terms["kl"])
        loss = objectives.beta_elbo_loss(terms["reconstruction"], terms["kl"], beta)
        return {**terms, "dip_penalty": penalty, "loss": loss + beta * penalty}


@OBJECTIVES.register("dip_vae_i")
class DIPVAEI(_DIPVAE):
    """DIP-VAE-I: the covariance of the encoder means; options `lambda_od` (10) and
    `lambda_d` (100, the paper's λ_d = 10 λ_od)."""

    options = {"lambda_od": Option(float, 10.0, minimum=0.0),
               "lambda_d": Option(float, 100.0, minimum=0.0)}


@OBJECTIVES.register("dip_vae_ii")
class DIPVAEII(_DIPVAE):
    """DIP-VAE-II: the covariance of q(z) (encoder covariances averaged, plus the
    covariance of the means); options `lambda_od` (10) and `lambda_d` (10)."""

    variant = "ii"
    options = {"lambda_od": Option(float, 10.0, minimum=0.0),
               "lambda_d": Option(float, 10.0, minimum=0.0)}


_KERNEL_OPTIONS = {
    "kernel": Option(str, "rbf", choices=tuple(aggregate_posterior.KERNELS)),
    "bandwidth": Option(float, None, minimum=0.0, exclusive_minimum=True, nullable=True),
}


@OBJECTIVES.register("info_vae")
class InfoVAE(Objective):
    """InfoVAE with the MMD divergence (Zhao et al. 2017, arXiv:1706.02262):
    −log p(x|z) + (1 − α) KL(q(z|x) || p(z)) + (α + λ − 1) MMD(q(z), p(z)).

    MMD² is the unbiased U-statistic between the batch's samples of q(z) and as many
    samples of p(z) (`aggregate_posterior.mmd_u_statistic`). Options: `alpha` (0, at
    most 1), `lambda` (1000, with α + λ >= 1), `kernel` ("rbf" or "imq") and
    `bandwidth` (the kernel's C, default 2·latent size). Reports "mmd".
    """

    options = {"alpha": Option(float, 0.0, maximum=1.0),
               "lambda": Option(float, 1000.0, minimum=0.0), **_KERNEL_OPTIONS}
    metric_names = ("mmd",)

    def check(self):
        alpha = self.values.get("alpha", 1.0)
        if alpha + self.values["lambda"] < 1.0:
            raise ValueError(f"objective.lambda must be >= 1 - alpha = {1.0 - alpha!r}, got "
                             f"{self.values['lambda']!r} (the MMD weight α + λ − 1 is >= 0)")

    def terms(self, batch, beta):
        latent_seed, prior_seed = _split_seed(batch, batch.seed)
        record = batch.forward(latent_seed)
        terms = elbo_terms(record)
        mmd = _broadcast(aggregate_posterior.mmd_u_statistic(
            record.z, _prior_samples(record.prior, record.z, prior_seed), self.values["kernel"],
            self.values["bandwidth"]), terms["kl"])
        alpha = self.values.get("alpha", 1.0)
        penalty = (1.0 - alpha) * terms["kl"] + (alpha + self.values["lambda"] - 1.0) * mmd
        return {**terms, "mmd": mmd, "loss": -terms["reconstruction"] + beta * penalty}


@OBJECTIVES.register("wae")
class WAE(InfoVAE):
    """WAE-MMD (Tolstikhin et al. 2018, arXiv:1711.01558): −log p(x|z) + λ MMD(q(z), p(z)),
    InfoVAE at α = 1. Options: `lambda` (10), `kernel` ("imq"), `bandwidth`."""

    options = {"lambda": Option(float, 10.0, minimum=0.0), **_KERNEL_OPTIONS,
               "kernel": Option(str, "imq", choices=tuple(aggregate_posterior.KERNELS))}


@OBJECTIVES.register("capacity")
class Capacity(Objective):
    """Controlled capacity (Burgess et al. 2018, arXiv:1804.03599):
    −log p(x|z) + γ |KL(q(z|x) || p(z)) − C| per example, C rising linearly from
    `capacity_min` to `capacity_max` over `capacity_steps` optimizer steps
    (`vae_zoo.schedules.CapacitySchedule`, read from the optimizer's step inside the
    compiled step). Options: `gamma` (1000), `capacity_min` (0), `capacity_max` (25
    nats), `capacity_steps` (100000). Reports "capacity", C at the step.
    """

    options = {"gamma": Option(float, 1000.0, minimum=0.0),
               "capacity_min": Option(float, 0.0, minimum=0.0),
               "capacity_max": Option(float, 25.0, minimum=0.0),
               "capacity_steps": Option(int, 100_000, minimum=0)}
    metric_names = ("capacity",)

    def check(self):
        low, high = self.values["capacity_min"], self.values["capacity_max"]
        if low > high:
            raise ValueError(f"objective.capacity_min must be <= capacity_max = {high!r}, "
                             f"got {low!r}")
        self.schedule = CapacitySchedule(high, low, self.values["capacity_steps"])

    def terms(self, batch, beta):
        terms = elbo_terms(batch.forward(batch.seed))
        capacity = self.schedule(batch.step)
        loss = objectives.capacity_loss(terms["reconstruction"], terms["kl"], capacity,
                                        beta * self.values["gamma"])
        return {**terms, "capacity": _broadcast(capacity, terms["kl"]), "loss": loss}
