"""Crash-safe files: strict JSON, the folder lock, verified checkpoints with fallback,
the divergence guard and the weights check before every save."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from conftest import binary_data, tiny_dense
from vae_zoo.training import checkpointing
from vae_zoo.training.callbacks import StopOnNaN
from vae_zoo.training.checkpointing import (
    DamagedCheckpoint, EpochCheckpoint, FileLock, TrainingDiverged, restore_checkpoint,
)

pytestmark = pytest.mark.numerics  # rerun on other CPUs' code paths (.ci/run)

X = binary_data(16)


def _compiled(**kwargs):
    model = tiny_dense(**kwargs)
    model.compile(optimizer="adam", steps_per_execution=1, jit_compile=False)
    return model


def _strict_load(path):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ------------------------------------------------------------------------ JSON


def test_json_files_are_strict(tmp_path):
    payload = {"kl_per_dim": [np.float32(np.nan), 1.5, np.inf], "elbo": np.float64(-np.inf),
               "n": np.int64(3)}
    checkpointing.write_json(tmp_path / "a.json", payload)
    checkpointing.write_json_atomic(tmp_path / "b.json", payload)
    for name in ("a.json", "b.json"):
        assert _strict_load(tmp_path / name) == {"kl_per_dim": [None, 1.5, None], "elbo": None,
                                                "n": 3}


# ------------------------------------------------------------------------ lock

# Another process holding a run folder's lock as FileLock does (plain Python: no
# TensorFlow to import, so the holder starts at once).
HOLDER = textwrap.dedent("""
    import fcntl, os, socket, sys, time
    f = open(sys.argv[1], "a+")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.write(f"process {os.getpid()} on {socket.gethostname()} (since now)")
    f.flush()
    print("held", flush=True)
    time.sleep(60)
