"""The training objectives (`vae_zoo.models.training_objectives`) and their maths
(`vae_zoo.aggregate_posterior`, `vae_zoo.objectives`) against independent numpy/scipy
computations: β-TC's minibatch-weighted sampling, DIP-VAE's covariances, the MMD
U-statistic, MIWAE/CIWAE/PIWAE's special cases and gradients, the capacity schedule."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

from conftest import binary_data, tiny_dense
from vae_zoo import aggregate_posterior, recipes
from vae_zoo.drivers.recipes import RecipeError
from vae_zoo.models import DenseVAE, training_objectives
from vae_zoo.models.forward import Batch, elbo_terms
from vae_zoo.schedules import CapacitySchedule

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

tfd = tfp.distributions
SEED = tf.constant([7, 11], tf.int32)


# ------------------------------------------------------------------ numpy references


def _gaussian_batch(rng, batch, d, full):
    """Means `[B, d]`, covariances `[B, d, d]` and the matching TFP q(z|x)."""
    means = rng.normal(scale=1.5, size=(batch, d))
    if full:
        factors = np.tril(rng.normal(scale=0.5, size=(batch, d, d)))
        factors[:, range(d), range(d)] = np.exp(rng.normal(scale=0.3, size=(batch, d)))
        covariances = factors @ factors.transpose(0, 2, 1)
        q = tfd.MultivariateNormalTriL(means.astype("float32"), factors.astype("float32"))
    else:
        scales = np.exp(rng.normal(scale=0.5, size=(batch, d)))
        covariances = np.stack([np.diag(s**2) for s in scales])
        q = tfd.Independent(tfd.Normal(means.astype("float32"), scales.astype("float32")), 1)
    return means, covariances, q


def _numpy_mws(z, means, covariances, log_prior, dataset_size):
    """MI, TC and dimension-wise KL by minibatch-weighted sampling, written from
    Chen et al. 2018 with scipy densities and explicit loops."""
    batch, d = z.shape
    joint = np.array([[stats.multivariate_normal.logpdf(z[i], means[j], covariances[j])
                       for j in range(batch)] for i in range(batch)])
    per_dim = np.array([[[stats.norm.logpdf(z[i, k], means[j, k], np.sqrt(covariances[j, k, k]))
                          for k in range(d)] for j in range(batch)] for i in range(batch)])
    log_nm = np.log(dataset_size * batch)
    log_qz = special.logsumexp(joint, axis=1) - log_nm
    log_prod = (special.logsumexp(per_dim, axis=1) - log_nm).sum(-1)
    log_qz_x = np.diag(joint)
    return log_qz_x - log_qz, log_qz - log_prod, log_prod - log_prior, log_qz_x


@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full_covariance"])
def test_tc_decomposition_matches_numpy_minibatch_weighted_sampling(full):
    rng = np.random.default_rng(0)
    means, covariances, q = _gaussian_batch(rng, batch=5, d=3, full=full)
    z = np.asarray(q.sample(seed=[1, 2]), np.float64)
    log_prior = stats.norm.logpdf(z).sum(-1)
    terms = aggregate_posterior.total_correlation_terms(
        q, tf.constant(z, tf.float32), tf.constant(log_prior, tf.float32), dataset_size=40)
    mi, tc, dim_kl, log_qz_x = _numpy_mws(z, means, covariances, log_prior, 40)
    np.testing.assert_allclose(terms["mutual_info"], mi, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(terms["total_correlation"], tc, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(terms["dimension_kl"], dim_kl, rtol=1e-4, atol=1e-4)
    # The three sum to the one-sample estimate of the KL term they decompose.
    total = terms["mutual_info"] + terms["total_correlation"] + terms["dimension_kl"]
    np.testing.assert_allclose(total, log_qz_x - log_prior, rtol=1e-4, atol=1e-4)


def _exact_aggregate_terms(z, means, covariances, log_prior):
    """MI, TC and dimension-wise KL with the exact aggregate posterior of the data
    `means`, `covariances` (q(z) = (1/N) Σ_j q(z|x_j)), with scipy densities."""
    n, d = means.shape
    joint = np.array([[stats.multivariate_normal.logpdf(z[i], means[j], covariances[j])
                       for j in range(n)] for i in range(len(z))])
    per_dim = np.array([[[stats.norm.logpdf(z[i, k], means[j, k], np.sqrt(covariances[j, k, k]))
                          for k in range(d)] for j in range(n)] for i in range(len(z))])
    log_qz = special.logsumexp(joint, axis=1) - np.log(n)
    log_prod = (special.logsumexp(per_dim, axis=1) - np.log(n)).sum(-1)
    return np.diag(joint) - log_qz, log_qz - log_prod, log_prod - log_prior


@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full_covariance"])
def test_tc_terms_over_the_whole_data_are_offset_by_log_n(full):
    """At M = N the estimates are the exact terms plus log N, (D − 1) log N and −D log N
    (the docstring's statement; they do not vanish as M grows)."""
    rng = np.random.default_rng(3)
    n, d = 6, 3
    means, covariances, q = _gaussian_batch(rng, batch=n, d=d, full=full)
    z = np.asarray(q.sample(seed=[3, 4]), np.float64)
    log_prior = stats.norm.logpdf(z).sum(-1)
    terms = aggregate_posterior.total_correlation_terms(
        q, tf.constant(z, tf.float32), tf.constant(log_prior, tf.float32), dataset_size=n)
    mi, tc, dim_kl = _exact_aggregate_terms(z, means, covariances, log_prior)
    log_n = np.log(n)
    np.testing.assert_allclose(terms["mutual_info"] - mi, log_n, atol=2e-4)
    np.testing.assert_allclose(terms["total_correlation"] - tc, (d - 1) * log_n, atol=2e-4)
    np.testing.assert_allclose(terms["dimension_kl"] - dim_kl, -d * log_n, atol=2e-4)


def test_tc_of_a_batch_whose_posteriors_do_not_overlap_sits_at_its_offset():
    """Sharp, far-apart codes of independent dimensions: the TC estimate is
    (D − 1) log(N·M), not 0."""
    m, d, n = 5, 3, 1000
    means = np.arange(m)[:, None] * 100.0 + np.arange(d) * 7.0  # [M, D], 100 apart per dim
    q = tfd.Independent(tfd.Normal(means.astype("float32"), np.full((m, d), 0.1, "float32")), 1)
    z = np.asarray(q.sample(seed=[5, 6]), np.float64)
    terms = aggregate_posterior.total_correlation_terms(
        q, tf.constant(z, tf.float32), tf.zeros([m]), dataset_size=n)
    np.testing.assert_allclose(terms["total_correlation"], (d - 1) * np.log(n * m), rtol=1e-5)


@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full_covariance"])
def test_dip_penalties_match_numpy(full):
    rng = np.random.default_rng(1)
    means, covariances, q = _gaussian_batch(rng, batch=6, d=3, full=full)
    cov_means = np.cov(means, rowvar=False, bias=True)
    expected = {"i": cov_means, "ii": cov_means + covariances.mean(0)}
    for variant, covariance in expected.items():
        got = aggregate_posterior.dip_covariance(q, variant)
        np.testing.assert_allclose(got, covariance, rtol=1e-4, atol=1e-5)
        off = sum(covariance[i, j] ** 2 for i in range(3) for j in range(3) if i != j)
        diagonal = sum((covariance[i, i] - 1.0) ** 2 for i in range(3))
        penalty = aggregate_posterior.dip_penalty(got, lambda_od=3.0, lambda_d=7.0)
        np.testing.assert_allclose(penalty, 3.0 * off + 7.0 * diagonal, rtol=1e-4)


def _numpy_mmd(x, y, kernel):
    def pairs(a, b, skip_same):
        total = 0.0
        for i in range(len(a)):
            for j in range(len(b)):
                if not (skip_same and i == j):
                    total += kernel(a[i], b[j])
        return total

    n, m = len(x), len(y)
    return (pairs(x, x, True) / (n * (n - 1)) + pairs(y, y, True) / (m * (m - 1))
            - 2.0 * pairs(x, y, False) / (n * m))


def test_mmd_u_statistic_matches_a_double_loop():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 3)), rng.normal(loc=0.5, size=(6, 3))
    kernels = {  # the default bandwidth C = 2·D = 6, and an explicit one
        ("rbf", None): lambda a, b: np.exp(-np.sum((a - b) ** 2) / 6.0),
        ("imq", None): lambda a, b: 6.0 / (6.0 + np.sum((a - b) ** 2)),
        ("rbf", 0.7): lambda a, b: np.exp(-np.sum((a - b) ** 2) / 0.7),
        ("imq", 0.7): lambda a, b: 0.7 / (0.7 + np.sum((a - b) ** 2)),
    }
    for (name, bandwidth), kernel in kernels.items():
        got = aggregate_posterior.mmd_u_statistic(tf.constant(x, tf.float32),
                                                  tf.constant(y, tf.float32), name, bandwidth)
        np.testing.assert_allclose(got, _numpy_mmd(x, y, kernel), rtol=1e-4, atol=1e-6)


