"""8-bit likelihoods (`categorical_256`, `discretized_logistic_mixture`) against numpy.

Both are distributions over the 256 values k/255: total mass 1 per element at any
parameters, finite log_prob, exact means, finite gradients, bits/dim.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from conftest import assert_same_outputs, tiny_dense
from vae_zoo import heads, objectives

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

K = np.arange(256)
VALUES = (K / 255).astype(np.float32)  # the 8-bit grid as the data pipeline gives it


def _softplus(x):
    return np.logaddexp(0.0, x)


def _eight_bit_data(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n,) + tuple(shape)) / 255).astype(np.float32)


def _per_element_log_probs(dist):
    """log p(k/255) for every k and every element of a head output of event shape (1,).

    Returns `[256, B]`: the grid is a sample axis broadcast against batch `[B]`.
    """
    batch = dist.batch_shape[0]
    x = np.broadcast_to(VALUES[:, None, None], (256, batch, 1))
    return dist.log_prob(x).numpy()


# --------------------------------------------------------------------------- #
# Numpy PixelCNN++ reference (float64)
# --------------------------------------------------------------------------- #


def _np_log_bin(x, loc, scale):
    """log P(bin of x) of one discretized logistic, PixelCNN++ edges, float64 log space.

    Interior: log(F(x + ½/255) − F(x − ½/255)) as a log-diff-exp of the CDFs (left of
    the location) or of the survival functions (right of it); x = 0 takes F(½/255),
    x = 1 takes 1 − F(1 − ½/255).
    """
    upper = (x + 0.5 / 255 - loc) / scale
    lower = (x - 0.5 / 255 - loc) / scale
    cdf_u, cdf_l = stats.logistic.logcdf(upper), stats.logistic.logcdf(lower)
    sf_u, sf_l = stats.logistic.logsf(upper), stats.logistic.logsf(lower)
    with np.errstate(divide="ignore"):
        from_cdf = cdf_u + np.log1p(-np.exp(cdf_l - cdf_u))
        from_sf = sf_l + np.log1p(-np.exp(sf_u - sf_l))
    interior = np.where(lower + upper < 0, from_cdf, from_sf)
    return np.where(x < 0.5 / 255, cdf_u, np.where(x > 1 - 0.5 / 255, sf_l, interior))


def _np_dlm_log_prob(x, logits, loc, scale):
    """Mixture over the last axis of the parameters; x `[...]`, params `[..., K]`."""
    log_weights = logits - special.logsumexp(logits, axis=-1, keepdims=True)
    return special.logsumexp(log_weights + _np_log_bin(x[..., None], loc, scale), axis=-1)


def _dlm_params(logits, loc, raw_scale):
    """Head params `[..., 3K]` from the three `[..., K]` parts (the head's split order)."""
    return np.concatenate([logits, loc, raw_scale], axis=-1).astype(np.float32)


# Extreme settings, one element each: (logits, loc, raw scale) for K = 2.
EXTREME = np.array(
    [
        # tiny scales (σ = floor), locations on a bin, between bins, outside [0, 1]
        [[0, 0], [100 / 255, 100.5 / 255], [-50, -50]],
        [[0, 0], [-0.5, 1.5], [-50, -50]],
        [[0, 0], [-3.0, 10.0], [-50, -50]],
        [[0, 0], [1.7 / 255, 254.2 / 255], [-50, -50]],
        # huge scales, and a tiny one mixed with a huge one
        [[0, 0], [0.5, 0.5], [1e4, 1e4]],
        [[0, 0], [0.3, 0.31], [-50, 1e5]],
        # one component all but switched off
        [[30, -30], [0.2, 0.9], [-6, -2]],
        [[-30, 30], [0.2, 0.9], [-6, -2]],
    ],
    np.float32,
).transpose(0, 2, 1)  # [8, K=2, 3]: per element, per component, (logit, loc, raw scale)


def _extreme_params():
    logits, loc, raw = (EXTREME[..., i] for i in range(3))  # [8, 2] each
    return logits, loc, raw


# --------------------------------------------------------------------------- #
# Shapes, registry, config
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "head, per_element",
    [
        (heads.Categorical256Likelihood(), 256),
        (heads.DiscretizedLogisticMixtureLikelihood(), 15),
        (heads.DiscretizedLogisticMixtureLikelihood(num_components=2), 6),
    ],
    ids=["categorical_256", "logistic_k5", "logistic_k2"],
)
@pytest.mark.parametrize("event_shape", [(5,), (4, 4, 3)])
def test_shapes(head, per_element, event_shape):
    """params_shape = data shape + (k,); batch [B], event = data shape; mean/sample shapes."""
    assert head.params_shape(event_shape) == event_shape + (per_element,)
    params = np.random.default_rng(0).normal(size=(2,) + head.params_shape(event_shape))
    dist = head(tf.constant(params, tf.float32))
    assert dist.batch_shape == [2] and dist.event_shape == list(event_shape)
    assert dist.dtype == tf.float32
    assert dist.log_prob(_eight_bit_data(2, event_shape)).shape == [2]
    assert dist.mean().shape == (2,) + event_shape
    samples = dist.sample(3, seed=[0, 1]).numpy()
    assert samples.shape == (3, 2) + event_shape and samples.dtype == np.float32
    np.testing.assert_allclose(samples * 255, np.round(samples * 255), atol=1e-4)
    assert samples.min() >= 0 and samples.max() <= 1


