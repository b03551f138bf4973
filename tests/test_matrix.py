"""Every registered family passes the shared family checks, and every combination the
README's feature matrix lists builds, scores and differentiates.

Tiny shapes: each family's `example_arguments` (8×8×1 images); data with values k/255
(valid for every likelihood), one gradient of the training loss through the model's
`compute_terms` (its objective's terms).
"""

import inspect

import numpy as np
import pytest
import tensorflow as tf

import family_case
from vae_zoo import heads
from vae_zoo.models import MODELS

FAMILIES = MODELS.names()

LIKELIHOODS = heads.LIKELIHOODS.names()
GAUSSIAN_POSTERIORS = ["diagonal_gaussian", "full_covariance_gaussian"]
FLAT_PRIORS = ["standard_normal", {"name": "mixture_of_gaussians", "num_components": 3}]
# Flow posteriors and the VampPrior (unconditional families with flat latents).
FLOW_POSTERIORS = [{"name": "iaf", "hidden_units": [8], "context_size": 2},
                   {"name": "planar", "num_steps": 2}]
VAMP = [{"name": "vamp", "num_components": 3}]

# Every objective of `vae_zoo.models.training_objectives` (options for a batch of 4) on
# the dense family; on the conv family, one of each kind (importance-weighted, penalties
# on q(z)).
OBJECTIVES = ["elbo", "iwae", {"name": "miwae", "num_bounds": 2}, "ciwae",
              {"name": "piwae", "num_bounds": 2}, {"name": "beta_tc", "dataset_size": 8},
              "dip_vae_i", "dip_vae_ii", "info_vae", "wae", "capacity"]
CONV_OBJECTIVES = ["elbo", "iwae", {"name": "piwae", "num_bounds": 2},
                   {"name": "beta_tc", "dataset_size": 8}, "dip_vae_ii", "info_vae"]

# The README matrix: family → (posteriors, priors, objectives); every family takes
# every likelihood.
MATRIX = {
    "dense": (GAUSSIAN_POSTERIORS + FLOW_POSTERIORS, FLAT_PRIORS + VAMP, OBJECTIVES),
    "conv": (GAUSSIAN_POSTERIORS + FLOW_POSTERIORS, FLAT_PRIORS + VAMP, CONV_OBJECTIVES),
    "fully_conv": (["diagonal_gaussian"], ["standard_normal", "spatial_autoregressive"], ["elbo", "iwae"]),
    "conditional": (
        GAUSSIAN_POSTERIORS,
        FLAT_PRIORS + [{"name": "conditional_gaussian", "hidden_units": [8]}],
        ["elbo", "iwae"],
    ),
    "discrete": (["categorical"], ["uniform_categorical"], [None]),
}


def _build_example(family, **kwargs):
    cls = MODELS.get(family)
    return cls(**{**cls.example_arguments, "seed": 0, **kwargs})


@pytest.mark.xla
@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_registered_family_passes_the_shared_checks(family, tmp_path):
    family_case.run_family_checks(_build_example(family), tmp_path)


def test_the_matrix_covers_every_registered_family():
    """Every family is in the cases below (with the README's combinations when listed,
    else every likelihood on its defaults), and has example arguments."""
    assert set(MATRIX) <= set(FAMILIES)
    assert {case[0] for case in _cases()} == set(FAMILIES)
    assert all(MODELS.get(f).example_arguments for f in FAMILIES)


def _cases():
    for family in FAMILIES:
        posteriors, priors_, objectives = MATRIX.get(family, ([None], [None], [None]))
        for likelihood in LIKELIHOODS:
            yield family, likelihood, posteriors[0], priors_[0], objectives[0]
        for posterior in posteriors[1:]:
            yield family, "bernoulli", posterior, priors_[0], objectives[0]
        for prior in priors_[1:]:
            yield family, "bernoulli", posteriors[0], prior, objectives[0]
        for objective in objectives[1:]:
            yield family, "bernoulli", posteriors[0], priors_[0], objective


def _build(family, likelihood, posterior, prior, objective):
    kwargs = dict(likelihood=likelihood)
    # (discrete: its posterior and prior are fixed; estimators in test_discrete.py;
    # a family the README does not list: its defaults)
    if posterior is not None and "posterior" in inspect.signature(MODELS.get(family)).parameters:
        kwargs.update(posterior=posterior, prior=prior, objective=objective, num_samples=3)
    return _build_example(family, **kwargs)


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
