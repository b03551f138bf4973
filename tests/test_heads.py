"""Tests for `vae_zoo.heads`: shapes, densities against scipy, constraints, configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

from conftest import assert_same_outputs, tiny_dense, xla_compiled
from vae_zoo import heads, objectives, priors

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

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


@pytest.mark.parametrize("jit_compile", [False, True])
def test_posterior_draws_are_normal_and_reproducible(jit_compile):
    """z = μ + σ·ε with ε ~ N(0, 1) (Kolmogorov–Smirnov against scipy), in a plain
    graph and compiled by XLA (the head's `PhiloxNormal` names the algorithm TFP leaves
    to "auto_select", which XLA compiles to a slower program); one seed, one draw, the
    same numbers as `tfd.Normal`'s."""
    head = heads.DiagonalGaussianPosterior()
    q = head(tf.constant([[0.5, -1.0, 0.3, 2.0]], tf.float32))  # μ = (0.5, −1), raw σ
    draw = tf.function(lambda seed: q.sample(4000, seed=seed), jit_compile=jit_compile)
    z = draw(tf.constant([3, 4])).numpy()[:, 0, :]
    scale = _softplus(np.array([0.3, 2.0])) + 1e-4
    for i, (loc, sigma) in enumerate(zip([0.5, -1.0], scale)):
        assert stats.kstest(z[:, i], "norm", args=(loc, sigma)).pvalue > 1e-3
    np.testing.assert_array_equal(draw(tf.constant([3, 4])).numpy()[:, 0, :], z)
    assert not np.array_equal(draw(tf.constant([3, 5])).numpy()[:, 0, :], z)
    same = tfp.distributions.Normal(q.distribution.loc, q.distribution.scale)
    tfp_draw = tf.function(lambda seed: same.sample(4000, seed=seed), jit_compile=jit_compile)
    np.testing.assert_array_equal(tfp_draw(tf.constant([3, 4])).numpy()[:, 0, :], z)


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


# --------------------------------------------------------------------------- #
# GaussianPerPixelLikelihood
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("event_shape", EVENT_SHAPES)
def test_gaussian_per_pixel_log_prob_mean_and_scale(event_shape):
    """params (μ, s) per element: log_prob = Σ norm.logpdf(x, μ, softplus(s) + floor)."""
    rng = np.random.default_rng(5)
    params = rng.normal(size=(B,) + event_shape + (2,)).astype(np.float32)
    params[..., 1] *= 4.0
    x = rng.random((B,) + event_shape).astype(np.float32)
    head = heads.GaussianPerPixelLikelihood(scale_floor=1e-3)
    assert head.params_shape(event_shape) == event_shape + (2,)
    dist = head(tf.constant(params))
    assert dist.batch_shape == [B] and dist.event_shape == list(event_shape)
    loc, scale = params[..., 0], _softplus(params[..., 1]) + 1e-3
    expected = _sum_event(stats.norm.logpdf(x, loc, scale))
    np.testing.assert_allclose(dist.log_prob(x).numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dist.mean().numpy(), loc, rtol=1e-6)
    np.testing.assert_allclose(dist.stddev().numpy(), scale, rtol=1e-5)


def test_gaussian_per_pixel_scale_floor_holds():
    """σ == floor at s = −100: log_prob finite; a negative floor is rejected."""
    dist = heads.GaussianPerPixelLikelihood(scale_floor=0.01)(tf.constant([[[0.0, -100.0]]]))
    np.testing.assert_allclose(dist.stddev().numpy(), [[0.01]], rtol=1e-6)
    np.testing.assert_allclose(dist.log_prob([[0.0]]).numpy(), stats.norm.logpdf([0.0], 0, 0.01))
    with pytest.raises(ValueError):
        heads.GaussianPerPixelLikelihood(scale_floor=-1.0)


# --------------------------------------------------------------------------- #
# FullCovarianceGaussianPosterior
# --------------------------------------------------------------------------- #


