"""The one VAE model every family builds on.

A model is five parts: an encoder body, a posterior head, a decoder body, a likelihood
head and a prior. A family (`DenseVAE`, ...) is a thin constructor that composes those
parts from a few arguments; training, evaluation, sampling and saving live here once.
How Keras runs the training step fast (XLA, steps per call, the array pipeline) is the
parent class's, `vae_zoo.training.fast_path.FastPath`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo import objectives
from vae_zoo.models import training_objectives
from vae_zoo.models.training_objectives import OBJECTIVES  # noqa: F401  (the registry)
from vae_zoo.registry import Registry
from vae_zoo.schedules import BetaSchedule
from vae_zoo.training.fast_path import FastPath

tfd = tfp.distributions

MODELS = Registry("model family")

# Reported by every objective; each adds its own (`Objective.metric_names`).
METRIC_NAMES = ("loss", "elbo", "reconstruction", "kl", "beta")


def _stateless_seed(seed):
    """An int (or a `[2]` tensor) as a TFP stateless seed: same seed, same draw."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.cast(seed, tf.int32)


def _tile_batch(t, multiples):
    """`[B, ...]` → `[multiples * B, ...]`, repeating the whole batch (like tf.tile)."""
    t = tf.convert_to_tensor(t)
    return tf.tile(t, [multiples] + [1] * (t.shape.rank - 1))


def _log_weights(terms):
    """log p(x|z_k) + log p(z_k) − log q(z_k|x) from `importance_terms`' dict."""
    return terms["log_likelihood"] + terms["log_prior"] - terms["log_posterior"]


def _serialize(obj):
    return keras.saving.serialize_keras_object(obj)


def deserialize_config_value(obj):
    """A config value back: serialized Keras objects (a `BetaSchedule`) rebuilt."""
    if isinstance(obj, dict) and "class_name" in obj:
        return keras.saving.deserialize_keras_object(obj)
    return obj


def serialize_config_value(value):
    """A config value as JSON-able data: schedules serialized, an objective as its spec
    `{"name": ..., **options}`, the rest as given."""
    if isinstance(value, BetaSchedule):
        return _serialize(value)
    if isinstance(value, training_objectives.Objective):
        return value.get_config()
    return value


