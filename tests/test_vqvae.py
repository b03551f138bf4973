"""VQ-VAE: quantization, straight-through and commitment gradients, the EMA codebook,
the bound log p(x|k) + log p(k), the autoregressive categorical prior, saving.

The shared family checks (shapes, eager against compiled, a fit step, round trips,
export) run from `tests/test_matrix.py` and `tests/test_export.py`. Every expected
value here is computed in numpy from the model's raw networks and state.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from vae_zoo import evaluate
from vae_zoo.heads import AutoregressiveCategoricalPrior
from vae_zoo.models import VQVAE

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

K, D = 4, 2  # codes, code size; 8×8 images, stride 2: a 4×4 code map
PRIOR = {"name": "autoregressive_categorical", "filters": 4, "num_layers": 1}


def tiny(**kwargs):
    arguments = dict(input_shape=(8, 8, 1), num_embeddings=K, embedding_dim=D, filters=(4,),
                     kernel_sizes=(3,), strides=(2,), prior=PRIOR, seed=0)
    return VQVAE(**{**arguments, **kwargs})


def binary_images(n=4, seed=0):
    return (np.random.default_rng(seed).random((n, 8, 8, 1)) < 0.5).astype("float32")


def nearest_codes(z_e, codebook):
    """Brute force: the index of the closest code of every vector, `[...]`."""
    distances = ((np.asarray(z_e)[..., None, :] - np.asarray(codebook)) ** 2).sum(-1)
    return distances.argmin(-1)


def randomize(layer, seed):
    """Non-zero random weights everywhere (the prior's output layer starts at zero)."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(rng.normal(0.0, 0.5, w.shape).astype("float32"))


def log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def model():
    return tiny()


def test_quantization_picks_the_nearest_code(model):
    rng = np.random.default_rng(1)
    z_e = rng.normal(size=(3, 4, 4, D)).astype("float32")
    codebook = model.quantizer.codebook.numpy()
    np.testing.assert_array_equal(model.quantizer.nearest(z_e), nearest_codes(z_e, codebook))
    # encode: q(k|x) is one-hot on those codes, log q = 0, no spread. The codes are exact;
    # the probabilities go through a softmax, whose exp(0) may round to 1 - 2^-24 in a
    # CPU's vectorized code (AVX2 does): within a few ulps of the exact values.
    x = binary_images()
    q = model.encode(x)
    expected = nearest_codes(model.encoder(x).numpy(), codebook)  # [4, 4, 4]
    assert q.batch_shape == [4] and tuple(q.event_shape) == (4, 4, K)
    np.testing.assert_array_equal(q.mode().numpy().argmax(-1), expected)
    np.testing.assert_allclose(q.mean(), np.eye(K)[expected], rtol=0, atol=1e-6)
    np.testing.assert_allclose(q.log_prob(q.sample(seed=(0, 1))), np.zeros(4), atol=1e-4)
    np.testing.assert_allclose(q.stddev(), 0.0, atol=1e-3)


def test_straight_through_and_commitment_gradients_reach_the_encoder():
    """The encoder's gradient of the training surrogate is the decoder's gradient at
    z_q, copied to z_e, plus the commitment term's 2c(z_e − z_q), pulled back through
    the encoder (the prior's term has no path to it)."""
    model = tiny(commitment_cost=0.7)
    x = binary_images()
    codebook = model.quantizer.codebook.numpy()
    z_e = model.encoder(x).numpy()
    z_q = tf.constant(codebook[nearest_codes(z_e, codebook)])
    with tf.GradientTape() as tape:  # d log p(x|z_q) / d z_q, from the decoder alone
        tape.watch(z_q)
        log_px = tf.reduce_sum(model.likelihood(model.decoder(z_q)).log_prob(x))
    decoder_gradient = tape.gradient(log_px, z_q).numpy()
    upstream = -decoder_gradient + 0.7 * 2.0 * (z_e - z_q.numpy())  # d surrogate / d z_e
    encoder_weights = model.encoder.trainable_variables
    with tf.GradientTape() as tape:
        pulled_back = tf.reduce_sum(model.encoder(x) * upstream)
    expected = tape.gradient(pulled_back, encoder_weights)
    with tf.GradientTape() as tape:
        surrogate = tf.reduce_sum(model.compute_terms((x,), training=False)["surrogate"])
    got = tape.gradient(surrogate, encoder_weights)
    assert np.abs(decoder_gradient).max() > 0
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def ema_reference(z_e, codes, size, total, decay, epsilon):
    """The paper's EMA step and Laplace smoothing, in numpy (float64)."""
    flat_z, flat_k = z_e.reshape(-1, D).astype("float64"), codes.reshape(-1)
    counts = np.array([(flat_k == k).sum() for k in range(K)], "float64")
    sums = np.stack([flat_z[flat_k == k].sum(0) for k in range(K)])
    size = decay * size + (1 - decay) * counts
    total = decay * total + (1 - decay) * sums
    n = size.sum()
    smoothed = (size + epsilon) / (n + K * epsilon) * n
    return size, total, total / smoothed[:, None]


def test_one_ema_update_matches_the_papers_formulas():
    model = tiny(decay=0.9, epsilon=0.1)
    x = binary_images(8)
    before = {w.name: w.numpy() for w in model.quantizer.weights}
    np.testing.assert_array_equal(before["cluster_size"], np.ones(K))  # e = m / N at start
    np.testing.assert_array_equal(before["embedding_sum"], before["codebook"])
    model.compute_terms((x,), training=False)  # evaluation: no update
    for w in model.quantizer.weights:
        np.testing.assert_array_equal(w.numpy(), before[w.name])
    z_e = model.encoder(x).numpy()
    codes = nearest_codes(z_e, before["codebook"])
    size, total, codebook = ema_reference(z_e, codes, before["cluster_size"],
                                          before["embedding_sum"], 0.9, 0.1)
    model.compute_terms((x,), training=True)
    np.testing.assert_allclose(model.quantizer.cluster_size.numpy(), size, rtol=1e-5)
    np.testing.assert_allclose(model.quantizer.embedding_sum.numpy(), total, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.quantizer.codebook.numpy(), codebook, rtol=1e-5, atol=1e-6)


def test_dead_codes_restart_at_encoder_outputs():
    """A code no vector chose falls to N = γ < threshold and restarts at an encoder
    output of the batch (m = z, N = 1); the used ones follow the EMA."""
    model = tiny(decay=0.9, epsilon=0.1, dead_code_threshold=0.95)
    far = model.quantizer.codebook.numpy()
    far[K - 1] = 100.0  # nobody's nearest code
    for w in (model.quantizer.codebook, model.quantizer.embedding_sum):
        w.assign(far)
    x = binary_images(8)
    z_e = model.encoder(x).numpy()
    codes = nearest_codes(z_e, far)
    assert (codes != K - 1).all()
    size, total, _ = ema_reference(z_e, codes, np.ones(K), far, 0.9, 0.1)
    model.compute_terms((x,), training=True)
    got_size, got_total = model.quantizer.cluster_size.numpy(), model.quantizer.embedding_sum.numpy()
    dead = size < 0.95
    assert dead[K - 1] and dead.sum() < K
    np.testing.assert_allclose(got_size[~dead], size[~dead], rtol=1e-5)
    np.testing.assert_allclose(got_total[~dead], total[~dead], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got_size[dead], 1.0)
    flat = z_e.reshape(-1, D)
    for row in got_total[dead]:
        assert np.isclose(flat, row, atol=1e-6).all(-1).any()  # one of the batch's z_e
    n = got_size.sum()
    smoothed = (got_size + 0.1) / (n + K * 0.1) * n
    np.testing.assert_allclose(model.quantizer.codebook.numpy(), got_total / smoothed[:, None],
                               rtol=1e-5, atol=1e-6)


def test_ema_updates_once_per_compiled_step_and_never_in_evaluation():
    """Σ_k N_k after t updates is M + (K − M) γ^t (M vectors per batch) whatever the
    codes: 8 steps of XLA-compiled training, 4 steps per execution, make 8 updates;
    `evaluate` makes none."""
    model = tiny(decay=0.9)
    model.compile(keras.optimizers.SGD(1e-3), jit_compile=True, steps_per_execution=4)
    x = binary_images(32)
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    per_batch = 4 * 4 * 4  # 4 examples × 16 positions
    total = model.quantizer.cluster_size.numpy().sum()
    np.testing.assert_allclose(total, per_batch + (K - per_batch) * 0.9**8, rtol=1e-5)
    state = [w.numpy() for w in model.quantizer.weights]
    model.compile(keras.optimizers.SGD(1e-3), jit_compile=False, steps_per_execution=2)
    logs = model.evaluate(x, batch_size=4, verbose=0, return_dict=True)
    for w, value in zip(model.quantizer.weights, state):
        np.testing.assert_array_equal(w.numpy(), value)
    assert {"commitment", "perplexity"} <= set(logs) and 1.0 <= logs["perplexity"] <= K


def test_bound_is_log_likelihood_of_the_codes_plus_their_prior_log_probability():
    model = tiny(likelihood="bernoulli")
    randomize(model.prior, seed=2)
    x = binary_images(5)
    codebook = model.quantizer.codebook.numpy()
    codes = nearest_codes(model.encoder(x).numpy(), codebook)  # [5, 4, 4]
    logits = model.decoder(codebook[codes]).numpy().reshape(5, -1)  # Bernoulli logits
    flat_x = x.reshape(5, -1)
    log_px = (flat_x * logits - np.logaddexp(0.0, logits)).sum(-1)
    one_hot = np.eye(K, dtype="float32")[codes]
    prior_logits = model.prior.network(one_hot).numpy().astype("float64")  # [5, 4, 4, K]
    log_prior = (log_softmax(prior_logits) * one_hot).sum((1, 2, 3))
    expected = log_px + log_prior
    terms = model.elbo(x)
    np.testing.assert_allclose(terms["reconstruction"], log_px, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], -log_prior, rtol=1e-5)
    np.testing.assert_allclose(terms["elbo"], expected, rtol=1e-5)
    weights = model.log_importance_weights(x, 3).numpy()
    np.testing.assert_allclose(weights, np.tile(expected, (3, 1)), rtol=1e-5)
    np.testing.assert_allclose(evaluate.log_likelihood(model, x, num_samples=7), expected,
                               rtol=1e-5)


