"""Strategies (`vae_zoo.distribute`), and training under MirroredStrategy on 2 logical CPUs.

Keras 3 sums the replicas' gradients, so each replica's loss must be its share of the
global-batch mean. The 2-device tests run in a subprocess because logical devices must
be configured before TensorFlow initializes.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from vae_zoo import cli, distribute, recipes
from vae_zoo.drivers.recipes import RecipeError

# Subprocesses, several devices or whole runs: out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from pathlib import Path
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from vae_zoo import cli, distribute, recipes, runs
    from vae_zoo.models import DenseVAE

    out = Path(sys.argv[1])

    class NoNoise(DenseVAE):
        # z = E_q[z]: removes sampling noise so the two runs see the same loss.
        def posterior_sample(self, q, seed):
            return q.mean()

    x = (np.random.default_rng(0).random((29, 6)) > 0.5).astype("float32")
    reference = NoNoise((6,), 2, hidden_units=(8,), beta=0.5, seed=0).get_weights()

    def one_epoch(strategy, x, batch):
        with strategy.scope():
            model = NoNoise((6,), 2, hidden_units=(8,), beta=0.5, seed=0)
            model.set_weights(reference)
            model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
        distribute.prepare_model(model, strategy)
        ds = distribute.shard(tf.data.Dataset.from_tensor_slices(x).batch(batch))
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        return [w - r for w, r in zip(model.get_weights(), reference)]

    one_device = distribute.strategy_for("one_device")
    mirrored = distribute.strategy_for("mirrored")
    one = one_epoch(one_device, x[:16], 16)  # one step, global batch 16 = 8 + 8
    two = one_epoch(mirrored, x[:16], 16)
    # Two steps; the second global batch of 13 splits unevenly (7 + 6).
    one_uneven = one_epoch(one_device, x, 16)
    two_uneven = one_epoch(mirrored, x, 16)
    # An uneven FIRST global batch (7 = 4 + 3, then 6 = 3 + 3): Keras 3.15's own
    # first-batch build fails on it unless prepare_model skips that build.
    one_first = one_epoch(one_device, x[:13], 7)
    try:
        two_first, first_error = one_epoch(mirrored, x[:13], 7), None
    except Exception as error:
        two_first, first_error = one_first, str(error).strip().splitlines()[0][:300]

    def max_diff(a, b):
        return max(float(np.abs(u - v).max()) for u, v in zip(a, b))

    def max_step(a):
        return max(float(np.abs(u).max()) for u in a)

    with mirrored.scope():
        model = DenseVAE((6,), 2, hidden_units=(8,), seed=0)
        model.compile(optimizer="adam")
    history = model.fit(x[:16], batch_size=8, epochs=2, verbose=0).history

    # The package's own path: runs.train under train.strategy = "mirrored".
    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.steps = self.params["steps"]
            self.mirrored = isinstance(self.model.trainable_variables[0].value,
                                       tf.distribute.DistributedValues)
            self.same_strategy = self.model.distribute_strategy is mirrored

    tiny = ["model.latent_dim=2", "model.hidden_units=[16]", "train.epochs=1",
            "data.batch_size=100", "evaluate.num_samples=5", "evaluate.examples=40",
            "output.images_every=0", "output.diagnostics=false"]
    probe = Probe()
    run = runs.train(recipes.load("mnist_dense", tiny + ["train.strategy=mirrored"]),
                     out / "run", verbose=0, callbacks=[probe])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(["train", *sum((["--set", o] for o in tiny), []),
                           "--strategy", "mirrored", "--output", str(out / "cli"), "--quiet"])
    print(json.dumps({
        "auto": distribute.resolve("auto"), "replicas": mirrored.num_replicas_in_sync,
        "cached": distribute.strategy_for("mirrored") is mirrored,
        "describe": distribute.describe(mirrored),
        "step": max_step(one), "diff": max_diff(one, two),
        "step_uneven": max_step(one_uneven), "diff_uneven": max_diff(one_uneven, two_uneven),
        "step_first": max_step(one_first), "diff_first": max_diff(one_first, two_first),
        "first_error": first_error,
        "fit_elbo": history["elbo"],
        "run": str(run), "steps": probe.steps, "mirrored_variables": probe.mirrored,
        "same_strategy": probe.same_strategy,
        "recipe_strategy": json.loads((run / "recipe.json").read_text())["train"]["strategy"],
        "run_elbo": json.loads((run / "metrics.json").read_text())["elbo"],
        "run_beta": float((run / "history.csv").read_text().splitlines()[1].split(",")[
            (run / "history.csv").read_text().splitlines()[0].split(",").index("beta")]),
        "cli_status": status, "cli_out": printed.getvalue(),
    }))
    """
)


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    """Runs SCRIPT on 2 logical CPU devices; returns what it measured."""
    out = tmp_path_factory.mktemp("mirrored")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True, env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_replicas_step_like_one(two_devices):
    """SGD steps on 2 replicas move the weights exactly like 1 replica, not twice as far."""
    result = two_devices
    assert result["replicas"] == 2 and result["cached"]
    assert result["step"] > 1e-2  # the step is not trivially zero
    assert result["diff"] < 1e-5 * max(1.0, result["step"])
    assert result["diff_uneven"] < 1e-5 * max(1.0, result["step_uneven"])
    assert all(abs(v) < 1e4 for v in result["fit_elbo"])


