"""VQ-VAE: a map of codes from a learned codebook, with a learned autoregressive prior.

The encoder maps x to a map of D-dimensional vectors z_e; each is replaced by its
nearest codebook vector e_k (one of K), the decoder reads the map of e_k. The codes k
are the latent variable: q(k|x) puts all its mass on the nearest codes (a one-hot,
deterministic categorical), so KL(q(k|x) || p(k)) = −log p(k), and

    ELBO = log p(x|k) + log p(k)        (log q(k|x) = 0).

Gradients (van den Oord et al. 2017): the decoder's gradient with respect to the
quantized map is copied to z_e (straight-through estimator), a commitment term
β‖z_e − sg(e)‖² keeps the encoder close to its codes, and the codebook is not trained
by gradient: it follows exponential moving averages of the encoder outputs assigned to
each code (the paper's appendix; Razavi et al. 2019), updated once per training step.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vae_zoo import bodies, heads, objectives
from vae_zoo.models.base import MODELS
from vae_zoo.models.family import Family
from vae_zoo.models.forward import elbo_terms, forward_record
from vae_zoo.models.quantizer import VectorQuantizer
from vae_zoo.models.training_objectives import OBJECTIVES, Objective, Option

# The priors over a code map the family accepts (both categorical over K codes).
CODE_PRIORS = ("autoregressive_categorical", "uniform_categorical")
# Logit of the codes q(k|x) excludes: exp(−1e9) is exactly 0 in float32, so q is one-hot,
# log q(k|x) = 0 and its entropy 0, with no −inf (0 · −inf) in TFP's formulas.
EXCLUDED_LOGIT = -1e9


@OBJECTIVES.register("vq_vae")
class VQVAEObjective(Objective):
    """VQ-VAE's terms (van den Oord et al. 2017) from the record `VQVAE.forward` hands
    over: the ELBO's at the quantized code, "loss" −(log p(x|k) − β·kl), "surrogate"
    (what `train_step` differentiates) the loss plus `commitment_cost` ·
    ‖z_e − sg(z_q)‖² ("commitment", summed over the map), and "perplexity" (exp of the
    entropy of the batch's code usage, repeated per example). Option `commitment_cost`
    (0.25); `VQVAE` sets it from its own argument."""

    options = {"commitment_cost": Option(float, 0.25, minimum=0.0)}
    metric_names = ("commitment", "perplexity")
    family = "vqvae"

    def terms(self, batch, beta):
        record = batch.forward(batch.seed)
        terms = elbo_terms(record)
        encoded, quantized = record.parts["encoded"], record.parts["quantized"]
        commitment = tf.reduce_sum(tf.square(encoded - tf.stop_gradient(quantized)),
                                   axis=[1, 2, 3])
        loss = objectives.beta_elbo_loss(terms["reconstruction"], terms["kl"], beta)
        num_codes = record.z.shape[-1]
        usage = tf.reduce_mean(tf.reshape(record.z, [-1, num_codes]), 0)  # [K]
        perplexity = tf.exp(-tf.reduce_sum(usage * tf.math.log(usage + 1e-10)))
        return {**terms, "loss": loss, "commitment": commitment,
                "surrogate": loss + self.values["commitment_cost"] * commitment,
                "perplexity": tf.fill(tf.shape(loss), perplexity)}


def hard_logits(codes, num_codes):
    """Logits of the one-hot categorical on `codes` (int `[...]`): `[..., num_codes]`,
    0 at the code, `EXCLUDED_LOGIT` elsewhere."""
    return (1.0 - tf.one_hot(codes, num_codes)) * EXCLUDED_LOGIT


@keras.saving.register_keras_serializable(package="vae_zoo")
@MODELS.register("vqvae")
class VQVAE(Family):
    """Vector-quantized VAE with an EMA codebook and a learned PixelCNN prior over codes.

    Encoder (`networks.fully_conv_encoder`): `Conv2D(f, k, s, "same")` per (filter,
    kernel size, stride) → 1×1 conv to z_e `[B, h, w, D]`, h = H/S, w = W/S (S the
    product of strides). Each vector is replaced by its nearest code of a
    `VectorQuantizer` (K codes, EMA-learned). The latent z is the one-hot code map,
    `latent_shape = (h, w, K)`; `decode(z)` embeds it (z · codebook, so soft
    interpolations between one-hot maps decode too) and runs the mirror-image
    transposed convolutions (`networks.fully_conv_decoder`) to the likelihood.

    The latent variable and the bound. q(k|x) (`encode`) is a one-hot categorical on
    the nearest codes (batch `[B]`, event `[h, w, K]`: `mean()` is the one-hot map,
    `stddev()` 0, log q(k|x) = 0), so KL(q || p) = −log p(k) and

        elbo = reconstruction − kl = log p(x|k) + log p(k).

    Every importance sample of q is the same k, so `importance_terms` computes the
    weight once and repeats it K times: the importance-weighted bound (evaluation,
    serving) equals the ELBO exactly for every K.

    Prior p(k): "autoregressive_categorical" (default, `AutoregressiveCategoricalPrior`:
    masked convolutions over the one-hot map, categorical outputs) or
    "uniform_categorical" (the paper's fixed prior during VQ-VAE training,
    kl = h·w·log K). The learned prior is trained jointly, on the current codes with
    no gradient to the encoder: its loss is the ELBO's kl, β·(−log p(k)), whose
    gradient reaches only the prior (codes are an argmin). Joint rather than the
    paper's second stage, so one `fit` (one `train_step`) trains everything and the
    reported ELBO is a bound at every epoch; the price is a prior that chases codes
    still moving early in training. `sample` draws codes ancestrally (one network
    pass per position) and decodes them.

    Training (`forward` and the objective "vq_vae"): with z_q = e_k the quantized map and sg the stop
    gradient, the decoder reads z_e + sg(z_q − z_e) (value z_q, gradient copied to z_e:
    straight-through, Bengio et al. 2013, arXiv:1308.3432). "loss" is
    −(log p(x|k) − β·kl) as in every family; "surrogate", what `train_step`
    differentiates, adds `commitment_cost` · ‖z_e − sg(z_q)‖² (the paper's β; summed
    over the map, per example). Metrics add "commitment" and "perplexity" (exp of the
    entropy of the batch's code usage: K when every code is used equally, 1 when one
    code is used). The codebook is updated by `VectorQuantizer.update` after the
    step's quantization, only when `training=True`, i.e. once per `train_step`
    (also with several steps per execution and XLA) and never in `test_step`,
    `evaluate` or serving.

    Args:
        input_shape: tuple `(H, W, C)`, H and W divisible by S.
        num_embeddings: K >= 2, codes in the codebook.
        embedding_dim: D >= 1, size of a code vector (channels of z_e).
        filters: sequence of ints, encoder convolution channels (decoder reversed).
        kernel_sizes: sequence of ints, one per convolution.
        strides: sequence of ints, one per convolution.
        commitment_cost: float >= 0, weight of the commitment term (the paper's β).
        decay: float in [0, 1), γ of the codebook's moving averages.
        epsilon: float > 0, Laplace smoothing of the code counts.
        dead_code_threshold: float >= 0; codes whose moving-average count falls below
            it are restarted at random encoder outputs (0: never).
        likelihood: name or spec of a p(x|z) head in `vae_zoo.heads.LIKELIHOODS`.
        prior: "autoregressive_categorical" (or a spec with its options: filters,
            kernel_size, num_layers, activation) or "uniform_categorical".
        activation: hidden-layer activation.
        **kwargs: the shared arguments beta (weight of kl; here it only scales the
            prior's training signal) and seed, and Keras layer arguments; see `Family`.

    Example:
    ```python
    model = VQVAE((28, 28, 1), num_embeddings=64, embedding_dim=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(train, epochs=10)
    q = model.encode(x)                # batch [B], event [7, 7, 64], one-hot
    codes = tf.argmax(q.mode(), -1)    # [B, 7, 7]
    x_new = model.sample(16)           # [16, 28, 28, 1]: codes ~ p(k), then E[x|k]
    ```

    References: van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation
    Learning", arXiv:1711.00937; Razavi, van den Oord & Vinyals, "Generating Diverse
    High-Fidelity Images with VQ-VAE-2", arXiv:1906.00446.
    """

    # Small arguments that build a working model (the shared family tests use them).
    example_arguments = dict(input_shape=(8, 8, 1), num_embeddings=4, embedding_dim=2,
                             filters=(4,), kernel_sizes=(3,), strides=(2,),
                             prior={"name": "autoregressive_categorical", "filters": 4,
                                    "num_layers": 1})

    shared_arguments = ("beta", "seed")

    def __init__(
        self,
        input_shape,
        num_embeddings=64,
        embedding_dim=16,
        filters=(32, 64),
        kernel_sizes=(4, 4),
        strides=(2, 2),
        commitment_cost=0.25,
        decay=0.99,
        epsilon=1e-5,
        dead_code_threshold=0.0,
        likelihood="bernoulli",
        prior="autoregressive_categorical",
        activation="relu",
        **kwargs,
    ):
        input_shape = bodies.check_input_shape(input_shape)
        num_embeddings, embedding_dim = int(num_embeddings), int(embedding_dim)
        _check_arguments(num_embeddings, embedding_dim, commitment_cost, decay, epsilon,
                         dead_code_threshold, prior)
        body = bodies.FullyConvBody(filters=filters, kernel_sizes=kernel_sizes, strides=strides,
                                    activation=activation)
        body.check(input_shape)
        code_map = (input_shape[0] // body.total_stride, input_shape[1] // body.total_stride)
        self.commitment_cost = float(commitment_cost)
        # Layers (the quantizer first: the base constructor's build uses it). The body
        # encodes to, and decodes from, a map of embeddings.
        self.quantizer = VectorQuantizer(
            num_embeddings, embedding_dim, decay, epsilon, dead_code_threshold,
            seed=kwargs.get("seed"), name="quantizer",
        )
        likelihood_head = heads.LIKELIHOODS.build(likelihood)
        embeddings = code_map + (embedding_dim,)
        super().__init__(
            encoder=body.encoder(input_shape, embeddings),
            decoder=body.decoder(input_shape, embeddings, likelihood_head.params_shape(input_shape)),
            posterior=heads.CategoricalPosterior(),
            likelihood=likelihood_head,
            prior=heads.PRIORS.build(prior, latent_shape=code_map + (num_embeddings,)),
            input_shape=input_shape,
            objective={"name": "vq_vae", "commitment_cost": self.commitment_cost},
            **kwargs,
        )

    def build(self, input_shape=None):
        if self.built:
            return
        self.quantizer.build()
        super().build(input_shape)

    # ------------------------------------------------------------------ public API

    @property
    def num_embeddings(self) -> int:
        return self.quantizer.num_embeddings

    def encode(self, x, y=None):
        """q(k|x), one-hot on the nearest codes: batch `[B]`, event `[h, w, K]`."""
        z_e = self.encoder(tf.convert_to_tensor(x, tf.float32))
        return self.posterior(hard_logits(self.quantizer.nearest(z_e), self.num_embeddings))

    def decode(self, z, y=None):
        """p(x|z) for one-hot code maps z `[B, h, w, K]` (or weights over the codes):
        batch `[B]`, event `input_shape`."""
        return self.likelihood(self.decoder(self.quantizer.embed(tf.convert_to_tensor(z))))

    def posterior_sample(self, q, seed):
        """The one value of q(k|x): its one-hot mode, `[B, h, w, K]` (no sampling)."""
        return q.mode()

    def importance_terms(self, x, num_samples, y=None, seed=None):
        """`[K, B]` terms of K importance samples, all equal: q(k|x) is one point, so
        the weight log p(x|k) + log p(k) − 0 is computed once and repeated."""
        x = tf.convert_to_tensor(x, tf.float32)
        q = self.encode(x)
        z = q.mode()
        terms = {
            "log_likelihood": self.decode(z).log_prob(x),
            "log_prior": self.prior_for(q).log_prob(z),
            "log_posterior": q.log_prob(z),
        }
        return {key: tf.tile(value[tf.newaxis], [num_samples, 1]) for key, value in terms.items()}

    # ------------------------------------------------------------------ training

    def forward(self, x, y=None, seed=None, training=False):
        """The draw through the model is the nearest codes k of z_e = encoder(x); the
        decoder reads z_e + sg(z_q − z_e) (straight-through). Parts: "encoded" z_e and
        "quantized" z_q, `[B, h, w, D]`. With `training=True` the codebook takes one
        EMA step after the quantization (which used the codebook before the step)."""
        x = tf.convert_to_tensor(x, tf.float32)
        codebook = tf.convert_to_tensor(self.quantizer.codebook)  # before this step's update
        z_e = self.encoder(x)  # [B, h, w, D]
        codes = self.quantizer.nearest(z_e, codebook)  # [B, h, w]
        one_hot = tf.one_hot(codes, self.num_embeddings)  # [B, h, w, K]
        z_q = self.quantizer.embed(one_hot, codebook)
        likelihood = self.likelihood(self.decoder(z_e + tf.stop_gradient(z_q - z_e)))
        q = self.posterior(hard_logits(codes, self.num_embeddings))
        if training:
            self.quantizer.update(z_e, one_hot, self.draw_seed(seed))
        return forward_record(x, q, one_hot, likelihood, self.prior_for(q), self.analytic_kl,
                              encoded=z_e, quantized=z_q)


def _check_arguments(num_embeddings, embedding_dim, commitment_cost, decay, epsilon,
                     dead_code_threshold, prior):
    """One-line `ValueError`s naming the argument."""
    if num_embeddings < 2:
        raise ValueError(f"num_embeddings must be >= 2, got {num_embeddings}")
    if embedding_dim < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
    if not commitment_cost >= 0:
        raise ValueError(f"commitment_cost must be >= 0, got {commitment_cost}")
    if not 0 <= decay < 1:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if not dead_code_threshold >= 0:
        raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
    if isinstance(prior, (str, dict)):
        name = prior.get("name") if isinstance(prior, dict) else prior
    else:  # a prior layer
        name = getattr(prior, "registry_name", type(prior).__name__)
    if name not in CODE_PRIORS:
        raise ValueError(f"prior must be one of {CODE_PRIORS} (a prior over codes), got {name!r}")