""")


def test_a_lock_held_by_a_live_process_refuses_and_dies_with_it(tmp_path):
    path = tmp_path / ".run.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert FileLock.is_held(path)
        with pytest.raises(FileExistsError, match=rf"^run folder R is being written by process "
                                                  rf"{holder.pid} on .+ \(since .+\)$"):
            FileLock(path, "run folder R").acquire()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the file stays
        holder.wait()
    assert path.exists() and not FileLock.is_held(path)
    lock = FileLock(path, "run folder R").acquire()  # the kernel dropped the dead one's lock
    lock.release()
    assert not path.exists()


def test_a_lock_file_naming_a_live_unrelated_process_does_not_block(tmp_path):
    """A PID reused after a reboot (or another host's PID) in a stale lock file."""
    path = tmp_path / ".run.lock"
    path.write_text("process 1 on otherhost (since 2020-01-01T00:00:00)")
    lock = FileLock(path, "run folder R").acquire()
    assert FileLock.is_held(path)
    with pytest.raises(FileExistsError):  # a second holder, even in this process
        FileLock(path, "run folder R").acquire()
    lock.release()


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_keeps_the_previous_one_and_restores_the_step(tmp_path):
    model = _compiled()
    model.fit(X, batch_size=4, epochs=3, verbose=0, callbacks=[EpochCheckpoint(tmp_path)])
    meta = json.loads((tmp_path / "training_metadata.json").read_text())
    assert meta["epoch"] == 3 and meta["previous"]["epoch"] == 2
    assert sorted(p.name for p in tmp_path.glob("*.weights.h5")) == [
        "epoch-2.weights.h5", "epoch-3.weights.h5"]
    assert meta["sha256"] == checkpointing.sha256(tmp_path / "epoch-3.weights.h5")
    fresh = _compiled()
    assert restore_checkpoint(fresh, tmp_path) == 3
    assert int(fresh.optimizer.iterations.numpy()) == 12
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    history = fresh.fit(X, batch_size=4, epochs=4, initial_epoch=3, verbose=0)
    assert history.epoch == [3]


class _Scores(keras.callbacks.Callback):
    """Puts `scores[epoch]` into the epoch logs as "score" and keeps each epoch's weights."""

    def __init__(self, scores):
        super().__init__()
        self.scores, self.weights = scores, []

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.scores[epoch]
        self.weights.append([v.numpy() for v in self.model.weights])


def test_the_best_scored_checkpoint_is_kept_and_saved_as_a_model(tmp_path):
    model = _compiled()
    scores = _Scores([3.0, 1.0, float("nan"), 2.0, 5.0])
    model.fit(X, batch_size=4, epochs=5, verbose=0,
              callbacks=[scores, EpochCheckpoint(tmp_path, monitor="score")])
    meta = json.loads((tmp_path / "training_metadata.json").read_text())
    assert (meta["epoch"], meta["previous"]["epoch"]) == (5, 4)
    assert meta["best"] == {"epoch": 2, "weights": "epoch-2.weights.h5", "score": 1.0,
                            "sha256": checkpointing.sha256(tmp_path / "epoch-2.weights.h5")}
    assert sorted(p.name for p in tmp_path.glob("*.weights.h5")) == [
        "epoch-2.weights.h5", "epoch-4.weights.h5", "epoch-5.weights.h5"]
    path = checkpointing.save_best_model(model, tmp_path, tmp_path / "best.keras")
    assert path == tmp_path / "best.keras" and not list(tmp_path.glob("partial-*"))
    best = keras.models.load_model(path)
    for a, b in zip(scores.weights[1], best.weights):
        np.testing.assert_array_equal(a, b)
    assert int(best.optimizer.iterations.numpy()) == 8  # the optimizer of epoch 2
    # no monitor: no best, no model
    assert checkpointing.save_best_model(model, tmp_path / "none", tmp_path / "b.keras") is None
    checkpointing.save_checkpoint(model, tmp_path / "plain", 1)
    assert checkpointing.checkpoint_metadata(tmp_path / "plain")["best"] is None


def test_the_best_checkpoint_survives_a_resume_unless_its_epoch_is_done_again(tmp_path):
    model = _compiled()
    for epoch, score in [(1, 2.0), (2, 1.0), (3, 3.0)]:
        checkpointing.save_checkpoint(model, tmp_path, epoch, score=score)
    checkpointing.save_checkpoint(model, tmp_path, 3, score=4.0)  # epoch 3 again: 2 stays
    assert checkpointing.checkpoint_metadata(tmp_path)["best"]["epoch"] == 2
    checkpointing.save_checkpoint(model, tmp_path, 4, score=0.5)
    checkpointing.save_checkpoint(model, tmp_path, 4, score=1.5)  # a best of a redone epoch
    best = checkpointing.checkpoint_metadata(tmp_path)["best"]
    assert (best["epoch"], best["score"]) == (4, 1.5)


def test_a_damaged_best_checkpoint_is_named_and_no_model_written(tmp_path):
    model = _compiled()
    checkpointing.save_checkpoint(model, tmp_path, 1, score=1.0)
    checkpointing.save_checkpoint(model, tmp_path, 2, score=2.0)
    (tmp_path / "epoch-1.weights.h5").write_bytes(b"junk")
    said = []
    assert checkpointing.save_best_model(model, tmp_path, tmp_path / "best.keras",
                                         log=said.append) is None
    assert said == [f"best checkpoint {tmp_path / 'epoch-1.weights.h5'} is damaged (checksum "
                    "mismatch); best.keras not written"]
    assert not (tmp_path / "best.keras").exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(damage, tmp_path):
    model = _compiled()
    model.fit(X, batch_size=4, epochs=2, verbose=0, callbacks=[EpochCheckpoint(tmp_path)])
    current = tmp_path / "epoch-2.weights.h5"
    data = current.read_bytes()
    if damage == "truncated":
        current.write_bytes(data[:3000])
    elif damage == "flipped":  # same size, one byte changed: only the checksum sees it
        current.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    else:
        current.unlink()
    said = []
    fresh = _compiled()
    assert restore_checkpoint(fresh, tmp_path, log=said.append) == 1
    assert int(fresh.optimizer.iterations.numpy()) == 4
    assert len(said) == 1 and said[0].startswith(f"checkpoint {current} is damaged (")
    assert said[0].endswith("resuming from the previous one (epoch 1)")
    # both damaged: one line naming the files
    (tmp_path / "epoch-1.weights.h5").write_bytes(b"junk")
    with pytest.raises(DamagedCheckpoint, match=r"epoch-1.weights.h5 is damaged .* and no "
                                                r"earlier checkpoint is kept$"):
        restore_checkpoint(_compiled(), tmp_path)


def test_damaged_metadata_is_named(tmp_path):
    (tmp_path / "training_metadata.json").write_text('{"epoch": 2, "wei')
    with pytest.raises(DamagedCheckpoint, match="checkpoint metadata .* is damaged"):
        restore_checkpoint(_compiled(), tmp_path)
    assert restore_checkpoint(_compiled(), tmp_path / "none") is None


class _Poison(keras.callbacks.Callback):
    """NaN into the first encoder kernel after the last batch of epoch `epoch` (1-based).

    The epoch's loss was computed before, so it is finite: the weights are NaN behind a
    finite loss, built the same way on every CPU (whether a kernel turns NaN into 0 or
    passes it on, as ReLU does differently on AVX2 and AVX-512, plays no part).
    """

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch + 1 == self.params["steps"]:
            kernel = self.model.encoder.trainable_variables[0]
            kernel.assign(kernel * np.nan)


def test_nan_weights_behind_a_finite_loss_are_never_checkpointed(tmp_path):
    model = _compiled()
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(logs["loss"]))
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 3 \(non-finite "
                                               r"values in .+\)$"):
        model.fit(X, batch_size=4, epochs=4, verbose=0,
                  callbacks=[_Poison(3), record, EpochCheckpoint(tmp_path)])
    assert np.isfinite(seen).all() and len(seen) == 3  # epoch 3's loss looked fine
    assert json.loads((tmp_path / "training_metadata.json").read_text())["epoch"] == 2
    fresh = _compiled()
    restore_checkpoint(fresh, tmp_path)
    assert not checkpointing.nonfinite_variables(fresh)


