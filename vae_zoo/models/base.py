"""The one VAE model every family builds on.

A model is five parts: an encoder body, a posterior head, a decoder body, a likelihood
head and a prior. A family (`DenseVAE`, ...) is a thin constructor that composes those
parts from a few arguments; the user API and the one training step live here. The
training terms are the objective's (`vae_zoo.models.training_objectives`), from what
the model hands it (`vae_zoo.models.forward`). Its parents: how Keras runs the step
fast (`vae_zoo.training.fast_path.FastPath`), the hooks of parts trained beside the
VAE (`vae_zoo.models.auxiliary`) and importance-weighted scoring
(`vae_zoo.models.importance`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vae_zoo.models import training_objectives
from vae_zoo.models.auxiliary import AuxiliaryParts, mean_over_global_batch
from vae_zoo.models.config_values import deserialize_config_value, serialize_config_value
from vae_zoo.models.forward import Batch, Forward, elbo_terms, forward_record
from vae_zoo.models.importance import ImportanceSampling
from vae_zoo.registry import Registry
from vae_zoo.schedules import BetaSchedule
from vae_zoo.training.fast_path import FastPath

MODELS = Registry("model family")

# Reported by every objective; each adds its own (`Objective.metric_names`).
METRIC_NAMES = ("loss", "elbo", "reconstruction", "kl", "beta")


def _stateless_seed(seed):
    """An int (or a `[2]` tensor) as a TFP stateless seed: same seed, same draw."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.cast(seed, tf.int32)


