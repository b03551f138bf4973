"""Multi-worker training: 2 worker processes on 127.0.0.1 configured by TF_CONFIG.

Both workers run `vae_zoo.runs.train` on the same tiny recipe (train.strategy "auto",
which TF_CONFIG turns into MultiWorkerMirroredStrategy) and then a few noise-free SGD
steps. The test checks that both end with identical weights, that the chief alone
wrote the run folder, that the ELBO is close to a single-process run on the same global
batch, that noise-free steps equal single-process steps exactly, and that a
conditional model trains on (x, y) batches.
"""

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import binary_data
from vae_zoo import recipes, runs
from vae_zoo.models import DenseVAE

# Subprocesses, several devices or whole runs: out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

TIMEOUT = 240  # seconds for the whole cluster

# Per-replica batch 64 on 2 workers: global batch 128, like the single-process reference.
TINY = ["model.latent_dim=2", "model.hidden_units=[16]", "train.epochs=1",
        "evaluate.num_samples=5", "evaluate.examples=40", "output.images_every=0",
        "output.diagnostics=false"]
PER_REPLICA, WORKERS = 64, 2

WORKER = textwrap.dedent(
    """
    import contextlib, io, json, os, sys
    from pathlib import Path
    import numpy as np

    from vae_zoo import cli, distribute, recipes, runs

    out = Path(sys.argv[1])
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    overrides = json.loads(sys.argv[2])

    # The command line first: it creates the strategy (before any other TensorFlow op).
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(["train", *sum((["--set", o] for o in overrides), []),
                           "--output", str(out / "cli-run"), "--quiet"])
    strategy = distribute.strategy_for("auto")  # the same object

    import keras
    import tensorflow as tf
    from vae_zoo.models import DenseVAE

    class Weights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            np.savez(out / f"weights-{index}.npz", *self.model.get_weights())

    recipe = recipes.load("mnist_dense", overrides)
    run = runs.train(recipe, out / "run", verbose=0, callbacks=[Weights()])

    class NoNoise(DenseVAE):
        def posterior_sample(self, q, seed):
            return q.mean()

    start = np.load(out / "start.npz")
    x = np.load(out / "x.npy")
    with strategy.scope():
        model = NoNoise((6,), 2, hidden_units=(8,), beta=0.5, seed=0)
        model.set_weights([start[k] for k in start.files])
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    distribute.prepare_model(model, strategy)
    ds = distribute.shard(tf.data.Dataset.from_tensor_slices(x).batch(16))
    model.fit(ds, epochs=1, verbose=0, shuffle=False)  # batches 16 and 13 (7 + 6)
    np.savez(out / f"steps-{index}.npz", *model.get_weights())

    # A conditional model on (x, y) batches whose first batch splits unevenly (7 + 6).
    from vae_zoo.models import ConditionalVAE
    with strategy.scope():
        cvae = ConditionalVAE((6,), 2, num_classes=3, hidden_units=(8,), seed=0)
        cvae.compile(optimizer="adam", jit_compile=False)
    distribute.prepare_model(cvae, strategy)
    labels = np.arange(len(x)) % 3
    ds = distribute.shard(tf.data.Dataset.from_tensor_slices((x[:13], labels[:13])).batch(16))
    cvae_history = cvae.fit(ds, epochs=2, verbose=0, shuffle=False).history
    np.savez(out / f"cvae-{index}.npz", *cvae.get_weights())
    print(json.dumps({"run": None if run is None else str(run),
                      "kind": distribute.resolve("auto"),
                      "describe": distribute.describe(strategy),
                      "chief": distribute.is_chief(strategy),
                      "cli_status": status, "cli_out": printed.getvalue(),
                      "cvae_elbo": cvae_history["elbo"]}))
    """
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoNoise(DenseVAE):
    def posterior_sample(self, q, seed):
        return q.mean()


def weights(path):
    with np.load(path) as npz:
        return [npz[k] for k in npz.files]


def max_diff(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Starts the 2 workers, computes the single-process references meanwhile, and
    returns both."""
    out = tmp_path_factory.mktemp("multiworker")
    x = binary_data(29, (6,), seed=3)
    np.save(out / "x.npy", x)
    keras.utils.set_random_seed(0)
    start = NoNoise((6,), 2, hidden_units=(8,), beta=0.5, seed=0)
    np.savez(out / "start.npz", *start.get_weights())

    ports = [free_port() for _ in range(WORKERS)]
    procs = []
    try:
        for index in range(WORKERS):
            tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                         "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2")
            overrides = TINY + [f"data.batch_size={PER_REPLICA}"]
            procs.append(subprocess.Popen(
                [sys.executable, "-c", WORKER, str(out), json.dumps(overrides)], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))

        # Meanwhile, the single-process references on the same global batches.
        class Weights(keras.callbacks.Callback):
            def on_train_end(self, logs=None):
                np.savez(out / "weights-single.npz", *self.model.get_weights())

        single = runs.train(
            recipes.load("mnist_dense", TINY + [f"data.batch_size={PER_REPLICA * WORKERS}"]),
            out / "single", verbose=0, callbacks=[Weights()],
        )
        model = NoNoise((6,), 2, hidden_units=(8,), beta=0.5, seed=0)
        model.set_weights(start.get_weights())
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=1, verbose=0, shuffle=False)

        reports = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, stderr[-3000:]
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {"out": out, "reports": reports, "single": single, "start": start.get_weights(),
            "single_steps": model.get_weights()}


def last_row(path):
    with open(path) as f:
        return list(csv.DictReader(f))[-1]


def test_workers_end_with_identical_weights(cluster):
    out, reports = cluster["out"], cluster["reports"]
    assert [r["kind"] for r in reports] == ["multi_worker"] * 2
    assert reports[0]["describe"] == "MultiWorkerMirroredStrategy, 2 replicas, this process is worker 0"
    assert [r["chief"] for r in reports] == [True, False]
    # Only the chief wrote a run folder.
    assert reports[0]["run"] == str(out / "run") and reports[1]["run"] is None
    assert (out / "run" / "model.keras").is_file()
    assert not any(p.name.startswith(".run") for p in out.iterdir())
    w0, w1 = weights(out / "weights-0.npz"), weights(out / "weights-1.npz")
    assert max_diff(w0, w1) == 0.0
    saved = keras.models.load_model(out / "run" / "model.keras").get_weights()
    assert max_diff(saved, w0) == 0.0


def test_command_line_on_two_workers(cluster):
    """`vae-zoo train` under TF_CONFIG: multi-worker strategy, the chief's run folder."""
    out, reports = cluster["out"], cluster["reports"]
    assert [r["cli_status"] for r in reports] == [0, 0]
    for index, report in enumerate(reports):
        lines = report["cli_out"].splitlines()
        assert lines[0] == (f"strategy: MultiWorkerMirroredStrategy, 2 replicas, this process is "
                            f"worker {index}; global batch 128 (64 per replica)")
    assert f"run folder: {out / 'cli-run'}" in reports[0]["cli_out"]
    assert "worker done; the chief wrote the run folder" in reports[1]["cli_out"]
    assert (out / "cli-run" / "metrics.json").is_file()


def test_elbo_close_to_single_process(cluster):
    """Same data, same global batch; only the replicas' noise streams differ."""
    out = cluster["out"]
    multi, single = last_row(out / "run" / "history.csv"), last_row(cluster["single"] / "history.csv")
    for key in ("elbo", "val_elbo"):
        a, b = float(multi[key]), float(single[key])
        assert abs(a - b) < 0.02 * abs(b), (key, a, b)
    a = json.loads((out / "run" / "metrics.json").read_text())["elbo"]
    b = json.loads((cluster["single"] / "metrics.json").read_text())["elbo"]
    assert abs(a - b) < 0.02 * abs(b)


def test_conditional_model_and_uneven_first_batch(cluster):
    """(x, y) batches, and a first global batch of 13 split 7 + 6 over the workers."""
    out, reports = cluster["out"], cluster["reports"]
    assert max_diff(weights(out / "cvae-0.npz"), weights(out / "cvae-1.npz")) == 0.0
    assert reports[0]["cvae_elbo"] == reports[1]["cvae_elbo"]
    assert all(np.isfinite(reports[0]["cvae_elbo"])) and len(reports[0]["cvae_elbo"]) == 2


def test_noise_free_steps_equal_single_process(cluster):
    """2 workers' SGD steps (global batches 16 and 13, the last split 7 + 6) move the
    weights exactly as one process does."""
    out = cluster["out"]
    moved = max_diff(cluster["single_steps"], cluster["start"])
    assert moved > 1e-2
    for index in range(WORKERS):
        assert max_diff(weights(out / f"steps-{index}.npz"), cluster["single_steps"]) < 1e-5 * max(1.0, moved)
