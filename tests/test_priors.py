"""Tests for `vae_zoo.priors`: the standard normal prior against scipy."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from vae_zoo import priors


@pytest.mark.parametrize("latent_shape", [(3,), (2, 2, 1)])
def test_standard_normal_shapes(latent_shape):
    """p(z) has batch shape [] and event shape latent_shape; samples are [n, *latent_shape]."""
    prior = priors.StandardNormalPrior(latent_shape)
    p = prior.distribution()
    assert p.batch_shape == []
    assert p.event_shape == list(latent_shape)
    assert p.sample(4, seed=[0, 0]).shape == (4,) + latent_shape
    assert p.log_prob(tf.zeros((4,) + latent_shape)).shape == [4]
    assert prior.trainable_weights == []


def test_standard_normal_log_prob_flat_matches_scipy_mvn():
    """Flat latent: log_prob = scipy multivariate_normal(0, I).logpdf, broadcast over [B]."""
    z = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    p = priors.StandardNormalPrior((3,))()  # call() == distribution()
    expected = stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(z)
    np.testing.assert_allclose(p.log_prob(z).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(p.mean().numpy(), np.zeros(3))


def test_standard_normal_log_prob_image_latent_matches_scipy_norm():
    """(2, 2, 1) latent: log_prob = Σ norm.logpdf over all three event axes."""
    z = np.random.default_rng(1).normal(size=(4, 2, 2, 1)).astype(np.float32)
    p = priors.StandardNormalPrior((2, 2, 1)).distribution()
    expected = stats.norm.logpdf(z).reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(p.log_prob(z).numpy(), expected, rtol=1e-5)


def test_registry_and_config_round_trip():
    """PRIORS builds "standard_normal" with a latent_shape; get_config round-trips it."""
    prior = priors.PRIORS.build("standard_normal", latent_shape=[2, 2, 1])
    assert isinstance(prior, priors.StandardNormalPrior)
    assert prior.latent_shape == (2, 2, 1)
    clone = priors.StandardNormalPrior.from_config(prior.get_config())
    assert clone.latent_shape == (2, 2, 1)
    z = np.ones((2, 2, 2, 1), np.float32)
    np.testing.assert_allclose(
        clone.distribution().log_prob(z).numpy(), prior.distribution().log_prob(z).numpy()
    )
