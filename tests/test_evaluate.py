"""Tests for `vae_zoo.evaluate`: importance-weighted log-likelihood, ELBO and summaries."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from conftest import xla_compiled
from vae_zoo import evaluate, objectives
from vae_zoo.models import DenseVAE

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

N = 1024  # examples for the statistical properties: the model is tiny, this is cheap


def _binary_data(n, seed=0):
    """Two noisy prototypes in {0, 1}^6, so a 2-d latent has something to explain."""
    rng = np.random.default_rng(seed)
    prototypes = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], np.float32)
    x = prototypes[rng.integers(0, 2, n)]
    return np.abs(x - (rng.random(x.shape) < 0.1)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return _binary_data(N)


@pytest.fixture(scope="module")
def model(data):
    """A DenseVAE on (6,) binary data, trained a few steps."""
    keras.utils.set_random_seed(0)
    model = DenseVAE(input_shape=(6,), latent_dim=2, hidden_units=(8,), seed=0)
    model.compile(optimizer="adam")
    model.fit(data[:256], epochs=1, batch_size=32, verbose=0)
    return model


@pytest.mark.slow
def test_log_likelihood_shape_and_dtype(model, data):
    """log_likelihood returns a finite float numpy array of shape [N], each value ≤ 0."""
    ll = evaluate.log_likelihood(model, data[:10], num_samples=5)
    assert isinstance(ll, np.ndarray)
    assert ll.shape == (10,)
    assert np.issubdtype(ll.dtype, np.floating)
    assert np.isfinite(ll).all()
    assert (ll <= 0).all()  # a lower bound on log P(x) for binary x under a Bernoulli model


def test_iw_bound_at_least_elbo(model, data):
    """Mean IW bound (K = 100) ≥ mean ELBO (averaged over 3 seeds)."""
    elbo = np.mean([evaluate.elbo(model, data, seed=s)["elbo"].mean() for s in range(3)])
    iw = evaluate.log_likelihood(model, data, num_samples=100).mean()
    assert iw > elbo


def test_iw_bound_increases_with_k(model, data):
    """Mean IW bound over N examples and 2 seeds: K = 1 < K = 10 < K = 100."""
    means = [
        np.mean([evaluate.log_likelihood(model, data, num_samples=k, seed=s).mean() for s in (0, 1)])
        for k in (1, 10, 100)
    ]
    assert means[0] < means[1] < means[2], means


def test_k1_is_unbiased_elbo(model, data):
    """K = 1 is a one-sample ELBO estimate: its paired difference with the ELBO is ~0 (4 SE)."""
    diff = evaluate.log_likelihood(model, data, num_samples=1, seed=1) - evaluate.elbo(
        model, data, seed=2
    )["elbo"]
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff))


def test_chunking_and_reproducibility(model, data):
    """Same seed and chunking: identical; chunk_size=50 vs one chunk at K=1000: means within 0.05."""
    x = data[:64]
    chunked = evaluate.log_likelihood(model, x, num_samples=1000, chunk_size=50, seed=3)
    again = evaluate.log_likelihood(model, x, num_samples=1000, chunk_size=50, seed=3)
    whole = evaluate.log_likelihood(model, x, num_samples=1000, seed=3)
    np.testing.assert_array_equal(chunked, again)
    assert abs(chunked.mean() - whole.mean()) < 0.05
    assert np.isfinite(whole).all() and whole.shape == (64,)
    other_seed = evaluate.log_likelihood(model, x, num_samples=1000, chunk_size=50, seed=4)
    assert not np.array_equal(chunked, other_seed)


def test_one_graph_per_batch_gives_the_python_loops_numbers(model, data):
    """A batch's chunks run in one `tf.while_loop` (one call per batch): the same bound
    as the chunk-by-chunk Python loop (same seeds, same draws), and one trace for
    every K, chunk size and seed at one batch shape."""
    x = data[:21]
    kwargs = dict(batch_size=7, chunk_size=30, seed=5)
    graph = evaluate.log_likelihood(model, x, num_samples=100, **kwargs)
    loop = objectives.iw_log_likelihood(model.log_importance_weights, x, 100,
                                        model.likelihood_params_per_example, **kwargs)
    np.testing.assert_allclose(graph, loop, rtol=1e-5, atol=1e-5)
    traced = model.__dict__["_vae_zoo_eval_fns"][("iw_batch", False)]
    before = traced.experimental_get_tracing_count()
    evaluate.log_likelihood(model, x, num_samples=40, batch_size=7, chunk_size=9, seed=6)
    assert traced.experimental_get_tracing_count() == before
    # One chunk in memory at a time: the loop does not start the next chunk early.
    graph = traced.get_concrete_function(
        tf.constant(x[:7]), None, *[tf.constant(0)] * 4).graph
    loops = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    assert loops and all(op.get_attr("parallel_iterations") == 1 for op in loops)
    # The Bernoulli likelihood of each chunk is one XLA-compiled function.
    assert xla_compiled(graph.as_graph_def())


def test_batch_size_smaller_than_data(model, data):
    """Several batches (batch_size=3 on 10 examples) still return one value per example."""
    ll = evaluate.log_likelihood(model, data[:10], num_samples=20, batch_size=3, chunk_size=7)
    assert ll.shape == (10,) and np.isfinite(ll).all()
    terms = evaluate.elbo(model, data[:10], batch_size=3)
    assert all(v.shape == (10,) for v in terms.values())


def test_uint8_input_is_scaled(model, data):
    """uint8 data in {0, 255} gives the same result as float data in {0, 1}."""
    x = data[:8]
    as_uint8 = (x * 255).astype(np.uint8)
    np.testing.assert_allclose(
        evaluate.log_likelihood(model, as_uint8, num_samples=10, seed=5),
        evaluate.log_likelihood(model, x, num_samples=10, seed=5),
    )


@pytest.mark.parametrize(
    "x", [np.zeros((4, 5), np.float32), np.zeros((4, 6, 1), np.float32), np.zeros(6, np.float32)]
)
def test_wrong_shape_raises(model, x):
    """Inputs whose per-example shape is not (6,) raise ValueError."""
    with pytest.raises(ValueError, match="shape"):
        evaluate.log_likelihood(model, x, num_samples=2)
    with pytest.raises(ValueError, match="shape"):
        evaluate.elbo(model, x)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_raises(model, bad):
    """NaN or infinite values in the data raise ValueError."""
    x = np.zeros((4, 6), np.float32)
    x[2, 3] = bad
    with pytest.raises(ValueError, match="NaN"):
        evaluate.log_likelihood(model, x, num_samples=2)
    with pytest.raises(ValueError, match="NaN"):
        evaluate.elbo(model, x)


def test_num_samples_must_be_positive(model, data):
    """num_samples < 1 raises ValueError."""
    with pytest.raises(ValueError, match="num_samples"):
        evaluate.log_likelihood(model, data[:4], num_samples=0)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"num_samples": 2.5}, TypeError, "num_samples must be an integer, got 2.5"),
    ({"num_samples": "10"}, TypeError, "num_samples must be an integer, got '10'"),
    ({"num_samples": True}, TypeError, "num_samples must be an integer, got True"),
    ({"batch_size": -5}, ValueError, "batch_size must be >= 1, got -5"),
    ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1, got 0"),
])
def test_bad_arguments_are_one_line_errors(model, data, kwargs, error, message):
    """Counts that are not positive integers are refused, naming the argument and value."""
    with pytest.raises(error, match=f"^{message}$"):
        evaluate.log_likelihood(model, data[:4], **{"num_samples": 2, **kwargs})
    if "batch_size" in kwargs:
        for routine in (evaluate.elbo, evaluate.posterior_statistics):
            with pytest.raises(error, match=f"^{message}$"):
                routine(model, data[:4], **kwargs)


def test_summarize_keys_and_consistency(model, data):
    """summarize returns every key as a finite number, consistent with its parts."""
    summary = evaluate.summarize(model, data[:32], num_samples=50)
    assert set(summary) == {
        "examples", "num_samples", "elbo", "reconstruction", "kl", "log_likelihood",
        "bits_per_dim", "latent_dim", "active_units", "kl_per_dim",
    }
    assert summary["examples"] == 32 and summary["num_samples"] == 50
    kl_per_dim = summary.pop("kl_per_dim")
    assert len(kl_per_dim) == summary["latent_dim"] and min(kl_per_dim) >= 0
    for key, value in summary.items():
        assert isinstance(value, (int, float)) and math.isfinite(value), key
    assert 0 <= summary["active_units"] <= summary["latent_dim"]
    assert summary["elbo"] == pytest.approx(summary["reconstruction"] - summary["kl"], abs=1e-4)
    assert summary["kl"] >= 0
    assert summary["bits_per_dim"] == pytest.approx(
        -summary["log_likelihood"] / (6 * math.log(2)), rel=1e-5
    )


# --------------------------------------------------------------------------- #
# An analytic toy: linear-Gaussian VAE whose encoder is the exact posterior
# --------------------------------------------------------------------------- #


def test_iw_bound_exact_with_true_posterior():
    """p(z)=N(0,I), p(x|z)=N(Wz+b, σ²I), q = exact posterior ⇒ every log-weight is log p(x),
    so the IW estimate equals scipy's multivariate_normal(b, WWᵀ+σ²I).logpdf(x) for any K."""
    sigma = 0.5
    W = np.array([[0.6, 0.0], [0.6, 0.0], [0.0, 1.0], [0.0, -0.5]])  # orthogonal columns
    b = np.array([0.1, -0.2, 0.3, 0.0])
    # Exact posterior: precision M = I + WᵀW/σ² (diagonal), mean M⁻¹Wᵀ(x − b)/σ².
    m_inv = np.diag(1.0 / np.diag(np.eye(2) + W.T @ W / sigma**2))
    gain = W @ m_inv / sigma**2  # [4, 2]: μ = (x − b) @ gain
    floor = 1e-4
    raw_scale = np.log(np.expm1(np.sqrt(np.diag(m_inv)) - floor))

    keras.utils.set_random_seed(1)
    model = DenseVAE(
        input_shape=(4,), latent_dim=2, hidden_units=(),
        likelihood={"name": "gaussian", "scale": sigma}, seed=0,
    )
    encoder_dense = [layer for layer in model.encoder.layers if isinstance(layer, keras.layers.Dense)]
    decoder_dense = [layer for layer in model.decoder.layers if isinstance(layer, keras.layers.Dense)]
    assert len(encoder_dense) == len(decoder_dense) == 1
    encoder_dense[0].set_weights([
        np.concatenate([gain, np.zeros((4, 2))], axis=1).astype(np.float32),
        np.concatenate([-b @ gain, raw_scale]).astype(np.float32),
    ])
    decoder_dense[0].set_weights([W.T.astype(np.float32), b.astype(np.float32)])

    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    expected = stats.multivariate_normal(b, W @ W.T + sigma**2 * np.eye(4)).logpdf(x)
    for k in (1, 10):
        np.testing.assert_allclose(
            evaluate.log_likelihood(model, x, num_samples=k), expected, rtol=1e-4, atol=1e-4
        )


def test_k5000_in_bounded_chunks(model, data):
    """K = 5000 importance samples run in chunks; the bound stays above K = 10's."""
    x = data[:20]
    big = evaluate.log_likelihood(model, x, num_samples=5000, chunk_size=512)
    small = evaluate.log_likelihood(model, x, num_samples=10)
    assert big.shape == (20,) and np.isfinite(big).all()
    assert big.mean() >= small.mean() - 0.05
