"""The VampPrior against scipy: log p(z) is the log-mean-exp of the posterior densities
at the encoder's outputs for the pseudo-inputs; its samples have the mixture's moments;
importance weights use it; it saves, loads and learns its pseudo-inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

import family_case
from vae_zoo import evaluate
from vae_zoo.heads import VampPrior
from vae_zoo.models import ConditionalVAE, ConvVAE, DenseVAE

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

SHAPE = (4, 4, 1)
K = 3


def _model(posterior="diagonal_gaussian", **prior):
    return DenseVAE(SHAPE, 2, hidden_units=(8,), posterior=posterior, seed=0,
                    prior={"name": "vamp", "num_components": K, **prior})


def _component_parameters(model, raw):
    """Means and covariances of q(z|u_k), from the encoder's raw outputs at the
    clipped pseudo-inputs, computed by hand: `[K, d]`, `[K, d, d]`."""
    u = np.clip(raw, 0.0, 1.0)
    params = model.encoder(u).numpy().astype(np.float64)
    d = model.latent_shape[0]
    mean = params[:, :d]
    if params.shape[1] == 2 * d:  # diagonal: μ, softplus(s) + floor
        scale = np.log1p(np.exp(params[:, d:])) + model.posterior.scale_floor
        return mean, np.stack([np.diag(s**2) for s in scale])
    covariances = []
    for row in params[:, d:]:  # full covariance: L from its d(d+1)/2 entries
        tril = tfp.math.fill_triangular(row).numpy().astype(np.float64)
        tril[np.diag_indices(d)] = np.log1p(np.exp(np.diag(tril))) + model.posterior.scale_floor
        covariances.append(tril @ tril.T)
    return mean, np.stack(covariances)


def _log_mixture(z, means, covariances):
    """log (1/K) Σ_k N(z; μ_k, Σ_k) with scipy, `[N]`."""
    logs = np.stack([stats.multivariate_normal(m, c).logpdf(z) for m, c in zip(means, covariances)])
    return special.logsumexp(logs, axis=0) - np.log(len(means))


@pytest.mark.parametrize("posterior", ["diagonal_gaussian", "full_covariance_gaussian"])
def test_log_prob_is_the_log_mean_of_the_posteriors_at_the_pseudo_inputs(posterior):
    model = _model(posterior)
    rng = np.random.default_rng(0)
    raw = rng.normal(0.5, 0.8, (K, *SHAPE)).astype(np.float32)  # partly outside [0, 1]
    model.prior.raw_pseudo_inputs.assign(raw)
    u = model.prior.pseudo_inputs().numpy()
    assert u.min() >= 0.0 and u.max() <= 1.0 and (u != raw).any()
    means, covariances = _component_parameters(model, raw)
    z = rng.normal(0, 1.5, (6, 2)).astype(np.float32)
    p = model.prior_distribution()
    assert p.batch_shape == [] and p.event_shape == [2]
    np.testing.assert_allclose(p.log_prob(z), _log_mixture(z, means, covariances), rtol=1e-4)


def test_samples_have_the_moments_of_the_mixture():
    model = _model()
    model.prior.raw_pseudo_inputs.assign(
        np.random.default_rng(1).random((K, *SHAPE)).astype(np.float32))
    means, covariances = _component_parameters(model, model.prior.raw_pseudo_inputs.numpy())
    z = model.prior_distribution().sample(40000, seed=[0, 1]).numpy()
    mean = means.mean(axis=0)
    second = (covariances + means[:, :, None] * means[:, None, :]).mean(axis=0)
    covariance = second - np.outer(mean, mean)
    np.testing.assert_allclose(z.mean(axis=0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(z.T), covariance, atol=0.05)


def test_importance_weights_and_iw_evaluation_use_the_vamp_prior():
    model = _model()
    x = (np.random.default_rng(2).random((5, *SHAPE)) > 0.5).astype(np.float32)
    terms = model.importance_terms(x, 4, seed=[3, 4])
    z = model.encode(x).sample(4, seed=tf.constant([3, 4])).numpy()  # the same draws
    means, covariances = _component_parameters(model, model.prior.raw_pseudo_inputs.numpy())
    expected = _log_mixture(z.reshape(-1, 2), means, covariances).reshape(4, 5)
    np.testing.assert_allclose(terms["log_prior"], expected, rtol=1e-4)
    # The IW bound is built from those weights: K = 1 at a seed is the weight itself.
    bound = evaluate.log_likelihood(model, x, 1, seed=7)
    weight = model.log_importance_weights(x, 1, seed=tf.constant([7, 0]))[0]
    np.testing.assert_allclose(bound, weight, rtol=1e-5)


def test_save_load_round_trip_and_training_moves_the_pseudo_inputs(tmp_path):
    model = _model(init_mean=0.4, init_stddev=0.1, seed=3)
    inputs = family_case.example_inputs(model)
    before = model.prior.raw_pseudo_inputs.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.compute_terms(inputs, training=True)["loss"])
    gradient = tape.gradient(loss, model.prior.raw_pseudo_inputs)
    assert gradient is not None and np.abs(gradient.numpy()).max() > 0
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False, steps_per_execution=1)
    model.fit(inputs[0], batch_size=4, epochs=2, verbose=0)
    assert not np.allclose(before, model.prior.raw_pseudo_inputs.numpy())
    loaded = family_case.check_round_trips(model, inputs, tmp_path, train_loaded=True)
    z = np.zeros((2, 2), np.float32)
    model_again = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(model_again.prior.pseudo_inputs(), model.prior.pseudo_inputs())
    np.testing.assert_allclose(model_again.prior_distribution().log_prob(z),
                               model.prior_distribution().log_prob(z), rtol=1e-6)
    assert isinstance(loaded.prior, VampPrior)


def test_conv_family_and_data_initialization():
    model = ConvVAE(**ConvVAE.example_arguments, seed=0, prior={"name": "vamp", "num_components": 2})
    x = np.random.default_rng(4).random((6, 8, 8, 1)).astype(np.float32)
    model.prior.initialize_from_data(x, noise_stddev=0.01)
    u = model.prior.pseudo_inputs().numpy()
    assert np.abs(u - x.mean(axis=0)).max() < 0.06
    assert np.isfinite(model.elbo((x > 0.5).astype(np.float32))["elbo"].numpy()).all()


@pytest.mark.parametrize("build, message", [
    (lambda: _model(num_components=0), "num_components must be >= 1"),
    (lambda: _model(input_range=(1.0, 0.0)), "input_range must be"),
    (lambda: ConditionalVAE((4, 4, 1), 2, num_classes=3, hidden_units=(4,),
                            prior={"name": "vamp", "num_components": 2}),
     "needs an unconditional model"),
])
def test_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()
