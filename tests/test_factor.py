"""FactorVAE: the dimension-wise permutation, the TC estimate and the discriminator loss
against numpy, gradient routing between the two optimizers, the compiled path, 2
replicas stepping like 1, and the discriminator's optimizer kept by every saved form."""

import collections
import inspect
import itertools
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

from conftest import binary_data
from vae_zoo import objectives
from vae_zoo.models.factor import FactorVAE
from vae_zoo.training import checkpointing

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)


class Deterministic(FactorVAE):
    """z = E_q[z] and a fixed shuffle (odd dimensions swap rows 0↔1, 2↔3, ...: the same
    shuffle of a batch of 16 as of its halves 8 + 8); the discriminator trains by SGD."""

    def posterior_sample(self, q, seed):
        return q.mean()

    def permute_latents(self, z, seed):
        swapped = tf.reshape(tf.reverse(tf.reshape(z, [-1, 2, z.shape[-1]]), [1]), tf.shape(z))
        return tf.where(np.arange(z.shape[-1]) % 2 == 1, swapped, z)

    def make_auxiliary_optimizer(self, name):
        return keras.optimizers.SGD(self.discriminator_learning_rate)


ARGS = dict(input_shape=(6,), latent_dim=3, hidden_units=(8,), discriminator_units=(8, 8),
            gamma=3.0, beta=0.5, seed=0)


def tiny(**kwargs):
    keras.utils.set_random_seed(0)  # the initializers' draws
    return Deterministic(**{**ARGS, **kwargs})


def numpy_logits(model, z):
    """The discriminator's logit by hand: dense layers, leaky ReLU (slope 0.2)."""
    weights = model.discriminator.get_weights()
    h = np.asarray(z, np.float64)
    for i in range(0, len(weights), 2):
        h = h @ weights[i] + weights[i + 1]
        if i + 2 < len(weights):
            h = np.where(h > 0, h, 0.2 * h)
    return h[:, 0]


# ------------------------------------------------------------------------- permutation


def test_permutation_keeps_each_dimension_and_breaks_the_pairs():
    u = np.random.default_rng(0).normal(size=512).astype("float32")
    z = np.stack([u, u, -u, 2 * u], axis=1)  # perfectly dependent dimensions
    seed = tf.constant([3, 7], tf.int32)
    permuted = objectives.permute_dims(tf.constant(z), seed).numpy()
    np.testing.assert_array_equal(np.sort(permuted, 0), np.sort(z, 0))  # same multisets
    assert np.mean(np.all(permuted == z, axis=1)) < 0.02  # rows are not kept
    correlation = np.corrcoef(permuted.T)[np.triu_indices(4, 1)]
    assert np.all(np.abs(correlation) < 0.2), correlation  # was ±1 before
    np.testing.assert_array_equal(objectives.permute_dims(tf.constant(z), seed), permuted)
    compiled = tf.function(objectives.permute_dims, jit_compile=True)(tf.constant(z), seed)
    np.testing.assert_array_equal(np.sort(compiled, 0), np.sort(z, 0))


def test_each_dimension_gets_a_uniform_permutation_of_its_own():
    # 6,000 dimensions of a batch of 4: each column must be one of the 24 orders,
    # equally often.
    z = np.tile(np.arange(4, dtype="float32")[:, None], [1, 6000])
    permuted = objectives.permute_dims(tf.constant(z), tf.constant([1, 2], tf.int32)).numpy()
    counts = collections.Counter(map(tuple, permuted.T.astype(int)))
    assert set(counts) <= set(itertools.permutations(range(4)))
    observed = [counts[p] for p in itertools.permutations(range(4))]
    assert stats.chisquare(observed).pvalue > 1e-3


# ------------------------------------------------------------------------- the maths


def test_tc_estimate_discriminator_loss_and_loss_against_numpy():
    model = tiny()
    x = binary_data(n=8, shape=(6,))
    terms = model.compute_terms((x,), training=True)
    z = model.encode(x).mean().numpy()
    logits = numpy_logits(model, z)
    d = 1.0 / (1.0 + np.exp(-logits))  # D(z), the probability z comes from q(z)
    np.testing.assert_allclose(terms["tc"], np.log(d / (1.0 - d)), rtol=1e-4, atol=1e-5)
    permuted = z.copy()
    permuted[:, 1] = z[[1, 0, 3, 2, 5, 4, 7, 6], 1]  # Deterministic's swap of odd dims
    d_permuted = 1.0 / (1.0 + np.exp(-numpy_logits(model, permuted)))
    expected = -0.5 * (np.log(d) + np.log(1.0 - d_permuted))
    np.testing.assert_allclose(terms["discriminator_loss"], expected, rtol=1e-4, atol=1e-6)
    vae_loss = -(terms["reconstruction"] - 0.5 * terms["kl"])
    np.testing.assert_allclose(terms["loss"], vae_loss + 3.0 * np.log(d / (1.0 - d)),
                               rtol=1e-5, atol=1e-5)


