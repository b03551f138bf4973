"""The shared test case of a model family (in the spirit of keras-hub's `TestCase`).

`run_family_checks(model)` runs a built family through everything every family must
do, so a family's own test file holds only its own maths:

- shapes of `encode`, `decode`, `elbo`, `sample`, `reconstruct` and `call`;
- `elbo` eager and inside `tf.function` agree at a fixed seed;
- `importance_weights_of` (an IW bound's chunks) gives `log_importance_weights`;
- one `fit` step on the default (XLA, several steps per call) path: finite metrics,
  weights change;
- `get_config` → `from_config` and `.keras` save → load (no custom_objects): the same
  config and the same encoder, decoder and sample outputs (`train_loaded`: and the
  loaded model's restored optimizer trains on, as `tests/test_models.py` asks).

Every registered family is also exported and served from a fresh process by
`tests/test_export.py` (its `tiny_models` take any family it does not list from the
family's `example_arguments`).

Inputs come from the model itself: data on the 8-bit grid k/255 (inside every
likelihood's support after binarizing for Bernoulli), conditions of the shape of the
model's `dummy_inputs`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def example_inputs(model, n=4, seed=0):
    """`(x,)` or `(x, y)` for `model`: x valid for its likelihood, y its dummy condition
    repeated (label 0 / zero vector)."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 256, (n, *model.data_shape)) / 255.0).astype("float32")
    if model.likelihood.support_problem(x) is not None:  # binary likelihoods
        x = (x > 0.5).astype("float32")
    extra = [np.repeat(np.asarray(t), n, axis=0) for t in model.dummy_inputs()[1:]]
    return (x, *extra)


def _condition(inputs):
    return {} if len(inputs) == 1 else {"y": inputs[1]}


def _sample_kwargs(model):
    if not model.conditional:
        return {}
    return {"y": np.zeros((), np.int32) if getattr(model, "num_classes", None)
            else np.zeros((model.condition_dim,), np.float32)}


def check_api(model, inputs):
    x, y = inputs[0], _condition(inputs)
    n = len(x)
    q = model.encode(x, **y)
    assert q.batch_shape == [n] and tuple(q.event_shape) == model.latent_shape
    z = q.sample(seed=(0, 0))
    p = model.decode(z, **y)
    assert p.batch_shape == [n] and tuple(p.event_shape) == model.data_shape
    terms = model.elbo(*inputs, seed=(1, 2))
    assert set(terms) == {"elbo", "reconstruction", "kl"}
    assert all(v.shape == (n,) and np.isfinite(v.numpy()).all() for v in terms.values())
    np.testing.assert_allclose(terms["elbo"], terms["reconstruction"] - terms["kl"], rtol=1e-5,
                               atol=1e-4)
    assert model.sample(3, seed=1, **_sample_kwargs(model)).shape == (3, *model.data_shape)
    assert model.reconstruct(x, **y).shape == (n, *model.data_shape)
    assert model(inputs if model.conditional else x).shape == (n, *model.data_shape)


def check_importance_weights_of(model, inputs):
    """`importance_weights_of(x)` (q(z|x) once per batch, for the chunks of an IW bound)
    gives `log_importance_weights`' numbers at every seed."""
    x, y = inputs[0], _condition(inputs)
    weights_of = model.importance_weights_of(x, **y)
    for seed in ([0, 1], [2, 3]):
        np.testing.assert_allclose(
            weights_of(3, tf.constant(seed)),
            model.log_importance_weights(x, 3, seed=tf.constant(seed), **y),
            rtol=1e-5, atol=1e-4)


def check_eager_matches_compiled(model, inputs):
    seed = tf.constant([3, 4], tf.int32)
    eager = model.elbo(*inputs, seed=seed)
    compiled = tf.function(lambda *a: model.elbo(*a, seed=seed))(*inputs)
    for key in eager:
        np.testing.assert_allclose(compiled[key], eager[key], rtol=1e-4, atol=1e-3)


def check_fit_step(model, inputs):
    """One default-path `fit` step: finite metrics, weights moved."""
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = [w.numpy().copy() for w in model.trainable_weights]
    x, *rest = inputs
    history = model.fit(x, *rest, batch_size=len(x), epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))


def assert_same_model(a, b, inputs):
    """Same config and same encoder/decoder/sample outputs."""
    assert type(a) is type(b) and a.get_config() == b.get_config()
    x, y = inputs[0], _condition(inputs)
    q_a, q_b = a.encode(x, **y), b.encode(x, **y)
    np.testing.assert_allclose(q_a.mean(), q_b.mean(), atol=1e-6)
    z = q_a.mean()
    np.testing.assert_allclose(a.decode(z, **y).mean(), b.decode(z, **y).mean(), atol=1e-6)
    kwargs = _sample_kwargs(a)
    np.testing.assert_allclose(a.sample(3, seed=5, **kwargs), b.sample(3, seed=5, **kwargs),
                               atol=1e-6)


def check_round_trips(model, inputs, folder, train_loaded=False):
    """`from_config` (same config, same weight count) and `.keras` (same model; with
    `train_loaded`, a compiled model's restored optimizer trains on)."""
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()
    path = folder / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert_same_model(model, loaded, inputs)
    assert float(loaded.beta.numpy()) == float(model.beta.numpy())
    if train_loaded:
        x, *rest = inputs
        loaded.fit(x, *rest, batch_size=len(x), epochs=1, verbose=0)
    return loaded


def run_family_checks(model, folder, inputs=None):
    """Every check above, on a fresh model of a family."""
    inputs = inputs or example_inputs(model)
    check_api(model, inputs)
    check_importance_weights_of(model, inputs)
    check_eager_matches_compiled(model, inputs)
    check_fit_step(model, inputs)
    check_round_trips(model, inputs, folder)
    return inputs