def test_uniform_prior_charges_log_K_per_position():
    model = tiny(prior="uniform_categorical")
    terms = model.elbo(binary_images())
    np.testing.assert_allclose(terms["kl"], np.full(4, 16 * np.log(K)), rtol=1e-6)


def test_code_prior_is_normalized_and_samples_follow_it():
    """On a 2×2 map of 3 codes (81 maps): the probabilities of every map sum to 1
    (each conditional sees only earlier positions), and ancestral samples match them."""
    prior = AutoregressiveCategoricalPrior((2, 2, 3), filters=4, num_layers=2)
    randomize(prior, seed=3)
    p = prior.distribution()
    maps = np.array(list(itertools.product(range(3), repeat=4))).reshape(-1, 2, 2)
    probs = np.exp(p.log_prob(np.eye(3, dtype="float32")[maps]).numpy().astype("float64"))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
    samples = p.sample(4000, seed=(4, 5)).numpy()  # [4000, 2, 2, 3]
    assert set(np.unique(samples)) == {0.0, 1.0} and (samples.sum(-1) == 1).all()
    index = (samples.argmax(-1).reshape(-1, 4) * 3 ** np.arange(3, -1, -1)).sum(-1)
    frequencies = np.bincount(index, minlength=81) / 4000
    np.testing.assert_allclose(frequencies, probs, atol=0.03)