def test_the_discriminator_separates_dependent_latents_and_estimates_their_tc():
    # z ~ N(0, Σ) with correlation ρ between 2 dimensions: TC = −½ log(1 − ρ²).
    # Trained only on its own loss, the discriminator's mean logit at fresh samples
    # approaches it.
    rho = 0.9
    keras.utils.set_random_seed(0)
    model = FactorVAE((6,), 2, hidden_units=(8,), discriminator_units=(32, 32), seed=0)
    covariance = np.array([[1.0, rho], [rho, 1.0]], np.float32)
    rng = np.random.default_rng(0)
    z, held_out = rng.multivariate_normal([0, 0], covariance, (2, 4096)).astype("float32")
    optimizer = keras.optimizers.Adam(1e-2)
    variables = model.discriminator.trainable_variables
    optimizer.build(variables)

    @tf.function
    def train(z):  # 300 steps in one call, batches of 512
        for i in tf.range(300):
            batch = z[(i % 8) * 512:(i % 8 + 1) * 512]
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(objectives.discriminator_loss(
                    model.discriminator_logits(batch),
                    model.discriminator_logits(objectives.permute_dims(batch, tf.stack([i, 0])))))
            optimizer.apply(tape.gradient(loss, variables), variables)

    train(tf.constant(z))
    tc = float(np.mean(model.discriminator_logits(held_out)))
    # (0.83 nats; a batch-of-512 density-ratio estimate scatters by about ±0.1)
    assert tc == pytest.approx(-0.5 * np.log(1 - rho ** 2), abs=0.2)


def _hand_step(model, x, learning_rate, d_learning_rate):
    """One SGD step of each part on the losses written out by hand; returns how far
    the VAE's loss would have moved the discriminator (the gradient a wrong routing
    would apply)."""
    vae_variables, d_variables = model.main_variables(), model.discriminator.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        q = model.encode(x)
        z = q.mean()
        rec = model.decode(z).log_prob(x)
        kl = tfp.distributions.kl_divergence(q, model.prior_distribution())
        vae_loss = tf.reduce_mean(-(rec - 0.5 * kl) + 3.0 * model.discriminator_logits(z))
        fixed = tf.stop_gradient(z)
        rows = np.arange(len(x)).reshape(-1, 2)[:, ::-1].reshape(-1)  # 1, 0, 3, 2, ...
        swapped = tf.concat([fixed[:, :1], tf.gather(fixed[:, 1:2], rows), fixed[:, 2:]], 1)
        d_loss = tf.reduce_mean(0.5 * (tf.math.softplus(-model.discriminator_logits(fixed))
                                       + tf.math.softplus(model.discriminator_logits(swapped))))
    for variables, loss, rate in ((vae_variables, vae_loss, learning_rate),
                                  (d_variables, d_loss, d_learning_rate)):
        for v, g in zip(variables, tape.gradient(loss, variables)):
            v.assign_sub(rate * g)
    return max(float(np.abs(g).max()) for g in tape.gradient(vae_loss, d_variables))


