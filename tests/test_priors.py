"""Tests for `vae_zoo.priors`: standard normal and mixture-of-Gaussians priors against scipy."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from conftest import assert_same_outputs, tiny_dense
from vae_zoo import priors

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)


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


# --------------------------------------------------------------------------- #
# MixtureOfGaussiansPrior
# --------------------------------------------------------------------------- #


def _mixture(latent_dim=3, num_components=4, **kwargs):
    prior = priors.MixtureOfGaussiansPrior((latent_dim,), num_components=num_components, **kwargs)
    prior.build(None)
    return prior


def _np_mixture_log_prob(z, logits, means, scales):
    """log Σ_k π_k Π_d N(z_d; μ_kd, σ_kd) with scipy, z `[N, d]`, params `[K]`, `[K, d]`."""
    log_weights = logits - special.logsumexp(logits)
    components = stats.norm.logpdf(z[:, None, :], means, scales).sum(-1)  # [N, K]
    return special.logsumexp(log_weights + components, axis=-1)


def test_mixture_variables_shapes_and_initial_values():
    """Trainable logits [K] (0), means [K, d] (N(0, 1), seeded), raw scales [K, d] (σ = 1)."""
    prior = _mixture(latent_dim=3, num_components=4, seed=1)
    assert [v.name for v in prior.trainable_weights] == ["mixture_logits", "means", "raw_scales"]
    assert [tuple(v.shape) for v in prior.trainable_weights] == [(4,), (4, 3), (4, 3)]
    np.testing.assert_array_equal(prior.mixture_logits.numpy(), np.zeros(4))
    p = prior.distribution()
    stddev = p.components_distribution.stddev().numpy()
    np.testing.assert_allclose(stddev, np.ones((4, 3)), rtol=1e-6)
    means = prior.means.numpy()
    assert means.std() > 0.3  # random, not all equal
    np.testing.assert_array_equal(_mixture(3, 4, seed=1).means.numpy(), means)  # reproducible
    assert not np.array_equal(_mixture(3, 4, seed=2).means.numpy(), means)


def test_mixture_shapes_and_log_prob_match_scipy():
    """Batch [], event [d]; log_prob = log Σ_k π_k N(z; μ_k, diag σ_k²) (scipy)."""
    prior = _mixture(latent_dim=3, num_components=4, scale_floor=1e-3)
    rng = np.random.default_rng(2)
    prior.mixture_logits.assign(rng.normal(size=4).astype(np.float32))
    prior.raw_scales.assign(rng.normal(size=(4, 3)).astype(np.float32))
    p = prior()
    assert p.batch_shape == [] and p.event_shape == [3]
    assert p.sample(5, seed=[0, 1]).shape == (5, 3)
    z = rng.normal(scale=2.0, size=(6, 3)).astype(np.float32)
    scales = np.logaddexp(0.0, prior.raw_scales.numpy().astype(np.float64)) + 1e-3
    expected = _np_mixture_log_prob(
        z, prior.mixture_logits.numpy(), prior.means.numpy(), scales
    )
    np.testing.assert_allclose(p.log_prob(z).numpy(), expected, rtol=1e-5)


def test_mixture_log_prob_gives_gradients_to_every_variable():
    prior = _mixture()
    z = np.random.default_rng(3).normal(size=(5, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        log_prob = tf.reduce_sum(prior.distribution().log_prob(z))
    grads = tape.gradient(log_prob, prior.trainable_weights)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert all(np.abs(g.numpy()).sum() > 0 for g in grads)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latent_shape": (2, 2, 1)},
        {"latent_shape": (3,), "num_components": 0},
        {"latent_shape": (3,), "scale_floor": -0.1},
        {"latent_shape": (3,), "scale_floor": 1.0},
    ],
)
def test_mixture_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        priors.MixtureOfGaussiansPrior(**kwargs)


def test_mixture_registry_and_config_round_trip():
    prior = priors.PRIORS.build(
        {"name": "mixture_of_gaussians", "num_components": 3, "seed": 5}, latent_shape=[2]
    )
    assert isinstance(prior, priors.MixtureOfGaussiansPrior)
    clone = priors.MixtureOfGaussiansPrior.from_config(prior.get_config())
    assert clone.get_config() == prior.get_config()
    assert (clone.num_components, clone.seed, clone.latent_shape) == (3, 5, (2,))
    z = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(clone().log_prob(z), prior().log_prob(z))  # same seed


@pytest.mark.slow
def test_dense_vae_with_mixture_prior_trains_and_saves(tmp_path):
    """DenseVAE: finite ELBO (Monte-Carlo KL), 2 epochs of fit, identical after save/load."""
    model = tiny_dense(
        input_shape=(4, 4, 1),
        likelihood="gaussian",
        prior={"name": "mixture_of_gaussians", "num_components": 3},
    )
    rng = np.random.default_rng(4)
    x = (rng.integers(0, 256, (8, 4, 4, 1)) / 255).astype(np.float32)
    terms = model.elbo(x, seed=0)
    assert np.isfinite(terms["elbo"].numpy()).all()
    prior_weights = [v.numpy() for v in model.prior.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(  # the prior is trained with the model
        not np.array_equal(before, v.numpy())
        for before, v in zip(prior_weights, model.prior.trainable_weights)
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_config() == model.get_config()
    assert_same_outputs(model, loaded, x)
    z = rng.normal(size=(5, 2)).astype(np.float32)
    np.testing.assert_array_equal(
        loaded.prior_distribution().log_prob(z), model.prior_distribution().log_prob(z)
    )
