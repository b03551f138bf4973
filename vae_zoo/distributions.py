"""Custom TFP distributions and KL registrations: with `vae_zoo.bijectors`, the one place
vae_zoo extends TFP.

- `LogitBernoulli`: `tfd.Bernoulli` with a one-pass logits-space `log_prob`.
- `PhiloxNormal`: `tfd.Normal` that draws its noise with the Philox generator.
- `DiscretizedLogisticMixture`: K logistics discretized to the 8-bit grid (PixelCNN++).
- `LatentMapAutoregressive`: `tfd.Autoregressive` over one latent map, static shapes.
- KL(MVN || Independent(Normal)) in closed form, registered with `tfd.RegisterKL`.

The normalizing flows (`FlowDistribution` and its bijectors) are in `vae_zoo.bijectors`.

Heads (`vae_zoo.heads`) build these from parameter tensors; nothing here is a Keras
layer.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions
tfb = tfp.bijectors

# 8-bit data are floats k/255, k ∈ {0, ..., 255} (as `vae_zoo.data` gives them). A value
# within `EIGHT_BIT_ATOL` of k/255 counts as k/255 (float32 rounding of k/255, k·(1/255)
# and k/255 computed in float64 all differ by < 1e-7); any other value has log_prob −inf.
EIGHT_BIT_ATOL = 1e-5


def eight_bit_values():
    """The 256 values {0, 1/255, ..., 1} as float32 `[256]`."""
    return tf.range(256, dtype=tf.float32) / 255.0


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


# A product of factors in (1, 2] stays finite in float32 (max ≈ 2**128) up to 127 of them.
_PRODUCT_GROUP_MAX = 126


def _product_group(size):
    """The largest divisor of `size` that is at most `_PRODUCT_GROUP_MAX`."""
    return max(g for g in range(1, min(size, _PRODUCT_GROUP_MAX) + 1) if size % g == 0)


def bernoulli_log_prob_of_draws(logits, x):
    """log p(x_b | l_kb) = Σ x·l − softplus(l) for K decoded draws per example: `[K, B]`.

    Args:
        logits: `[K·B, *event]` float32, sample-major (row k·B + b is draw k of
            example b, as `tf.tile` repeats a batch).
        x: `[B, *event]`, binary (or grey levels in [0, 1]: the negated binary
            cross-entropy, as `LogitBernoulli.log_prob`).

    The same values as `LogitBernoulli(logits).log_prob(tf.tile(x, ...))` summed over
    the event, to float32 rounding, without the K copies of x and with one logarithm
    per `_product_group(D)` pixels (D pixels per example) instead of one per pixel:
    softplus(l) = relu(l) + log(1 + e^−|l|), and Σ log(1 + e^−|l|) = Σ_groups
    log Π (1 + e^−|l|), each factor in (1, 2] so no product of up to 126 of them
    overflows (relative rounding below 126 · 2⁻²⁴ per group). On CPU TensorFlow's
    logarithm and softplus are the costly element-wise kernels of importance-weighted
    evaluation (`benchmarks/eval_throughput.py`). The gradient is x − σ(l) (given,
    not differentiated through the products).
    """
    x = tf.convert_to_tensor(x, tf.float32)
    logits = tf.convert_to_tensor(logits, tf.float32)
    batch = tf.shape(x)[0]
    num_samples = tf.shape(logits)[0] // tf.maximum(batch, 1)
    size = math.prod(x.shape[1:]) if x.shape[1:].is_fully_defined() else None
    flat_x = tf.reshape(x, [batch, -1])  # [B, D]
    flat_logits = tf.reshape(logits, [num_samples, batch, -1])  # [K, B, D]

    @tf.custom_gradient
    def log_prob(l, x):  # [K, B, D], [B, D] -> [K, B]
        linear = tf.reduce_sum(x * l - tf.nn.relu(l), -1)
        factors = 1.0 + tf.exp(-tf.abs(l))
        if size:
            group = _product_group(size)
            factors = tf.reduce_prod(
                tf.reshape(factors, [num_samples, batch, size // group, group]), -1)
        result = linear - tf.reduce_sum(tf.math.log(factors), -1)

        def grad(upstream):
            upstream = upstream[..., tf.newaxis]
            return upstream * (x - tf.sigmoid(l)), tf.reduce_sum(upstream * l, 0)

        return result, grad

    return log_prob(flat_logits, flat_x)


# The same function as one XLA program: the element-wise passes fused into one loop
# over the decoded pixels (`vae_zoo.heads.fused_likelihoods` says where it is used).
fused_bernoulli_log_prob_of_draws = tf.function(
    bernoulli_log_prob_of_draws, jit_compile=True, reduce_retracing=True, autograph=False)


class PhiloxNormal(tfd.Normal):
    """`tfd.Normal` whose samples name the Philox algorithm of `stateless_normal`.

    TFP draws with `tf.random.stateless_normal`'s default algorithm, "auto_select",
    which picks Philox at run time. The numbers are the same (tested, with and without
    XLA), but an XLA-compiled draw of auto_select is a longer program (for one
    `[128, 32]` draw, 326 HLO instructions against 95: the seed's scrambling, xors and
    shifts) and on CPU it was slow: the dense benchmark's XLA training step
    (`benchmarks/profile_step.py`'s loop, 2 cores, best of 15, alternating) took
    7.07 ms with `tfd.Normal` and 6.06 ms with this class. Everything else (log_prob,
    KL registrations, `isinstance(d, tfd.Normal)`) is `tfd.Normal`'s.
    """

    def _sample_n(self, n, seed=None):
        loc = tf.convert_to_tensor(self.loc)
        scale = tf.convert_to_tensor(self.scale)
        shape = tf.concat([[n], self._batch_shape_tensor(loc=loc, scale=scale)], axis=0)
        noise = tf.random.stateless_normal(
            shape, seed=tfp.random.sanitize_seed(seed), dtype=self.dtype, alg="philox")
        return noise * scale + loc


def log1mexp(x):
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
        log_width = log1mexp(1.0 / (255.0 * self._scale))  # log(1 − e^−(upper − lower))
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


class LatentMapAutoregressive(tfd.Autoregressive):
    """`tfd.Autoregressive` over one map: static batch `[]` and event `sample0.shape`.

    (TFP leaves both unknown, since a `distribution_fn` could change them.)
    """

    def _batch_shape(self):
        return tf.TensorShape([])

    def _event_shape(self):
        return self.sample0.shape


@tfd.RegisterKL(tfd.MultivariateNormalLinearOperator, tfd.Independent)
def _kl_mvn_independent_normal(q, p, name=None):
    """KL(MVN || Independent(Normal) over one axis) in closed form, as KL to an MVNDiag.

    TFP has no closed form for this pair. Any other `p` raises NotImplementedError,
    which `objectives.kl_divergence` turns into the Monte-Carlo estimate.
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
