"""The training objectives a VAE can be given: a registry of named objectives with options.

`VAE(objective=...)` (every family but `discrete`) takes a name or a spec:

```python
DenseVAE(..., objective="elbo")                                   # the default
DenseVAE(..., objective="iwae", num_samples=5)
DenseVAE(..., objective={"name": "beta_tc", "beta": 6.0, "dataset_size": 5000})
DenseVAE(..., objective={"name": "miwae", "num_bounds": 4}, num_samples=8)
```

and a recipe the same spec in its [model] table
(`objective = {name = "beta_tc", beta = 6.0, dataset_size = 5000}`). Each objective
declares its options (`Option`: type, default, range), the metrics it reports beside
`METRIC_NAMES`, and computes the per-example terms of the one `train_step` from what
the model hands it (`terms` of a `vae_zoo.models.forward.Batch`); the maths are in
`vae_zoo.objectives` (bounds) and `vae_zoo.aggregate_posterior` (penalties on q(z)).
Bad names, options or values raise a one-line `ValueError` beginning with `objective`
and naming the option. The objectives of one family ("factor_vae", "vq_vae",
"reinforce", "gumbel_softmax") are registered in that family's module and set by its
constructor.

The model's β (a constant or a `BetaSchedule`) weights each objective's regularizer:
the KL term of "elbo", the prior-to-posterior ratio inside the importance weights of
"iwae", "miwae", "ciwae" and "piwae", and the whole penalty of "beta_tc", "dip_vae_i",
"dip_vae_ii", "info_vae", "wae" and "capacity" (β = 1, the default, is each paper's
objective). The importance-weighted objectives take K, the samples per bound, from the
model's `num_samples`.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import aggregate_posterior, objectives
from vae_zoo.models.forward import elbo_terms
from vae_zoo.registry import Registry
from vae_zoo.schedules import CapacitySchedule

OBJECTIVES = Registry("objective")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of an objective: its type, default (None: required) and range."""

    kind: type = float  # float (ints accepted), int or str
    default: Any = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    choices: tuple | None = None
    nullable: bool = False  # None is a value (not "required")

    def check(self, name, value):
        where = f"objective.{name}"
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{where} must be set")
        expected = {str: str, int: numbers.Integral, float: numbers.Real}[self.kind]
        if not isinstance(value, expected) or isinstance(value, bool):
            kind = {str: "a string", int: "an integer", float: "a number"}[self.kind]
            raise ValueError(f"{where} must be {kind}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where} = {value!r} is not one of: "
                             + ", ".join(repr(c) for c in self.choices))
        if self.kind is str:
            return value
        value = self.kind(value)
        if self.minimum is not None and (value < self.minimum or (
                self.exclusive_minimum and value == self.minimum)):
            bound = ">" if self.exclusive_minimum else ">="
            raise ValueError(f"{where} must be {bound} {self.minimum}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{where} must be <= {self.maximum}, got {value!r}")
        return value