def test_registry_and_config_round_trip():
    """Both heads build by name / spec; from_config(get_config()) gives the same p(x|z)."""
    cat = heads.LIKELIHOODS.build("categorical_256")
    dlm = heads.LIKELIHOODS.build(
        {"name": "discretized_logistic_mixture", "num_components": 3, "scale_floor": 1e-3}
    )
    assert isinstance(cat, heads.Categorical256Likelihood)
    assert dlm.num_components == 3 and dlm.scale_floor == 1e-3 and dlm.params_per_element == 9
    x = _eight_bit_data(2, (4,))
    for head in (cat, dlm):
        clone = type(head).from_config(head.get_config())
        assert clone.get_config() == head.get_config()
        params = tf.random.stateless_normal((2,) + head.params_shape((4,)), seed=[1, 2])
        np.testing.assert_array_equal(head(params).log_prob(x), clone(params).log_prob(x))


@pytest.mark.parametrize(
    "kwargs", [{"num_components": 0}, {"scale_floor": 0.0}, {"scale_floor": -1.0}]
)
def test_logistic_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        heads.DiscretizedLogisticMixtureLikelihood(**kwargs)


# --------------------------------------------------------------------------- #
# categorical_256
# --------------------------------------------------------------------------- #


def test_categorical_log_prob_mean_and_gradient_match_numpy():
    """log p = log_softmax(l)[k]; mean = Σ softmax(l)·k/255; ∂ log p/∂l = onehot − softmax."""
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(3, 4, 256)).astype(np.float32)
    k = rng.integers(0, 256, (3, 4))
    x = (k / 255).astype(np.float32)
    log_softmax = logits - special.logsumexp(logits, axis=-1, keepdims=True)
    expected = np.take_along_axis(log_softmax, k[..., None], -1)[..., 0].sum(-1)

    logits_t = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits_t)
        dist = heads.Categorical256Likelihood()(logits_t)
        log_prob = dist.log_prob(x)
        total = tf.reduce_sum(log_prob)
    np.testing.assert_allclose(log_prob.numpy(), expected, rtol=1e-5)
    expected_mean = special.softmax(logits, -1) @ (K / 255)
    np.testing.assert_allclose(dist.mean().numpy(), expected_mean, rtol=1e-5)
    onehot = np.eye(256)[k]
    grad = tape.gradient(total, logits_t).numpy()
    np.testing.assert_allclose(grad, onehot - special.softmax(logits, -1), atol=1e-6)


def test_categorical_mass_one_at_extreme_logits():
    """Σ_k exp log p(k/255) = 1 per element, also for logits of ±100 and one-hot-like rows."""
    rng = np.random.default_rng(2)
    logits = np.stack(
        [
            np.zeros(256),
            rng.normal(scale=50.0, size=256),
            np.where(K == 0, 100.0, -100.0),
            np.where(K == 255, 100.0, -100.0),
            np.where(K == 77, 100.0, 0.0),
        ]
    ).astype(np.float32)[:, None, :]  # [5 elements, event (1,), 256]
    log_probs = _per_element_log_probs(heads.Categorical256Likelihood()(logits))
    assert np.isfinite(log_probs).all()
    np.testing.assert_allclose(np.exp(log_probs).sum(0), 1.0, atol=1e-4)