def test_mmd_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 400, 2)).astype("float32")
    for kernel in ("rbf", "imq"):
        same = float(aggregate_posterior.mmd_u_statistic(x, y, kernel))
        shifted = float(aggregate_posterior.mmd_u_statistic(x, y + 1.0, kernel))
        assert abs(same) < 3e-3 and shifted > 0.05, (kernel, same, shifted)


# ------------------------------------------------------------------ importance-weighted


def _terms(model, spec, x, beta=1.0):
    return training_objectives.build(spec).terms(Batch(model, (x,), seed=SEED), tf.constant(beta))


def _log_weights(model, x, k):
    """log p(x, z_k) − log q(z_k|x), `[k, B]` numpy, at the test's seed."""
    return model.log_importance_weights(x, k, seed=SEED).numpy()


def test_miwae_and_ciwae_against_numpy_and_their_special_cases():
    x = binary_data(5, shape=(6,))
    model_k3 = tiny_dense(num_samples=3)
    model_k1 = tiny_dense(num_samples=1)  # same seed: the same weights
    w6 = _log_weights(model_k3, x, 6)  # M = 2 bounds of K = 3
    miwae = -_terms(model_k3, {"name": "miwae", "num_bounds": 2}, x)["loss"]
    expected = np.mean([special.logsumexp(w6[m * 3:m * 3 + 3], 0) - np.log(3) for m in range(2)], 0)
    np.testing.assert_allclose(miwae, expected, rtol=1e-5)
    # MIWAE(M = 1) = IWAE(K); MIWAE(K = 1) = the ELBO averaged over its M samples.
    iwae = _terms(model_k3, "iwae", x)["loss"]
    np.testing.assert_allclose(_terms(model_k3, {"name": "miwae", "num_bounds": 1}, x)["loss"],
                               iwae, rtol=1e-6)
    np.testing.assert_allclose(-_terms(model_k1, {"name": "miwae", "num_bounds": 4}, x)["loss"],
                               _log_weights(model_k1, x, 4).mean(0), rtol=1e-5)
    # CIWAE(β = 1) = the ELBO of the K samples; CIWAE(β = 0) = IWAE(K); between, the mix.
    w3 = _log_weights(model_k3, x, 3)
    elbo, iw = w3.mean(0), special.logsumexp(w3, 0) - np.log(3)
    for beta, expected in ((1.0, elbo), (0.0, iw), (0.25, 0.25 * elbo + 0.75 * iw)):
        ciwae = -_terms(model_k3, {"name": "ciwae", "beta": beta}, x)["loss"]
        np.testing.assert_allclose(ciwae, expected, rtol=1e-5)
    np.testing.assert_allclose(iwae, -iw, rtol=1e-5)


