"""The fully-convolutional family and its learned spatial prior: shapes at several image
sizes, training, saving, errors, the prior's maths, and the prior mismatch it remedies."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from conftest import assert_same_outputs, binary_data
from vae_zoo import data, evaluate, heads, priors
from vae_zoo.models import MODELS, FullyConvVAE

SPATIAL = {"name": "spatial_autoregressive", "filters": 4, "kernel_size": 3}


def tiny_fully_conv(input_shape=(8, 8, 1), latent_channels=2, **kwargs):
    kwargs = {"filters": (4,), "kernel_sizes": (3,), "strides": (2,), "seed": 0, **kwargs}
    return FullyConvVAE(input_shape=input_shape, latent_channels=latent_channels, **kwargs)


def fit_steps(model, x, steps, learning_rate=1e-2):
    """`steps` Adam steps on the batch x (one epoch: one trace, no per-epoch overhead)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return model.fit(tf.data.Dataset.from_tensors(x).repeat(steps), verbose=0)


def digits(n=4, size=8):
    """n embedded MNIST digits resized to size×size and binarized: `[n, size, size, 1]`."""
    x = data.load_embedded_mnist()["x_train"][:n, ..., None]
    x = tf.image.resize(x, (size, size), antialias=True).numpy() / 255.0
    return (np.random.default_rng(0).random(x.shape) < x).astype("float32")


def randomize(layer, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(scale * rng.normal(size=w.shape).astype("float32"))


# ---------------------------------------------------------------------------- model


@pytest.mark.parametrize("prior", ["standard_normal", SPATIAL])
def test_api_shapes_at_training_size(prior):
    model = tiny_fully_conv(prior=prior)
    x = binary_data(5, (8, 8, 1))
    q = model.encode(x)
    assert model.latent_shape == (4, 4, 2)
    assert q.batch_shape == [5] and q.event_shape == [4, 4, 2]
    p = model.decode(q.sample(seed=(0, 0)))
    assert p.batch_shape == [5] and p.event_shape == [8, 8, 1]
    assert all(v.shape == (5,) for v in model.elbo(x, seed=0).values())
    assert model.log_importance_weights(x, 3, seed=0).shape == (3, 5)
    assert model.sample(2, seed=1).shape == (2, 8, 8, 1)
    assert model.reconstruct(x).shape == (5, 8, 8, 1)


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["standard_normal", SPATIAL])
def test_trained_at_one_size_used_at_another(prior):
    """Same weights at 12×16: encode/decode/elbo/IW/reconstruct/sample, prior on a 6×8 map."""
    model = tiny_fully_conv(prior=prior)
    fit_steps(model, binary_data(8, (8, 8, 1)), 2)
    x = binary_data(3, (12, 16, 1), seed=1)
    q = model.encode(x)
    assert q.batch_shape == [3] and q.event_shape == [6, 8, 2]
    assert model.decode(q.mean()).event_shape == [12, 16, 1]
    terms = model.elbo(x, seed=0)
    assert all(v.shape == (3,) and np.isfinite(v).all() for v in terms.values())
    assert model.log_importance_weights(x, 4, seed=0).shape == (4, 3)
    assert model.reconstruct(x).shape == (3, 12, 16, 1)
    assert model.sample(2, seed=0, image_size=(12, 16)).shape == (2, 12, 16, 1)
    # The training sizes are back once each call returns.
    assert model.latent_shape == model.prior.latent_shape == (4, 4, 2)
    assert model.sample(1, seed=0).shape == (1, 8, 8, 1)


def test_kl_at_another_size_is_the_closed_form_over_that_map():
    model = tiny_fully_conv(latent_channels=3)
    x = binary_data(4, (16, 12, 1))
    q = model.encode(x)
    mu, sigma = q.mean().numpy(), q.stddev().numpy()  # [4, 8, 6, 3]
    expected = 0.5 * np.sum(sigma**2 + mu**2 - 1 - np.log(sigma**2), axis=(1, 2, 3))
    np.testing.assert_allclose(model.elbo(x, seed=0)["kl"], expected, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["standard_normal", SPATIAL])
def test_fit_one_step(prior):
    model = tiny_fully_conv(prior=prior)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = fit_steps(model, binary_data(8, (8, 8, 1)), 1)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))


@pytest.mark.slow
def test_overfit_one_batch_raises_elbo():
    model = tiny_fully_conv(prior=SPATIAL)
    x = digits()
    before = float(np.mean(model.elbo(x, seed=0)["elbo"]))
    fit_steps(model, x, 40, learning_rate=2e-2)
    after = float(np.mean(model.elbo(x, seed=0)["elbo"]))
    assert after > before + 10.0, (before, after)