def test_categorical_accepts_every_float32_spelling_of_k_over_255():
    """x = k/255 computed in float32, as k·(1/255) or via float64 all hit bin k."""
    logits = tf.constant(np.arange(256, dtype=np.float32)[None, None] * 0.01)  # [1, 1, 256]
    dist = heads.Categorical256Likelihood()(tf.broadcast_to(logits, [256, 1, 256]))
    expected = dist.log_prob(VALUES[:, None]).numpy()
    spellings = [
        K.astype(np.float32) / np.float32(255),
        K.astype(np.float32) * np.float32(1 / 255),
        (tf.cast(K, tf.float32) * (1.0 / 255.0)).numpy(),
    ]
    for x in spellings:
        np.testing.assert_array_equal(dist.log_prob(x[:, None]).numpy(), expected)
    assert np.isfinite(expected).all()


@pytest.mark.parametrize(
    "head",
    [heads.Categorical256Likelihood(), heads.DiscretizedLogisticMixtureLikelihood(2)],
    ids=["categorical_256", "logistic"],
)
def test_values_off_the_grid_have_zero_probability(head):
    """Off-grid x (0.5/255, −1/255, 2) are outside the support: log_prob −inf."""
    dist = head(tf.zeros((3, 1) + head.params_shape((1,))[1:]))
    x = np.array([[0.5 / 255], [-1 / 255], [2.0]], np.float32)
    assert np.all(dist.log_prob(x).numpy() == -np.inf)


def test_uniform_categorical_is_exactly_8_bits_per_dim():
    """All-zero logits put 1/256 on every value: −log p / (D log 2) = 8 bits/dim."""
    x = _eight_bit_data(3, (4, 4, 3))
    dist = heads.Categorical256Likelihood()(tf.zeros((3, 4, 4, 3, 256)))
    nats = dist.log_prob(x).numpy()
    np.testing.assert_allclose(nats, -48 * np.log(256), rtol=1e-6)
    np.testing.assert_allclose(objectives.bits_per_dim(nats, 48), 8.0, rtol=1e-6)


# --------------------------------------------------------------------------- #
# discretized_logistic_mixture
# --------------------------------------------------------------------------- #


