"""Distribution heads: Keras 3 layers that turn parameter tensors into TFP distributions.

A head knows how many parameters it needs (`params_shape`) and how to turn a parameter
tensor into a distribution (`call`). Bodies (`vae_zoo.networks`) end with a projection
to `params_shape`; heads never hold the projection, so the same head serves dense,
convolutional and fully-convolutional bodies.

Shapes. For an input batch of B examples:
- posterior heads take params `[B, *latent_shape[:-1], k * latent_shape[-1]]` and
  return q(z|x) with batch shape `[B]` and event shape `latent_shape`;
- likelihood heads take params `[B, *data_shape, k]` (k parameters per data element) and
  return p(x|z) with batch shape `[B]` and event shape `data_shape`.

All heads compute in float32 whatever the layer's compute dtype (mixed precision safe).

`tfp.layers` needs Keras 2; these are small Keras 3 layers. A Keras 3 layer may return a
`tfd.Distribution` when called from a subclassed model (eagerly or inside
`tf.function`), which is how `vae_zoo.models` uses them; they cannot be outputs of a
functional model.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_zoo.registry import Registry

tfd = tfp.distributions
tfb = tfp.bijectors

POSTERIORS = Registry("posterior")
LIKELIHOODS = Registry("likelihood")


def _as_float32(params):
    return tf.cast(params, tf.float32)


class DistributionHead(keras.layers.Layer):
    """Base class: `params_shape(event_shape)` and `call(params) -> tfd.Distribution`."""

    def params_shape(self, event_shape) -> tuple:
        raise NotImplementedError

    def compute_output_spec(self, *args, **kwargs):  # pragma: no cover - not symbolic
        raise TypeError(
            f"{type(self).__name__} returns a tfd.Distribution and cannot be used in a "
            "functional model; call it from a subclassed model."
        )


# ----------------------------------------------------------------------------------
# Posteriors q(z|x)


@keras.saving.register_keras_serializable(package="vae_zoo")
@POSTERIORS.register("diagonal_gaussian")
class DiagonalGaussianPosterior(DistributionHead):
    """Diagonal Gaussian q(z|x) = N(μ, diag σ²) with σ = softplus(s) + `scale_floor`.

    Params `[B, ..., 2 * d]` are split on the last axis into μ and s. The result has
    batch shape `[B]` and event shape `[..., d]` (`Independent` over every non-batch
    axis), so `log_prob(z)` is `[B]`.

    Args:
        scale_floor: float, lower bound on σ, keeps log q finite.

    Example:
    ```python
    q = DiagonalGaussianPosterior()(tf.zeros([8, 2 * 32]))  # batch [8], event [32]
    ```
    """

    def __init__(self, scale_floor: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.scale_floor = float(scale_floor)

    def params_shape(self, event_shape) -> tuple:
        event_shape = tuple(event_shape)
        return event_shape[:-1] + (2 * event_shape[-1],)

    def call(self, params):
        params = _as_float32(params)
        loc, raw_scale = tf.split(params, 2, axis=-1)
        scale = tf.math.softplus(raw_scale) + self.scale_floor
        return tfd.Independent(
            tfd.Normal(loc=loc, scale=scale),
            reinterpreted_batch_ndims=params.shape.rank - 1,
        )

    def get_config(self):
        return {**super().get_config(), "scale_floor": self.scale_floor}


@keras.saving.register_keras_serializable(package="vae_zoo")
@POSTERIORS.register("full_covariance_gaussian")
class FullCovarianceGaussianPosterior(DistributionHead):
    """Full-covariance Gaussian q(z|x) = N(μ, L Lᵀ) for flat latents z ∈ R^d.

    Params `[B, d + d(d+1)/2]` are μ followed by the d(d+1)/2 entries of the lower
    triangle of L (`tfp.math.fill_triangular`); the diagonal of L is
    softplus(·) + `scale_floor`, so L is a valid Cholesky factor. The result is a
    `tfd.MultivariateNormalTriL` with batch `[B]`, event `[d]`.

    KL(q || N(μ_p, diag σ_p²)) against the `standard_normal` prior is analytic: this
    module registers it with TFP (`tfd.kl_divergence`), which has no closed form for an
    MVN against an `Independent(Normal)`. Against other priors the model falls back to
    the one-sample Monte-Carlo KL.

    Args:
        scale_floor: float, lower bound on the diagonal of L (keeps log q finite).

    Example:
    ```python
    head = FullCovarianceGaussianPosterior()
    head.params_shape((8,))                   # (44,) = 8 + 36
    q = head(tf.zeros([16, 44]))              # batch [16], event [8]
    ```
    """

    def __init__(self, scale_floor: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.scale_floor = float(scale_floor)

    def params_shape(self, event_shape) -> tuple:
        event_shape = tuple(event_shape)
        if len(event_shape) != 1:
            raise ValueError(
                "full_covariance_gaussian needs a flat latent shape (d,), got "
                f"{event_shape}; use diagonal_gaussian for spatial latents"
            )
        d = event_shape[0]
        return (d + d * (d + 1) // 2,)

    @staticmethod
    def latent_dim(num_params: int) -> int:
        """d such that d + d(d+1)/2 == num_params (ValueError if there is none)."""
        d = (math.isqrt(9 + 8 * num_params) - 3) // 2
        if d < 1 or d + d * (d + 1) // 2 != num_params:
            raise ValueError(
                f"full_covariance_gaussian params must have d + d(d+1)/2 entries, got "
                f"{num_params}"
            )
        return d

    def call(self, params):
        params = _as_float32(params)
        if params.shape.rank != 2:
            raise ValueError(
                "full_covariance_gaussian needs flat params [B, d + d(d+1)/2], got shape "
                f"{params.shape}"
            )
        d = self.latent_dim(params.shape[-1])
        loc, raw_tril = params[:, :d], params[:, d:]
        tril = tfp.math.fill_triangular(raw_tril)  # [B, d, d], lower triangular
        raw_diag = tf.linalg.diag_part(tril)
        diag = tf.math.softplus(raw_diag) + self.scale_floor
        # tril with its diagonal replaced (`set_diag`'s gradient does not compile
        # under XLA with a dynamic batch size; adding a diagonal matrix does).
        scale_tril = tril + tf.linalg.diag(diag - raw_diag)
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril)

    def get_config(self):
        return {**super().get_config(), "scale_floor": self.scale_floor}


@tfd.RegisterKL(tfd.MultivariateNormalLinearOperator, tfd.Independent)
def _kl_mvn_independent_normal(q, p, name=None):
    """KL(MVN || Independent(Normal) over one axis) in closed form, as KL to an MVNDiag.

    Any other `p` raises NotImplementedError, which `objectives.kl_divergence` turns
    into the Monte-Carlo estimate.
    """
    if not (
        isinstance(p.distribution, tfd.Normal)
        and p.event_shape.rank == 1
        and q.event_shape.rank == 1
    ):
        raise NotImplementedError(
            f"no closed-form KL({type(q).__name__} || Independent({type(p.distribution).__name__}))"
        )
    normal = p.distribution
    diagonal = tfd.MultivariateNormalDiag(loc=normal.mean(), scale_diag=normal.stddev())
    return tfd.kl_divergence(q, diagonal, name=name)


# ----------------------------------------------------------------------------------
# Likelihoods p(x|z)


class LikelihoodHead(DistributionHead):
    """Base class of p(x|z) heads: `params_per_element` parameters per data element."""

    params_per_element = 1

    def params_shape(self, event_shape) -> tuple:
        return tuple(event_shape) + (self.params_per_element,)

    @staticmethod
    def _independent(dist, params):
        # params [B, *event, k]: every axis but the batch and the trailing k is event.
        return tfd.Independent(dist, reinterpreted_batch_ndims=params.shape.rank - 2)


class LogitBernoulli(tfd.Bernoulli):
    """`tfd.Bernoulli` whose `log_prob(x)` is x·l − softplus(l) for logits l.

    The same values as TFP's `Bernoulli(logits=l).log_prob` (which takes both
    log σ(l) and log(1 − σ(l)) and weights them with two `multiply_no_nan`s), with one
    softplus and two element-wise ops: the likelihood is the element-wise hot spot of
    training and of importance-weighted evaluation (`benchmarks/eval_throughput.py`).
    Finite for every finite logit; for grey-level x in [0, 1] it is the binary
    cross-entropy, negated.
    """

    def _log_prob(self, event):
        logits = self._logits_parameter_no_checks()
        event = tf.cast(event, logits.dtype)
        return event * logits - tf.math.softplus(logits)


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(LikelihoodHead):
    """Bernoulli p(x|z) parameterized by logits (numerically safe at any logit).

    Params `[B, *data_shape, 1]` are logits; the result has batch `[B]`, event
    `data_shape`, samples in {0., 1.} (float32) and mean sigmoid(logits).
    `log_prob(x) = Σ x·l − softplus(l)`, which is also the usual binary cross-entropy
    for grey-level x in [0, 1] (then not a normalized density: binarize to report NLL).
    """

    def call(self, params):
        logits = _as_float32(params)[..., 0]
        return self._independent(LogitBernoulli(logits=logits, dtype=tf.float32), params)


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(LikelihoodHead):
    """Gaussian p(x|z) = N(μ(z), scale²) with a fixed `scale` for every element.

    Params `[B, *data_shape, 1]` are the means. Batch `[B]`, event `data_shape`.

    Args:
        scale: float > 0, the fixed standard deviation.
    """

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not scale > 0:
            raise ValueError(f"gaussian likelihood scale must be > 0, got {scale}")
        self.scale = float(scale)

    def call(self, params):
        loc = _as_float32(params)[..., 0]
        return self._independent(tfd.Normal(loc=loc, scale=self.scale), params)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("gaussian_learned_scale")
class GaussianLearnedScaleLikelihood(LikelihoodHead):
    """Gaussian p(x|z) = N(μ(z), σ²) with one learned σ shared by all elements.

    σ = softplus(s) + `scale_floor`, s a trainable scalar initialised so that σ starts
    at `initial_scale`. Params `[B, *data_shape, 1]` are the means. Batch `[B]`, event
    `data_shape`.

    Args:
        initial_scale: float > scale_floor, σ at initialisation.
        scale_floor: float >= 0, lower bound on σ.
    """

    def __init__(self, initial_scale: float = 1.0, scale_floor: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if not initial_scale > scale_floor >= 0:
            raise ValueError(
                "gaussian_learned_scale needs initial_scale > scale_floor >= 0, got "
                f"initial_scale={initial_scale}, scale_floor={scale_floor}"
            )
        self.initial_scale = float(initial_scale)
        self.scale_floor = float(scale_floor)

    def build(self, input_shape=None):
        raw = tfp.math.softplus_inverse(self.initial_scale - self.scale_floor)
        self.raw_scale = self.add_weight(
            name="raw_scale",
            shape=(),
            initializer=keras.initializers.Constant(float(raw)),
            dtype="float32",
            autocast=False,  # stays float32 under a mixed-precision policy
        )

    @property
    def scale(self):
        return tf.math.softplus(tf.convert_to_tensor(self.raw_scale)) + self.scale_floor

    def call(self, params):
        loc = _as_float32(params)[..., 0]
        return self._independent(tfd.Normal(loc=loc, scale=self.scale), params)

    def get_config(self):
        return {
            **super().get_config(),
            "initial_scale": self.initial_scale,
            "scale_floor": self.scale_floor,
        }


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("gaussian_per_pixel")
class GaussianPerPixelLikelihood(LikelihoodHead):
    """Gaussian p(x|z) = N(μ(z), σ(z)²) with μ and σ predicted for every element.

    Params `[B, *data_shape, 2]` are μ and s, σ = softplus(s) + `scale_floor`. Batch
    `[B]`, event `data_shape`. `log_prob` is a density: on 8-bit data it is not a
    probability of the observed values (it grows without bound as σ → 0 on constant
    pixels, hence the floor); use `categorical_256` or `discretized_logistic_mixture`
    to report bits/dim.

    Args:
        scale_floor: float >= 0, lower bound on σ.
    """

    params_per_element = 2

    def __init__(self, scale_floor: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if not scale_floor >= 0:
            raise ValueError(f"gaussian_per_pixel scale_floor must be >= 0, got {scale_floor}")
        self.scale_floor = float(scale_floor)

    def call(self, params):
        params = _as_float32(params)
        loc, raw_scale = params[..., 0], params[..., 1]
        scale = tf.math.softplus(raw_scale) + self.scale_floor
        return self._independent(tfd.Normal(loc=loc, scale=scale), params)

    def get_config(self):
        return {**super().get_config(), "scale_floor": self.scale_floor}


# ----------------------------------------------------------------------------------
# 8-bit likelihoods. Data x are floats k/255, k ∈ {0, ..., 255} (as `vae_zoo.data` gives
# them); both heads are distributions over exactly those 256 float32 values. A value
# within `EIGHT_BIT_ATOL` of k/255 counts as k/255 (float32 rounding of k/255, k·(1/255)
# and k/255 computed in float64 all differ by < 1e-7); any other value has log_prob −inf.

EIGHT_BIT_ATOL = 1e-5


def eight_bit_values():
    """The 256 values {0, 1/255, ..., 1} as float32 `[256]`."""
    return tf.range(256, dtype=tf.float32) / 255.0


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("categorical_256")
class Categorical256Likelihood(LikelihoodHead):
    """256-way categorical p(x|z) per element over the 8-bit values {0, 1/255, ..., 1}.

    Params `[B, *data_shape, 256]` are logits; the result is
    `Independent(FiniteDiscrete(outcomes=k/255, logits))` with batch `[B]`, event
    `data_shape`. `log_prob(x)` takes x ∈ {k/255} (see `EIGHT_BIT_ATOL`), `mean()` is
    the exact Σ_k p_k k/255 and samples are k/255 in float32. A uniform categorical
    gives exactly 8 bits/dim.
    """

    params_per_element = 256

    def call(self, params):
        logits = _as_float32(params)
        return self._independent(
            tfd.FiniteDiscrete(eight_bit_values(), logits=logits, atol=EIGHT_BIT_ATOL, rtol=0.0),
            params,
        )


def _log1mexp(x):
    """log(1 − exp(−x)) for x > 0, stable, with finite gradients at any x > 0.

    (`tfp.math.log1mexp` has a NaN gradient for x below ~1e-8: its unused branch
    log1p(−exp(−x)) is log1p(−1).)
    """
    log2 = math.log(2.0)
    return tf.where(
        x < log2,
        tf.math.log(-tf.math.expm1(-tf.minimum(x, log2))),
        tf.math.log1p(-tf.exp(-tf.maximum(x, log2))),
    )


class DiscretizedLogisticMixture(tfd.AutoCompositeTensorDistribution):
    """A mixture of K logistics discretized to the 256 values {0, 1/255, ..., 1}.

    P(x = k/255) = Σ_c π_c [F_c((k + ½)/255) − F_c((k − ½)/255)], F_c the CDF of
    Logistic(loc_c, scale_c), with the edge bins taking the tails: P(0) uses
    F_c(½/255) and P(1) uses 1 − F_c(1 − ½/255) (Salimans et al. 2017, PixelCNN++).
    Every term is computed in log space without cancellation, for an interior bin
    [a, b] in standardized units with
    log(σ(b) − σ(a)) = log σ(b) + log σ(−a) + log(1 − exp(−(b − a))),
    which stays accurate for tiny and for huge scales (PixelCNN++'s density
    approximation is not needed).

    Parameters `logits`, `loc`, `scale` are `[..., K]` (loc and scale in data units, x
    ∈ [0, 1]); batch shape `[...]`, event shape `[]`. `log_prob(x)` takes x ∈ {k/255}
    (other values: −inf); samples are k/255. `mean()` is exact,
    E[x] = (1/255) Σ_{j=1..255} P(x ≥ j/255), with P(x ≥ j/255) = Σ_c π_c
    σ((loc_c − (j − ½)/255) / scale_c): 255·K sigmoids per element, accumulated one
    threshold at a time (`tf.foldl`) so memory stays that of the parameters.
    """

    def __init__(self, logits, loc, scale, validate_args=False, allow_nan_stats=True,
                 name="DiscretizedLogisticMixture"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._logits = tf.convert_to_tensor(logits, tf.float32, name="logits")
            self._loc = tf.convert_to_tensor(loc, tf.float32, name="loc")
            self._scale = tf.convert_to_tensor(scale, tf.float32, name="scale")
            super().__init__(
                dtype=tf.float32,
                reparameterization_type=tfd.NOT_REPARAMETERIZED,
                validate_args=validate_args,
                allow_nan_stats=allow_nan_stats,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            logits=tfp.util.ParameterProperties(event_ndims=1),
            loc=tfp.util.ParameterProperties(event_ndims=1),
            scale=tfp.util.ParameterProperties(
                event_ndims=1, default_constraining_bijector_fn=tfb.Softplus
            ),
        )

    @property
    def logits(self):
        return self._logits

    @property
    def loc(self):
        return self._loc

    @property
    def scale(self):
        return self._scale

    def _event_shape(self):
        return tf.TensorShape([])

    def _event_shape_tensor(self):
        return tf.constant([], tf.int32)

    def _log_prob(self, x):
        x = tf.convert_to_tensor(x, tf.float32)
        k = tf.clip_by_value(tf.round(x * 255.0), 0.0, 255.0)
        on_grid = tf.abs(x - k / 255.0) < EIGHT_BIT_ATOL
        k = k[..., tf.newaxis]  # [..., 1] against the K components
        # Bin edges, standardized; computed alike for neighbouring bins, so the bin
        # probabilities telescope to 1.
        lower = ((k - 0.5) / 255.0 - self._loc) / self._scale
        upper = ((k + 0.5) / 255.0 - self._loc) / self._scale
        log_cdf_upper = -tf.math.softplus(-upper)  # log F(upper)
        log_sf_lower = -tf.math.softplus(lower)  # log (1 − F(lower))
        log_width = _log1mexp(1.0 / (255.0 * self._scale))  # log(1 − e^−(upper − lower))
        log_bin = tf.where(
            k == 0.0,
            log_cdf_upper,
            tf.where(k == 255.0, log_sf_lower, log_cdf_upper + log_sf_lower + log_width),
        )
        log_weights = tf.math.log_softmax(self._logits)
        log_prob = tf.reduce_logsumexp(log_weights + log_bin, axis=-1)
        return tf.where(on_grid, log_prob, -float("inf"))

    def _mean(self):
        def add_tail(total, threshold):
            return total + tf.sigmoid((self._loc - threshold) / self._scale)

        thresholds = (tf.range(1.0, 256.0) - 0.5) / 255.0
        zeros = tf.zeros_like(self._loc + self._scale)  # [..., K]
        tails = tf.foldl(add_tail, thresholds, initializer=zeros)  # Σ_j P_c(x ≥ j/255)
        return tf.reduce_sum(tf.math.softmax(self._logits) * tails, axis=-1) / 255.0

    def _sample_n(self, n, seed=None):
        continuous = tfd.MixtureSameFamily(
            tfd.Categorical(logits=self._logits), tfd.Logistic(self._loc, self._scale)
        )
        x = continuous.sample(n, seed=seed)
        return tf.clip_by_value(tf.round(x * 255.0), 0.0, 255.0) / 255.0


@keras.saving.register_keras_serializable(package="vae_zoo")
@LIKELIHOODS.register("discretized_logistic_mixture")
class DiscretizedLogisticMixtureLikelihood(LikelihoodHead):
    """Discretized mixture of logistics p(x|z) for 8-bit data (PixelCNN++).

    Each element is an independent mixture of `num_components` (K) logistics
    discretized to {0, 1/255, ..., 1} with the edge bins taking the tails
    (`DiscretizedLogisticMixture`). Channels are independent given z (no
    channel autoregression as in PixelCNN++'s RGB coupling).

    Params `[B, *data_shape, 3K]` are split on the last axis into mixture logits,
    locations μ (data units: x ∈ [0, 1]) and raw scales s, scale = softplus(s) +
    `scale_floor` (softplus ≈ exp for small scales, as PixelCNN++'s log-scales, but
    cannot overflow). Batch `[B]`, event `data_shape`; `log_prob(x)` takes
    x ∈ {k/255} (see `EIGHT_BIT_ATOL`); `mean()` is exact (255·K sigmoids per
    element); samples are k/255.

    Args:
        num_components: int >= 1, K.
        scale_floor: float > 0, lower bound on the logistic scales. The default 5e-4
            is PixelCNN++'s bound exp(−7) on its [−1, 1] scale.

    Example:
    ```python
    head = DiscretizedLogisticMixtureLikelihood(num_components=5)
    head.params_shape((32, 32, 3))            # (32, 32, 3, 15)
    p = head(tf.zeros([8, 32, 32, 3, 15]))    # batch [8], event [32, 32, 3]
    ```

    Reference: Salimans, Karpathy, Chen & Kingma, "PixelCNN++", arXiv:1701.05517.
    """

    def __init__(self, num_components: int = 5, scale_floor: float = 5e-4, **kwargs):
        super().__init__(**kwargs)
        if int(num_components) < 1:
            raise ValueError(
                f"discretized_logistic_mixture num_components must be >= 1, got {num_components}"
            )
        if not scale_floor > 0:
            raise ValueError(
                f"discretized_logistic_mixture scale_floor must be > 0, got {scale_floor}"
            )
        self.num_components = int(num_components)
        self.scale_floor = float(scale_floor)
        self.params_per_element = 3 * self.num_components

    def call(self, params):
        params = _as_float32(params)
        logits, loc, raw_scale = tf.split(params, 3, axis=-1)  # [B, *data_shape, K] each
        scale = tf.math.softplus(raw_scale) + self.scale_floor
        return self._independent(DiscretizedLogisticMixture(logits, loc, scale), params)

    def get_config(self):
        return {
            **super().get_config(),
            "num_components": self.num_components,
            "scale_floor": self.scale_floor,
        }


# ----------------------------------------------------------------------------------
# Posteriors over categorical latents


@keras.saving.register_keras_serializable(package="vae_zoo")
@POSTERIORS.register("categorical")
class CategoricalPosterior(DistributionHead):
    """Independent one-hot categoricals q(z|x) over latents `[..., C]` (C classes each).

    Params `[B, ..., C]` are logits, one row of C per latent variable. The result is
    `Independent(OneHotCategorical(logits, dtype=float32))` with batch `[B]` and event
    `[..., C]` (e.g. `[L, C]` for L latents): samples are float32 one-hot vectors,
    `mean()` is the probabilities and `mode()` the one-hot argmax. Samples carry no
    gradient: train with the score-function estimator, or with `relaxed`.

    KL(q || p) against `uniform_categorical` (or any `Independent(OneHotCategorical)`
    over the same axes) is analytic in TFP: Σ_latents Σ_c q_c (log q_c − log p_c).

    Example:
    ```python
    head = CategoricalPosterior()
    head.params_shape((20, 10))               # (20, 10)
    q = head(tf.zeros([8, 20, 10]))           # batch [8], event [20, 10]
    q.sample(seed=[0, 0])                     # [8, 20, 10], one-hot float32
    ```
    """

    def params_shape(self, event_shape) -> tuple:
        event_shape = tuple(event_shape)
        if len(event_shape) < 2 or event_shape[-1] < 2:
            raise ValueError(
                "categorical latents need a shape (..., num_categories) with at least "
                f"2 categories, got {event_shape}"
            )
        return event_shape

    def call(self, params):
        logits = _as_float32(params)
        return tfd.Independent(
            tfd.OneHotCategorical(logits=logits, dtype=tf.float32),
            reinterpreted_batch_ndims=logits.shape.rank - 2,
        )

    def relaxed(self, params, temperature):
        """The Concrete / Gumbel-softmax relaxation of `call(params)` at `temperature`.

        `Independent(RelaxedOneHotCategorical(temperature, logits))`: batch `[B]`, event
        `[..., C]`, reparameterized samples on the simplex that approach one-hot
        vectors as temperature → 0 (Jang et al. 2017, arXiv:1611.01144; Maddison et al.
        2017, arXiv:1611.00712).
        """
        logits = _as_float32(params)
        return tfd.Independent(
            tfd.RelaxedOneHotCategorical(tf.cast(temperature, tf.float32), logits=logits),
            reinterpreted_batch_ndims=logits.shape.rank - 2,
        )


# ------------------------------------------------------------------ data range checks


def data_range_problem(likelihood, x) -> str | None:
    """Why data `x` (a numpy array) lies outside the support of likelihood head
    `likelihood`, in one line, or None when it fits.

    Bernoulli heads need x in {0, 1}; 8-bit heads (categorical_256,
    discretized_logistic_mixture) need x on the grid k/255, k ∈ {0..255}; Gaussians
    take any finite x. On such data a log-likelihood would be −inf or meaningless.
    """
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    if isinstance(likelihood, BernoulliLikelihood):
        bad = (x != 0.0) & (x != 1.0)
        if bad.any():
            return (f"a Bernoulli likelihood needs binary data (0 or 1), got "
                    f"{int(bad.sum())} values like {float(x[bad][0]):.4g}")
    elif isinstance(likelihood, (Categorical256Likelihood, DiscretizedLogisticMixtureLikelihood)):
        k = np.round(x * 255.0)
        bad = (np.abs(x - k / 255.0) > EIGHT_BIT_ATOL) | (k < 0) | (k > 255)
        if bad.any():
            return (f"an 8-bit likelihood ({type(likelihood).__name__}) needs values k/255 "
                    f"in [0, 1], got {int(bad.sum())} values like {float(x[bad][0]):.6g}")
    return None
