"""Tests for `vae_zoo.models.GaussianMixture`: EM recovery, exact log p(x) against scipy,
monotone EM, the M step as written in docs/theory.md, sampling, saving, errors."""

import itertools

import numpy as np
import pytest
from scipy import special, stats

from vae_zoo.models import GaussianMixture

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

# Two well-separated, differently shaped 2-D Gaussians with known parameters.
ALPHA = np.array([0.3, 0.7])
MU = np.array([[-2.0, 0.0], [3.0, 1.0]])
SIGMA = np.array([[[1.0, 0.6], [0.6, 1.0]], [[0.5, -0.2], [-0.2, 0.3]]])
N = 2000


def _toy(n=N, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.choice(2, size=n, p=ALPHA)  # [n]
    noise = rng.standard_normal((n, 2))
    return MU[z] + np.einsum("nij,nj->ni", np.linalg.cholesky(SIGMA)[z], noise)  # [n, 2]


@pytest.fixture(scope="module")
def x():
    return _toy()


@pytest.fixture(scope="module", params=["full", "diagonal"])
def fitted(request, x):
    return GaussianMixture(2, covariance_type=request.param, seed=0).fit(x)


def _full_covariances(gmm):
    """Σ as `[K, D, D]` whatever the covariance type."""
    if gmm.covariance_type == "full":
        return gmm.covariances
    return np.stack([np.diag(v) for v in gmm.covariances])


def _scipy_log_joint(gmm, x):
    """log α_k + log N(x_i; μ_k, Σ_k) `[N, K]`, independently with scipy."""
    sigma = _full_covariances(gmm)
    return np.stack(
        [
            np.log(gmm.weights[k]) + stats.multivariate_normal(gmm.means[k], sigma[k]).logpdf(x)
            for k in range(gmm.num_components)
        ],
        axis=1,
    )


def _match(estimated, truth):
    """The permutation of estimated components closest to the true means."""
    perms = list(itertools.permutations(range(len(truth))))
    return min(perms, key=lambda p: np.abs(estimated[list(p)] - truth).sum())


# ------------------------------------------------------------------ recovery


def test_em_recovers_known_parameters(x):
    """Full covariance: α, μ, Σ within sampling tolerance of the truth (up to permutation)."""
    gmm = GaussianMixture(2, covariance_type="full", seed=0).fit(x)
    p = list(_match(gmm.means, MU))
    np.testing.assert_allclose(gmm.means[p], MU, atol=0.1)
    np.testing.assert_allclose(gmm.weights[p], ALPHA, atol=0.03)
    np.testing.assert_allclose(gmm.covariances[p], SIGMA, atol=0.1)
    assert gmm.converged


def test_diagonal_recovers_means_and_marginal_variances(x):
    """Diagonal covariance: μ and the diagonals of Σ (the off-diagonals are dropped)."""
    gmm = GaussianMixture(2, covariance_type="diagonal", seed=0).fit(x)
    p = list(_match(gmm.means, MU))
    assert gmm.covariances.shape == (2, 2)
    np.testing.assert_allclose(gmm.means[p], MU, atol=0.1)
    np.testing.assert_allclose(gmm.covariances[p], np.diagonal(SIGMA, axis1=1, axis2=2), atol=0.1)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_both_inits_and_seed_reproducible(x, init):
    a = GaussianMixture(2, init=init, seed=3).fit(x)
    b = GaussianMixture(2, init=init, seed=3).fit(x)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_allclose(np.sort(a.means[:, 0]), np.sort(MU[:, 0]), atol=0.1)


def test_one_component_is_the_sample_mean_and_covariance(x):
    """K = 1: μ is the sample mean, Σ the (1/N) sample covariance plus reg_covar·I."""
    gmm = GaussianMixture(1, reg_covar=1e-3).fit(x)
    np.testing.assert_allclose(gmm.weights, [1.0])
    np.testing.assert_allclose(gmm.means[0], x.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(
        gmm.covariances[0], np.cov(x.T, bias=True) + 1e-3 * np.eye(2), atol=1e-12
    )


# ------------------------------------------------------------ EM as written


def test_log_likelihood_history_is_monotone(fitted, x):
    """Non-decreasing; the last entry is the final parameters' mean log p(x)."""
    history = np.asarray(fitted.log_likelihood_history)
    assert len(history) == fitted.n_iter + 1 >= 2
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))
    np.testing.assert_allclose(history[-1], fitted.log_prob(x).mean(), rtol=1e-12)