@pytest.mark.slow
def test_keras_round_trip(tmp_path):
    model = tiny_fully_conv(prior=SPATIAL, beta=0.5)
    fit_steps(model, binary_data(8, (8, 8, 1)), 3)  # the prior's output layer leaves zero
    model.save(tmp_path / "fully_conv.keras")
    loaded = keras.models.load_model(tmp_path / "fully_conv.keras")
    assert type(loaded) is FullyConvVAE and MODELS.get("fully_conv") is FullyConvVAE
    assert loaded.get_config() == model.get_config()
    for size in [(8, 8), (12, 4)]:
        assert_same_outputs(model, loaded, binary_data(3, size + (1,)))
    z = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype("float32")
    expected = model.prior_distribution().log_prob(z)
    assert not np.allclose(expected, stats.norm.logpdf(z).sum(axis=(1, 2, 3)), atol=1e-4)
    np.testing.assert_allclose(loaded.prior_distribution().log_prob(z), expected, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (10, 10, 1), "strides": (4,)}, "10x10 is not divisible by the total"),
        ({"input_shape": (8, 8)}, "height, width, channels"),
        ({"filters": (4, 4)}, "equally long"),
        ({"latent_channels": 0}, "latent_channels"),
        ({"prior": {"name": "spatial_autoregressive", "kernel_size": 2}}, "odd"),
        ({"prior": {"name": "spatial_autoregressive", "scale_floor": 1.0}}, "scale_floor"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_fully_conv(**kwargs)


def test_image_size_not_divisible_by_the_stride_raises():
    model = tiny_fully_conv()
    x = binary_data(2, (9, 8, 1))
    for call in (model.encode, model.elbo, model.reconstruct):
        with pytest.raises(ValueError, match="9x8 is not divisible by the total stride 2"):
            call(x)
    with pytest.raises(ValueError, match="not divisible"):
        model.sample(1, image_size=(8, 5))


# ---------------------------------------------------------------------------- the prior


def test_spatial_prior_starts_as_standard_normal_at_any_map_size():
    prior = priors.PRIORS.build("spatial_autoregressive", latent_shape=(3, 4, 2))
    p = prior.distribution()
    assert p.batch_shape == [] and p.event_shape == [3, 4, 2]
    for shape in [(5, 3, 4, 2), (2, 5, 6, 7, 2)]:  # [B, ...] and [K, B, ...]; other maps
        z = np.random.default_rng(0).normal(size=shape).astype("float32")
        expected = stats.norm.logpdf(z).sum(axis=(-3, -2, -1))
        np.testing.assert_allclose(p.log_prob(z), expected, rtol=1e-5)


def test_spatial_prior_is_autoregressive_in_raster_order():
    """Changing z at one position changes p(z_j | z_<j) only at later positions j."""
    prior = heads.SpatialAutoregressivePrior((4, 5, 2), filters=6)
    randomize(prior)
    z = np.random.default_rng(1).normal(size=(1, 4, 5, 2)).astype("float32")
    moved = z.copy()
    moved[0, 1, 2] += 3.0
    a, b = prior.conditionals(z), prior.conditionals(moved)
    changed = np.any(
        (a.distribution.loc != b.distribution.loc) | (a.distribution.scale != b.distribution.scale),
        axis=-1,
    )[0]  # [4, 5]
    order = np.arange(20).reshape(4, 5)
    assert not changed[order <= order[1, 2]].any()
    assert changed[order > order[1, 2]].any()


def test_spatial_prior_density_integrates_to_one():
    """On a 1×2 map with one channel, ∫∫ p(z1, z2) dz1 dz2 = 1 (a proper density)."""
    prior = heads.SpatialAutoregressivePrior((1, 2, 1), filters=4)
    randomize(prior, scale=0.3)
    grid = np.linspace(-12.0, 12.0, 481, dtype="float32")
    z1, z2 = np.meshgrid(grid, grid, indexing="ij")
    z = np.stack([z1.ravel(), z2.ravel()], axis=-1).reshape(-1, 1, 2, 1)
    density = np.exp(prior.distribution().log_prob(z).numpy())
    step = grid[1] - grid[0]
    np.testing.assert_allclose(density.sum() * step**2, 1.0, atol=2e-3)


def test_spatial_prior_samples_follow_its_conditionals():
    """Sequential samples, whitened by the conditionals log_prob uses, are N(0, 1)."""
    prior = heads.SpatialAutoregressivePrior((3, 3, 2), filters=4)
    randomize(prior, scale=0.3)
    z = prior.distribution().sample(2000, seed=tf.constant([3, 4]))
    assert z.shape == (2000, 3, 3, 2)
    conditionals = prior.conditionals(z).distribution
    eps = ((z - conditionals.loc) / conditionals.scale).numpy().reshape(2000, -1)
    np.testing.assert_allclose(eps.mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(eps.std(axis=0), 1.0, atol=0.1)


@pytest.mark.slow
def test_learned_spatial_prior_lowers_kl_on_the_same_posteriors():
    """The prior mismatch: posteriors of a model trained with N(0, I) are spatially
    correlated, so a spatial prior fitted to them (encoder and decoder frozen) has a far
    lower KL, and the ELBO rises by as much (reconstruction unchanged)."""
    x = data.load_embedded_mnist()["x_train"][:256, ..., None] / 255.0
    x = (np.random.default_rng(0).random(x.shape) < x).astype("float32")  # [256, 28, 28, 1]
    batches = tf.data.Dataset.from_tensor_slices(x).shuffle(256, seed=0).repeat().batch(64)
    config = dict(input_shape=(28, 28, 1), latent_channels=4, filters=(8, 16),
                  kernel_sizes=(3, 3), strides=(2, 2), seed=0)
    keras.utils.set_random_seed(0)
    standard = FullyConvVAE(**config)
    standard.compile(optimizer=keras.optimizers.Adam(1e-2))
    standard.fit(batches, steps_per_epoch=40, verbose=0)

    spatial = FullyConvVAE(**config, prior="spatial_autoregressive")
    for part in ("encoder", "decoder", "posterior", "likelihood"):
        getattr(spatial, part).set_weights(getattr(standard, part).get_weights())
        getattr(spatial, part).trainable = False
    spatial.compile(optimizer=keras.optimizers.Adam(1e-2))
    spatial.fit(batches, steps_per_epoch=40, verbose=0)

    a, b = evaluate.elbo(standard, x, seed=0), evaluate.elbo(spatial, x, seed=0)
    np.testing.assert_allclose(a["reconstruction"], b["reconstruction"], rtol=1e-5)
    assert b["kl"].mean() < 0.7 * a["kl"].mean(), (a["kl"].mean(), b["kl"].mean())
    assert b["elbo"].mean() > a["elbo"].mean() + 3.0