def test_the_guard_stops_at_the_first_nonfinite_batch_before_validation():
    x = X.copy()
    x[9] = np.nan  # batch 3 of 4
    validated = []
    model = _compiled()
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 1, batch 3 "
                                               r"\(loss is nan\)$"):
        model.fit(x, batch_size=4, epochs=2, verbose=0, validation_data=X, shuffle=False,
                  callbacks=[StopOnNaN(), keras.callbacks.LambdaCallback(
                      on_test_begin=lambda logs: validated.append(1))])
    assert not validated


def test_the_guard_checks_weights_at_each_epoch_end():
    model = _compiled()
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 2 \(non-finite"):
        model.fit(X, batch_size=4, epochs=3, verbose=0, callbacks=[_Poison(2), StopOnNaN()])


def test_best_model_checkpoint_refuses_nan_weights(tmp_path):
    model = _compiled()
    best = checkpointing.AtomicModelCheckpoint(tmp_path / "best.keras", monitor="loss",
                                               save_best_only=False)
    model.fit(X, batch_size=4, epochs=1, verbose=0, callbacks=[best])
    written = (tmp_path / "best.keras").stat().st_mtime_ns
    with pytest.raises(TrainingDiverged):
        model.fit(X, batch_size=4, epochs=1, verbose=0, callbacks=[_Poison(1), best])
    assert (tmp_path / "best.keras").stat().st_mtime_ns == written
    assert not checkpointing.nonfinite_variables(keras.models.load_model(tmp_path / "best.keras"))


def test_nonfinite_slots_of_an_auxiliary_optimizer_are_found():
    """FactorVAE's discriminator has its own optimizer: its slots are checked too."""
    from vae_zoo.models.factor import FactorVAE

    model = FactorVAE(**{**FactorVAE.example_arguments, "seed": 0})
    model.compile(optimizer="adam", jit_compile=False, steps_per_execution=1)
    x = (np.random.default_rng(0).random((8, 8, 8, 1)) > 0.5).astype("float32")
    model.fit(x, batch_size=8, verbose=0)
    assert not checkpointing.nonfinite_variables(model)
    slot = model.discriminator_optimizer.variables[-1]
    slot.assign(np.full(slot.shape, np.nan, "float32"))
    assert checkpointing.nonfinite_variables(model) == [slot.path]