def _full_cov_params(d, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, d + d * (d + 1) // 2)).astype(np.float32)


@pytest.mark.parametrize("d, size", [(1, 2), (2, 5), (3, 9), (8, 44)])
def test_full_covariance_params_shape_and_shapes(d, size):
    """params_shape((d,)) = (d + d(d+1)/2,); q has batch [B], event [d]."""
    head = heads.FullCovarianceGaussianPosterior()
    assert head.params_shape((d,)) == (size,)
    q = head(tf.zeros([B, size]))
    assert q.batch_shape == [B] and q.event_shape == [d]
    assert q.sample(seed=[0, 0]).shape == (B, d)
    assert q.log_prob(tf.zeros([B, d])).shape == [B]


def test_full_covariance_scale_tril_from_params():
    """L fills the lower triangle (tfp.math.fill_triangular order), diagonal softplus + floor.

    fill_triangular([1, ..., 6]) = [[4, 0, 0], [6, 5, 0], [3, 2, 1]] (TFP's documented
    example); μ is the first d entries.
    """
    floor = 1e-3
    params = np.array([[0.5, -1.0, 2.0, 1, 2, 3, 4, 5, 6]], np.float32)
    q = heads.FullCovarianceGaussianPosterior(scale_floor=floor)(tf.constant(params))
    sp = lambda v: _softplus(v) + floor  # noqa: E731
    expected = np.array([[sp(4), 0, 0], [6, sp(5), 0], [3, 2, sp(1)]])
    np.testing.assert_allclose(q.scale_tril.numpy()[0], expected, rtol=1e-6)
    np.testing.assert_allclose(q.mean().numpy()[0], [0.5, -1.0, 2.0])
    z = np.array([[0.1, 0.2, -0.3]], np.float32)
    reference = stats.multivariate_normal([0.5, -1.0, 2.0], expected @ expected.T).logpdf(z[0])
    np.testing.assert_allclose(q.log_prob(z).numpy(), [reference], rtol=1e-5)


def test_full_covariance_log_prob_matches_scipy():
    """log_prob = scipy multivariate_normal(μ, L Lᵀ).logpdf for random params."""
    d = 4
    params = _full_cov_params(d, seed=6)
    q = heads.FullCovarianceGaussianPosterior()(tf.constant(params))
    tril = q.scale_tril.numpy()
    assert np.allclose(tril, np.tril(tril)) and (np.diagonal(tril, axis1=1, axis2=2) > 0).all()
    z = np.random.default_rng(7).normal(size=(B, d)).astype(np.float32)
    expected = [
        stats.multivariate_normal(params[i, :d], tril[i] @ tril[i].T).logpdf(z[i]) for i in range(B)
    ]
    np.testing.assert_allclose(q.log_prob(z).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(q.stddev().numpy(), np.sqrt((tril**2).sum(-1)), rtol=1e-5)


def _gaussian_kl(mu, cov, prior_mu, prior_var):
    """KL(N(μ, Σ) || N(m, diag v)) = ½(tr(S⁻¹Σ) + (m−μ)ᵀS⁻¹(m−μ) − d + log det S − log det Σ)."""
    d = len(mu)
    diff = prior_mu - mu
    return 0.5 * (
        np.sum(np.diag(cov) / prior_var)
        + np.sum(diff**2 / prior_var)
        - d
        + np.sum(np.log(prior_var))
        - np.linalg.slogdet(cov)[1]
    )


def test_full_covariance_kl_to_standard_normal_is_analytic_and_exact():
    """KL(q || N(0, I)) = ½(tr Σ + μᵀμ − d − log det Σ), closed form (TFP registration here)."""
    d = 3
    params = _full_cov_params(d, seed=8)
    q = heads.FullCovarianceGaussianPosterior()(tf.constant(params))
    p = priors.StandardNormalPrior((d,)).distribution()
    assert objectives.has_analytic_kl(q, p)
    tril = q.scale_tril.numpy().astype(np.float64)
    cov = tril @ np.swapaxes(tril, 1, 2)  # Σ = L Lᵀ
    mu = params[:, :d].astype(np.float64)
    expected = [
        0.5 * (np.trace(cov[i]) + mu[i] @ mu[i] - d - np.linalg.slogdet(cov[i])[1])
        for i in range(B)
    ]
    np.testing.assert_allclose(objectives.kl_divergence(q, p).numpy(), expected, rtol=1e-5)


def test_full_covariance_kl_to_diagonal_normal_matches_formula_and_monte_carlo():
    """Against N(m, diag v): the closed form matches the hand formula and a 20k-sample MC mean."""
    d = 3
    params = _full_cov_params(d, seed=9)
    q = heads.FullCovarianceGaussianPosterior()(tf.constant(params))
    prior_mu, prior_scale = np.array([0.5, -1.0, 0.0]), np.array([2.0, 0.5, 1.0])
    p = tfp.distributions.Independent(
        tfp.distributions.Normal(prior_mu.astype(np.float32), prior_scale.astype(np.float32)), 1
    )
    tril = q.scale_tril.numpy().astype(np.float64)
    cov = tril @ np.swapaxes(tril, 1, 2)  # Σ = L Lᵀ
    expected = [
        _gaussian_kl(params[i, :d].astype(np.float64), cov[i], prior_mu, prior_scale**2)
        for i in range(B)
    ]
    analytic = objectives.kl_divergence(q, p).numpy()
    np.testing.assert_allclose(analytic, expected, rtol=1e-5)
    z = q.sample(20000, seed=[1, 2])
    monte_carlo = objectives.kl_divergence(q, p, z, analytic=False).numpy().mean(0)
    np.testing.assert_allclose(monte_carlo, expected, atol=0.05 * max(1.0, max(expected)))


def test_full_covariance_kl_to_other_priors_falls_back_to_monte_carlo():
    """No closed form against e.g. Independent(Laplace): the one-sample estimate is used."""
    q = heads.FullCovarianceGaussianPosterior()(tf.constant(_full_cov_params(2, seed=10)))
    p = tfp.distributions.Independent(tfp.distributions.Laplace(tf.zeros(2), 1.0), 1)
    assert not objectives.has_analytic_kl(q, p)
    z = q.sample(seed=[0, 1])
    np.testing.assert_allclose(
        objectives.kl_divergence(q, p, z).numpy(), (q.log_prob(z) - p.log_prob(z)).numpy()
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.params_shape((2, 2, 1)),
        lambda h: h(tf.zeros([B, 2, 2, 5])),  # spatial params
        lambda h: h(tf.zeros([B, 7])),  # 7 is not d + d(d+1)/2
    ],
)
def test_full_covariance_rejects_non_flat_latents(call):
    with pytest.raises(ValueError):
        call(heads.FullCovarianceGaussianPosterior())


# --------------------------------------------------------------------------- #
# New heads: configs, registry, end to end
# --------------------------------------------------------------------------- #


def test_new_heads_registered_and_round_trip_config():
    """Registry names; get_config echoes every argument; from_config gives equal outputs."""
    post = heads.POSTERIORS.build({"name": "full_covariance_gaussian", "scale_floor": 0.01})
    lik = heads.LIKELIHOODS.build({"name": "gaussian_per_pixel", "scale_floor": 0.02})
    assert isinstance(post, heads.FullCovarianceGaussianPosterior) and post.scale_floor == 0.01
    assert isinstance(lik, heads.GaussianPerPixelLikelihood) and lik.scale_floor == 0.02
    for head, params, value in [
        (post, _full_cov_params(3, 11), np.zeros((B, 3), np.float32)),
        (lik, np.ones((B, 5, 2), np.float32), np.zeros((B, 5), np.float32)),
    ]:
        clone = type(head).from_config(head.get_config())
        assert clone.get_config() == head.get_config()
        np.testing.assert_array_equal(head(params).log_prob(value), clone(params).log_prob(value))


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs",
    [{"likelihood": "gaussian_per_pixel"}, {"posterior": "full_covariance_gaussian"}],
    ids=["gaussian_per_pixel", "full_covariance_gaussian"],
)
def test_dense_vae_with_new_head_trains_and_saves(tmp_path, kwargs):
    """DenseVAE: finite ELBO, 2 epochs of fit on 8-bit data, identical after save/load."""
    model = tiny_dense(input_shape=(4, 4, 1), **kwargs)
    rng = np.random.default_rng(12)
    x = (rng.integers(0, 256, (8, 4, 4, 1)) / 255).astype(np.float32)
    assert np.isfinite(model.elbo(x, seed=0)["elbo"].numpy()).all()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_config() == model.get_config()
    assert_same_outputs(model, loaded, x)