def _suggest(word, options) -> str:
    match = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Objective:
    """Base of the registered objectives: options checked once, terms per batch.

    Subclasses declare `options` (name → `Option`) and `metric_names` (reported beside
    `vae_zoo.models.base.METRIC_NAMES`), and implement `terms`. The option values are
    in `self.values`; `get_config()` is the spec `{"name": ..., **values}`. What an
    objective needs of a model it declares: `family`, the one family it trains (the
    model's `forward` fills in that family's parts), and `mean_field`, a q(z|x) that
    factorizes over the latent dimensions (`VAE.mean_field_posterior`).
    """

    options: dict = {}
    metric_names: tuple = ()
    family: str | None = None
    mean_field: bool = False

    def __init__(self, **values):
        for key in values:
            if key not in self.options:
                known = ", ".join(self.options) or "none"
                raise ValueError(f"objective.{key} is not an option of {self.name!r}"
                                 f"{_suggest(key, self.options)} (options: {known})")
        self.values = {key: option.check(key, values.get(key, option.default))
                       for key, option in self.options.items()}
        self.check()

    @property
    def name(self) -> str:
        return self.registry_name

    def check(self):
        """Checks across options (ValueError naming one); each option is checked alone."""

    def get_config(self) -> dict:
        return {"name": self.name, **self.values}

    def check_family(self, cls):
        """A one-line ValueError when models of class `cls` lack what it needs."""
        family = getattr(cls, "registry_name", cls.__name__)
        if self.family is not None and family != self.family:
            raise ValueError(f"objective {self.name!r} trains the {self.family!r} family, "
                             f"not {family!r}")
        if self.mean_field and not cls.mean_field_posterior:
            raise ValueError(f"objective {self.name!r} needs a q(z|x) that factorizes over "
                             f"the latent dimensions; {cls.__name__}'s does not")

    def terms(self, batch, beta) -> dict:
        """Per-example terms, dict of `[B]`, with "loss" to minimize (and optionally
        "surrogate", the quantity to differentiate instead, and "<part>_loss" for each
        auxiliary part of the model).

        Args:
            batch: a `vae_zoo.models.forward.Batch`: the data, `forward` (one draw
                through the model), `importance_terms`, `draw_latents`,
                `score_latents`, `draw_seed`, the optimizer's `step`, `training`.
            beta: the model's current β, a scalar tensor.
        """
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


def build(spec) -> Objective:
    """An `Objective` from a name, a `{"name": ..., **options}` dict, or an instance."""
    if isinstance(spec, Objective):
        return spec
    options = {}
    if isinstance(spec, dict):
        options = dict(spec)
        spec = options.pop("name", None)
        if spec is None:
            raise ValueError(f"objective needs a 'name' (one of: {', '.join(OBJECTIVES.names())})")
    if not isinstance(spec, str) or spec not in OBJECTIVES:
        raise ValueError(f"objective = {spec!r} is not one of: {', '.join(OBJECTIVES.names())}"
                         + _suggest(str(spec), OBJECTIVES.names()))
    return OBJECTIVES.get(spec)(**options)


def _broadcast(scalar, like):
    """A batch-level scalar as `[B]` (the shape of `like`), for the per-example terms."""
    return tf.broadcast_to(scalar, tf.shape(like))


# ------------------------------------------------------------------ the ELBO and its bounds


@OBJECTIVES.register("elbo")
class ELBO(Objective):
    """−(log p(x|z) − β · KL(q(z|x) || p(z))), one reparameterized sample (Kingma &
    Welling 2014, arXiv:1312.6114); the KL analytic when TFP registers it."""

    def terms(self, batch, beta):
        terms = elbo_terms(batch.forward(batch.seed))
        terms["loss"] = objectives.beta_elbo_loss(terms["reconstruction"], terms["kl"], beta)
        return terms


class _ImportanceWeighted(Objective):
    """Bounds of the log-weights of several samples z_k ~ q(z|x) per example; reports
    `objectives.importance_metrics` ("iw_bound" over all the samples, and the ELBO's
    terms averaged over them)."""

    metric_names = ("iw_bound",)

    def num_draws(self, batch) -> int:
        """Samples per example: K, the model's `num_samples`."""
        return batch.num_samples

    def bound(self, log_weights):
        """The objective's bound `[B]` from `[num_draws, B]` log-weights."""
        raise NotImplementedError

    def terms(self, batch, beta):
        return self.from_parts(batch.importance_terms(self.num_draws(batch), batch.seed), beta)

    def from_parts(self, parts, beta):
        """The terms from `[K, B]` log-densities; a ladder of latents' per-layer ones
        ("layer_log_prior", "layer_log_posterior") add "kl_1" ... "kl_L", each averaged
        over the K draws."""
        layers = zip(parts.get("layer_log_posterior", ()), parts.get("layer_log_prior", ()))
        kls = {f"kl_{i + 1}": tf.reduce_mean(q_l - p_l, axis=0)
               for i, (q_l, p_l) in enumerate(layers)}
        parts = (parts["log_likelihood"], parts["log_prior"], parts["log_posterior"])
        log_weights = objectives.log_importance_weights(*parts, beta)
        return {"loss": -self.bound(log_weights), **objectives.importance_metrics(*parts),
                **kls}


