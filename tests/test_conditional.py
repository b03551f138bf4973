"""The conditional VAE: shapes, training on (x, y), saving, both priors, both bodies,
label errors, and the decoder really using the label."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import family_case
from conftest import binary_data
from vae_zoo import data, evaluate
from vae_zoo.models import MODELS, ConditionalGaussianPrior, ConditionalVAE

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

LEARNED = {"name": "conditional_gaussian", "hidden_units": [8]}


def tiny_cvae(input_shape=(4, 4, 1), latent_dim=2, num_classes=3, body="dense", **kwargs):
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("hidden_units", (8,))
    if body == "conv":
        kwargs.update(filters=(4, 8), kernel_sizes=(3, 3), strides=(2, 2), dense_units=(8,))
    return ConditionalVAE(input_shape=input_shape, latent_dim=latent_dim,
                          num_classes=num_classes, body=body, **kwargs)


def labels(n, num_classes=3):
    return np.arange(n) % num_classes


@pytest.mark.parametrize("body", ["dense", "conv"])
@pytest.mark.parametrize("prior", ["standard_normal", LEARNED])
def test_api_shapes(body, prior):
    model = tiny_cvae(body=body, prior=prior, latent_dim=3)
    x, y = binary_data(5, (4, 4, 1)), labels(5)
    q = model.encode(x, y)
    assert q.batch_shape == [5] and q.event_shape == [3]
    p = model.decode(q.sample(seed=(0, 0)), y)
    assert p.batch_shape == [5] and p.event_shape == [4, 4, 1]
    learned = isinstance(prior, dict)
    assert model.prior_distribution(y).batch_shape == ([5] if learned else [])
    assert model.prior_distribution(y).event_shape == [3]
    assert all(v.shape == (5,) for v in model.elbo(x, y).values())
    assert model.sample(7, y=2, seed=1).shape == (7, 4, 4, 1)
    assert model.sample(3, y=[0, 1, 2], seed=1).shape == (3, 4, 4, 1)
    assert model.reconstruct(x, y).shape == (5, 4, 4, 1)
    assert model((x, y)).shape == (5, 4, 4, 1)
    np.testing.assert_array_equal(model.sample(3, y=1, seed=4), model.sample(3, y=1, seed=4))


def test_labels_are_one_hot_inside_the_model():
    """Integer labels, [B, 1] labels and float one-hot rows give the same posterior."""
    model = tiny_cvae()
    x, y = binary_data(4, (4, 4, 1)), labels(4)
    reference = model.encode(x, y).mean()
    for same in (y[:, None], tf.one_hot(y, 3), y.astype("int64")):
        np.testing.assert_allclose(model.encode(x, same).mean(), reference, atol=1e-6)
    assert not np.allclose(model.encode(x, (y + 1) % 3).mean(), reference)


@pytest.mark.slow
@pytest.mark.parametrize("feed", ["numpy", "dataset"])
def test_fit_on_x_y(feed):
    model = tiny_cvae()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = binary_data(16, (4, 4, 1)), labels(16)
    if feed == "numpy":
        history = model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), verbose=0)
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        history = model.fit(ds, epochs=1, validation_data=ds, verbose=0)
    assert {"loss", "elbo", "kl", "val_elbo"} <= set(history.history)
    assert np.isfinite(history.history["val_elbo"]).all()


@pytest.mark.slow
def test_overfit_one_batch_raises_elbo():
    model = tiny_cvae(input_shape=(12,), hidden_units=(32,), prior=LEARNED)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = binary_data(16, (12,)), labels(16)
    before = model.evaluate(x, y, verbose=0, return_dict=True)["elbo"]
    batch = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(batch, steps_per_epoch=60, epochs=1, verbose=0)
    after = model.evaluate(x, y, verbose=0, return_dict=True)["elbo"]
    assert after > before + 2.0


@pytest.mark.slow
@pytest.mark.parametrize("body, prior", [("dense", LEARNED), ("conv", "standard_normal")])
def test_save_load_round_trip(tmp_path, body, prior):
    """Both bodies, fixed and learned priors, trained, through the shared round trips
    (encoder, decoder and label-conditioned samples compared)."""
    model = tiny_cvae(body=body, prior=prior)
    model.compile(optimizer="adam")
    x, y = binary_data(8, (4, 4, 1)), labels(8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    family_case.check_round_trips(model, (x, y), tmp_path)


@pytest.mark.slow
def test_learned_prior_kl_is_analytic_and_trained():
    """KL(q(z|x, y) || p(z|y)) is the closed form for two diagonal Gaussians, and
    training moves the prior network."""
    model = tiny_cvae(prior=LEARNED)
    x, y = binary_data(4, (4, 4, 1)), labels(4)
    q, p = model.encode(x, y), model.prior_distribution(y)
    mq, sq, mp, sp = (t.numpy() for t in (q.mean(), q.stddev(), p.mean(), p.stddev()))
    expected = np.sum(np.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5, axis=-1)
    np.testing.assert_allclose(model.elbo(x, y)["kl"], expected, rtol=1e-5)
    before = [v.numpy() for v in model.prior.trainable_variables]
    assert before
    model.compile(optimizer="adam")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = [v.numpy() for v in model.prior.trainable_variables]
    assert any(not np.allclose(b, a) for b, a in zip(before, after))


@pytest.mark.slow
def test_vector_condition():
    model = ConditionalVAE((6,), 2, condition_dim=3, hidden_units=(8,), prior=LEARNED, seed=0)
    x = binary_data(5)
    c = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    assert model.encode(x, c).batch_shape == [5]
    assert model.sample(4, y=c[0], seed=0).shape == (4, 6)
    model.compile(optimizer="adam")
    model.fit(x, c, batch_size=5, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"shape \[B, 3\]"):
        model.encode(x, c[:, :2])


def test_log_likelihood_with_labels():
    model = tiny_cvae()
    x, y = binary_data(6, (4, 4, 1)), labels(6)
    result = evaluate.summarize(model, x, num_samples=20, y=y)
    assert np.isfinite(result["log_likelihood"])
    assert result["log_likelihood"] >= result["elbo"] - 1.0


def test_label_errors():
    model = tiny_cvae()
    x = binary_data(3, (4, 4, 1))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got label 3"):
        model.sample(2, y=3)
    with pytest.raises(ValueError, match=r"got label -1"):
        model.encode(x, [0, -1, 2])
    with pytest.raises(ValueError, match="sample needs y"):
        model.sample(2)
    with pytest.raises(ValueError, match="2 conditions for num_samples=4"):
        model.sample(4, y=[0, 1])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must lie in \[0, 3\)"):
        tf.function(model.elbo)(x, tf.constant([0, 1, 5]))
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="got no y: load data with with_labels=True"):
        model.fit(x, batch_size=3, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": None}, "exactly one of num_classes"),
        ({"condition_dim": 4}, "exactly one of num_classes"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
        ({"body": "rnn"}, "body must be one of"),
        ({"body": "conv", "input_shape": (6,)}, r"input_shape must be \(height, width, channels\)"),
        ({"prior": "standard_nromal"}, "did you mean 'standard_normal'"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_cvae(**kwargs)


def test_registered_and_conditional_prior_needs_a_condition():
    from vae_zoo.models import DenseVAE

    assert MODELS.get("conditional") is ConditionalVAE and ConditionalVAE.conditional
    assert not DenseVAE.conditional
    with pytest.raises(ValueError, match="needs a condition"):
        DenseVAE((6,), 2, hidden_units=(8,), prior="conditional_gaussian")
    prior = ConditionalGaussianPrior((3,), hidden_units=(4,))
    assert prior.distribution(tf.one_hot([1, 2], 5)).batch_shape == [2]


@pytest.mark.slow
def test_decoder_uses_the_label():
    """After a short training on 1,000 MNIST digits, changing the label at a fixed z
    changes the decoder mean far more than redrawing z at a fixed label.

    A one-dimensional z and β = 4 leave z room for style only: the class, which y
    gives for free, is too expensive to encode in z. Observed ratios 3.6 to 6.0 over
    three data subsets and seeds.
    """
    arrays = data.load_embedded_mnist()
    x = arrays["x_train"][:1000, ..., None].astype("float32") / 255.0
    keras.utils.set_random_seed(0)
    model = ConditionalVAE((28, 28, 1), 1, num_classes=10, hidden_units=(128,), beta=4.0, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, arrays["y_train"][:1000], batch_size=50, epochs=4, verbose=0)

    z = tf.random.stateless_normal((32, 1), seed=(1, 2))
    other_z = tf.random.stateless_normal((32, 1), seed=(3, 4))

    def mean_image(z, label):
        return model.decode(z, np.full(32, label)).mean().numpy()

    label_change = np.mean([np.abs(mean_image(z, k) - mean_image(z, (k + 1) % 10)).mean()
                            for k in range(10)])
    z_change = np.mean([np.abs(mean_image(z, k) - mean_image(other_z, k)).mean()
                        for k in range(10)])
    assert label_change > 2.5 * z_change
