"""The base VAE and the dense family: public API, training, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import family_case
from conftest import assert_same_outputs, binary_data, tiny_dense
from vae_zoo import heads, networks, priors
from vae_zoo.models import MODELS, VAE, DenseVAE

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)


def test_every_family_samples_with_one_signature():
    """`sample(num_samples, y=None, seed=None)` in every registered family; an
    unconditional model refuses a condition in one line."""
    import inspect

    for name in MODELS.names():
        parameters = list(inspect.signature(MODELS.get(name).sample).parameters)
        assert parameters[:4] == ["self", "num_samples", "y", "seed"], name
    with pytest.raises(ValueError, match=r"^DenseVAE is not conditional: sample takes no y$"):
        tiny_dense().sample(2, y=1)


@pytest.mark.parametrize("input_shape", [(6,), (4, 4, 1), (4, 4, 3)])
def test_api_shapes(input_shape):
    """encode/decode/elbo/sample/reconstruct return the documented shapes."""
    model = tiny_dense(input_shape=input_shape, latent_dim=3)
    x = binary_data(5, input_shape)
    q = model.encode(x)
    assert q.batch_shape == [5] and q.event_shape == [3]
    p = model.decode(q.sample(seed=(0, 0)))
    assert p.batch_shape == [5] and p.event_shape == list(input_shape)
    terms = model.elbo(x)
    assert set(terms) == {"elbo", "reconstruction", "kl"}
    assert all(v.shape == (5,) for v in terms.values())
    assert model.sample(7, seed=1).shape == (7,) + input_shape
    assert model.reconstruct(x).shape == (5,) + input_shape
    assert model(x).shape == (5,) + input_shape


def test_elbo_terms_are_consistent():
    """elbo = reconstruction − kl, and kl is the closed form for two Gaussians."""
    model = tiny_dense()
    x = binary_data(4)
    terms = model.elbo(x, seed=3)
    np.testing.assert_allclose(terms["elbo"], terms["reconstruction"] - terms["kl"], rtol=1e-6)
    q = model.encode(x)
    mu, sigma = q.mean().numpy(), q.stddev().numpy()
    expected = 0.5 * np.sum(sigma**2 + mu**2 - 1 - np.log(sigma**2), axis=-1)
    np.testing.assert_allclose(terms["kl"], expected, rtol=1e-5)


def test_elbo_reproducible_with_seed():
    model = tiny_dense()
    x = binary_data(4)
    a, b = model.elbo(x, seed=5), model.elbo(x, seed=5)
    np.testing.assert_array_equal(a["reconstruction"], b["reconstruction"])
    np.testing.assert_array_equal(model.sample(3, seed=2), model.sample(3, seed=2))


def test_beta_is_a_non_trainable_variable_weighting_kl():
    model = tiny_dense(beta=0.25)
    assert isinstance(model.beta, keras.Variable) and not model.beta.trainable
    assert all(v is not model.beta for v in model.trainable_variables)
    terms = model.compute_terms((binary_data(4),))
    np.testing.assert_allclose(
        terms["loss"], -(terms["reconstruction"] - 0.25 * terms["kl"]), rtol=1e-6
    )


@pytest.mark.slow
@pytest.mark.parametrize("feed", ["numpy", "dataset", "dataset_with_labels"])
def test_fit_and_evaluate(feed):
    """fit/evaluate work on numpy arrays and tf.data; history holds every metric."""
    model = tiny_dense()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = binary_data(32)
    if feed == "numpy":
        history = model.fit(x, batch_size=8, epochs=2, validation_data=(x,), verbose=0)
    else:
        ds = tf.data.Dataset.from_tensor_slices(x)
        if feed == "dataset_with_labels":
            ds = tf.data.Dataset.from_tensor_slices((x, np.arange(32)))
        history = model.fit(ds.batch(8), epochs=2, validation_data=ds.batch(8), verbose=0)
    names = {"loss", "elbo", "reconstruction", "kl", "beta"}
    assert names | {"val_" + n for n in names} <= set(history.history)
    result = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    assert set(result) == names
    assert np.isfinite(list(result.values())).all()


def test_loss_metric_is_per_example_mean():
    """The reported loss is the mean over examples, independent of the batch size."""
    model = tiny_dense(beta=0.5)
    model.compile(optimizer="adam")
    x = binary_data(32)

    class NoNoise(DenseVAE):
        def posterior_sample(self, q, seed):
            return q.mean()

    det = NoNoise.from_config(model.get_config())
    det.set_weights(model.get_weights())
    det.compile(optimizer="adam")
    small = det.evaluate(x, batch_size=4, verbose=0, return_dict=True)["loss"]
    large = det.evaluate(x, batch_size=32, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(small, large, rtol=1e-5)
    terms = det.compute_terms((x,))
    np.testing.assert_allclose(large, terms["loss"].numpy().mean(), rtol=1e-5)


@pytest.mark.slow
def test_overfit_one_batch_raises_elbo():
    model = tiny_dense(input_shape=(12,), latent_dim=2, hidden_units=(32,))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = binary_data(16, (12,))
    before = model.evaluate(x, verbose=0, return_dict=True)["elbo"]
    model.fit(x, batch_size=16, epochs=60, verbose=0)
    after = model.evaluate(x, verbose=0, return_dict=True)["elbo"]
    assert after > before + 2.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "likelihood", ["bernoulli", {"name": "gaussian", "scale": 0.5}, "gaussian_learned_scale"]
)
def test_save_load_round_trip(tmp_path, likelihood):
    """A trained model with a changed β, saved and loaded with no custom_objects, is
    the same model (shared round trips) and its restored optimizer keeps training."""
    model = tiny_dense(input_shape=(4, 4, 1), likelihood=likelihood, beta=0.5,
                       hidden_units=(8, 4))
    model.compile(optimizer="adam")
    x = binary_data(8, (4, 4, 1))
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    model.beta.assign(0.75)
    loaded = family_case.check_round_trips(model, (x,), tmp_path, train_loaded=True)
    assert float(loaded.beta.numpy()) == 0.75
    assert MODELS.get("dense") is DenseVAE


def test_base_vae_from_components_saves(tmp_path):
    """A VAE assembled from parts (no family) serializes its parts."""
    posterior = heads.DiagonalGaussianPosterior()
    likelihood = heads.GaussianLikelihood(scale=0.3)
    model = VAE(
        encoder=networks.mlp_encoder((8,), posterior.params_shape((2,))),
        decoder=networks.mlp_decoder((8,), likelihood.params_shape((5,))),
        posterior=posterior,
        likelihood=likelihood,
        prior=priors.StandardNormalPrior((2,)),
        input_shape=(5,),
        seed=0,
    )
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    model.save(tmp_path / "vae.keras")
    loaded = keras.models.load_model(tmp_path / "vae.keras")
    assert type(loaded) is VAE
    assert_same_outputs(model, loaded, x)


def test_tabular_gaussian_model_trains():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(64, 1)) * rng.normal(size=(1, 10))).astype("float32")
    model = tiny_dense(input_shape=(10,), likelihood="gaussian_learned_scale")
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, batch_size=16, epochs=5, verbose=0)
    assert history.history["elbo"][-1] > history.history["elbo"][0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"beta": -1.0}, "beta"),
        ({"likelihood": "bernouli"}, "did you mean 'bernoulli'"),
        ({"input_shape": ()}, "input_shape"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_dense(**kwargs)


@pytest.mark.slow
def test_iwae_objective_trains_on_the_importance_weighted_bound():
    """objective="iwae": loss = −IW bound (β = 1), the bound ≥ the mean of its log-weights."""
    model = tiny_dense(objective="iwae", num_samples=8)
    x = binary_data(16)
    terms = model.compute_terms((x,))
    assert set(terms) == {"loss", "iw_bound", "elbo", "reconstruction", "kl"}
    np.testing.assert_allclose(terms["loss"], -terms["iw_bound"], rtol=1e-6)
    assert np.all(terms["iw_bound"].numpy() >= terms["elbo"].numpy() - 1e-4)  # Jensen, per example
    np.testing.assert_allclose(terms["elbo"], terms["reconstruction"] - terms["kl"], rtol=1e-5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, batch_size=8, epochs=12, verbose=0)
    assert "iw_bound" in history.history
    # Training raises the bound by well over its epoch-to-epoch noise.
    assert history.history["iw_bound"][-1] > history.history["iw_bound"][0] + 0.2
    clone = DenseVAE.from_config(model.get_config())
    assert clone.objective == "iwae" and clone.num_samples == 8


def test_iwae_with_one_sample_is_the_elbo_estimate():
    """K = 1: the IW bound is the single-sample ELBO (Monte-Carlo KL)."""
    model = tiny_dense(objective="iwae", num_samples=1, beta=0.5)
    terms = model.compute_terms((binary_data(8),))
    np.testing.assert_allclose(terms["iw_bound"], terms["elbo"], rtol=1e-5)
    np.testing.assert_allclose(
        terms["loss"], -(terms["reconstruction"] - 0.5 * terms["kl"]), rtol=1e-5
    )


def test_bad_objective_raises():
    with pytest.raises(ValueError, match="objective"):
        tiny_dense(objective="vimco")
    with pytest.raises(ValueError, match="num_samples"):
        tiny_dense(objective="iwae", num_samples=0)


@pytest.mark.slow
def test_impute_recovers_missing_entries():
    """Pseudo-Gibbs imputation fills masked bits far better than chance."""
    x = binary_data(64, (12,), seed=1)
    model = tiny_dense(input_shape=(12,), latent_dim=2, hidden_units=(32,))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, batch_size=16, epochs=60, verbose=0)
    mask = np.ones_like(x)
    mask[:, 6:] = 0.0  # the second half of every example is missing
    filled = model.impute(np.where(mask > 0, x, 0.0), mask, num_iterations=20, seed=0).numpy()
    np.testing.assert_array_equal(filled[:, :6], x[:, :6])  # observed entries unchanged
    accuracy = ((filled[:, 6:] > 0.5) == (x[:, 6:] > 0.5)).mean()
    assert accuracy > 0.8
    with pytest.raises(ValueError, match="mask shape"):
        model.impute(x, mask[:, :6])


@pytest.mark.slow
def test_anomaly_score_ranks_noise_above_data():
    x = binary_data(64, (12,), seed=1)
    model = tiny_dense(input_shape=(12,), latent_dim=2, hidden_units=(32,))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, batch_size=16, epochs=30, verbose=0)
    noise = (np.random.default_rng(5).random((64, 12)) > 0.5).astype("float32")
    normal, odd = model.anomaly_score(x, num_samples=50), model.anomaly_score(noise, num_samples=50)
    assert normal.shape == (64,) and np.median(odd) > np.median(normal) + 1.0