def test_gradient_routing_on_the_compiled_path():
    """Two steps in one XLA call: the VAE moves by −η ∇ of its own loss only, the
    discriminator by −η_D ∇ of its own loss only (by its own optimizer), though the
    VAE's loss depends on the discriminator too."""
    x = binary_data(n=16, shape=(6,))
    model, reference = tiny(discriminator_learning_rate=0.2), tiny(discriminator_learning_rate=0.2)
    vae_variables, d_variables = model.main_variables(), model.discriminator.trainable_variables
    assert {id(v) for v in vae_variables}.isdisjoint(id(v) for v in d_variables)
    assert len(vae_variables) + len(d_variables) == len(model.trainable_variables)
    leaks = [_hand_step(reference, tf.constant(x[i:i + 8]), 0.1, 0.2) for i in (0, 8)]
    assert min(leaks) > 1e-2  # a wrong routing would show

    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True, steps_per_execution=2)
    assert model.optimizer._trainable_variables == vae_variables  # never sees D
    model.fit(x, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations) == int(model.discriminator_optimizer.iterations) == 2
    for v, expected in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(v.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------- two replicas

MIRRORED = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    from vae_zoo import distribute
    from vae_zoo.models.factor import FactorVAE
    """
) + inspect.getsource(Deterministic) + textwrap.dedent(
    """
    strategy = distribute.strategy_for("mirrored")
    with np.load(sys.argv[1]) as data:
        x, reference = data["x"], [data[f"arr_{i}"] for i in range(len(data.files) - 1)]
    with strategy.scope():
        model = Deterministic(**json.loads(sys.argv[2]))
        model.set_weights(reference)
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    distribute.prepare_model(model, strategy)
    ds = distribute.shard(tf.data.Dataset.from_tensor_slices(x).batch(16))
    logs = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
    np.savez(sys.argv[3], *model.get_weights())
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "iterations": int(model.discriminator_optimizer.iterations.numpy()),
                      "logs": [logs["discriminator_loss"][0], logs["tc"][0]]}))
    """
)


@pytest.mark.slow
def test_two_replicas_step_like_one(tmp_path):
    """One SGD step on 2 replicas (8 + 8 examples) moves the VAE and the discriminator
    exactly as one step on 1 device: both losses are means over the global batch."""
    x = binary_data(n=16, shape=(6,))
    args = {**ARGS, "latent_dim": 4, "discriminator_units": (8,), "discriminator_learning_rate": 0.5}
    model = Deterministic(**args)
    reference = model.get_weights()
    np.savez(tmp_path / "in.npz", *reference, x=x)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path / "in.npz"),
                           json.dumps(args), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["iterations"] == 1

    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False, steps_per_execution=1)
    logs = model.fit(x, batch_size=16, epochs=1, verbose=0, shuffle=False).history
    assert result["logs"] == pytest.approx([logs["discriminator_loss"][0], logs["tc"][0]],
                                           rel=1e-5, abs=1e-6)
    one = [w - r for w, r in zip(model.get_weights(), reference)]
    with np.load(tmp_path / "out.npz") as out:
        two = [out[f"arr_{i}"] - r for i, r in enumerate(reference)]
    d = [i for i, w in enumerate(model.weights) if "/discriminator/" in w.path]
    assert min(float(np.abs(one[i]).max()) for i in d) > 1e-3  # the discriminator moved
    assert max(float(np.abs(u).max()) for u in one) > 1e-2
    for u, v in zip(one, two):
        np.testing.assert_allclose(v, u, atol=1e-6)


# ------------------------------------------------------------------------- saved state


def _same_discriminator(a, b):
    for u, v in zip(a.discriminator.weights + a.discriminator_optimizer.variables,
                    b.discriminator.weights + b.discriminator_optimizer.variables, strict=True):
        np.testing.assert_array_equal(u.numpy(), v.numpy())


def test_saved_forms_keep_the_discriminator_and_its_optimizer(tmp_path):
    """A `.keras` file (then trained on), tf.train.Checkpoint and the epoch checkpoints
    restore the discriminator's weights, Adam slots and step."""
    x = binary_data(n=8, shape=(6,))
    model = FactorVAE(**{**ARGS, "discriminator_learning_rate": 0.05})
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False,
                  steps_per_execution=1)
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    state = model.discriminator_optimizer.variables
    assert int(model.discriminator_optimizer.iterations) == 2
    assert min(float(np.abs(s).max()) for s in state[2:]) > 0  # Adam's moments
    model.save(tmp_path / "model.keras")
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "tf" / "ckpt"))
    checkpointing.save_checkpoint(model, tmp_path / "epochs", epoch=1)

    for restore in (lambda m: tf.train.Checkpoint(model=m).restore(path).assert_consumed(),
                    lambda m: checkpointing.restore_checkpoint(m, tmp_path / "epochs")):
        fresh = FactorVAE(**{**ARGS, "seed": 1})
        fresh.compile(optimizer=keras.optimizers.Adam(1e-2))
        restore(fresh)
        _same_discriminator(model, fresh)
    loaded = keras.models.load_model(tmp_path / "model.keras")
    _same_discriminator(model, loaded)
    assert loaded.discriminator_optimizer.beta_1 == 0.5
    before = [w.numpy() for w in loaded.discriminator.weights]
    history = loaded.fit(x, batch_size=4, epochs=1, verbose=0).history
    assert int(loaded.discriminator_optimizer.iterations) == 4
    assert np.isfinite(history["discriminator_loss"][0]) and np.isfinite(history["tc"][0])
    assert all(not np.array_equal(a, w.numpy()) for a, w in zip(before, loaded.discriminator.weights))


# ------------------------------------------------------------------------- construction


def test_conv_body_with_other_heads_scores_and_differentiates():
    model = FactorVAE((8, 8, 1), 3, body="conv", filters=(4,), kernel_sizes=(3,), strides=(2,),
                      dense_units=(8,), discriminator_units=(8,), seed=0,
                      posterior="full_covariance_gaussian",
                      prior={"name": "mixture_of_gaussians", "num_components": 2})
    x = binary_data(n=4, shape=(8, 8, 1))
    with tf.GradientTape() as tape:
        terms = model.compute_terms((x,), training=True)
        loss = tf.reduce_mean(terms["loss"])
    assert all(terms[k].shape == (4,) for k in ("loss", "tc", "discriminator_loss", "elbo"))
    grads = tape.gradient(loss, model.encoder.trainable_variables)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert model.get_config()["body"] == "conv"


@pytest.mark.parametrize("kwargs, message", [
    (dict(latent_dim=1), "latent_dim must be >= 2"),
    (dict(gamma=-1.0), "gamma must be >= 0"),
    (dict(body="rnn"), "body must be one of"),
    (dict(discriminator_units=()), "discriminator_units must list at least one size"),
    (dict(discriminator_units=(8, 0)), r"discriminator_units must list at least one size, "
                                        r"each >= 1, got \(8, 0\)"),
    (dict(discriminator_learning_rate=0.0), "discriminator_learning_rate must be > 0"),
    (dict(body="conv"), "input_shape must be"),
    (dict(objective="iwae"), "unexpected argument 'objective'"),
])
def test_bad_arguments_raise_one_line(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message) as error:
        FactorVAE(**{**ARGS, **kwargs})
    assert "\n" not in str(error.value)
