"""The discrete (categorical-latent) family: heads, exact maths, estimators, training, saving."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

from conftest import binary_data
from vae_zoo import evaluate, heads, priors, recipes
from vae_zoo.models import MODELS, DiscreteVAE

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)


def tiny_discrete(input_shape=(4,), num_latents=1, num_categories=3, hidden_units=(8,),
                  decoder_gain=1.0, **kwargs):
    """A tiny model with reproducible weights; `decoder_gain` scales the decoder's weights
    so that z matters."""
    keras.utils.set_random_seed(0)  # the initializers' draws
    kwargs.setdefault("seed", 0)
    model = DiscreteVAE(input_shape, num_latents=num_latents, num_categories=num_categories,
                        hidden_units=hidden_units, **kwargs)
    model.decoder.set_weights([decoder_gain * w for w in model.decoder.get_weights()])
    return model


def all_codes(num_latents, num_categories):
    """Every one-hot configuration: `[C^L, L, C]`."""
    codes = itertools.product(range(num_categories), repeat=num_latents)
    return np.eye(num_categories, dtype="float32")[np.array(list(codes))]


def flat(grads):
    return np.concatenate([np.reshape(g, [-1]) for g in grads])


# ------------------------------------------------------------------------- heads, prior


def test_categorical_head_and_uniform_prior():
    head = heads.POSTERIORS.build("categorical")
    assert head.params_shape((5, 4)) == (5, 4)
    logits = np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32")
    q = head(logits)
    assert q.batch_shape == [3] and q.event_shape == [5, 4]
    z = q.sample(seed=(0, 1)).numpy()
    assert z.dtype == np.float32 and np.all(z.sum(-1) == 1) and set(np.unique(z)) <= {0.0, 1.0}
    probs = np.exp(logits - logsumexp(logits, -1, keepdims=True))
    np.testing.assert_allclose(q.log_prob(z), np.log((probs * z).sum(-1)).sum(-1), rtol=1e-5)
    p = priors.PRIORS.build("uniform_categorical", latent_shape=(5, 4)).distribution()
    assert p.batch_shape == [] and p.event_shape == [5, 4]
    np.testing.assert_allclose(p.log_prob(z), [-5 * np.log(4)] * 3, rtol=1e-6)
    expected_kl = (probs * (np.log(probs) + np.log(4))).sum((-1, -2))
    np.testing.assert_allclose(q.kl_divergence(p), expected_kl, rtol=1e-5)
    relaxed = head.relaxed(logits, 0.5)
    assert relaxed.batch_shape == [3] and relaxed.event_shape == [5, 4]
    np.testing.assert_allclose(relaxed.sample(seed=(0, 2)).numpy().sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="categories"):
        head.params_shape((5,))
    with pytest.raises(ValueError, match="categories"):
        priors.UniformCategoricalPrior((5, 1))


# ------------------------------------------------------------------------- model API


def test_api_shapes_and_elbo_terms():
    model = tiny_discrete(input_shape=(4, 4, 1), num_latents=3, num_categories=5)
    x = binary_data(6, (4, 4, 1))
    q = model.encode(x)
    assert q.batch_shape == [6] and q.event_shape == [3, 5]
    assert model.latent_shape == (3, 5)
    p = model.decode(q.sample(seed=(0, 0)))
    assert p.batch_shape == [6] and p.event_shape == [4, 4, 1]
    terms = model.elbo(x, seed=3)
    assert set(terms) == {"elbo", "reconstruction", "kl"}
    np.testing.assert_allclose(terms["elbo"], terms["reconstruction"] - terms["kl"], rtol=1e-6)
    probs = q.mean().numpy()
    np.testing.assert_allclose(
        terms["kl"], (probs * (np.log(probs) + np.log(5))).sum((-1, -2)), rtol=1e-4
    )
    samples = model.sample(7, seed=1)
    assert samples.shape == (7, 4, 4, 1)
    assert model.reconstruct(x).shape == (6, 4, 4, 1)
    assert MODELS.get("discrete") is DiscreteVAE


def test_importance_weighted_bound_matches_exact_log_likelihood():
    """IW evaluation with one-hot samples converges to log p(x) = log Σ_z p(x|z) p(z).

    q is untrained (near uniform) and p(x|z) varies by nats across z, so the weights
    are spread: at K = 50,000 the estimate's standard deviation is ≤ 0.015 nats
    (measured over seeds); the tolerance is 0.06.
    """
    model = tiny_discrete(num_latents=2, num_categories=3, decoder_gain=3.0)
    x = binary_data(5, (4,))
    codes = all_codes(2, 3)  # [9, 2, 3]
    log_px_z = np.stack([model.decode(np.repeat(c[None], 5, 0)).log_prob(x) for c in codes])
    exact = logsumexp(log_px_z, axis=0) - np.log(len(codes))  # uniform prior: p(z) = 1/9
    iw = evaluate.log_likelihood(model, x, num_samples=50_000, seed=0)
    elbo = evaluate.elbo(model, np.tile(x, (400, 1)), seed=0)["elbo"].reshape(400, 5).mean(0)
    np.testing.assert_allclose(iw, exact, atol=0.06)
    assert np.all(elbo < exact)  # the gap is KL(q || p(z|x)) > 0
    assert np.all(exact - elbo > 0.05)  # ... and large enough that the check means something


# ------------------------------------------------------------------------- estimators


def _exact_gradient(model, x):
    """∇ of the mean over x of −(E_q[log p(x|z)] − β·KL), E_q by enumerating z."""
    variables = model.encoder.trainable_variables + model.decoder.trainable_variables
    codes = all_codes(*model.latent_shape)
    beta = float(model.beta.numpy())
    with tf.GradientTape() as tape:
        q = model.encode(x)
        expected_reconstruction = tf.add_n([
            tf.exp(q.log_prob(np.repeat(c[None], len(x), 0)))
            * model.decode(np.repeat(c[None], len(x), 0)).log_prob(x)
            for c in codes
        ])
        kl = q.kl_divergence(model.prior_distribution())
        loss = tf.reduce_mean(-(expected_reconstruction - beta * kl))
    return flat(tape.gradient(loss, variables))


@pytest.mark.parametrize("baseline, num_latents", [("none", 1), ("moving_average", 2),
                                                   ("learned", 1)])
def test_reinforce_gradient_is_unbiased(baseline, num_latents):
    """The mean of many REINFORCE gradients equals the exact gradient of the expected loss.

    1 latent (or 2) × 3 categories, 4 examples: E_q is a sum of 3 (or 9) terms. Each
    estimate is the gradient of the mean surrogate over the 4 examples tiled 250 times
    (1,000 independent draws); 40 estimates give the mean and its standard error.
    Unbiased means ‖mean − exact‖ ≈ sqrt(Σ SE²) (observed ratio 1.05 to 1.12); the
    test allows 3×, and at most 5% relative error (observed 0.9% to 1.8%). A biased
    estimator that drops the score-function term (encoder gradient = KL gradient
    only) misses by more than 3× what the test accepts (observed 4.8× to 8.7×).
    """
    model = tiny_discrete(num_latents=num_latents, estimator="reinforce", baseline=baseline,
                          beta=0.5, decoder_gain=3.0)
    if baseline != "none":  # a running mean far from the signal: still unbiased
        model.baseline_average.assign(-2.0)
        model.baseline_updates.assign(1000.0)
    x = binary_data(4, (4,))
    exact = _exact_gradient(model, x)
    variables = model.encoder.trainable_variables + model.decoder.trainable_variables
    tiled = np.tile(x, (250, 1))
    estimates = []
    for _ in range(40):  # a fresh seed each call (the model's SeedGenerator)
        with tf.GradientTape() as tape:
            surrogate = tf.reduce_mean(model.compute_terms((tiled,), training=True)["surrogate"])
        estimates.append(flat(tape.gradient(surrogate, variables)))
    estimates = np.array(estimates)
    mean = estimates.mean(0)
    noise = np.sqrt((estimates.var(0, ddof=1) / len(estimates)).sum())
    error = np.linalg.norm(mean - exact)
    assert error < 3 * noise, (error, noise)
    assert error < 0.05 * np.linalg.norm(exact), (error, np.linalg.norm(exact))

    encoder_size = sum(int(np.prod(v.shape)) for v in model.encoder.trainable_variables)
    with tf.GradientTape() as tape:
        kl = tf.reduce_mean(0.5 * model.encode(x).kl_divergence(model.prior_distribution()))
    kl_only = flat(tape.gradient(kl, model.encoder.trainable_variables))
    accepted = max(3 * noise, 0.05 * np.linalg.norm(exact))
    assert np.linalg.norm(kl_only - exact[:encoder_size]) > 3 * accepted


@pytest.mark.slow
def test_reinforce_surrogate_value_and_baseline_state():
    """The surrogate equals the loss in value; only training steps move the baseline."""
    model = tiny_discrete(estimator="reinforce", baseline="moving_average", baseline_decay=0.5)
    x = binary_data(8, (4,))
    assert float(model.moving_average_baseline()) == 0.0
    terms = model.compute_terms((x,), training=True)
    np.testing.assert_allclose(terms["surrogate"], terms["loss"], rtol=1e-6)
    # Bias-corrected: after one update the baseline is the batch-mean signal.
    np.testing.assert_allclose(
        model.moving_average_baseline(), terms["reconstruction"].numpy().mean(), rtol=1e-5
    )
    model.compute_terms((x,), training=False)
    assert float(model.baseline_updates.numpy()) == 1.0
    model.compile(optimizer="adam")
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    model.evaluate(x, batch_size=4, verbose=0)
    assert float(model.baseline_updates.numpy()) == 3.0  # 2 train steps, no eval update


def test_gumbel_softmax_surrogate_is_relaxed_and_metrics_are_hard():
    model = tiny_discrete(estimator="gumbel_softmax", temperature=0.3, decoder_gain=3.0)
    x = binary_data(8, (4,))
    evaluation = model.compute_terms((x,), training=False)
    assert "surrogate" not in evaluation
    with tf.GradientTape() as tape:
        terms = model.compute_terms((x,), training=True)
        surrogate = tf.reduce_mean(terms["surrogate"])
    np.testing.assert_allclose(
        terms["surrogate"], -(terms["relaxed_reconstruction"] - terms["kl"]), rtol=1e-6
    )
    assert not np.allclose(terms["relaxed_reconstruction"], terms["reconstruction"])
    grads = tape.gradient(surrogate, model.encoder.trainable_variables)
    assert all(g is not None for g in grads) and np.linalg.norm(flat(grads)) > 0
    np.testing.assert_allclose(float(model.temperature.numpy()), 0.3)


# ------------------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["gumbel_softmax", "reinforce"])
def test_fit_raises_elbo(estimator):
    """One fit step reports every metric; overfitting one batch raises the ELBO."""
    model = tiny_discrete(
        input_shape=(12,), num_latents=4, num_categories=4, hidden_units=(32,),
        estimator=estimator, baseline="learned",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = binary_data(16, (12,))
    many = np.tile(x, (50, 1))  # 50 hard samples per example: a precise ELBO
    before = evaluate.elbo(model, many)["elbo"].mean()
    history = model.fit(x, batch_size=16, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "elbo", "reconstruction", "kl", "beta"}
    assert np.isfinite(list(history.history.values())).all()
    model.fit(np.tile(x, (80, 1)), batch_size=16, epochs=1, shuffle=False, verbose=0)  # 80 steps
    after = evaluate.elbo(model, many)["elbo"].mean()
    assert after > before + 2.0, (before, after)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs",
    [
        {"estimator": "gumbel_softmax", "temperature": 0.7},
        {"estimator": "reinforce", "baseline": "learned", "baseline_units": (6,)},
    ],
)
def test_save_load_round_trip(tmp_path, kwargs):
    model = tiny_discrete(input_shape=(4, 4, 1), num_latents=2, num_categories=3, beta=0.5,
                          **kwargs)
    model.compile(optimizer="adam")
    x = binary_data(8, (4, 4, 1))
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded) is DiscreteVAE
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(
        loaded.encode(x).distribution.logits_parameter(),
        model.encode(x).distribution.logits_parameter(), atol=1e-6,
    )
    np.testing.assert_allclose(loaded.encode(x).mean(), model.encode(x).mean(), atol=1e-6)
    z = all_codes(2, 3)
    np.testing.assert_allclose(loaded.decode(z).mean(), model.decode(z).mean(), atol=1e-6)
    for name in ("temperature", "baseline_average", "baseline_updates"):
        assert getattr(loaded, name).numpy() == getattr(model, name).numpy()
    if model.baseline_network is not None:
        np.testing.assert_allclose(
            loaded.baseline_network(x), model.baseline_network(x), atol=1e-6
        )
    loaded.fit(x, batch_size=4, epochs=1, verbose=0)


def test_config_round_trip_and_bad_arguments():
    model = tiny_discrete(estimator="reinforce", baseline="none", temperature=2.0)
    clone = DiscreteVAE.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()
    for kwargs, message in [
        ({"estimator": "gumbel"}, "estimator"),
        ({"baseline": "mean"}, "baseline"),
        ({"temperature": 0.0}, "temperature"),
        ({"baseline_decay": 1.0}, "baseline_decay"),
        ({"num_categories": 1}, "num_categories"),
        ({"num_latents": 0}, "num_latents"),
    ]:
        with pytest.raises(ValueError, match=message):
            tiny_discrete(**kwargs)


def test_recipe_builds():
    recipe = recipes.load("mnist_discrete")
    model = recipes.build_model(recipe)
    assert isinstance(model, DiscreteVAE) and model.estimator == "gumbel_softmax"
    assert recipe["data"]["binarize"] == "dynamic"
    switched = recipes.build_model(recipes.load("mnist_discrete", ["model.estimator=reinforce"]))
    assert switched.estimator == "reinforce"