@OBJECTIVES.register("iwae")
class IWAE(_ImportanceWeighted):
    """The importance-weighted bound log (1/K) Σ_k w_k, K = the model's `num_samples`
    (Burda et al. 2016, arXiv:1509.00519)."""

    def bound(self, log_weights):
        return objectives.importance_weighted_bound(log_weights)


@OBJECTIVES.register("miwae")
class MIWAE(_ImportanceWeighted):
    """MIWAE(M, K): the mean of M IWAE bounds of K samples each (Rainforth et al. 2018,
    arXiv:1802.04537). Option `num_bounds` (M, required); K is the model's
    `num_samples`. Reports "miwae_bound" (at β = 1) beside "iw_bound" (IWAE(M·K))."""

    options = {"num_bounds": Option(int, minimum=1)}
    metric_names = ("iw_bound", "miwae_bound")

    def num_draws(self, batch):
        return self.values["num_bounds"] * batch.num_samples

    def bound(self, log_weights):
        return objectives.miwae_bound(log_weights, self.values["num_bounds"])

    def from_parts(self, parts, beta):
        at_one = objectives.log_importance_weights(
            parts["log_likelihood"], parts["log_prior"], parts["log_posterior"])
        return {**super().from_parts(parts, beta), "miwae_bound": self.bound(at_one)}


@OBJECTIVES.register("ciwae")
class CIWAE(_ImportanceWeighted):
    """CIWAE = β · ELBO + (1 − β) · IWAE(K) from the same K samples (Rainforth et al.
    2018, arXiv:1802.04537). Option `beta` in [0, 1], default 0.5 (CIWAE's β, not the
    model's KL weight); K is the model's `num_samples`."""

    options = {"beta": Option(float, 0.5, minimum=0.0, maximum=1.0)}

    def bound(self, log_weights):
        return objectives.ciwae_bound(log_weights, self.values["beta"])


@OBJECTIVES.register("piwae")
class PIWAE(MIWAE):
    """PIWAE: the encoder trained on MIWAE(M, K), the generative model (decoder,
    likelihood, prior) on IWAE(M·K), from the same M·K samples (Rainforth et al. 2018,
    arXiv:1802.04537).

    One step, two gradients: the "surrogate" is `objectives.piwae_surrogate`, whose
    gradient is MIWAE's for the encoder's variables and IWAE(M·K)'s for the others
    (it scores the samples twice, the second time with z and log q(z|x) held fixed:
    one more decoder pass than MIWAE). Its value, and the "loss", is −IWAE(M·K).
    Option `num_bounds` (M); K is the model's `num_samples`.
    """

    def terms(self, batch, beta):
        q, z = batch.draw_latents(self.num_draws(batch), batch.seed)
        live = batch.score_latents(q, z)
        held = batch.score_latents(q, tf.stop_gradient(z))
        log_weights = objectives.log_importance_weights(
            live["log_likelihood"], live["log_prior"], live["log_posterior"], beta)
        generative_log_weights = objectives.log_importance_weights(
            held["log_likelihood"], held["log_prior"], tf.stop_gradient(live["log_posterior"]),
            beta)
        surrogate = objectives.piwae_surrogate(log_weights, generative_log_weights,
                                               self.values["num_bounds"])
        terms = super().from_parts(live, beta)
        terms["loss"] = -objectives.importance_weighted_bound(log_weights)
        terms["surrogate"] = -surrogate
        return terms


# ------------------------------------------------------------------ penalties on q(z)


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
