"""Flow posteriors (IAF on a Keras MADE, planar) against an independent change of
variables: log q(z) = log N(z_0; μ, σ) − log|det ∂z/∂z_0|, with the forward map
written out here from the MADE outputs and the planar formula, its Jacobian taken by
autodiff and its log-determinant by np.linalg.slogdet."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from vae_zoo.heads import IAFPosterior, PlanarPosterior
from vae_zoo.models import DenseVAE
from vae_zoo.networks import MADE

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

D = 3
B = 4


def _randomize(layer, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(rng.normal(0, scale, w.shape).astype(np.float32))


def test_made_is_autoregressive():
    """∂out_i/∂x_j is nonzero exactly for the inputs j before i in MADE's order (1..d,
    or d..1 reversed), and every output sees the context."""
    x, h = tf.random.normal([6, 5], seed=1), tf.random.normal([6, 2], seed=2)
    for reverse in (False, True):
        made = MADE(5, hidden_units=(9, 7), context_size=2, reverse=reverse)
        made(x, h)
        _randomize(made, 1)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, h])
            out = made(x, h)  # [6, 5, 2]
        dependence = np.abs(tape.batch_jacobian(out, x).numpy()).max(axis=(0, 2))  # [out, in]
        allowed = np.tril(np.ones((5, 5)), -1)
        allowed = allowed[::-1, ::-1] if reverse else allowed
        np.testing.assert_array_equal(dependence > 0, allowed > 0)
        assert np.abs(tape.batch_jacobian(out, h).numpy()).max(axis=(0, 3)).min() > 0


def _iaf_head():
    head = IAFPosterior(num_steps=2, hidden_units=(8,), context_size=2)
    params = np.random.default_rng(3).normal(0, 1, (B, 2 * D + 2)).astype(np.float32)
    head(params)
    _randomize(head, 4)
    return head, params


def _planar_head():
    head = PlanarPosterior(num_steps=3)
    params = np.random.default_rng(5).normal(0, 1, (B, 2 * D + 3 * (2 * D + 1))).astype(np.float32)
    return head, params


def _iaf_forward(head, params):
    """z_0 ↦ z_T by hand: z ← σ z + (1 − σ) m, (m, s) = MADE_t(z, h), σ = sigmoid(s)."""
    h = params[:, 2 * D:]

    def forward(z):
        for made in head.mades:
            out = made(z, h)
            sigma = tf.sigmoid(out[..., 1])
            z = sigma * z + (1 - sigma) * out[..., 0]
        return z

    return forward


def _planar_forward(head, params):
    """z_0 ↦ z_T by hand: z ← z + û tanh(wᵀz + b), û = u + (−1 + log(1 + e^{wᵀu}) − wᵀu) w/‖w‖²."""
    steps = params[:, 2 * D:].reshape(B, 3, 2 * D + 1)

    def forward(z):
        for t in range(3):
            u, w, b = steps[:, t, :D], steps[:, t, D:2 * D], steps[:, t, 2 * D]
            wu = (w * u).sum(-1, keepdims=True)
            u_hat = u + (-1 + np.log1p(np.exp(wu)) - wu) * w / (w * w).sum(-1, keepdims=True)
            z = z + u_hat * tf.tanh(tf.reduce_sum(w * z, -1, keepdims=True) + b[:, None])
        return z

    return forward


def _base(params):
    loc, raw = params[:, :D].astype(np.float64), params[:, D:2 * D].astype(np.float64)
    return loc, np.log1p(np.exp(raw)) + 1e-4


def _change_of_variables(forward, params, z0):
    """(z, log q(z)) with log q = Σ log N(z_0; μ, σ) − log|det ∂z/∂z_0| (slogdet)."""
    z0 = tf.constant(z0, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z0)
        z = forward(z0)
    jacobian = tape.batch_jacobian(z, z0).numpy().astype(np.float64)
    sign, logdet = np.linalg.slogdet(jacobian)
    assert (sign > 0).all()
    loc, scale = _base(params)
    return z.numpy(), stats.norm(loc, scale).logpdf(z0.numpy()).sum(-1) - logdet


@pytest.mark.parametrize("make, forward", [(_iaf_head, _iaf_forward), (_planar_head, _planar_forward)],
                         ids=["iaf", "planar"])
def test_log_prob_is_the_change_of_variables(make, forward):
    head, params = make()
    fn = forward(head, params)
    q = head(params)
    assert q.batch_shape == [B] and q.event_shape == [D]
    loc, scale = _base(params)
    z0 = (loc + scale * np.random.default_rng(6).normal(size=(B, D))).astype(np.float32)
    z, expected = _change_of_variables(fn, params, z0)
    # A z the flow did not sample: log_prob inverts the flow (sequential / root finding).
    np.testing.assert_allclose(q.log_prob(tf.constant(z)), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(q.bijector.inverse(tf.constant(z)), z0, rtol=1e-3, atol=1e-3)
    # Its own samples, scored in one pass (the sampling pass's z_0 and log|det|), in
    # eager, in tf.function and under XLA: the same as the inverted path.
    def sample_and_score():
        q = head(params)
        z = q.sample(2, seed=tf.constant([7, 8]))
        return z, q.log_prob(z)

    for run in (sample_and_score, tf.function(sample_and_score),
                tf.function(sample_and_score, jit_compile=True)):
        z, log_q = run()
        fresh = head(params).log_prob(tf.constant(z.numpy()))
        np.testing.assert_allclose(log_q, fresh, rtol=1e-4, atol=1e-4)
    # mean(): the flow at the base mean; stddev(): its linearization there.
    mean, _ = _change_of_variables(fn, params, loc.astype(np.float32))
    np.testing.assert_allclose(q.mean(), mean, rtol=1e-5, atol=1e-5)
    with tf.GradientTape() as tape:
        at = tf.constant(loc, tf.float32)
        tape.watch(at)
        image = fn(at)
    jacobian = tape.batch_jacobian(image, at).numpy()
    np.testing.assert_allclose(q.stddev(), np.sqrt(((jacobian * scale[:, None, :]) ** 2).sum(-1)),
                               rtol=1e-4)


def test_planar_steps_stay_invertible():
    """û makes wᵀû >= −1 even for u pointing against w, so det ∂f/∂z > 0 everywhere."""
    rng = np.random.default_rng(8)
    head = PlanarPosterior(num_steps=1)
    params = rng.normal(0, 1, (64, 2 * D + 2 * D + 1)).astype(np.float32)
    params[:, 2 * D:3 * D] = -5 * params[:, 3 * D:4 * D]  # u = −5 w: wᵀu ≪ −1
    step = head(params).bijector.bijectors[0]
    w_u_hat = (step.w * step.u_hat).numpy().sum(-1)
    assert (w_u_hat >= -1 - 1e-5).all() and (w_u_hat < -0.99).any()
    z = rng.normal(0, 3, (64, D)).astype(np.float32)
    # and where wᵀz + b = 0, the flattest point (det = 1 + wᵀû, near 0 here)
    w, b = step.w.numpy(), step.b.numpy()
    flat = (-b / (w * w).sum(-1))[:, None] * w
    for at in (z, flat):
        assert np.isfinite(step.forward_log_det_jacobian(at, event_ndims=1).numpy()).all()
    np.testing.assert_allclose(step.inverse(step.forward(z)), z, atol=1e-4)


def test_importance_terms_score_the_k_samples_exactly():
    """`importance_terms` with K samples, eager and in a `tf.function`: log q(z_k|x) is
    the change of variables at each z_k (XLA: the head's test above, and training)."""
    model = DenseVAE((4, 4, 1), D, hidden_units=(8,), seed=0,
                     posterior={"name": "iaf", "num_steps": 2, "hidden_units": [8],
                                "context_size": 2})
    _randomize(model.posterior, 9, 0.3)
    x = (np.random.default_rng(10).random((B, 4, 4, 1)) > 0.5).astype(np.float32)
    params = model.encoder(x).numpy()
    seed = tf.constant([1, 2])

    def terms_and_draws(x):  # the importance terms and the z_k they drew (same seed)
        return model.importance_terms(x, 3, seed=seed), model.encode(x).sample(3, seed=seed)

    fn = _iaf_forward(model.posterior, params)
    for terms, z in (terms_and_draws(x), tf.function(terms_and_draws)(x)):
        for k in range(3):
            _, expected = _change_of_variables(fn, params, _iaf_inverse(model.posterior, params, z[k].numpy()))
            np.testing.assert_allclose(terms["log_posterior"][k], expected, rtol=1e-4, atol=1e-4)


def _iaf_inverse(head, params, z):
    """z_T ↦ z_0 by hand: each step, last first, by d fixed-point passes
    z_{t−1} ← (z_t − (1 − σ) m) / σ at (m, s) = MADE_t(z_{t−1}, h)."""
    h = params[:, 2 * D:]
    for made in head.mades[::-1]:
        previous = np.zeros_like(z)
        for _ in range(D):
            out = made(previous, h).numpy()
            sigma = 1 / (1 + np.exp(-out[..., 1]))
            previous = (z - (1 - sigma) * out[..., 0]) / sigma
        z = previous
    return z.astype(np.float32)


@pytest.mark.xla
def test_trains_on_the_default_compiled_path():
    model = DenseVAE((4, 4, 1), D, hidden_units=(8,), seed=0,
                     posterior={"name": "iaf", "num_steps": 1, "hidden_units": [8],
                                "context_size": 2})
    x = (np.random.default_rng(11).random((32, 4, 4, 1)) > 0.5).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))  # XLA, several steps per call
    made = model.posterior.mades[0].output_kernel
    before = made.numpy().copy()
    history = model.fit(x, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert not np.allclose(before, made.numpy())


@pytest.mark.parametrize("spec, message", [
    ({"name": "iaf", "num_steps": 0}, "num_steps must be >= 1"),
    ({"name": "iaf", "hidden_units": []}, "hidden_units must list"),
    ({"name": "planar", "num_steps": -1}, "num_steps must be >= 1"),
])
def test_bad_arguments(spec, message):
    with pytest.raises(ValueError, match=message):
        DenseVAE((4, 4, 1), D, hidden_units=(8,), posterior=spec)
