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
The ELBO and its importance-weighted bounds are here, the penalties on q(z) in
`vae_zoo.models.penalties`.
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

import tensorflow as tf

from vae_zoo import objectives
from vae_zoo.fields import Field, suggest
from vae_zoo.models.forward import elbo_terms
from vae_zoo.registry import Registry

OBJECTIVES = Registry("objective")


def Option(kind=float, default=None, **limits) -> Field:  # noqa: N802 (reads as a type)
    """One option of an objective: a `vae_zoo.fields.Field` of `kind` (float, taking
    ints, int or str) with its default (None: required) and limits (`minimum`,
    `exclusive_minimum`, `maximum`, `choices`, `nullable`)."""
    types = {float: (float, int), int: (int,), str: (str,)}[kind]
    return Field(types, default, convert=None if kind is str else kind, **limits)


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
                                 f"{suggest(key, self.options)} (options: {known})")
        self.values = {key: option.check(f"objective.{key}", values.get(key, option.default))
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
                         + suggest(spec, OBJECTIVES.names()))
    return OBJECTIVES.get(spec)(**options)


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
