"""The fast paths compute what the plain paths compute.

XLA-compiled steps with several steps per execution (the defaults of `VAE.compile` and
of recipes) must train exactly like one plain `tf.function` step per batch; the
logits-space Bernoulli must score like TFP's; XLA-compiled evaluation must agree with
the plain graph.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from conftest import binary_data, tiny_dense, xla_compiled
from vae_zoo import evaluate, heads, recipes
from vae_zoo.models import ConditionalVAE
from vae_zoo.training.fast_path import AUTO_STEPS_PER_EXECUTION
from vae_zoo.training.compiled_step import OneBatchSizeXla

# About the compiled step: compile's jit_compile="auto" keeps XLA here (see conftest).
pytestmark = [pytest.mark.xla, pytest.mark.numerics]


def _train(model, x, jit_compile, steps_per_execution, y=None):
    keras.utils.set_random_seed(0)  # the same initial weights for every call
    model.set_weights([w.numpy() for w in type(model).from_config(model.get_config()).weights])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
    ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y)).batch(4)
    history = model.fit(ds, epochs=2, verbose=0)
    return history.history, [w.numpy() for w in model.trainable_weights]


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_several_steps_per_execution_train_exactly_like_one(objective, jit_compile):
    x = binary_data(n=22, shape=(6,))  # 6 batches per epoch, the last one short
    runs = [_train(tiny_dense(objective=objective, num_samples=3), x, jit_compile, steps)
            for steps in (1, 4)]
    (one_history, one_weights), (four_history, four_weights) = runs
    for a, b in zip(one_weights, four_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in one_history:
        np.testing.assert_allclose(one_history[key], four_history[key], rtol=1e-5, atol=1e-6)


def test_xla_step_computes_the_plain_step():
    # XLA draws other random numbers for the same seed (its own Philox transform), so
    # compare the deterministic parts: the analytic KL, log p(x|z) at a fixed z, and
    # the gradient of the ELBO at that z.
    model = tiny_dense()
    x = tf.constant(binary_data(n=8, shape=(6,)))
    z = tf.constant(np.random.default_rng(0).normal(size=(8, 2)).astype("float32"))

    def terms(x, z):
        with tf.GradientTape() as tape:
            q = model.encode(x)
            kl = tfp.distributions.kl_divergence(q, model.prior_distribution())
            z_q = q.mean() + q.stddev() * z  # reparameterized at fixed noise
            reconstruction = model.decode(z_q).log_prob(x)
            loss = -tf.reduce_mean(reconstruction - kl)
        return kl, reconstruction, tape.gradient(loss, model.trainable_weights)

    plain = tf.function(terms, jit_compile=False)(x, z)
    fast = tf.function(terms, jit_compile=True)(x, z)
    for a, b in zip(tf.nest.flatten(plain), tf.nest.flatten(fast)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_xla_training_matches_plain_training_in_distribution():
    # Different noise, same objective: after training from the same weights both
    # paths reach the same test ELBO within Monte-Carlo noise.
    x = binary_data(n=64, shape=(6,))
    elbos = []
    for jit, steps in ((False, 1), (True, 8)):
        model = tiny_dense()
        _train(model, x, jit, steps)
        elbos.append(np.mean(evaluate.log_likelihood(model, x, num_samples=200)))
    assert abs(elbos[0] - elbos[1]) < 0.15, elbos


@pytest.mark.slow
def test_xla_training_of_a_full_covariance_posterior_compiles():
    # set_diag's gradient does not compile under XLA with a dynamic batch: the head
    # must not use it.
    x = binary_data(n=12, shape=(6,))
    model = tiny_dense(posterior="full_covariance_gaussian")
    history, _ = _train(model, x, True, 3)
    assert np.isfinite(history["loss"]).all()


@pytest.mark.slow
def test_conditional_training_with_several_steps_per_execution():
    x = binary_data(n=12, shape=(6,))
    y = np.arange(12) % 3
    runs = []
    for steps in (1, 3):
        jit = True
        model = ConditionalVAE(input_shape=(6,), latent_dim=2, num_classes=3,
                               hidden_units=(8,), seed=0)
        runs.append(_train(model, x, jit, steps, y=y))
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_compile_defaults_are_fast_and_plain_under_a_strategy():
    model = tiny_dense()
    model.compile(optimizer="adam")
    assert model.jit_compile is True
    assert model.steps_per_execution == AUTO_STEPS_PER_EXECUTION
    model.compile(optimizer="adam", jit_compile=False, steps_per_execution=1)
    assert model.jit_compile is False and model.steps_per_execution == 1
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        distributed = tiny_dense()
        distributed.compile(optimizer="adam")
    assert distributed.jit_compile is False
    assert distributed.steps_per_execution == 1


@pytest.mark.slow
def test_a_loaded_model_is_compiled_as_saved(tmp_path):
    model = tiny_dense()
    model.compile(optimizer="adam", steps_per_execution=3)
    model.fit(binary_data(n=8, shape=(6,)), batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.jit_compile is True and loaded.steps_per_execution == 3
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    loaded.fit(binary_data(n=8, shape=(6,)), batch_size=4, epochs=1, verbose=0)


def test_recipes_compile_the_fast_path_by_default():
    recipe = recipes.load("mnist_dense")
    model = recipes.compile_model(recipes.build_model(recipe), recipe)
    assert model.jit_compile is True
    assert recipe["train"]["steps_per_execution"] == "auto"
    assert model.steps_per_execution == AUTO_STEPS_PER_EXECUTION > 1


def test_logit_bernoulli_scores_like_tfp():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 20, (5, 30)).astype("float32")
    x = (rng.random((5, 30)) < 0.5).astype("float32")
    grey = rng.random((5, 30)).astype("float32")
    ours = heads.LogitBernoulli(logits=logits, dtype=tf.float32)
    theirs = tfp.distributions.Bernoulli(logits=logits)
    np.testing.assert_allclose(ours.log_prob(x), theirs.log_prob(x), rtol=1e-6, atol=1e-5)
    # Grey levels: the negated binary cross-entropy.
    bce = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(grey, logits), axis=-1)
    np.testing.assert_allclose(tf.reduce_sum(ours.log_prob(grey), -1), -bce, rtol=1e-5)
    extreme = heads.LogitBernoulli(logits=np.float32([-1e30, 1e30, 0.0]))
    assert np.isfinite(extreme.log_prob(np.float32([0.0, 1.0, 1.0])).numpy()).all()


def test_xla_evaluation_agrees_with_plain():
    # Other noise under XLA: the two estimates agree within Monte-Carlo error. Fixed
    # weights: without a global seed they depend on which tests ran first in the worker.
    keras.utils.set_random_seed(0)
    model = tiny_dense()
    x = binary_data(n=7, shape=(6,))
    plain = evaluate.log_likelihood(model, x, num_samples=2000, chunk_size=300)
    fast = evaluate.log_likelihood(model, x, num_samples=2000, chunk_size=300, jit_compile=True)
    assert abs(plain.mean() - fast.mean()) < 0.1, (plain, fast)


@pytest.mark.slow
def test_mixed_precision_trains_with_float32_distributions():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny_dense()
        model.compile(optimizer="adam")
        x = binary_data(n=16, shape=(6,))
        history = model.fit(x, batch_size=4, epochs=2, verbose=0)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.encoder.layers[1].compute_dtype == "float16"
        assert model.encode(x).dtype == tf.float32
        assert model.decode(model.encode(x).mean()).log_prob(x).dtype == tf.float32
        assert np.isfinite(history.history["loss"]).all()
    finally:
        keras.config.set_dtype_policy(previous)


def test_one_batch_size_xla_compiles_the_first_size_only():
    def step(data):
        return {"total": tf.reduce_sum(data)}

    dispatch = OneBatchSizeXla(step, lambda data: tf.shape(data)[0])
    run = tf.function(dispatch, input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    sizes = [4, 4, 2, 4, 1]
    totals = [float(run(tf.ones([n, 3]))["total"]) for n in sizes]
    assert totals == [3.0 * n for n in sizes]
    assert int(dispatch.size) == 4
    assert (int(dispatch.compiled_steps), int(dispatch.plain_steps)) == (3, 2)
    assert dispatch.compiled.experimental_get_tracing_count() == 1
    assert dispatch.plain.experimental_get_tracing_count() == 1  # the step, traced once
    assert xla_compiled(run.get_concrete_function().graph.as_graph_def())


def test_a_partial_last_batch_runs_the_plain_step_not_a_second_compilation():
    """70 examples in batches of 16 with validation: XLA compiles the training step for
    batches of 16 only; the short batch of each epoch runs the plain step; the step is
    traced once. Validation runs a plain graph, never XLA. A model compiled without
    XLA has no compiled step."""
    x = binary_data(70)
    model = tiny_dense()
    model.compile(optimizer="adam")  # defaults: XLA, 32 steps per call
    model.fit(x, validation_data=x[:20], batch_size=16, epochs=3, verbose=0)
    steps = model.xla_steps()
    assert int(steps["train"].size) == 16
    assert (int(steps["train"].compiled_steps), int(steps["train"].plain_steps)) == (12, 3)
    # traced once (compile builds the optimizer: a step that created its slots would
    # be traced again)
    assert steps["train"].plain.experimental_get_tracing_count() == 1
    assert steps["test"] is None  # validation: the plain step, no XLA compilation
    assert model.jit_compile is True
    plain = tiny_dense()
    plain.compile(optimizer="adam", jit_compile=False)
    plain.fit(x, batch_size=16, epochs=1, verbose=0)
    assert plain.xla_steps()["train"] is None