def test_uneven_first_batch_on_two_replicas(two_devices):
    """A first global batch of 7 on 2 replicas (4 + 3) trains, and steps like 1 replica."""
    result = two_devices
    assert result["first_error"] is None
    assert result["step_first"] > 1e-2
    assert result["diff_first"] < 1e-5 * max(1.0, result["step_first"])


def test_runs_train_under_mirrored(two_devices):
    """runs.train builds the model in the strategy's scope and batches by the global batch."""
    result = two_devices
    assert result["auto"] == "one_device"  # no GPU, no TF_CONFIG
    assert result["describe"] == "MirroredStrategy, 2 replicas on CPU:0, CPU:1"
    assert result["mirrored_variables"] and result["same_strategy"]
    assert result["steps"] == 25  # 5,000 digits / (100 per replica x 2 replicas)
    assert result["recipe_strategy"] == "mirrored"
    assert -1000 < result["run_elbo"] < 0
    # The recipe's β schedule ran in the replicas' compiled step: linear over 10 epochs
    # of 25 global steps, so epoch 1's mean β is mean(0, 1, ..., 24) / 250.
    assert result["run_beta"] == pytest.approx(12 / 250, rel=1e-5)


def test_cli_train_strategy_flag(two_devices):
    result = two_devices
    assert result["cli_status"] == 0
    lines = result["cli_out"].splitlines()
    assert lines[0] == ("strategy: MirroredStrategy, 2 replicas on CPU:0, CPU:1; "
                        "global batch 200 (100 per replica)")
    assert any(line.startswith("run folder: ") for line in lines)


# ---------------------------------------------------------------------- in-process


def test_strategy_choice(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.tf_config() is None
    assert distribute.resolve("auto") == "one_device"
    default = distribute.strategy_for("one_device")
    assert default is tf.distribute.get_strategy()
    assert distribute.num_replicas(default) == 1 and distribute.global_batch_size(64, default) == 64
    assert distribute.is_chief(default) and not distribute.is_multi_worker(default)
    assert distribute.describe(default) == "one device (no distribution)"
    cluster = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
               "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    assert distribute.resolve("auto") == "multi_worker"
    assert distribute.tf_config() == cluster


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG needs a "cluster"'),
        ('{"cluster": {"worker": ["a:1"]}}', 'TF_CONFIG needs a "task"'),
    ],
)
def test_bad_tf_config(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        distribute.resolve("auto")


def test_multi_worker_needs_tf_config(monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        distribute.strategy_for("multi_worker")
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.strategy_for("tpu")
    assert cli.main(["train", "--strategy", "multi_worker", "--set", "train.epochs=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the TF_CONFIG environment variable" in err[0]


def test_shard_policy_and_global_batch():
    ds = distribute.shard(tf.data.Dataset.range(10).batch(4))
    policy = ds.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA
    recipe = recipes.load("mnist_dense", ["data.batch_size=32"])
    train, test = recipes.build_datasets(recipe, replicas=3)
    assert next(iter(train)).shape[0] == 96 and next(iter(test))[0].shape[0] == 96


def test_strategy_recipe_key_and_flag(capsys):
    assert recipes.load("mnist_dense")["train"]["strategy"] == "auto"
    with pytest.raises(RecipeError, match=r"train\.strategy = 'mirored' .*did you mean 'mirrored'"):
        recipes.load("mnist_dense", ["train.strategy=mirored"])
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--strategy", "tpu"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'tpu'" in err[0]
