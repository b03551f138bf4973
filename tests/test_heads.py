"""Tests for `vae_zoo.heads`: shapes, densities against scipy, constraints, configs."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from vae_zoo import heads

B = 4
EVENT_SHAPES = [(5,), (4, 4, 1)]


def _softplus(x):
    return np.logaddexp(0.0, x)


def _inv_softplus(y):
    return np.log(np.expm1(y))


def _sum_event(values):
    """Sum every axis but the batch axis (numpy reference for `Independent`)."""
    return values.reshape(values.shape[0], -1).sum(axis=1)


# --------------------------------------------------------------------------- #
# Posterior: DiagonalGaussianPosterior
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "event_shape, params_shape", [((3,), (6,)), ((2, 2, 1), (2, 2, 2)), ((4, 4, 3), (4, 4, 6))]
)
def test_posterior_params_shape(event_shape, params_shape):
    """params_shape doubles the last (channel) axis: μ and raw scale per latent element."""
    assert heads.DiagonalGaussianPosterior().params_shape(event_shape) == params_shape


@pytest.mark.parametrize("event_shape", [(3,), (2, 2, 1)])
def test_posterior_shapes_log_prob_and_mean(event_shape):
    """q has batch [B], event = latent shape; log_prob = Σ norm.logpdf; mean = μ."""
    head = heads.DiagonalGaussianPosterior(scale_floor=1e-4)
    rng = np.random.default_rng(0)
    params = rng.normal(size=(B,) + head.params_shape(event_shape)).astype(np.float32)
    q = head(tf.constant(params))
    assert q.batch_shape == [B]
    assert q.event_shape == list(event_shape)

    d = event_shape[-1]
    loc, raw = params[..., :d], params[..., d:]
    scale = _softplus(raw) + 1e-4
    z = rng.normal(size=(B,) + event_shape).astype(np.float32)
    expected = _sum_event(stats.norm.logpdf(z, loc, scale))
    np.testing.assert_allclose(q.log_prob(z).numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(q.mean().numpy(), loc, rtol=1e-6)
    np.testing.assert_allclose(q.stddev().numpy(), scale, rtol=1e-5)


def test_posterior_scale_floor_holds():
    """σ = softplus(s) + floor, so σ == floor when s = −100 and log q stays finite."""
    head = heads.DiagonalGaussianPosterior(scale_floor=1e-3)
    params = tf.constant([[0.0, 0.0, -100.0, -100.0]])
    q = head(params)
    np.testing.assert_allclose(q.stddev().numpy(), [[1e-3, 1e-3]], rtol=1e-5)
    assert np.isfinite(q.log_prob(tf.zeros([1, 2])).numpy()).all()


def test_posterior_float16_params_compute_in_float32():
    """Heads cast their parameters to float32."""
    q = heads.DiagonalGaussianPosterior()(tf.zeros([B, 6], tf.float16))
    assert q.dtype == tf.float32


# --------------------------------------------------------------------------- #
# Likelihoods
# --------------------------------------------------------------------------- #


def _likelihood_heads():
    return [
        heads.BernoulliLikelihood(),
        heads.GaussianLikelihood(scale=0.3),
        heads.GaussianLearnedScaleLikelihood(initial_scale=0.7, scale_floor=1e-3),
    ]


@pytest.mark.parametrize("event_shape", EVENT_SHAPES)
@pytest.mark.parametrize("index", range(3))
def test_likelihood_params_and_distribution_shapes(index, event_shape):
    """params_shape = data shape + (1,); p(x|z) has batch [B] and event = data shape."""
    head = _likelihood_heads()[index]
    assert head.params_shape(event_shape) == tuple(event_shape) + (1,)
    dist = head(tf.zeros((B,) + head.params_shape(event_shape)))
    assert dist.batch_shape == [B]
    assert dist.event_shape == list(event_shape)
    assert dist.log_prob(tf.zeros((B,) + tuple(event_shape))).shape == [B]


@pytest.mark.parametrize("event_shape", EVENT_SHAPES)
def test_bernoulli_log_prob_and_mean(event_shape):
    """Bernoulli log_prob = Σ x·l − softplus(l) and mean = sigmoid(l)."""
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(B,) + event_shape).astype(np.float32)
    x = (rng.random((B,) + event_shape) < 0.5).astype(np.float32)
    dist = heads.BernoulliLikelihood()(tf.constant(logits[..., None]))
    expected = _sum_event(x * logits - _softplus(logits))
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dist.mean().numpy(), 1 / (1 + np.exp(-logits)), rtol=1e-5)
    # scipy agrees on binary data
    np.testing.assert_allclose(
        expected, _sum_event(stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits)))), rtol=1e-4
    )


def test_bernoulli_finite_at_extreme_logits():
    """Logits ±100 give finite log_prob (exactly −100 for the wrong label) and mean in {0,1}."""
    logits = np.array([[100.0, -100.0, 100.0, -100.0]], np.float32)
    x = np.array([[1.0, 0.0, 0.0, 1.0]], np.float32)
    dist = heads.BernoulliLikelihood()(tf.constant(logits[..., None]))
    log_prob = dist.log_prob(x).numpy()
    assert np.isfinite(log_prob).all()
    np.testing.assert_allclose(log_prob, [-200.0], rtol=1e-5)
    np.testing.assert_allclose(dist.mean().numpy(), [[1.0, 0.0, 1.0, 0.0]], atol=1e-6)
    samples = dist.sample(seed=[0, 1]).numpy()
    assert set(np.unique(samples)) <= {0.0, 1.0}
    assert samples.dtype == np.float32


@pytest.mark.parametrize("event_shape", EVENT_SHAPES)
def test_gaussian_log_prob_and_mean(event_shape):
    """Fixed-scale Gaussian log_prob = Σ norm.logpdf(x, μ, scale); mean = μ."""
    rng = np.random.default_rng(2)
    loc = rng.normal(size=(B,) + event_shape).astype(np.float32)
    x = rng.normal(size=(B,) + event_shape).astype(np.float32)
    dist = heads.GaussianLikelihood(scale=0.3)(tf.constant(loc[..., None]))
    expected = _sum_event(stats.norm.logpdf(x, loc, 0.3))
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(dist.mean().numpy(), loc, rtol=1e-6)
    np.testing.assert_allclose(dist.stddev().numpy(), np.full_like(loc, 0.3), rtol=1e-6)


@pytest.mark.parametrize("event_shape", EVENT_SHAPES)
def test_learned_scale_initial_value_and_log_prob(event_shape):
    """σ starts at initial_scale; log_prob = Σ norm.logpdf(x, μ, initial_scale)."""
    rng = np.random.default_rng(3)
    loc = rng.normal(size=(B,) + event_shape).astype(np.float32)
    x = rng.normal(size=(B,) + event_shape).astype(np.float32)
    head = heads.GaussianLearnedScaleLikelihood(initial_scale=0.7, scale_floor=1e-3)
    dist = head(tf.constant(loc[..., None]))
    np.testing.assert_allclose(float(head.scale), 0.7, rtol=1e-5)
    expected = _sum_event(stats.norm.logpdf(x, loc, 0.7))
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(dist.mean().numpy(), loc, rtol=1e-6)


def test_learned_scale_is_trainable_and_receives_gradient():
    """The raw scale is the head's single trainable weight and log_prob depends on it."""
    head = heads.GaussianLearnedScaleLikelihood(initial_scale=1.0)
    params = tf.zeros([B, 5, 1])
    head(params)  # builds the weight
    assert len(head.trainable_weights) == 1
    assert head.trainable_weights[0] is head.raw_scale and head.raw_scale.trainable
    with tf.GradientTape() as tape:
        log_prob = tf.reduce_sum(head(params).log_prob(2 * tf.ones([B, 5])))
    (grad,) = tape.gradient(log_prob, [head.raw_scale])
    # dσ/ds = sigmoid(s); d log p/dσ = Σ (x² − σ²)/σ³ over 20 elements with x = 2
    sigma = 1.0
    s = _inv_softplus(sigma - 1e-3)
    expected = 20 * (4 - sigma**2) / sigma**3 * (1 / (1 + np.exp(-s)))
    np.testing.assert_allclose(float(grad), expected, rtol=1e-4)