def test_samples_decode_prior_codes(model):
    images = model.sample(5, seed=0).numpy()
    assert images.shape == (5, 8, 8, 1)
    assert images.min() >= 0.0 and images.max() <= 1.0  # Bernoulli means
    np.testing.assert_array_equal(images, model.sample(5, seed=0))


def test_save_load_keeps_the_codebook_and_its_moving_averages(tmp_path):
    model = tiny(decay=0.5, dead_code_threshold=0.1)
    x = binary_images()
    for _ in range(2):
        model.compute_terms((x,), training=True)
    path = tmp_path / "vqvae.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(model.quantizer.weights, loaded.quantizer.weights):
        assert a.name == b.name
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(model.quantizer.cluster_size.numpy(), 1.0)  # state was moved
    np.testing.assert_allclose(loaded.elbo(x)["elbo"], model.elbo(x)["elbo"], rtol=1e-6)
    assert loaded.get_config() == model.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_embeddings=1), "num_embeddings must be >= 2, got 1"),
        (dict(embedding_dim=0), "embedding_dim must be >= 1, got 0"),
        (dict(commitment_cost=-1.0), "commitment_cost must be >= 0, got -1.0"),
        (dict(decay=1.0), r"decay must be in \[0, 1\), got 1.0"),
        (dict(epsilon=0.0), "epsilon must be > 0, got 0.0"),
        (dict(dead_code_threshold=-0.5), "dead_code_threshold must be >= 0, got -0.5"),
        (dict(prior="standard_normal"), "prior must be one of .* got 'standard_normal'"),
        (dict(prior={"name": "autoregressive_categorical", "kernel_size": 2}),
         "kernel_size must be odd, got 2"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        tiny(**kwargs)
