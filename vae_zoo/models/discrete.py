"""Discrete VAE: z is a set of independent categoricals, trained by REINFORCE or Gumbel-softmax.

Sampled one-hot vectors have no gradient with respect to the encoder, so the
reparameterization trick (docs/theory.md, "Amortized inference and gradients") does
not apply; the estimators' maths is in `vae_zoo.objectives`. Two estimators replace it:

- "reinforce": the score-function estimator E_q[(f(x, z) − b) ∇_φ log q_φ(z|x)] with the
  learning signal f = log p(x|z) and a baseline b (a running mean of f, optionally plus
  a learned input-dependent correction) that leaves it unbiased and lowers its
  variance. The decoder gets the pathwise gradient of log p(x|z) and the encoder the
  analytic KL gradient besides.
- "gumbel_softmax": reparameterized samples of the Concrete / Gumbel-softmax relaxation
  of q at a temperature τ are fed to the decoder; low variance but biased: the relaxed
  objective is not the ELBO (it tends to it as τ → 0, with growing variance).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vae_zoo import bodies, heads, networks, objectives
from vae_zoo.models.base import MODELS
from vae_zoo.models.family import Family, compose
from vae_zoo.models.forward import elbo_terms, forward_record
from vae_zoo.models.training_objectives import OBJECTIVES, Objective

ESTIMATORS = ("gumbel_softmax", "reinforce")
BASELINES = ("none", "moving_average", "learned")


class _DiscreteELBO(Objective):
    """The ELBO at a hard one-hot z ~ q(z|x) ("elbo", "reconstruction", "kl", "loss"),
    with a "surrogate" whose gradient estimates the ELBO's (`DiscreteVAE`)."""

    family = "discrete"

    def terms(self, batch, beta):
        record = batch.forward(batch.seed)
        terms = elbo_terms(record)
        terms["loss"] = objectives.beta_elbo_loss(terms["reconstruction"], terms["kl"], beta)
        return {**terms, **self.surrogate(batch, record, terms, beta)}


@OBJECTIVES.register("reinforce")
class Reinforce(_DiscreteELBO):
    """The score-function estimator (Williams 1992) with the model's baseline b:
    "surrogate" equals "loss" in value, with gradient −(f − b) ∇_φ log q(z|x) + β ∇_φ KL
    for the encoder, f = log p(x|z), and the learned baseline's squared error."""

    def surrogate(self, batch, record, terms, beta):
        signal = tf.stop_gradient(terms["reconstruction"])  # f = log p(x|z), [B]
        surrogate = objectives.score_function_surrogate(
            terms["loss"], record.q.log_prob(record.z), signal, record.parts["baseline"])
        return {"surrogate": surrogate + record.parts["baseline_loss"]}


@OBJECTIVES.register("gumbel_softmax")
class GumbelSoftmax(_DiscreteELBO):
    """The Concrete / Gumbel-softmax relaxation (Jang et al. 2017): while training,
    "surrogate" is −(log p(x|z̃) − β·KL), z̃ a reparameterized draw of the relaxed q at
    the model's temperature ("relaxed_reconstruction" is log p(x|z̃)); none in
    evaluation."""

    def surrogate(self, batch, record, terms, beta):
        if not batch.training:
            return {}
        z_relaxed = record.parts["relaxed"].sample(seed=batch.draw_seed())  # on the simplex
        relaxed = batch.decode(z_relaxed).log_prob(batch.x)
        return {"relaxed_reconstruction": relaxed,
                "surrogate": objectives.relaxed_surrogate(relaxed, terms["kl"], beta)}