def test_learned_scale_floor_holds():
    """σ = softplus(s) + floor is ≥ floor even when the raw scale is driven to −100."""
    head = heads.GaussianLearnedScaleLikelihood(initial_scale=1.0, scale_floor=0.01)
    dist = head(tf.zeros([1, 5, 1]))
    head.raw_scale.assign(-100.0)
    dist = head(tf.zeros([1, 5, 1]))
    np.testing.assert_allclose(float(head.scale), 0.01, rtol=1e-6)
    assert np.isfinite(dist.log_prob(tf.zeros([1, 5])).numpy()).all()


def test_learned_scale_mixed_precision_computes_in_float32():
    """Module contract: heads compute in float32 whatever the layer's compute dtype."""
    head = heads.GaussianLearnedScaleLikelihood(initial_scale=0.5, dtype="mixed_float16")
    dist = head(tf.zeros([2, 5, 1]))
    assert dist.dtype == tf.float32
    np.testing.assert_allclose(dist.stddev().numpy(), 0.5, rtol=1e-5)


# --------------------------------------------------------------------------- #
# Argument validation, configs and registries
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "build",
    [
        lambda: heads.GaussianLikelihood(scale=0.0),
        lambda: heads.GaussianLikelihood(scale=-1.0),
        lambda: heads.GaussianLearnedScaleLikelihood(initial_scale=0.001, scale_floor=0.001),
        lambda: heads.GaussianLearnedScaleLikelihood(initial_scale=0.1, scale_floor=0.5),
        lambda: heads.GaussianLearnedScaleLikelihood(initial_scale=1.0, scale_floor=-0.1),
    ],
)
def test_invalid_arguments_raise(build):
    """Non-positive scales and initial_scale <= scale_floor (or floor < 0) raise ValueError."""
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    "head",
    [
        heads.DiagonalGaussianPosterior(scale_floor=0.05),
        heads.BernoulliLikelihood(),
        heads.GaussianLikelihood(scale=0.2),
        heads.GaussianLearnedScaleLikelihood(initial_scale=0.4, scale_floor=0.01),
    ],
    ids=lambda h: type(h).__name__,
)
def test_get_config_round_trip(head):
    """cls.from_config(head.get_config()) gives a head with identical outputs."""
    rng = np.random.default_rng(4)
    params = tf.constant(rng.normal(size=(B, 6, 1)).astype(np.float32))
    if isinstance(head, heads.DiagonalGaussianPosterior):
        params = params[..., 0]
        value = rng.normal(size=(B, 3)).astype(np.float32)
    else:
        value = (rng.random((B, 6)) < 0.5).astype(np.float32)
    clone = type(head).from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    a, b = head(params), clone(params)
    np.testing.assert_allclose(a.log_prob(value).numpy(), b.log_prob(value).numpy(), rtol=1e-6)
    np.testing.assert_allclose(a.mean().numpy(), b.mean().numpy(), rtol=1e-6)


def test_registries_build_by_name_and_dict():
    """POSTERIORS / LIKELIHOODS build by name and by {"name": ..., **options}."""
    assert {"bernoulli", "gaussian", "gaussian_learned_scale"} <= set(heads.LIKELIHOODS.names())
    assert "diagonal_gaussian" in heads.POSTERIORS.names()

    assert isinstance(heads.POSTERIORS.build("diagonal_gaussian"), heads.DiagonalGaussianPosterior)
    post = heads.POSTERIORS.build({"name": "diagonal_gaussian", "scale_floor": 0.1})
    assert post.scale_floor == 0.1

    assert isinstance(heads.LIKELIHOODS.build("bernoulli"), heads.BernoulliLikelihood)
    gauss = heads.LIKELIHOODS.build({"name": "gaussian", "scale": 0.1})
    assert isinstance(gauss, heads.GaussianLikelihood) and gauss.scale == 0.1
    learned = heads.LIKELIHOODS.build({"name": "gaussian_learned_scale", "initial_scale": 0.3})
    assert isinstance(learned, heads.GaussianLearnedScaleLikelihood)
    assert learned.initial_scale == 0.3
    assert heads.LIKELIHOODS.get("gaussian").registry_name == "gaussian"
