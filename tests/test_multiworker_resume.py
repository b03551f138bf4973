"""Multi-worker fault tolerance: a killed 2-worker cluster, restarted, resumes exactly.

A worker SIGKILLs itself at the start of the 2nd batch of an epoch (one step per
execution): it took part in that epoch's first all-reduce, so the chief had committed
the previous epoch's checkpoint. The other worker then waits in a collective and is
killed too, as a supervisor would, which restarts both with the same commands. First
the non-chief worker is killed in epoch 2, then the chief in epoch 3, then the run
finishes: each start says where it resumes, history.csv has each epoch once, and both
workers end with identical weights. Last, a chief that cannot start stops the other
worker with one line. (The chief decides for every worker through the same collective
when it completes an interrupted finishing; that finishing itself is tested on one
process in test_faults.py.)
"""

import csv
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from test_multiworker import free_port, max_diff, weights

# Subprocesses, several devices or whole runs: out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

TIMEOUT = 240  # seconds for each start of the cluster
EPOCHS = 3
# 5,000 digits in global batches of 2 x 1,250: 4 steps per epoch, one step per execution.
TINY = ["model.latent_dim=2", "model.hidden_units=[8]", f"train.epochs={EPOCHS}",
        "data.batch_size=1250", "train.steps_per_execution=1", "train.jit_compile=false",
        "evaluate.num_samples=5", "evaluate.examples=40", "output.images_every=0",
        "output.diagnostics=false"]

WORKER = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    import numpy as np

    from vae_zoo import distribute, recipes, runs

    out, victim, kill_epoch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = distribute.strategy_for("auto")  # before any other TensorFlow op

    import keras

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if index == victim and self.epoch == kill_epoch and batch == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_end(self, logs=None):
            np.savez(out / f"weights-{index}.npz", *self.model.get_weights())

    recipe = recipes.load("mnist_dense", json.loads(sys.argv[4]))
    run = runs.train(recipe, out / "run", verbose=0, callbacks=[Probe()])
    print(json.dumps({"run": None if run is None else str(run)}))
    """
)


def start_cluster(out, ports, victim=-1, kill_epoch=-1):
    """The 2 workers, each with its own temporary folder (to check what is left there);
    worker `victim` SIGKILLs itself in (0-based) epoch `kill_epoch`."""
    procs = []
    for index in range(len(ports)):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        tmp = out / f"tmp-{index}"
        tmp.mkdir(exist_ok=True)
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2",
                   TMPDIR=str(tmp))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(out), str(victim), str(kill_epoch),
             json.dumps(TINY)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    return procs


def finish(procs):
    """(stdout, stderr) of each worker, once all have ended."""
    try:
        return [proc.communicate(timeout=TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def killed_run(out, ports, victim, kill_epoch):
    """Start the cluster; once `victim` has killed itself, kill the other worker too."""
    procs = start_cluster(out, ports, victim, kill_epoch)
    try:
        procs[victim].wait(timeout=TIMEOUT)
        time.sleep(1)  # the survivor waits in a collective (or fails): the supervisor kills it
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    outputs = finish(procs)
    assert procs[victim].returncode == -9, outputs[victim][1][-3000:]
    return outputs


def checkpoint_epoch(out):
    metadata = out / ".run.partial" / "backup" / "training_metadata.json"
    return json.loads(metadata.read_text())["epoch"]


def test_killed_cluster_resumes_exactly(tmp_path):
    ports = [free_port() for _ in range(2)]
    run, backup = tmp_path / "run", tmp_path / ".run.partial" / "backup"

    killed_run(tmp_path, ports, victim=1, kill_epoch=1)  # the other worker, in epoch 2
    assert checkpoint_epoch(tmp_path) == 1 and not run.exists()

    outputs = killed_run(tmp_path, ports, victim=0, kill_epoch=2)  # the chief, in epoch 3
    for stdout, _ in outputs:
        assert f"resuming {run} after epoch 1 from {backup}" in stdout
    assert checkpoint_epoch(tmp_path) == 2 and not run.exists()

    procs = start_cluster(tmp_path, ports)  # the same commands, no kill
    outputs = finish(procs)
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-3000:]
        assert f"resuming {run} after epoch 2 from {backup}" in stdout
    assert [json.loads(o[0].strip().splitlines()[-1])["run"] for o in outputs] == [str(run), None]
    with open(run / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(1, EPOCHS + 1))
    assert max_diff(weights(tmp_path / "weights-0.npz"), weights(tmp_path / "weights-1.npz")) == 0.0
    # Nothing left beside the run folder, nor in the workers' temporary folders.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    left = [sorted(p.name for p in (tmp_path / f"tmp-{i}").iterdir()
                   if not p.name.startswith("__autograph_generated")) for i in range(2)]
    assert left == [[], []]

    # A chief that cannot start (the run folder exists) stops the other worker too.
    procs = start_cluster(tmp_path, ports)
    outputs = finish(procs)
    assert [proc.returncode for proc in procs] == [1, 1]
    assert outputs[0][1].strip().splitlines()[-1] == (
        f"FileExistsError: run folder {run} already exists (use --overwrite to replace it)")
    assert outputs[1][1].strip().splitlines()[-1] == (
        "RuntimeError: the chief stopped before training (see its error)")