@keras.saving.register_keras_serializable(package="vae_zoo")
@MODELS.register("discrete")
class DiscreteVAE(Family):
    """VAE whose latent code is `num_latents` independent categoricals of `num_categories`.

    z is one-hot, `latent_shape = (num_latents, num_categories)`. The encoder is
    `Flatten → Dense(h) for h in hidden_units → Dense(L·C logits)`, q(z|x) the
    `categorical` posterior head (batch `[B]`, event `[L, C]`), p(z) the
    `uniform_categorical` prior, and the decoder `Flatten(z) → Dense(h) for h in
    reversed(hidden_units) → Dense(likelihood params)`. KL(q || p) = Σ_latents
    KL(Cat(q_l) || Uniform(C)) is analytic (registered in TFP for
    `Independent(OneHotCategorical)`).

    What each estimator (the registered objective of its name) reports and
    differentiates:
    - every metric ("elbo", "reconstruction", "kl", "loss" = −(reconstruction − β·kl))
      is the true ELBO at a hard one-hot sample z ~ q, for both estimators, in
      training and evaluation, as `elbo` (used by `evaluate`) and importance-weighted
      evaluation (`log_importance_weights`, one-hot samples) are;
    - "surrogate" is what `train_step` differentiates instead of "loss":
      - "reinforce": equal to "loss" in value, with gradient −∇_θ log p(x|z) for the
        decoder and −(f − b) ∇_φ log q(z|x) + β ∇_φ KL for the encoder, f = log p(x|z)
        the learning signal and b the baseline (an unbiased estimate of the gradient
        of the expected loss);
      - "gumbel_softmax": the negated relaxed objective −(log p(x|z̃) − β·KL(q || p)),
        z̃ a reparameterized sample of the relaxation at `temperature`, with the KL of
        the categorical q (Jang et al. 2017 practice). The relaxed objective is not
        the ELBO, so its gradient is a biased estimate of the ELBO's (computed only
        while training; its reconstruction term is reported as
        "relaxed_reconstruction", not a metric).

    Baselines of "reinforce" (`baseline`):
    - "none": b = 0 (unbiased, very high variance: f ≈ −100 to −550 nats on MNIST);
    - "moving_average": b = the bias-corrected exponential moving average (decay
      `baseline_decay`) of the batch-mean learning signal over past training steps. It
      lives in non-trainable variables (saved with the model), is read before being
      updated, so b does not depend on the current sample (the estimator stays
      unbiased), and is only updated by training steps (`forward(...,
      training=True)`, as `train_step` calls it);
    - "learned": the moving average plus an MLP of x (`baseline_units`, NVIL, Mnih &
      Gregor 2014) predicting f − average, trained by squared error through the
      surrogate (a term of value 0 whose gradient reaches only that network). Still
      unbiased: b depends on x, not on z.
    The moving-average variables exist (unused) for "gumbel_softmax" too; the learned
    baseline network only for "reinforce" with baseline="learned".

    Args:
        input_shape: tuple, one example's shape: `(28, 28, 1)` images or `(D,)`.
        num_latents: int >= 1, L, number of categorical latent variables.
        num_categories: int >= 2, C, classes of each.
        hidden_units: sequence of ints, encoder layer widths (decoder reversed).
        estimator: "gumbel_softmax" or "reinforce".
        temperature: float > 0, τ of the Gumbel-softmax relaxation (a non-trainable
            variable `model.temperature`, so a callback can anneal it); unused by
            "reinforce".
        baseline: "none", "moving_average" or "learned" (see above); unused by
            "gumbel_softmax".
        baseline_decay: float in [0, 1), decay of the moving-average baseline.
        baseline_units: sequence of ints, hidden widths of the learned baseline MLP.
        likelihood: name or spec of a p(x|z) head in `vae_zoo.heads.LIKELIHOODS`.
        activation: hidden-layer activation.
        **kwargs: the shared arguments beta and seed (its objective is fixed) and
            Keras layer arguments; see `Family`.

    Example:
    ```python
    model = DiscreteVAE((28, 28, 1), num_latents=20, num_categories=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=10, batch_size=128)
    q = model.encode(x)             # batch [B], event [20, 10]; q.mean() = probabilities
    reinforce = DiscreteVAE((28, 28, 1), estimator="reinforce", baseline="learned")
    ```

    References: Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax",
    arXiv:1611.01144; Maddison, Mnih & Teh, "The Concrete Distribution",
    arXiv:1611.00712; Williams 1992 (REINFORCE); Mnih & Gregor, "Neural Variational
    Inference and Learning in Belief Networks", arXiv:1402.0030 (baselines).
    """

    # Small arguments that build a working model (the shared family tests use them).
    example_arguments = dict(input_shape=(8, 8, 1), num_latents=2, num_categories=3,
                             hidden_units=(8,))

    shared_arguments = ("beta", "seed")

    def __init__(
        self,
        input_shape,
        num_latents=20,
        num_categories=10,
        hidden_units=(512, 256),
        estimator="gumbel_softmax",
        temperature=0.5,
        baseline="moving_average",
        baseline_decay=0.99,
        baseline_units=(100,),
        likelihood="bernoulli",
        activation="relu",
        **kwargs,
    ):
        num_latents, num_categories = int(num_latents), int(num_categories)
        baseline_units = bodies.sizes("baseline_units", baseline_units)
        if num_latents < 1:
            raise ValueError(f"num_latents must be >= 1, got {num_latents}")
        if num_categories < 2:
            raise ValueError(f"num_categories must be >= 2, got {num_categories}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        latent_shape = (num_latents, num_categories)
        parts = compose(input_shape, latent_shape,
                        bodies.DenseBody(hidden_units=hidden_units, activation=activation),
                        heads.CategoricalPosterior(), likelihood,
                        heads.UniformCategoricalPrior(latent_shape))
        # Estimator options, set first: the base constructor builds the model, and
        # `build` creates the estimator's state from them.
        self.estimator = estimator
        self.baseline = baseline
        self.baseline_decay = float(baseline_decay)
        self.initial_temperature = float(temperature)
        self.baseline_network = None
        if estimator == "reinforce" and baseline == "learned":
            self.baseline_network = networks.mlp_encoder(
                baseline_units, (1,), activation, name="baseline_network"
            )
        super().__init__(**parts, analytic_kl=True, objective=estimator, **kwargs)

    def build(self, input_shape=None):
        if self.built:
            return
        state = dict(
            shape=(), trainable=False, dtype="float32", autocast=False, aggregation="mean"
        )
        self.temperature = self.add_weight(
            name="temperature",
            initializer=keras.initializers.Constant(self.initial_temperature),
            **state,
        )
        # Exponential moving average of the learning signal and the number of updates
        # (for the bias correction), saved with the model.
        self.baseline_average = self.add_weight(
            name="baseline_average", initializer="zeros", **state
        )
        self.baseline_updates = self.add_weight(
            name="baseline_updates", initializer="zeros", **state
        )
        if self.baseline_network is not None:
            self.baseline_network.build((None,) + self.data_shape)
        super().build(input_shape)

    # ------------------------------------------------------------------ public API

    def reconstruct(self, x, y=None):
        """E[x|z] at the posterior mode (one-hot argmax per latent): `[B, *input_shape]`."""
        return self.decode(self.encode(x, y).mode(), y).mean()

    def moving_average_baseline(self):
        """The bias-corrected running mean of the learning signal (scalar; 0 before any
        update)."""
        updates = tf.convert_to_tensor(self.baseline_updates)
        average = tf.convert_to_tensor(self.baseline_average)
        correction = 1.0 - self.baseline_decay ** tf.maximum(updates, 1.0)
        return tf.where(updates > 0, average / correction, 0.0)

    # ------------------------------------------------------------------ training

    def forward(self, x, y=None, seed=None, training=False):
        """One hard one-hot z ~ q(z|x) (no gradient through it) through the model.
        Parts: for "gumbel_softmax", "relaxed", q's relaxation at the temperature; for
        "reinforce", "baseline" b `[B]` (read before this step's update) and
        "baseline_loss" (value 0, gradient to the learned baseline's network). With
        `training=True` the moving average takes its step."""
        x = tf.convert_to_tensor(x, tf.float32)
        params = self.encoder(x)  # [B, L, C] logits
        q = self.posterior(params)  # batch [B], event [L, C]
        z = tf.stop_gradient(self.posterior_sample(q, self.draw_seed(seed)))  # one-hot
        record = forward_record(x, q, z, self.decode(z), self.prior_for(q), analytic_kl=True)
        if self.estimator == "reinforce":
            baseline, baseline_loss = self._baseline(x, record.reconstruction, training)
            record.parts.update(baseline=baseline, baseline_loss=baseline_loss)
        else:
            record.parts.update(relaxed=self.posterior.relaxed(params, self.temperature))
        return record

    def _baseline(self, x, reconstruction, training):
        """b `[B]` for the learning signal f = log p(x|z), and the learned baseline's
        loss term (value 0); the moving average updated when `training`."""
        signal = tf.stop_gradient(reconstruction)
        baseline = tf.zeros_like(signal)
        baseline_loss = tf.zeros_like(signal)
        if self.baseline == "none":
            return baseline, baseline_loss
        average = self.moving_average_baseline()  # read before this step's update
        baseline += average
        if training:
            decay = self.baseline_decay
            self.baseline_average.assign(
                decay * self.baseline_average + (1.0 - decay) * tf.reduce_mean(signal))
            self.baseline_updates.assign_add(1.0)
        if self.baseline_network is not None:
            residual = tf.cast(self.baseline_network(x), tf.float32)[:, 0]  # [B]
            baseline += tf.stop_gradient(residual)
            squared_error = tf.square(residual - (signal - average))
            baseline_loss = objectives.zero_with_gradient(squared_error)
        return baseline, baseline_loss
