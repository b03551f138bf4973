"""The hierarchical (Ladder) family: log-weights and per-layer KLs against numpy/scipy,
a linear-Gaussian model whose log p(x) is closed-form, ancestral sampling, the compiled
default step with the per-layer metrics, saving, and bad arguments."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

import family_case
from conftest import binary_data
from vae_zoo import evaluate, recipes
from vae_zoo.drivers.recipes import RecipeError
from vae_zoo.models import MODELS
from vae_zoo.models.forward import elbo_terms
from vae_zoo.models.hierarchical import HierarchicalVAE

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

FLOOR = 1e-4  # the diagonal-Gaussian heads' scale floor
SCALE = 0.8  # the linear-Gaussian model's likelihood scale


def tiny(**kwargs):
    keras.utils.set_random_seed(0)
    arguments = dict(input_shape=(6,), latent_dims=(3, 2, 2), hidden_units=(8,),
                     ladder_units=(5,), seed=0)
    return HierarchicalVAE(**{**arguments, **kwargs})


def gaussian_params(params):
    """Split a head's raw params `[..., 2d]` into μ and σ = softplus + floor (numpy)."""
    params = np.asarray(params, np.float64)
    loc, raw = np.split(params, 2, axis=-1)
    return loc, np.logaddexp(0.0, raw) + FLOOR


def numpy_layers(model, x, z):
    """Per layer l (bottom first): (μ_q, σ_q, μ_p, σ_p) at the parents in z `[..., B, D]`,
    from the raw outputs of the model's networks; the merge computed here."""
    dims = model.latent_dims
    blocks = np.split(np.asarray(z, np.float64), np.cumsum(dims)[:-1], axis=-1)
    bottom_up = [gaussian_params(p) for p in model.encoder(x)]
    layers = []
    for i, d in enumerate(dims):
        mu_hat, sigma_hat = bottom_up[i]
        if i == len(dims) - 1:  # q(z_L|x) = the bottom-up Gaussian; p(z_L) = N(0, I)
            layers.append((mu_hat, sigma_hat, np.zeros(d), np.ones(d)))
            continue
        parent = blocks[i + 1]
        raw = model.prior.top_down[i](parent.reshape(-1, parent.shape[-1]).astype("float32"))
        mu_p, sigma_p = (v.reshape(parent.shape[:-1] + (d,)) for v in gaussian_params(raw))
        precision = sigma_hat**-2 + sigma_p**-2
        mu_q = (mu_hat * sigma_hat**-2 + mu_p * sigma_p**-2) / precision
        layers.append((mu_q, precision**-0.5, mu_p, sigma_p))
    return blocks, layers


def bernoulli_log_prob(model, x, z_1):
    logits = np.asarray(model.decoder(z_1.reshape(-1, z_1.shape[-1]).astype("float32")), np.float64)
    logits = logits.reshape(z_1.shape[:-1] + x.shape[1:])
    return stats.bernoulli.logpmf(x, special.expit(logits)).sum(axis=-1)