def test_logistic_matches_plain_pixelcnn_formula():
    """At moderate parameters, log p = log Σ π_c (σ(b_c) − σ(a_c)) with PixelCNN++ edges."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 6, 3))
    loc = rng.uniform(-0.2, 1.2, size=(4, 6, 3))
    raw = rng.normal(-2.5, 1.0, size=(4, 6, 3))
    scale = _softplus(raw) + 5e-4
    x = np.array([0, 1, 2, 128, 254, 255]) / 255  # both edges and their neighbours
    x = np.broadcast_to(x, (4, 6))
    sigmoid = special.expit
    plus = sigmoid((x[..., None] + 0.5 / 255 - loc) / scale)
    minus = sigmoid((x[..., None] - 0.5 / 255 - loc) / scale)
    probs = np.where(x[..., None] == 0, plus, np.where(x[..., None] == 1, 1 - minus, plus - minus))
    expected = np.log((special.softmax(logits, -1) * probs).sum(-1)).sum(-1)

    dist = heads.DiscretizedLogisticMixtureLikelihood(3)(_dlm_params(logits, loc, raw))
    np.testing.assert_allclose(dist.log_prob(x.astype(np.float32)).numpy(), expected, rtol=1e-5)


def test_logistic_log_prob_at_extreme_parameters_matches_numpy():
    """Tiny/huge scales and far locations: finite and equal to a float64 log-space reference."""
    logits, loc, raw = _extreme_params()
    scale = _softplus(raw.astype(np.float64)) + 5e-4
    dist = heads.DiscretizedLogisticMixtureLikelihood(2)(_dlm_params(logits, loc, raw)[:, None])
    log_probs = _per_element_log_probs(dist)  # [256, 8]
    assert np.isfinite(log_probs).all()
    expected = _np_dlm_log_prob(
        np.broadcast_to(K[:, None] / 255, (256, 8)), logits.astype(np.float64), loc, scale
    )
    np.testing.assert_allclose(log_probs, expected, rtol=1e-4, atol=1e-4)


def test_logistic_mass_one_and_exact_mean():
    """Σ_k p(k/255) = 1 per element and mean() = Σ_k (k/255) p(k/255), extreme parameters too."""
    logits, loc, raw = _extreme_params()
    rng = np.random.default_rng(4)
    moderate = (rng.normal(size=(6, 2)), rng.uniform(-0.5, 1.5, (6, 2)), rng.normal(-3, 2, (6, 2)))
    logits, loc, raw = (np.concatenate([a, b]) for a, b in zip((logits, loc, raw), moderate))
    dist = heads.DiscretizedLogisticMixtureLikelihood(2)(_dlm_params(logits, loc, raw)[:, None])
    probs = np.exp(_per_element_log_probs(dist).astype(np.float64))  # [256, 14]
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    scale = _softplus(raw) + 5e-4
    grid = np.broadcast_to(K[:, None] / 255, (256, 14))
    expected_probs = np.exp(_np_dlm_log_prob(grid, logits, loc, scale))
    np.testing.assert_allclose(dist.mean().numpy()[:, 0], (K / 255) @ expected_probs, atol=1e-5)


def test_logistic_gradients_are_finite():
    """∂ Σ log p / ∂ params is finite at every extreme setting and every value of x."""
    logits, loc, raw = _extreme_params()
    params = tf.constant(_dlm_params(logits, loc, raw)[:, None])  # [8, 1, 6]
    x = np.broadcast_to(VALUES[:, None, None], (256, 8, 1))
    with tf.GradientTape() as tape:
        tape.watch(params)
        total = tf.reduce_sum(heads.DiscretizedLogisticMixtureLikelihood(2)(params).log_prob(x))
    grad = tape.gradient(total, params).numpy()
    assert np.isfinite(grad).all()
    assert np.abs(grad).sum() > 0


def test_logistic_samples_follow_the_pmf():
    """Sample frequencies and mean match p(k/255) (n draws of one element, 4 std. errors)."""
    n = 20000
    params = _dlm_params(np.array([[0.0, 1.0]]), np.array([[0.02, 0.98]]), np.array([[-5.0, -4.0]]))
    dist = heads.DiscretizedLogisticMixtureLikelihood(2)(params[:, None])  # batch [1], event [1]
    samples = dist.sample(n, seed=[3, 4]).numpy().ravel()
    counts = np.bincount(np.round(samples * 255).astype(int), minlength=256)
    probs = np.exp(_per_element_log_probs(dist)[:, 0])
    assert np.all(np.abs(counts - n * probs) <= 4 * np.sqrt(n * probs * (1 - probs)) + 1)
    mean = dist.mean().numpy().ravel()[0]
    assert abs(samples.mean() - mean) <= 4 * samples.std() / np.sqrt(n)


# --------------------------------------------------------------------------- #
# End to end
# --------------------------------------------------------------------------- #


@pytest.mark.slow
@pytest.mark.parametrize(
    "likelihood",
    ["categorical_256", {"name": "discretized_logistic_mixture", "num_components": 3}],
    ids=["categorical_256", "logistic"],
)
def test_dense_vae_trains_and_saves(tmp_path, likelihood):
    """DenseVAE on 8-bit data: finite ELBO, 2 epochs of fit, identical after save/load."""
    model = tiny_dense(input_shape=(4, 4, 1), likelihood=likelihood)
    x = _eight_bit_data(8, (4, 4, 1))
    assert np.isfinite(model.elbo(x, seed=0)["elbo"].numpy()).all()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    reconstruction = model.reconstruct(x).numpy()
    assert reconstruction.min() >= 0 and reconstruction.max() <= 1
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_config() == model.get_config()
    assert_same_outputs(model, loaded, x)