def test_piwae_routes_miwae_to_the_encoder_and_iwae_to_the_generative_model():
    model = tiny_dense(num_samples=3, prior={"name": "mixture_of_gaussians", "num_components": 2},
                       likelihood="gaussian_learned_scale")
    x = binary_data(4, shape=(6,))
    encoder = model.encoder.trainable_variables + model.posterior.trainable_variables
    generative = (model.decoder.trainable_variables + model.likelihood.trainable_variables
                  + model.prior.trainable_variables)
    assert model.prior.trainable_variables and model.likelihood.trainable_variables

    def gradients(loss_fn):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn())
        return tape.gradient(loss, encoder + generative)

    def reference(num_bounds):  # −(mean over M bounds of K = 6 / M samples), by hand
        w = model.log_importance_weights(x, 6, seed=SEED)
        groups = tf.reshape(w, [num_bounds, 6 // num_bounds, -1])
        k = 6 // num_bounds
        return -tf.reduce_mean(tf.reduce_logsumexp(groups, 1) - np.log(k), 0)

    piwae = training_objectives.build({"name": "piwae", "num_bounds": 2})
    terms = piwae.terms(Batch(model, (x,), seed=SEED), tf.constant(1.0))
    routed = gradients(lambda: piwae.terms(Batch(model, (x,), seed=SEED), tf.constant(1.0))["surrogate"])
    miwae, iwae = gradients(lambda: reference(2)), gradients(lambda: reference(1))
    n = len(encoder)
    differs = []
    for got, want, other in zip(routed, miwae[:n] + iwae[n:], iwae[:n] + miwae[n:]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        differs.append(not np.allclose(want, other, rtol=1e-3, atol=1e-6))
    # The routing matters on both sides (a variable's two gradients can be close).
    assert any(differs[:n]) and any(differs[n:])
    # Its value, like the reported loss, is −IWAE(M·K).
    np.testing.assert_allclose(terms["surrogate"], reference(1), rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], reference(1), rtol=1e-5)


# ------------------------------------------------------------------ penalties on q(z)


def test_penalty_objectives_compose_their_terms():
    """β-TC at α = β = γ = 1 is the ELBO with a Monte-Carlo KL; each objective's loss is
    its paper's combination of the reported terms, times the model's β."""
    x = binary_data(6, shape=(6,))
    model = tiny_dense(latent_dim=3)
    record = model.forward(x, seed=SEED)
    terms, q, z, prior = elbo_terms(record), record.q, record.z, record.prior
    mc_kl = q.log_prob(z) - prior.log_prob(z)
    ones = _terms(model, {"name": "beta_tc", "alpha": 1, "beta": 1, "gamma": 1, "dataset_size": 9}, x)
    np.testing.assert_allclose(ones["loss"], -(terms["reconstruction"] - mc_kl), rtol=1e-5)
    tc = _terms(model, {"name": "beta_tc", "alpha": 0.5, "beta": 6, "gamma": 2, "dataset_size": 9},
                x, beta=0.5)
    np.testing.assert_allclose(tc["loss"], -terms["reconstruction"] + 0.5 * (
        0.5 * tc["mutual_info"] + 6 * tc["total_correlation"] + 2 * tc["dimension_kl"]), rtol=1e-5)
    dip = _terms(model, {"name": "dip_vae_ii", "lambda_od": 2.0, "lambda_d": 3.0}, x, beta=0.5)
    penalty = aggregate_posterior.dip_penalty(aggregate_posterior.dip_covariance(q, "ii"), 2.0, 3.0)
    np.testing.assert_allclose(dip["dip_penalty"], np.full(6, penalty), rtol=1e-5)
    np.testing.assert_allclose(dip["loss"], -terms["reconstruction"] + 0.5 * (terms["kl"] + penalty),
                               rtol=1e-5)
    info = _terms(model, {"name": "info_vae", "alpha": 0.25, "lambda": 10.0}, x)
    assert np.ptp(info["mmd"]) == 0  # one batch-level value
    np.testing.assert_allclose(info["loss"], -info["reconstruction"] + 0.75 * info["kl"]
                               + 9.25 * info["mmd"], rtol=1e-5)
    wae = _terms(model, {"name": "wae", "lambda": 4.0}, x)
    np.testing.assert_allclose(wae["loss"], -wae["reconstruction"] + 4.0 * wae["mmd"], rtol=1e-5)


# ------------------------------------------------------------------ capacity


def test_capacity_schedule_values_and_serialization():
    schedule = CapacitySchedule(capacity_max=20.0, capacity_min=4.0, steps=8)
    assert [schedule(s) for s in (0, 2, 8, 100)] == [4.0, 8.0, 20.0, 20.0]
    np.testing.assert_allclose(schedule(tf.constant([0, 4, 9], tf.int64)), [4.0, 12.0, 20.0])
    assert schedule(tf.constant(4, tf.int64)).dtype == tf.float32
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(again, CapacitySchedule) and again.get_config() == schedule.get_config()
    assert CapacitySchedule(5.0, 1.0, steps=0)(0) == 5.0
    with pytest.raises(ValueError, match=r"^need 0 <= capacity_min <= capacity_max, got 3, 2$"):
        CapacitySchedule(capacity_max=2, capacity_min=3)


def test_capacity_objective_reads_the_optimizers_step_in_the_compiled_step():
    spec = {"name": "capacity", "gamma": 50.0, "capacity_max": 3.0, "capacity_steps": 4}
    model = tiny_dense(objective=spec)
    x = binary_data(8, shape=(6,))
    terms = _terms(model, spec, x)  # not compiled: step 0, C = 0
    np.testing.assert_allclose(terms["capacity"], 0.0)
    np.testing.assert_allclose(terms["loss"], -terms["reconstruction"] + 50.0 * np.abs(terms["kl"]),
                               rtol=1e-5)
    model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False, steps_per_execution=2)
    history = model.fit(x, batch_size=2, epochs=2, shuffle=False, verbose=0).history
    # Steps 0..3 then 4..7 of C = 0.75 · step up to 3: epoch means 1.125 and 3.
    np.testing.assert_allclose(history["capacity"], [1.125, 3.0], rtol=1e-6)


# ------------------------------------------------------------------ selection and config


def test_specs_instances_and_config_round_trips(tmp_path):
    spec = {"name": "beta_tc", "beta": 4, "dataset_size": 100}
    model = tiny_dense(objective=spec)
    assert model.objective == "beta_tc"
    assert [m.name for m in model.metrics][-3:] == ["mutual_info", "total_correlation",
                                                     "dimension_kl"]
    assert model.get_config()["objective"] == spec
    instance = training_objectives.build({"name": "dip_vae_i", "lambda_od": 2})
    from_instance = tiny_dense(objective=instance)
    expected = {"name": "dip_vae_i", "lambda_od": 2.0, "lambda_d": 100.0}
    assert from_instance.get_config()["objective"] == expected
    clone = DenseVAE.from_config(from_instance.get_config())
    assert clone.training_objective.get_config() == expected
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_config() == model.get_config()
    assert type(loaded.training_objective) is type(model.training_objective)


@pytest.mark.parametrize("objective, message", [
    ("betatc", "objective = 'betatc' is not one of: .* (did you mean 'beta_tc'?)"),
    ({"beta": 2}, "objective needs a 'name' (one of: .*)"),
    ({"name": "beta_tc"}, "objective.dataset_size must be set"),
    ({"name": "beta_tc", "dataset_size": 10, "gama": 2},
     "objective.gama is not an option of 'beta_tc' (did you mean 'gamma'?) (options: .*)"),
    ({"name": "miwae", "num_bounds": 0}, "objective.num_bounds must be >= 1, got 0"),
    ({"name": "ciwae", "beta": 1.5}, "objective.beta must be <= 1.0, got 1.5"),
    ({"name": "wae", "kernel": "laplace"}, "objective.kernel = 'laplace' is not one of: 'rbf', 'imq'"),
    ({"name": "info_vae", "alpha": 0.0, "lambda": 0.5}, "objective.lambda must be >= 1 - alpha"),
    ({"name": "capacity", "capacity_min": 3.0, "capacity_max": 1.0},
     "objective.capacity_min must be <= capacity_max = 1.0, got 3.0"),
    ({"name": "dip_vae_i", "lambda_od": "big"}, "objective.lambda_od must be a number, got str"),
])
def test_bad_objectives_raise_one_line_naming_the_option(objective, message):
    pattern = "^" + re.escape(message).replace(r"\.\*", ".*")
    with pytest.raises(ValueError, match=pattern) as error:
        training_objectives.build(objective)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=pattern):
        tiny_dense(objective=objective)