@keras.saving.register_keras_serializable(package="vae_zoo")
class VAE(FastPath):
    """Variational autoencoder with TFP distributions for q(z|x), p(x|z) and p(z).

    Trains by maximizing the β-weighted evidence lower bound
    `E_q[log p(x|z)] − β · KL(q(z|x) || p(z))` (Kingma & Welling 2014,
    arXiv:1312.6114) with one reparameterized sample per example and the analytic KL
    when TFP registers one.

    Args:
        encoder: Keras layer `[B, *input_shape] -> [B, *posterior params]`.
        decoder: Keras layer `[B, *latent_shape] -> [B, *likelihood params]`.
        posterior: a `vae_zoo.heads` posterior head.
        likelihood: a `vae_zoo.heads` likelihood head.
        prior: a `vae_zoo.priors` prior; its `latent_shape` is the model's.
        input_shape: tuple, shape of one example (images `(H, W, C)` or `(D,)`).
        beta: float >= 0, the weight of the KL term, or a
            `vae_zoo.schedules.BetaSchedule` of the optimizer's step (set inside the
            compiled step before every training step, like a learning-rate schedule).
            The current value is the non-trainable variable `model.beta`.
        analytic_kl: use the closed-form KL when registered in TFP.
        objective: the training objective, a name or spec of
            `vae_zoo.models.training_objectives.OBJECTIVES` (or an `Objective`):
            "elbo" (one reparameterized sample per example), "iwae": the
            importance-weighted bound log (1/K) Σ_k w_k with K = `num_samples`
            (Burda et al. 2016, arXiv:1509.00519; with β ≠ 1 the weights are
            p(x|z_k) (p(z_k)/q(z_k|x))^β, the "elbo", "reconstruction" and "kl"
            metrics are averages over the K samples and "iw_bound" reports the
            bound), or with options, e.g. `{"name": "beta_tc", "beta": 6.0,
            "dataset_size": 5000}`, `{"name": "miwae", "num_bounds": 4}` (see that
            module for all of them and the metrics each adds). Every objective
            trains through the same `train_step`.
        num_samples: K, importance samples per example (per bound) for the
            importance-weighted objectives.
        seed: int or None, seeds the model's `keras.random.SeedGenerator`.

    Example:
    ```python
    model = vae_zoo.models.DenseVAE(input_shape=(28, 28, 1), latent_dim=16)
    model.compile(optimizer="adam")
    model.fit(vae_zoo.data.load("mnist_sample"), epochs=5)
    q = model.encode(x)            # batch [B], event [16]
    x_new = model.sample(64)       # [64, 28, 28, 1]
    ```
    """

    # Whether the model's inputs are (x, y) pairs: conditional families set it, and
    # recipes then feed labels.
    conditional = False
    # Whether train_step/test_step return `[1]` vectors instead of scalars: set by
    # `vae_zoo.distribute.prepare_model` under several workers, where Keras 3.15's
    # metric reduction fails on scalars.
    step_logs_as_vectors = False

    def __init__(
        self,
        encoder,
        decoder,
        posterior,
        likelihood,
        prior,
        input_shape,
        beta=1.0,
        analytic_kl=True,
        objective="elbo",
        num_samples=1,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # As Keras decides: a model created in a strategy's scope trains under it.
        self.built_under_strategy = tf.distribute.has_strategy()
        beta = deserialize_config_value(beta)
        self.beta_schedule = beta if isinstance(beta, BetaSchedule) else None
        self.initial_beta = float(beta(0) if self.beta_schedule else beta)
        self.beta_config = beta  # what `get_config` records: the float or the schedule
        if self.initial_beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        training_objective = training_objectives.build(objective)
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        # Layers.
        self.encoder = encoder
        self.decoder = decoder
        self.posterior = posterior
        self.likelihood = likelihood
        self.prior = prior
        self.data_shape = tuple(int(d) for d in input_shape)
        self.latent_shape = tuple(prior.latent_shape)
        self.analytic_kl = bool(analytic_kl)
        self.objective = training_objective.name
        self.training_objective = training_objective
        # What `get_config` records: the name as given, else the spec with its options
        # (set past Keras' attribute tracking, which would wrap the dict).
        object.__setattr__(self, "objective_config", objective if isinstance(objective, str)
                           else training_objective.get_config())
        self.num_samples = int(num_samples)
        self.seed = seed
        self.beta = self.add_weight(
            name="beta",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_beta),
            trainable=False,
            dtype="float32",
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        # A prior defined through the model's own q(z|x) (the VampPrior's mixture of
        # q(z|u_k) over pseudo-inputs u_k) is handed `encode` and the input shape.
        if hasattr(prior, "attach_encoder"):
            prior.attach_encoder(self.encode, self.data_shape, conditional=self.conditional)
        names = METRIC_NAMES + training_objective.metric_names
        self.trackers = [keras.metrics.Mean(name=name) for name in names]
        # Wiring: create every variable now, so the model can be saved, restored,
        # distributed and checkpointed (keras-tuner) without a first call.
        self.build((None,) + self.data_shape)

    # ------------------------------------------------------------------ building

    def dummy_inputs(self):
        """Inputs of batch 1 that `build` runs through `elbo` to create variables."""
        return (tf.zeros((1,) + self.data_shape, tf.float32),)

    def build(self, input_shape=None):
        if self.built:
            return
        self.prior.build(None)
        self.elbo(*self.dummy_inputs(), seed=tf.constant([0, 0], tf.int32))
        self.built = True

    # ------------------------------------------------------------------ public API

    # `y` is the conditioning tensor of conditional families (`None` elsewhere); the
    # base model ignores it, a conditional family overrides these three methods.

    def encode(self, x, y=None):
        """q(z|x): batch `[B]`, event `latent_shape`."""
        return self.posterior(self.encoder(x))

    def decode(self, z, y=None):
        """p(x|z): batch `[B]`, event `input_shape`."""
        return self.likelihood(self.decoder(z))

    def prior_distribution(self, y=None):
        """p(z): batch `[]` (`[B]` for a prior conditioned on y), event `latent_shape`."""
        return self.prior.distribution()

    def prior_for(self, q, y=None):
        """p(z) to score samples of the posterior `q` (the ELBO's and IW weights' prior).

        The model's prior; a family whose latent shape follows the input (fully
        convolutional) returns it at `q.event_shape`.
        """
        return self.prior_distribution(y)

    def draw_seed(self, seed=None):
        """A TFP stateless seed: from `seed` (int or `[2]`) when given, else the next
        one of the model's `keras.random.SeedGenerator`."""
        return self._next_seed() if seed is None else _stateless_seed(seed)

    def _next_seed(self):
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # Replicas share the generator's state: give each its own noise stream.
            replica_id = tf.cast(replica.replica_id_in_sync_group, tf.int32)
            seed = seed + tf.stack([replica_id, 0])
        return seed

    def posterior_sample(self, q, seed):
        """One reparameterized sample z ~ q(z|x), `[B, *latent_shape]`."""
        return q.sample(seed=seed)

    def elbo(self, x, y=None, seed=None):
        """Per-example ELBO terms in nats, one reparameterized sample.

        Returns:
            dict of `[B]` tensors: "elbo", "reconstruction" (log p(x|z)) and "kl"
            (analytic when registered in TFP, Monte-Carlo otherwise).
        """
        return self.elbo_with_latents(x, y, seed)[0]

    def elbo_with_latents(self, x, y=None, seed=None):
        """`elbo` and what it was computed from, for objectives that also penalize q(z).

        Returns:
            (terms, q, z, prior): the dict of `elbo`, q(z|x) (batch `[B]`), the sample
            z `[B, *latent_shape]` and p(z) (`prior_for(q, y)`).
        """
        seed = self.draw_seed(seed)
        x = tf.convert_to_tensor(x, tf.float32)
        q = self.encode(x, y)
        z = self.posterior_sample(q, seed)
        likelihood = self.decode(z, y)
        prior = self.prior_for(q, y)
        return objectives.elbo_terms(x, q, z, likelihood, prior, self.analytic_kl), q, z, prior

    def log_importance_weights(self, x, num_samples, y=None, seed=None):
        """log p(x|z_k) + log p(z_k) − log q(z_k|x) for K samples z_k ~ q: `[K, B]`."""
        return _log_weights(self.importance_terms(x, num_samples, y, seed))

    def importance_weights_of(self, x, y=None):
        """`fn(k, seed) -> [k, B]`: `log_importance_weights(x, k, y, seed)` for one batch
        x, chunk after chunk of draws (an importance-weighted bound's loop), with
        q(z|x) computed once, not once per chunk. Same draws, same numbers.

        A family that overrides `importance_terms` or `draw_latents` gets its
        `log_importance_weights`, x encoded with every chunk.
        """
        if (type(self).importance_terms is not VAE.importance_terms
                or type(self).draw_latents is not VAE.draw_latents):
            return lambda k, seed: self.log_importance_weights(x, k, y, seed)
        x = tf.convert_to_tensor(x, tf.float32)
        q = self.encode(x, y)

        def log_weights(num_samples, seed):
            z = q.sample(num_samples, seed=self.draw_seed(seed))
            return _log_weights(self.score_latents(x, q, z, y))

        return log_weights

    def importance_terms(self, x, num_samples, y=None, seed=None):
        """The parts of the log importance weights for K reparameterized z_k ~ q(z|x).

        Returns:
            dict of `[K, B]` tensors: "log_likelihood" log p(x|z_k), "log_prior"
            log p(z_k) and "log_posterior" log q(z_k|x).
        """
        x = tf.convert_to_tensor(x, tf.float32)
        q, z = self.draw_latents(x, num_samples, y, seed)
        return self.score_latents(x, q, z, y)

    def draw_latents(self, x, num_samples, y=None, seed=None):
        """q(z|x) and K reparameterized samples of it: (q, z `[K, B, *latent_shape]`)."""
        seed = self.draw_seed(seed)
        q = self.encode(x, y)
        return q, q.sample(num_samples, seed=seed)

    def score_latents(self, x, q, z, y=None):
        """The parts of the log importance weights at given samples z `[K, B, ...]` of q.

        Returns:
            dict of `[K, B]` tensors, as `importance_terms`.
        """
        num_samples = z.shape[0] if z.shape[0] is not None else tf.shape(z)[0]
        flat_z = tf.reshape(z, tf.concat([[-1], tf.shape(z)[2:]], 0))  # [K*B, *latent_shape]
        tiled_y = None if y is None else _tile_batch(y, num_samples)
        log_px_z = self.likelihood.log_prob_of_draws(
            self.decode(flat_z, tiled_y), x, num_samples)  # [K, B]
        return {
            "log_likelihood": log_px_z,
            "log_prior": self.prior_for(q, y).log_prob(z),
            "log_posterior": q.log_prob(z),
        }

    def sample(self, num_samples, y=None, seed=None):
        """`num_samples` draws x̄ = E[x|z], z ~ p(z): `[num_samples, *input_shape]` (the
        likelihood's mean). Every family takes these arguments: `y`, the condition of a
        conditional family (one for all samples, or one per sample), is refused by the
        others; `seed` an int or None (the model's next)."""
        self.refuse_condition(y, "sample")
        z = self.prior_distribution().sample(num_samples, seed=self.draw_seed(seed))
        return self.decode(z).mean()

    def refuse_condition(self, y, method):
        """A one-line ValueError when an unconditional model's `method` is given a `y`."""
        if y is not None and not self.conditional:
            raise ValueError(f"{type(self).__name__} is not conditional: {method} takes no y")

    def reconstruct(self, x, y=None):
        """E[x|z] at the posterior mean z = E_q[z|x]: `[B, *input_shape]`."""
        return self.decode(self.encode(x, y).mean(), y).mean()

    def impute(self, x, mask, y=None, num_iterations=50, seed=None):
        """Fill the missing entries of x by pseudo-Gibbs sampling (Rezende et al. 2014).

        Starting from the missing entries set to 0.5, each iteration draws
        z ~ q(z|x̃) and replaces the missing entries of x̃ by E[x|z]; observed entries
        never change.

        Args:
            x: `[B, *input_shape]` data; the values at missing positions are ignored.
            mask: same shape, 1 (or True) where x is observed, 0 where it is missing.
            num_iterations: encode/decode rounds.

        Returns:
            `[B, *input_shape]` float32: x with its missing entries imputed.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        mask = tf.cast(tf.convert_to_tensor(mask), tf.float32)
        if mask.shape != x.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match x {tuple(x.shape)}")
        seed = self.draw_seed(seed)
        current = mask * x + (1.0 - mask) * 0.5
        for step in range(int(num_iterations)):
            z = self.encode(current, y).sample(seed=seed + tf.constant([0, 1], tf.int32) * step)
            current = mask * x + (1.0 - mask) * self.decode(z, y).mean()
        return current

    @property
    def likelihood_params_per_example(self) -> int:
        """Likelihood parameters the decoder outputs per example (256 per pixel for a
        256-way categorical): what bounds the memory of a chunk of importance samples."""
        return math.prod(self.likelihood.params_shape(self.data_shape))

    def anomaly_score(self, x, y=None, num_samples=1000, seed=0):
        """−log p(x) per example (importance-weighted, `num_samples` samples): `[B]` numpy.

        Higher means less likely under the model. The bound of
        `vae_zoo.evaluate.log_likelihood`, without its input checks.
        """
        return -objectives.iw_log_likelihood(
            self.log_importance_weights, np.asarray(x, np.float32), int(num_samples),
            self.likelihood_params_per_example, y=y, seed=seed,
            batch_bound=objectives.batch_bound_of(self.importance_weights_of),
        )

    def call(self, inputs, training=False):
        return self.reconstruct(inputs)

    # ------------------------------------------------------------------ training

    def compile(self, optimizer="rmsprop", **kwargs):
        """`keras.Model.compile` with the fast path's defaults (XLA, several steps per
        call: `vae_zoo.training.fast_path.FastPath.compile`), then the optimizers built:
        the main one on `main_variables`, and one per auxiliary part."""
        super().compile(optimizer=optimizer, **kwargs)
        self._compile_auxiliary_parts()

    def compile_from_config(self, config):
        # Keras skips compiling a loaded model whose class overrides `compile`, so
        # do what it would do: compile with the saved arguments, build the optimizer.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built and not self.optimizer.built:
            self.optimizer.build(self.main_variables())

    # ------------------------------------------------------------------ auxiliary parts

    # A part trained by its own optimizer and loss beside the VAE (FactorVAE's
    # discriminator) goes through these hooks and the one `train_step`, not a loop of
    # its own.

    def auxiliary_parts(self):
        """Layers trained by their own optimizer, not the main one: `{name: layer}`.

        None here. For each part a family returns, `compute_terms` returns the
        per-example loss `"<name>_loss"` (`[B]`), `compile` creates the optimizer
        `make_auxiliary_optimizer(name)` in the model's strategy scope and builds it
        (the attribute `<name>_optimizer`, so `.keras` files, weight files and
        `tf.train.Checkpoint` keep its state), and `train_step`, after the main
        update, minimizes the loss's mean over the global batch with it over the
        part's trainable variables only. The main optimizer trains the other
        variables (`main_variables`), so the main loss never moves a part.
        """
        return {}

    def auxiliary_optimizers(self):
        """`{name: optimizer}` of the auxiliary parts (the attributes `<name>_optimizer`
        that `compile` sets; None before it)."""
        return {name: getattr(self, f"{name}_optimizer", None) for name in self.auxiliary_parts()}

    def make_auxiliary_optimizer(self, name):
        """A new optimizer for the auxiliary part `name` (called by `compile`)."""
        raise NotImplementedError(f"{type(self).__name__} has no auxiliary part {name!r}")

    def main_variables(self):
        """The trainable variables the main optimizer trains: all but the auxiliary
        parts'."""
        parts = self.auxiliary_parts().values()
        auxiliary = {id(v) for part in parts for v in part.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in auxiliary]

    def _compile_auxiliary_parts(self):
        parts = self.auxiliary_parts()
        with self.distribute_strategy.scope():
            # Built here, not in the first trace of the training step: a step that
            # creates the optimizer's slots is traced a second time (tf.function
            # retraces a function that created variables). Keras would also build
            # the main optimizer on every trainable variable, parts' included.
            if (self.built or parts) and not self.optimizer.built:
                self.optimizer.build(self.main_variables())
            for name, part in parts.items():
                optimizer = self.make_auxiliary_optimizer(name)
                optimizer.build(part.trainable_variables)
                setattr(self, f"{name}_optimizer", optimizer)

    def unpack_inputs(self, data):
        """The model's inputs from a batch: `(x,)`; labels, if any, are ignored."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, (tuple, list)):
            x = x[0]
        return (x,)

    def compute_terms(self, inputs, training=False):
        """Per-example objective terms (dict of `[B]`), including "loss" to minimize:
        the model's `training_objective` (`vae_zoo.models.training_objectives`).

        `training` is True in `train_step` (families with training-only state, such
        as a score-function baseline, update it then) and False in `test_step`.

        A family or an objective may add "surrogate" (`[B]`): the quantity to
        differentiate instead of "loss" (e.g. the score-function estimator for
        discrete z, or PIWAE's gradients routed to encoder and decoder).
        """
        beta = tf.convert_to_tensor(self.beta)
        return self.training_objective.terms(self, inputs, beta)

    def _mean_over_global_batch(self, per_example):
        """Σ over the replica's examples / global batch size.

        Under a `tf.distribute` strategy Keras sums the replicas' gradients, so each
        replica's loss must be its share of the global mean, not its own mean.
        """
        total = tf.reduce_sum(per_example)
        count = tf.cast(tf.shape(per_example)[0], per_example.dtype)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            count = replica.all_reduce(tf.distribute.ReduceOp.SUM, count)
        return total / count

    def _update_metrics(self, terms):
        values = dict(terms, beta=self.beta)
        for tracker in self.trackers:
            tracker.update_state(values[tracker.name])
        logs = {tracker.name: tracker.result() for tracker in self.trackers}
        if self.step_logs_as_vectors:
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def set_beta_schedule(self, schedule):
        """Make `schedule` (a `BetaSchedule`, any `fn(step) -> float32 tensor`, or None
        for the constant `model.beta`) the β the compiled step follows from now on.

        The training function is rebuilt (it is traced again at the next step).
        `callbacks.KLAnnealing` uses this for the length of its `fit`.
        """
        self.beta_schedule = schedule
        if getattr(self, "optimizer", None) is not None:
            self.make_train_function(force=True)

    def _train_step(self, data):
        inputs = self.unpack_inputs(data)
        if self.beta_schedule is not None:
            self.beta.assign(self.beta_schedule(self.optimizer.iterations))
        parts = self.auxiliary_parts()
        optimizers = self.auxiliary_optimizers()
        with tf.GradientTape(persistent=bool(parts)) as tape:
            terms = self.compute_terms(inputs, training=True)
            # Estimators whose gradient is not the gradient of the loss (score
            # function) return a per-example "surrogate" to differentiate instead.
            loss = self._mean_over_global_batch(terms.get("surrogate", terms["loss"]))
            if self.losses:
                replicas = tf.distribute.get_strategy().num_replicas_in_sync
                loss += tf.add_n(self.losses) / replicas
            scaled = self.optimizer.scale_loss(loss)
            auxiliary = {
                name: optimizers[name].scale_loss(
                    self._mean_over_global_batch(terms[f"{name}_loss"]))
                for name in parts
            }
        variables = self.main_variables()
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        for name, part in parts.items():
            variables = part.trainable_variables
            optimizers[name].apply(tape.gradient(auxiliary[name], variables), variables)
        return self._update_metrics(terms)

    def _test_step(self, data):
        return self._update_metrics(self.compute_terms(self.unpack_inputs(data), training=False))

    @property
    def metrics(self):
        return list(self.trackers)

    # ------------------------------------------------------------------ config

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": _serialize(self.encoder),
            "decoder": _serialize(self.decoder),
            "posterior": _serialize(self.posterior),
            "likelihood": _serialize(self.likelihood),
            "prior": _serialize(self.prior),
            "input_shape": self.data_shape,
            "beta": serialize_config_value(self.beta_config),
            "analytic_kl": self.analytic_kl,
            "objective": self.objective_config,
            "num_samples": self.num_samples,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{key: deserialize_config_value(value) for key, value in config.items()})
