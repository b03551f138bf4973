"""Every combination the README's feature matrix lists builds, scores and differentiates.

Tiny shapes: 8×8×1 images with values k/255 (valid for every likelihood), one
gradient of the training loss through the model's own `compute_terms`.
"""

import numpy as np
import pytest
import tensorflow as tf

from vae_zoo import heads
from vae_zoo.models import MODELS

LIKELIHOODS = heads.LIKELIHOODS.names()
GAUSSIAN_POSTERIORS = ["diagonal_gaussian", "full_covariance_gaussian"]
FLAT_PRIORS = ["standard_normal", {"name": "mixture_of_gaussians", "num_components": 3}]

TINY = {
    "dense": dict(latent_dim=2, hidden_units=(8,)),
    "conv": dict(latent_dim=2, filters=(4, 4), kernel_sizes=(3, 3), strides=(2, 2), dense_units=(8,)),
    "fully_conv": dict(latent_channels=2, filters=(4, 4), kernel_sizes=(3, 3), strides=(2, 2)),
    "conditional": dict(latent_dim=2, num_classes=3, hidden_units=(8,)),
    "discrete": dict(num_latents=2, num_categories=3, hidden_units=(8,)),
}

# The README matrix: family → (posteriors, priors, objectives); every family takes
# every likelihood.
MATRIX = {
    "dense": (GAUSSIAN_POSTERIORS, FLAT_PRIORS, ["elbo", "iwae"]),
    "conv": (GAUSSIAN_POSTERIORS, FLAT_PRIORS, ["elbo", "iwae"]),
    "fully_conv": (["diagonal_gaussian"], ["standard_normal", "spatial_autoregressive"], ["elbo", "iwae"]),
    "conditional": (
        GAUSSIAN_POSTERIORS,
        FLAT_PRIORS + [{"name": "conditional_gaussian", "hidden_units": [8]}],
        ["elbo", "iwae"],
    ),
    "discrete": (["categorical"], ["uniform_categorical"], [None]),
}


def _cases():
    for family, (posteriors, priors_, objectives) in MATRIX.items():
        for likelihood in LIKELIHOODS:
            yield family, likelihood, posteriors[0], priors_[0], objectives[0]
        for posterior in posteriors[1:]:
            yield family, "bernoulli", posterior, priors_[0], objectives[0]
        for prior in priors_[1:]:
            yield family, "bernoulli", posteriors[0], prior, objectives[0]
        for objective in objectives[1:]:
            yield family, "bernoulli", posteriors[0], priors_[0], objective


def _build(family, likelihood, posterior, prior, objective):
    kwargs = dict(TINY[family], likelihood=likelihood, seed=0)
    if family != "discrete":  # its posterior and prior are fixed; estimators: test_discrete.py
        kwargs.update(posterior=posterior, prior=prior, objective=objective, num_samples=3)
    return MODELS.get(family)(input_shape=(8, 8, 1), **kwargs)


@pytest.mark.parametrize("family, likelihood, posterior, prior, objective", list(_cases()),
                         ids=lambda v: v["name"] if isinstance(v, dict) else str(v))
def test_combination_scores_and_trains(family, likelihood, posterior, prior, objective):
    model = _build(family, likelihood, posterior, prior, objective)
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (4, 8, 8, 1)) / 255.0).astype("float32")
    inputs = (x, np.array([0, 1, 2, 0])) if model.conditional else (x,)
    terms = model.elbo(*inputs)
    assert all(np.isfinite(v.numpy()).all() and v.shape == (4,) for v in terms.values())
    with tf.GradientTape() as tape:
        computed = model.compute_terms(inputs, training=True)
        loss = tf.reduce_mean(computed.get("surrogate", computed["loss"]))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert model.sample(2, **({"y": 1} if model.conditional else {}), seed=0).shape == (2, 8, 8, 1)
