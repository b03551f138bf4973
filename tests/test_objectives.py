"""Tests for `vae_zoo.objectives` against hand-written numpy / scipy formulas."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

from vae_zoo import objectives

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

tfd = tfp.distributions


def _diag_gaussian(loc, scale):
    return tfd.Independent(tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=1)


def _standard_normal(d):
    return tfd.Independent(tfd.Normal(tf.zeros(d), 1.0), reinterpreted_batch_ndims=1)


def _kl_formula(mu, sigma):
    """KL(N(μ, diag σ²) || N(0, I)) = ½ Σ (σ² + μ² − 1 − log σ²)."""
    return 0.5 * np.sum(sigma**2 + mu**2 - 1.0 - np.log(sigma**2), axis=-1)


def _random_posterior(seed, batch=4, d=3):
    rng = np.random.default_rng(seed)
    mu = rng.normal(scale=2.0, size=(batch, d)).astype(np.float32)
    sigma = np.exp(rng.normal(scale=1.0, size=(batch, d))).astype(np.float32)
    return mu, sigma


def test_analytic_kl_matches_hand_formula():
    """Analytic KL(diag Gaussian || N(0, I)) = ½ Σ (σ² + μ² − 1 − log σ²), per example."""
    mu, sigma = _random_posterior(0)
    q, p = _diag_gaussian(mu, sigma), _standard_normal(3)
    assert objectives.has_analytic_kl(q, p)
    kl = objectives.kl_divergence(q, p)
    assert kl.shape == [4]
    np.testing.assert_allclose(kl.numpy(), _kl_formula(mu, sigma), rtol=1e-5, atol=1e-5)


def test_kl_is_zero_iff_q_equals_p():
    """KL(N(0, I) || N(0, I)) = 0."""
    q = _diag_gaussian(tf.zeros([4, 3]), tf.ones([4, 3]))
    np.testing.assert_allclose(objectives.kl_divergence(q, _standard_normal(3)).numpy(), 0.0)


def test_kl_is_non_negative_over_random_posteriors():
    """KL ≥ 0 for 30 random diagonal Gaussians (and agrees with the hand formula)."""
    p = _standard_normal(3)
    for seed in range(30):
        mu, sigma = _random_posterior(seed)
        kl = objectives.kl_divergence(_diag_gaussian(mu, sigma), p).numpy()
        assert (kl >= -1e-6).all(), (seed, kl)
        np.testing.assert_allclose(kl, _kl_formula(mu, sigma), rtol=1e-4, atol=1e-4)


def test_monte_carlo_kl_agrees_with_analytic():
    """Mean of log q(z) − log p(z) over 20000 z ~ q is within 4 standard errors of the KL."""
    mu, sigma = _random_posterior(1)
    sigma = np.clip(sigma, 0.3, 3.0)  # keep the MC variance moderate
    q, p = _diag_gaussian(mu, sigma), _standard_normal(3)
    n = 20000
    z = q.sample(n, seed=[1, 2])  # [n, 4, 3]
    mc = objectives.kl_divergence(q, p, z, analytic=False).numpy()  # [n, 4]
    assert mc.shape == (n, 4)
    standard_error = mc.std(axis=0) / math.sqrt(n)
    np.testing.assert_array_less(np.abs(mc.mean(axis=0) - _kl_formula(mu, sigma)), 4 * standard_error)


def test_monte_carlo_kl_single_sample_is_log_ratio():
    """analytic=False returns log q(z) − log p(z) at the given z (scipy reference)."""
    mu, sigma = _random_posterior(2)
    z = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    kl = objectives.kl_divergence(_diag_gaussian(mu, sigma), _standard_normal(3), z, analytic=False)
    expected = stats.norm.logpdf(z, mu, sigma).sum(-1) - stats.norm.logpdf(z).sum(-1)
    np.testing.assert_allclose(kl.numpy(), expected, rtol=1e-5, atol=1e-4)


def test_monte_carlo_fallback_when_no_kl_registered():
    """Logistic q vs Normal p has no closed form: the fallback is log q(z) − log p(z)."""
    rng = np.random.default_rng(4)
    loc = rng.normal(size=(4, 3)).astype(np.float32)
    scale = np.exp(rng.normal(scale=0.3, size=(4, 3))).astype(np.float32)
    q = tfd.Independent(tfd.Logistic(loc=loc, scale=scale), reinterpreted_batch_ndims=1)
    p = _standard_normal(3)
    assert not objectives.has_analytic_kl(q, p)
    z = rng.normal(size=(4, 3)).astype(np.float32)
    kl = objectives.kl_divergence(q, p, z)  # analytic=True, but nothing is registered
    expected = stats.logistic.logpdf(z, loc, scale).sum(-1) - stats.norm.logpdf(z).sum(-1)
    np.testing.assert_allclose(kl.numpy(), expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="sample z"):
        objectives.kl_divergence(q, p)


def test_elbo_terms_reconstruction_minus_kl():
    """elbo = reconstruction − kl, reconstruction = Bernoulli log p(x|z), kl = hand formula."""
    rng = np.random.default_rng(5)
    mu, sigma = _random_posterior(5)
    q, prior = _diag_gaussian(mu, sigma), _standard_normal(3)
    z = q.sample(seed=[5, 5])
    logits = rng.normal(size=(4, 5)).astype(np.float32)
    x = (rng.random((4, 5)) < 0.5).astype(np.float32)
    likelihood = tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), 1)

    terms = objectives.elbo_terms(likelihood.log_prob(x), [(q, prior, z)])
    assert set(terms) == {"elbo", "reconstruction", "kl"}
    expected_rec = np.sum(x * logits - np.logaddexp(0.0, logits), axis=-1)
    np.testing.assert_allclose(terms["reconstruction"].numpy(), expected_rec, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"].numpy(), _kl_formula(mu, sigma), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        terms["elbo"].numpy(), (terms["reconstruction"] - terms["kl"]).numpy(), rtol=1e-6
    )

    mc = objectives.elbo_terms(likelihood.log_prob(x), [(q, prior, z)], analytic_kl=False)
    z_np = z.numpy()
    expected_kl = stats.norm.logpdf(z_np, mu, sigma).sum(-1) - stats.norm.logpdf(z_np).sum(-1)
    np.testing.assert_allclose(mc["kl"].numpy(), expected_kl, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mc["elbo"].numpy(), expected_rec - expected_kl, rtol=1e-4, atol=1e-4)


def test_importance_weighted_bound_is_log_mean_exp():
    """IW bound = logsumexp(log w, axis) − log K, stable for log-weights around −1000."""
    rng = np.random.default_rng(6)
    log_w = (rng.normal(scale=5.0, size=(7, 4)) - 1000.0).astype(np.float64)
    bound = objectives.importance_weighted_bound(tf.constant(log_w))
    np.testing.assert_allclose(bound.numpy(), special.logsumexp(log_w, axis=0) - math.log(7))
    assert np.isfinite(bound.numpy()).all()
    bound1 = objectives.importance_weighted_bound(tf.constant(log_w.T), axis=1)
    np.testing.assert_allclose(bound1.numpy(), bound.numpy())


def test_importance_weighted_bound_single_sample_and_equal_weights():
    """K = 1 returns the single log-weight; K equal weights return that weight."""
    log_w = tf.constant([[-3.0, 2.5, -700.0]])
    np.testing.assert_allclose(objectives.importance_weighted_bound(log_w).numpy(), [-3.0, 2.5, -700.0])
    same = tf.fill([50, 3], -4.25)
    np.testing.assert_allclose(objectives.importance_weighted_bound(same).numpy(), -4.25, rtol=1e-6)


def test_importance_weighted_bound_between_mean_and_max():
    """Jensen: mean(log w) ≤ log mean exp(log w) ≤ max(log w)."""
    log_w = np.random.default_rng(7).normal(scale=3.0, size=(20, 5)).astype(np.float32)
    bound = objectives.importance_weighted_bound(tf.constant(log_w)).numpy()
    assert (bound >= log_w.mean(0) - 1e-5).all()
    assert (bound <= log_w.max(0) + 1e-5).all()


def test_bits_per_dim():
    """bits/dim = −nats / (D · ln 2): −D ln 2 nats over D dims is exactly 1 bit/dim."""
    np.testing.assert_allclose(objectives.bits_per_dim(-784 * math.log(2.0), 784), 1.0)
    nats = np.array([-100.0, -543.2, 0.0])
    np.testing.assert_allclose(objectives.bits_per_dim(nats, 3072), -nats / 3072 / np.log(2))