@pytest.mark.parametrize("objective, family", [
    ("vq_vae", "vqvae"), ("factor_vae", "factor"), ("reinforce", "discrete"),
    ("gumbel_softmax", "discrete")])
def test_an_objective_of_one_family_is_refused_by_the_others(objective, family):
    message = f"objective '{objective}' trains the '{family}' family, not 'dense'"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        tiny_dense(objective=objective)
    with pytest.raises(RecipeError, match="^model." + re.escape(message) + "$"):
        recipes.load("mnist_dense", [f"model.objective={objective}"])


def test_each_family_trains_with_its_own_registered_objective():
    """The families that train differently name their objective (no terms of their
    own): its name is the model's `objective`, its metrics the model's."""
    from vae_zoo.models import MODELS

    expected = {"factor": "factor_vae", "vqvae": "vq_vae", "discrete": "gumbel_softmax"}
    for family, objective in expected.items():
        cls = MODELS.get(family)
        model = cls(**cls.example_arguments)
        assert model.objective == objective
        assert "compute_terms" not in vars(cls)
        names = [tracker.name for tracker in model.trackers]
        assert names[:5] == ["loss", "elbo", "reconstruction", "kl", "beta"]
        assert tuple(names[5:]) == training_objectives.OBJECTIVES.get(objective).metric_names


@pytest.mark.parametrize("override, message", [
    ('model.objective={name = "beta_tc", dataset_size = 0}',
     "model.objective.dataset_size must be >= 1, got 0"),
    ('model.objective={name = "miwae", num_bounds = 2, numbounds = 3}',
     "model.objective.numbounds is not an option of 'miwae' (did you mean 'num_bounds'?)"),
    ("model.objective=infovae", "model.objective = 'infovae' is not one of: "),
    ("model.objective=[1]", "model.objective must be a string or a table, got list [1]"),
])
def test_recipe_objectives_are_checked_at_validation(override, message):
    with pytest.raises(RecipeError, match="^" + re.escape(message)):
        recipes.load("mnist_dense", [override])


def test_a_recipe_objective_builds_the_model_with_it():
    recipe = recipes.load("mnist_dense", ['model.objective={name = "wae", lambda = 5}',
                                          "model.hidden_units=[8]", "model.latent_dim=2"])
    assert recipes.build_model(recipe).get_config()["objective"] == {"name": "wae", "lambda": 5}