def test_log_weights_match_numpy_at_fixed_samples():
    """log p(x|z_1) + Σ_l log p(z_l|z_{l+1}) − Σ_l log q(z_l|z_{l+1}, x), each density
    from scipy at the model's own samples and network outputs, merge done in numpy."""
    model = tiny()
    x = binary_data(4, (6,))
    seed = tf.constant([5, 6])
    weights = model.log_importance_weights(x, 7, seed=seed).numpy()  # [K, B]
    z = model.encode(x).sample(7, seed=seed).numpy()  # the same K joint samples
    blocks, layers = numpy_layers(model, x, z)
    log_p = bernoulli_log_prob(model, x, blocks[0])
    log_q = 0.0
    for block, (mu_q, sigma_q, mu_p, sigma_p) in zip(blocks, layers):
        log_p = log_p + stats.norm.logpdf(block, mu_p, sigma_p).sum(-1)
        log_q = log_q + stats.norm.logpdf(block, mu_q, sigma_q).sum(-1)
    assert weights.shape == (7, 4)
    np.testing.assert_allclose(weights, log_p - log_q, rtol=1e-5, atol=1e-3)
    # The distributions `encode` and `prior_distribution` return score the same z alike.
    log_prior = log_p - bernoulli_log_prob(model, x, blocks[0])
    np.testing.assert_allclose(model.encode(x).log_prob(z), log_q, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(model.prior_distribution().log_prob(z), log_prior, rtol=1e-5,
                               atol=1e-3)


def test_elbo_has_the_closed_form_kl_of_every_layer():
    """ELBO = log p(x|z_1) − Σ_l KL(q(z_l|z_{l+1}, x) || p(z_l|z_{l+1})) at one joint
    sample, each KL the closed form for diagonal Gaussians at the sampled parent."""
    model = tiny()
    x = binary_data(4, (6,))
    seed = tf.constant([7, 8])
    terms = {k: v.numpy() for k, v in elbo_terms(model.forward(x, seed=seed)).items()}
    z = model.encode(x).sample(seed=seed).numpy()  # the sample the terms used
    blocks, layers = numpy_layers(model, x, z)
    for i, (mu_q, sigma_q, mu_p, sigma_p) in enumerate(layers):
        kl = (np.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p**2)
              - 0.5).sum(-1)
        np.testing.assert_allclose(terms[f"kl_{i + 1}"], kl, rtol=1e-4, atol=1e-4)
    reconstruction = bernoulli_log_prob(model, x, blocks[0])
    np.testing.assert_allclose(terms["reconstruction"], reconstruction, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(terms["kl"], sum(terms[f"kl_{i}"] for i in (1, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(terms["elbo"], reconstruction - terms["kl"], rtol=1e-5, atol=1e-3)
    assert set(model.elbo(x, seed=seed)) == {"elbo", "reconstruction", "kl"}


# ------------------------------------------------------------------ linear-Gaussian case


def linear_gaussian_model():
    """Linear networks, a fixed-scale Gaussian likelihood and top-down scales made
    constant (their weights zeroed): every conditional is linear-Gaussian."""
    keras.utils.set_random_seed(0)
    model = HierarchicalVAE(input_shape=(3,), latent_dims=(2, 2), hidden_units=(4,),
                            ladder_units=(3,), activation="linear",
                            likelihood={"name": "gaussian", "scale": SCALE}, seed=1)
    for i, network in enumerate(model.prior.top_down):
        projection = network.layers[-2]  # Dense(2d) before the Reshape
        kernel = projection.kernel.numpy()
        kernel[:, model.latent_dims[i]:] = 0.0
        projection.kernel.assign(kernel)
    return model


def affine_map(fn, dim):
    """(A, b) with fn(v) = A v + b, probed at 0 and the unit vectors."""
    probes = np.vstack([np.zeros(dim), np.eye(dim)]).astype("float32")
    out = np.asarray(fn(probes), np.float64).reshape(dim + 1, -1)
    return (out[1:] - out[0]).T, out[0]


def marginal_of_x(model):
    """(mean, covariance) of p(x) and of the latents, propagated down from p(z_L)."""
    dims = model.latent_dims
    mean, cov = np.zeros(dims[-1]), np.eye(dims[-1])
    moments = [(mean, cov)]
    for i in reversed(range(len(dims) - 1)):
        a, b = affine_map(model.prior.top_down[i], dims[i + 1])  # [2d, d'], [2d]
        d = dims[i]
        scale = np.logaddexp(0.0, b[d:]) + FLOOR
        np.testing.assert_allclose(a[d:], 0.0)  # σ_p does not depend on z_{l+1}
        mean, cov = a[:d] @ mean + b[:d], a[:d] @ cov @ a[:d].T + np.diag(scale**2)
        moments.insert(0, (mean, cov))
    w, c = affine_map(model.decoder, dims[0])
    return (w @ mean + c, w @ cov @ w.T + SCALE**2 * np.eye(len(c))), moments


def fit_encoder(model, x, steps=40):
    """Train only the inference networks on x (the generative model stays as it is)."""
    model.prior.trainable = False
    model.decoder.trainable = False
    model.compile(keras.optimizers.Adam(0.05), jit_compile=False, steps_per_execution=steps)
    model.fit(np.tile(x, (steps, 1)), batch_size=len(x), shuffle=False, verbose=0)  # x each step


def test_linear_gaussian_bounds_approach_the_exact_log_likelihood():
    """ELBO ≤ IW_K ≤ log p(x), the IW bound tightening with K and reaching the exact
    log p(x) of the linear-Gaussian model (after a short fit of q, so that K = 1000
    samples suffice)."""
    model = linear_gaussian_model()
    (mean, cov), _ = marginal_of_x(model)
    x = np.random.default_rng(0).multivariate_normal(mean, cov, 6).astype("float32")
    fit_encoder(model, x)
    np.testing.assert_allclose(marginal_of_x(model)[0][1], cov)  # p(x) did not change
    exact = stats.multivariate_normal(mean, cov).logpdf(x)
    # E[IW_K] for K = 1 (the ELBO), 10, 100, 1000, each the mean of 4000 / K bounds.
    log_weights = model.log_importance_weights(x, 4000, seed=[2, 0]).numpy()  # [K, B]
    bounds = {k: special.logsumexp(log_weights.reshape(4000 // k, k, 6), axis=1).mean(axis=0)
                 - np.log(k) for k in (1, 10, 100, 1000)}
    # The ELBO with analytic KLs estimates E_q[log w] (the Monte-Carlo KL) too.
    samples = model.elbo(np.repeat(x, 2000, axis=0), seed=0)["elbo"].numpy().reshape(6, 2000)
    standard_error = np.sqrt(samples.var(axis=1) / 2000 + log_weights.var(axis=0) / 4000)
    assert np.all(np.abs(samples.mean(axis=1) - bounds[1]) < 4 * standard_error)
    gaps = {k: exact - bound for k, bound in bounds.items()}  # log p(x) − E[IW_K]
    assert np.all(gaps[1] > 0) and gaps[1].mean() > 0.03  # q is not the posterior: ELBO < log p(x)
    improvement = gaps[1] - gaps[10]  # IW_10 above the ELBO
    assert np.all(improvement > 0) and improvement.mean() > 0.03
    assert np.all(np.abs(gaps[100]) < 0.03) and np.all(np.abs(gaps[1000]) < 0.03)
    mean_gaps = [gaps[k].mean() for k in (1, 10, 100, 1000)]
    assert mean_gaps[0] > mean_gaps[1] > mean_gaps[2] and abs(mean_gaps[3]) < 0.01


def test_ancestral_samples_have_the_propagated_moments():
    """Samples of p(z) (and of x) have the means and covariances propagated from p(z_L)."""
    model = linear_gaussian_model()
    _, moments = marginal_of_x(model)
    z = model.prior_distribution().sample(40000, seed=[3, 4]).numpy()
    blocks = np.split(z, np.cumsum(model.latent_dims)[:-1], axis=-1)
    for block, (mean, cov) in zip(blocks, moments):
        np.testing.assert_allclose(block.mean(axis=0), mean, atol=0.03)
        np.testing.assert_allclose(np.cov(block.T), cov, atol=0.05 * np.abs(cov).max())
    np.testing.assert_allclose(model.sample(2, seed=9),
                               model.decode(model.prior_distribution().sample(2, seed=[9, 0])).mean())


# ------------------------------------------------------------------ training and saving


@pytest.mark.xla
def test_conv_body_trains_on_the_default_path_and_round_trips(tmp_path):
    """One compiled (XLA, several steps per call) fit step reports the KL of each layer,
    summing to "kl"; the conv model then passes the shared API and saving checks."""
    model = MODELS.get("hierarchical")(
        input_shape=(8, 8, 1), latent_dims=(3, 2), body="conv", filters=(2,), kernel_sizes=(3,),
        strides=(2,), dense_units=(8,), ladder_units=(4,), seed=0)
    inputs = family_case.example_inputs(model)
    family_case.check_api(model, inputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = [w.numpy().copy() for w in model.trainable_weights]
    logs = {k: v[0] for k, v in model.fit(inputs[0], batch_size=4, verbose=0).history.items()}
    assert {"kl_1", "kl_2", "kl", "elbo"} <= set(logs) and all(np.isfinite(list(logs.values())))
    np.testing.assert_allclose(logs["kl_1"] + logs["kl_2"], logs["kl"], rtol=1e-5)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    family_case.check_round_trips(model, inputs, tmp_path)


def test_iwae_objective_and_layer_kls():
    model = tiny(objective="iwae", num_samples=3, prior={"name": "mixture_of_gaussians",
                                                         "num_components": 2})
    terms = model.compute_terms((binary_data(4, (6,)),))
    assert {"loss", "iw_bound", "kl_1", "kl_2", "kl_3"} <= set(terms)
    np.testing.assert_allclose(terms["kl"], terms["kl_1"] + terms["kl_2"] + terms["kl_3"],
                               rtol=1e-5, atol=1e-5)
    assert np.all(terms["iw_bound"].numpy() >= terms["elbo"].numpy() - 1e-4)


@pytest.mark.parametrize("objective", [{"name": "miwae", "num_bounds": 2}, "ciwae",
                                       {"name": "piwae", "num_bounds": 2}, "info_vae", "wae",
                                       "capacity"])
def test_every_objective_of_a_chain_trains_and_reports_each_layer(objective):
    """The objectives that need no per-dimension moments of q train a ladder through
    the one `train_step`, each reporting every layer's KL (its sum, the "kl")."""
    model = tiny(objective=objective, num_samples=2)
    x = binary_data(8, (6,))
    terms = model.compute_terms((x,), training=True)
    np.testing.assert_allclose(terms["kl"], terms["kl_1"] + terms["kl_2"] + terms["kl_3"],
                               rtol=1e-4, atol=1e-4)
    model.compile(optimizer="adam")
    before = [w.numpy() for w in model.trainable_weights]
    history = model.fit(x, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["kl_3"][0])
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))


# ------------------------------------------------------------------ arguments and recipes


@pytest.mark.parametrize("kwargs, message", [
    (dict(latent_dims=()), r"^latent_dims must list at least one size, each >= 1, got \(\)$"),
    (dict(latent_dims=(3, 0)), r"^latent_dims must list at least one size, each >= 1, got \(3, 0\)$"),
    (dict(ladder_units=()), r"^ladder_units must list at least one size, each >= 1, got \(\)$"),
    (dict(hidden_units=(4, -1)), r"^hidden_units must list sizes, each >= 1, got \(4, -1\)$"),
    (dict(body="rnn"), r"^body must be one of \('dense', 'conv'\), got 'rnn'$"),
    (dict(body="conv"), r"^input_shape must be \(height, width, channels\)"),
    (dict(objective={"name": "beta_tc", "dataset_size": 8}),
     r"^objective 'beta_tc' needs a q\(z\|x\) that factorizes over the latent dimensions; "
     r"HierarchicalVAE's does not$"),
    (dict(objective="dip_vae_ii"), r"^objective 'dip_vae_ii' needs a q\(z\|x\) that factorizes"),
    (dict(objective="vq_vae"), r"^objective 'vq_vae' trains the 'vqvae' family, not 'hierarchical'$"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_recipe_builds_two_stochastic_layers():
    recipe = recipes.load("mnist_hierarchical")
    model = recipes.build_model(recipe)
    assert isinstance(model, HierarchicalVAE) and model.latent_dims == (32, 16)
    assert model.latent_shape == (48,)
    with pytest.raises(RecipeError, match=r"model\.latent_dims\[1\] must be >= 1, got 0"):
        recipes.load("mnist_hierarchical", ["model.latent_dims=[4, 0]"])