def test_support_problems_name_the_count_and_a_value():
    """Each likelihood says why data lie outside its support, in one line; Gaussians
    take any finite value."""
    x = np.array([0.0, 3 / 255, 1.0, 0.5 / 255], np.float32)
    assert heads.BernoulliLikelihood().support_problem(x) == (
        "a Bernoulli likelihood needs binary data (0 or 1), got 2 values like 0.01176")
    assert heads.Categorical256Likelihood().support_problem(x) == (
        "an 8-bit likelihood (Categorical256Likelihood) needs values k/255 in [0, 1], got 1 "
        "values like 0.00196078")
    assert heads.GaussianLikelihood().support_problem(x) is None
    assert heads.BernoulliLikelihood().support_problem(np.array([0.0, 1.0])) is None


# --------------------------------------------------------------------------- #
# log p(x|z) of K draws per example (importance-weighted bounds)
# --------------------------------------------------------------------------- #


def _draws(rng, head, num_samples, data_shape):
    """Params of K·B decoded draws (sample-major) and B examples in the head's support."""
    params = rng.normal(0, 2, (num_samples * B, *head.params_shape(data_shape))).astype("float32")
    x = (rng.integers(0, 256, (B, *data_shape)) / 255.0).astype("float32")
    if head.support_problem(x) is not None:
        x = (x > 0.5).astype("float32")
    return params, x