@keras.saving.register_keras_serializable(package="vae_zoo")
class VAE(FastPath, AuxiliaryParts, ImportanceSampling):
    """Variational autoencoder with TFP distributions for q(z|x), p(x|z) and p(z).

    Trains by maximizing its objective, by default the β-weighted evidence lower bound
    `E_q[log p(x|z)] − β · KL(q(z|x) || p(z))` (Kingma & Welling 2014,
    arXiv:1312.6114) with one reparameterized sample per example and the analytic KL
    when TFP registers one.

    Args:
        encoder: Keras layer `[B, *input_shape] -> [B, *posterior params]`.
        decoder: Keras layer `[B, *latent_shape] -> [B, *likelihood params]`.
        posterior, likelihood: `vae_zoo.heads` posterior and likelihood heads.
        prior: a `vae_zoo.heads` prior; its `latent_shape` is the model's.
        input_shape: tuple, shape of one example (images `(H, W, C)` or `(D,)`).
        beta: float >= 0, the weight of the objective's regularizer, or a
            `vae_zoo.schedules.BetaSchedule` of the optimizer's step (set inside the
            compiled step). The current value is the non-trainable variable `beta`.
        analytic_kl: use the closed-form KL when registered in TFP.
        objective: a name or spec of `vae_zoo.models.training_objectives.OBJECTIVES`
            (or an `Objective`): "elbo", "iwae" (K = `num_samples`), or with options,
            e.g. `{"name": "beta_tc", "beta": 6.0, "dataset_size": 5000}`.
        num_samples: K, importance samples per example (per bound).
        seed: int or None, seeds the model's `keras.random.SeedGenerator`.

    Scoring (every family, `y` the condition of a conditional one):
    `elbo(x)` the ELBO's terms of one draw; `log_importance_weights(x, k)` and its
    parts `importance_terms(x, k)`; `anomaly_score(x)` −log p(x) by importance
    sampling. A family changes how it is scored through `forward` (one draw),
    `importance_terms` (K draws) and `score_latents` (given draws).

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
    # Whether q(z|x) is one distribution whose per-dimension moments describe it (what
    # penalties on the aggregate posterior need), not a chain of conditionals.
    mean_field_posterior = True
    # Whether train_step/test_step return `[1]` vectors instead of scalars: set by
    # `vae_zoo.distribute.prepare_model` under several workers, where Keras 3.15's
    # metric reduction fails on scalars.
    step_logs_as_vectors = False

    def __init__(self, encoder, decoder, posterior, likelihood, prior, input_shape, beta=1.0,
                 analytic_kl=True, objective="elbo", num_samples=1, seed=None, **kwargs):
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
        self.encoder, self.decoder = encoder, decoder
        self.posterior, self.likelihood, self.prior = posterior, likelihood, prior
        self.data_shape = tuple(int(d) for d in input_shape)
        self.latent_shape = tuple(prior.latent_shape)
        self.analytic_kl = bool(analytic_kl)
        self.objective = training_objective.name
        self.training_objective = training_objective
        training_objective.check_family(type(self))
        # What `get_config` records: the name as given, else the spec with its options
        # (set past Keras' attribute tracking, which would wrap the dict).
        object.__setattr__(self, "objective_config", objective if isinstance(objective, str)
                           else training_objective.get_config())
        self.num_samples = int(num_samples)
        self.seed = seed
        self.beta = self.add_weight(name="beta", shape=(), trainable=False, dtype="float32",
                                    initializer=keras.initializers.Constant(self.initial_beta))
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

    def forward(self, x, y=None, seed=None, training=False) -> Forward:
        """One draw z ~ q(z|x) through the model: the record an objective computes its
        terms from (`vae_zoo.models.forward.Forward`). A family that trains differently
        fills in its own parts here; `training` is True in `train_step`."""
        x = tf.convert_to_tensor(x, tf.float32)
        q = self.encode(x, y)
        z = self.posterior_sample(q, self.draw_seed(seed))
        return forward_record(x, q, z, self.decode(z, y), self.prior_for(q, y), self.analytic_kl)

    def elbo(self, x, y=None, seed=None):
        """Per-example ELBO terms in nats, one draw: dict of `[B]` tensors "elbo",
        "reconstruction" (log p(x|z)) and "kl" (analytic when registered in TFP, else
        Monte-Carlo). Every layer's KL: `forward.elbo_terms(model.forward(x))`."""
        terms = elbo_terms(self.forward(x, y, seed))
        return {key: terms[key] for key in ("elbo", "reconstruction", "kl")}

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

    def call(self, inputs, training=False):
        return self.reconstruct(inputs)

    # ------------------------------------------------------------------ training

    def compile(self, optimizer="rmsprop", **kwargs):
        """`keras.Model.compile` with the fast path's defaults (XLA, several steps per
        call: `vae_zoo.training.fast_path.FastPath.compile`), then the optimizers built:
        the main one on `main_variables`, and one per auxiliary part."""
        super().compile(optimizer=optimizer, **kwargs)
        self.build_optimizers()

    def compile_from_config(self, config):
        # Keras skips compiling a loaded model whose class overrides `compile`, so
        # do what it would do: compile with the saved arguments, build the optimizer.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built and not self.optimizer.built:
            self.optimizer.build(self.main_variables())

    def unpack_inputs(self, data):
        """The model's inputs from a batch: `(x,)`; labels, if any, are ignored."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, (tuple, list)):
            x = x[0]
        return (x,)

    def compute_terms(self, inputs, training=False, seed=None):
        """Per-example terms (dict of `[B]`) of the model's `training_objective`, with
        "loss" to minimize and, where the objective's gradient is not the loss's
        (score function, PIWAE), "surrogate" to differentiate instead. `training` is
        True in `train_step` and False in `test_step`."""
        batch = Batch(self, inputs, training, seed)
        return self.training_objective.terms(batch, tf.convert_to_tensor(self.beta))

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
        with tf.GradientTape(persistent=bool(self.auxiliary_parts())) as tape:
            terms = self.compute_terms(inputs, training=True)
            loss = mean_over_global_batch(terms.get("surrogate", terms["loss"]))
            if self.losses:
                replicas = tf.distribute.get_strategy().num_replicas_in_sync
                loss += tf.add_n(self.losses) / replicas
            scaled = self.optimizer.scale_loss(loss)
            auxiliary = self.auxiliary_losses(terms)
        variables = self.main_variables()
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.apply_auxiliary(tape, auxiliary)
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
            **{part: keras.saving.serialize_keras_object(getattr(self, part))
               for part in ("encoder", "decoder", "posterior", "likelihood", "prior")},
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