def test_monotone_from_a_poor_start():
    """Overlapping components, random init, many iterations: still monotone."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (150, 3)), rng.normal(0.8, 1.5, (150, 3))])
    gmm = GaussianMixture(4, init="random", max_iter=60, tol=0.0, seed=1).fit(x)
    history = np.asarray(gmm.log_likelihood_history)
    assert gmm.n_iter == 60 and not gmm.converged
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))


@pytest.mark.parametrize("covariance_type", ["full", "diagonal"])
def test_one_em_iteration_is_theory_e_and_m_step(x, covariance_type):
    """Iteration t+1 = docs/theory.md's E step (scipy) then M step (numpy) on iteration t."""
    kwargs = dict(covariance_type=covariance_type, tol=0.0, init="random", seed=2)
    before = GaussianMixture(2, max_iter=2, **kwargs).fit(x)
    after = GaussianMixture(2, max_iter=3, **kwargs).fit(x)
    log_joint = _scipy_log_joint(before, x)
    gamma = np.exp(log_joint - special.logsumexp(log_joint, axis=1, keepdims=True))  # [N, K]
    n_k = gamma.sum(axis=0)
    alpha = n_k / len(x)
    mu = gamma.T @ x / n_k[:, None]
    sigma = np.stack(
        [(gamma[:, k, None] * (x - mu[k])).T @ (x - mu[k]) / n_k[k] for k in range(2)]
    ) + before.reg_covar * np.eye(2)
    if covariance_type == "diagonal":
        sigma = np.diagonal(sigma, axis1=1, axis2=2)
    np.testing.assert_allclose(after.weights, alpha, rtol=1e-9)
    np.testing.assert_allclose(after.means, mu, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(after.covariances, sigma, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------- exact log p(x)


def test_log_prob_matches_scipy(fitted, x):
    """log p(x) = logsumexp_k [log α_k + log N(x; μ_k, Σ_k)] with scipy.stats."""
    expected = special.logsumexp(_scipy_log_joint(fitted, x[:200]), axis=1)
    log_px = fitted.log_prob(x[:200])
    assert isinstance(log_px, np.ndarray) and log_px.shape == (200,)
    np.testing.assert_allclose(log_px, expected, rtol=1e-10, atol=1e-10)


def test_distribution_agrees_with_log_prob(fitted, x):
    p = fitted.distribution()
    assert p.batch_shape == [] and p.event_shape == [2]
    np.testing.assert_allclose(p.log_prob(x[:200]).numpy(), fitted.log_prob(x[:200]), atol=1e-10)


def test_responsibilities_match_scipy_and_sum_to_one(fitted, x):
    log_joint = _scipy_log_joint(fitted, x[:200])
    expected = np.exp(log_joint - special.logsumexp(log_joint, axis=1, keepdims=True))
    gamma = fitted.responsibilities(x[:200])
    assert gamma.shape == (200, 2)
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(gamma, expected, atol=1e-10)
    np.testing.assert_array_equal(fitted.predict(x[:200]), expected.argmax(axis=1))


def test_bic_counts_parameters(fitted, x):
    d, k = 2, 2
    params = (k - 1) + k * d + (k * d * (d + 1) // 2 if fitted.covariance_type == "full" else k * d)
    assert fitted.num_parameters() == params
    expected = -2 * fitted.log_prob(x).sum() + params * np.log(len(x))
    assert fitted.bic(x) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------ shapes, sampling


def test_inputs_of_any_shape_are_flattened():
    """[N, 2, 3] examples: a 6-d density; samples come back as [n, 2, 3]; uint8 is /255."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 2, 3)).astype(np.uint8)
    gmm = GaussianMixture(2, covariance_type="diagonal", seed=0).fit(images)
    assert gmm.data_shape == (2, 3) and gmm.means.shape == (2, 6)
    assert gmm.means.max() <= 1.0
    np.testing.assert_allclose(
        gmm.log_prob(images), gmm.log_prob(images.reshape(60, 6) / 255.0), atol=1e-12
    )
    assert gmm.sample(5, seed=0).shape == (5, 2, 3)


def test_sample_moments_and_seed(fitted):
    a = fitted.sample(4000, seed=1)
    np.testing.assert_array_equal(a, fitted.sample(4000, seed=1))
    assert a.shape == (4000, 2)
    np.testing.assert_allclose(a.mean(axis=0), fitted.weights @ fitted.means, atol=0.1)


# ------------------------------------------------------------------- saving


def test_save_load_round_trip(fitted, x, tmp_path):
    path = tmp_path / "gmm.npz"
    fitted.save(path)
    same = GaussianMixture.load(path)
    assert same.get_config() == fitted.get_config()
    assert same.data_shape == fitted.data_shape
    assert same.log_likelihood_history == fitted.log_likelihood_history
    assert (same.n_iter, same.converged) == (fitted.n_iter, fitted.converged)
    np.testing.assert_array_equal(same.covariances, fitted.covariances)
    np.testing.assert_array_equal(same.log_prob(x[:50]), fitted.log_prob(x[:50]))
    np.testing.assert_array_equal(same.sample(3, seed=0), fitted.sample(3, seed=0))


def test_load_rejects_other_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved vae_zoo GaussianMixture"):
        GaussianMixture.load(path)


def test_config_round_trip():
    gmm = GaussianMixture(3, covariance_type="diagonal", reg_covar=1e-3, max_iter=5, tol=0.0,
                          init="random", seed=7)
    assert GaussianMixture.from_config(gmm.get_config()).get_config() == gmm.get_config()


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_components": 0}, "num_components must be >= 1"),
        ({"num_components": -2}, "num_components must be >= 1"),
        ({"num_components": 2.5}, "num_components must be an integer"),
        ({"num_components": 2, "covariance_type": "spherical"}, "covariance_type must be"),
        ({"num_components": 2, "init": "kmeans"}, "init must be"),
        ({"num_components": 2, "reg_covar": -1.0}, "reg_covar must be"),
        ({"num_components": 2, "max_iter": 0}, "max_iter must be"),
        ({"num_components": 2, "tol": float("nan")}, "tol must be"),
        ({"num_components": 2, "reg_covar": "1e-3"}, "reg_covar must be"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(**kwargs)


@pytest.mark.parametrize(
    "data, message",
    [
        (np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0]]), "NaN or infinite"),
        (np.array([[0.0, 1.0], [np.inf, 0.0], [1.0, 1.0]]), "NaN or infinite"),
        (np.zeros(5), r"shape \[N, \.\.\.\]"),
        (np.zeros((0, 2)), "no examples"),
        (np.zeros((2, 2)), "at least num_components=3 examples, got 2"),
        (np.array([["a", "b"], ["c", "d"], ["e", "f"]]), "must be real numbers"),
        (np.ones((3, 2), np.complex128), "must be real numbers"),
    ],
)
def test_bad_fit_inputs(data, message):
    with pytest.raises(ValueError, match=message) as info:
        GaussianMixture(3).fit(data)
    assert "\n" not in str(info.value)


def test_bad_inputs_after_fit(fitted):
    with pytest.raises(ValueError, match=r"shape \(3,\).*fitted on shape \(2,\)"):
        fitted.log_prob(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.responsibilities(np.full((1, 2), np.nan))


def test_unfitted_raises(x):
    with pytest.raises(RuntimeError, match="not fitted"):
        GaussianMixture(2).log_prob(x)


def test_failed_fit_leaves_the_model_as_it_was(x):
    """A fit that fails inside EM (singular Σ at reg_covar=0) restores the old fit."""
    gmm = GaussianMixture(1, reg_covar=0.0).fit(x)
    before = (gmm.means.copy(), list(gmm.log_likelihood_history))
    with pytest.raises(ValueError, match="not positive definite; increase reg_covar") as info:
        gmm.fit(np.zeros((4, 3)))
    assert "\n" not in str(info.value)
    np.testing.assert_array_equal(gmm.means, before[0])
    assert gmm.log_likelihood_history == before[1]
    assert gmm.data_shape == (2,)
    assert gmm.log_prob(x[:3]).shape == (3,)