@pytest.mark.parametrize("name", heads.LIKELIHOODS.names())
def test_every_likelihood_scores_draws_as_copies_of_the_batch(name):
    """`log_prob_of_draws(p, x, K)` is log p(x_b | z_kb), `[K, B]`: the distribution's
    log_prob of K copies of x, in and outside `fused_likelihoods()`."""
    head = heads.LIKELIHOODS.build(name)
    params, x = _draws(np.random.default_rng(0), head, 3, (4, 4, 1))
    p = head(params)
    expected = tf.reshape(p.log_prob(np.tile(x, (3, 1, 1, 1))), [3, B])
    np.testing.assert_allclose(head.log_prob_of_draws(p, x, 3), expected, rtol=1e-5, atol=1e-4)
    with heads.fused_likelihoods():
        fused = tf.function(lambda: head.log_prob_of_draws(head(params), x, 3))()
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("data_shape", [(28, 28, 1), (13,), (254,), (3, 2, 1)])
@pytest.mark.parametrize("grey", [False, True])
def test_bernoulli_draws_score_like_float64_softplus(data_shape, grey):
    """Σ x·l − softplus(l) per draw, against numpy in float64: groups of 112 pixels
    (784), a prime size (13: one group), 254 = 2 · 127 (groups of 2), grey levels (the
    negated binary cross-entropy), logits up to ±80 and ±1e30, a draw of zero logits."""
    rng = np.random.default_rng(1)
    k = 5
    logits = rng.normal(0, 8, (k * B, *data_shape)).astype("float32")
    logits[1] = 0.0  # a draw whose every factor 1 + e^−|l| is 2: no product overflows
    logits.flat[:4] = [80.0, -80.0, 1e30, -1e30]
    x = rng.random((B, *data_shape)).astype("float32")
    x = x if grey else (x < 0.3).astype("float32")
    x.flat[:4] = [0.0, 1.0, 1.0, 0.0]
    l64, x64 = logits.astype(np.float64), np.tile(x, (k,) + (1,) * len(data_shape)).astype(np.float64)
    expected = (x64 * l64 - _softplus(l64)).reshape(k, B, -1).sum(-1)
    for fn in (heads.bernoulli_log_prob_of_draws, heads.fused_bernoulli_log_prob_of_draws):
        got = fn(logits, x).numpy()
        assert got.shape == (k, B) and np.isfinite(got).all()
        # float32: the sums of up to 784 terms of size ~10 round at ~1e-4
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=2e-3)


def test_bernoulli_draws_gradient_and_unknown_shapes():
    """The given gradient is x − σ(l) (TensorFlow's own gradient of the tiled log_prob),
    and the function runs on shapes known only at run time (a fully convolutional
    model's images)."""
    rng = np.random.default_rng(2)
    k = 3
    logits = tf.constant(rng.normal(0, 4, (k * B, 6, 5, 1)).astype("float32"))
    x = tf.constant((rng.random((B, 6, 5, 1)) < 0.5).astype("float32"))
    weights = tf.constant(rng.normal(size=(k, B)).astype("float32"))

    def gradient(fn):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = tf.reduce_sum(fn() * weights)
        return tape.gradient(value, logits)

    reference = gradient(lambda: tf.reshape(tf.reduce_sum(
        heads.LogitBernoulli(logits=logits).log_prob(tf.tile(x, [k, 1, 1, 1])), [1, 2, 3]),
        [k, B]))
    ours = gradient(lambda: heads.bernoulli_log_prob_of_draws(logits, x))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)

    unknown = tf.TensorSpec([None, None, None, 1], tf.float32)
    fn = tf.function(heads.bernoulli_log_prob_of_draws, input_signature=[unknown, unknown])
    np.testing.assert_allclose(fn(logits, x), heads.bernoulli_log_prob_of_draws(logits, x),
                               rtol=1e-6, atol=1e-4)


def test_fused_likelihoods_compile_only_what_is_traced_inside():
    """Within `fused_likelihoods()` the Bernoulli head's draws are scored by one
    XLA-compiled function; outside (training steps, serving signatures: TF Serving runs
    XLA only when asked to) by plain TensorFlow ops."""
    head = heads.BernoulliLikelihood()
    params, x = _draws(np.random.default_rng(3), head, 2, (5,))

    def traced():
        return tf.function(lambda: head.log_prob_of_draws(head(params), x, 2)) \
            .get_concrete_function().graph.as_graph_def()

    assert not xla_compiled(traced())
    with heads.fused_likelihoods():
        assert xla_compiled(traced())
    assert not xla_compiled(traced())
