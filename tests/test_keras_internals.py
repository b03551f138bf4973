"""The Keras and TensorFlow internals `vae_zoo.training.keras_internals` relies on still
behave as relied on: each test fails, by name, when an upgrade changes one."""

import json

import keras
import tensorflow as tf

from conftest import binary_data, tiny_dense
from vae_zoo.training import keras_internals

X = binary_data(16)


def _compiled():
    model = tiny_dense()
    model.compile(optimizer="adam", steps_per_execution=1, jit_compile=False)
    return model


def test_backup_and_restore_calls_save_model_at_epoch_end_with_its_counters(tmp_path):
    """`_save_model` runs after every epoch, with `_current_epoch` (epochs finished) and
    `_last_batch_seen` (0 at an epoch's end)."""
    seen = []

    class Recording(keras.callbacks.BackupAndRestore):
        def _save_model(self):
            seen.append((self._current_epoch, self._last_batch_seen))

    _compiled().fit(X, batch_size=4, epochs=2, verbose=0,
                    callbacks=[Recording(str(tmp_path / "b"), delete_checkpoint=False)])
    assert seen == [(1, 0), (2, 0)]


def test_backup_and_restore_calls_load_model_and_fit_starts_at_initial_epoch(tmp_path):
    """`_load_model` runs when training begins; the `_initial_epoch` it sets is where
    `fit` starts."""
    class Restoring(keras.callbacks.BackupAndRestore):
        def _load_model(self):
            self.model._initial_epoch = 2

    history = _compiled().fit(X, batch_size=4, epochs=3, verbose=0,
                              callbacks=[Restoring(str(tmp_path / "b"))])
    assert history.epoch == [2]


def test_atomic_backup_round_trip_restores_weights_and_optimizer_step(tmp_path):
    model = _compiled()
    backup = keras_internals.AtomicBackupAndRestore(str(tmp_path / "b"), delete_checkpoint=False)
    model.fit(X, batch_size=4, epochs=2, verbose=0, callbacks=[backup])
    meta = json.loads((tmp_path / "b" / "training_metadata.json").read_text())
    assert meta["epoch"] == 2 and (tmp_path / "b" / meta["weights"]).is_file()
    fresh = _compiled()
    history = fresh.fit(X, batch_size=4, epochs=3, verbose=0, callbacks=[
        keras_internals.AtomicBackupAndRestore(str(tmp_path / "b"), delete_checkpoint=False)])
    assert history.epoch == [2]
    assert int(fresh.optimizer.iterations.numpy()) == 12  # 8 restored + 4 new steps


def test_fit_calls_maybe_symbolic_build_which_can_be_skipped():
    model = _compiled()
    calls = []
    original = model._maybe_symbolic_build

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    object.__setattr__(model, "_maybe_symbolic_build", counting)
    model.fit(X, batch_size=4, epochs=1, verbose=0)
    assert calls
    keras_internals.skip_first_batch_build(model)
    model.fit(X, batch_size=4, epochs=1, verbose=0)  # still trains without it
    assert len(calls) == 1


def test_in_multi_worker_mode_of_single_process_strategies():
    assert keras_internals.in_multi_worker_mode(tf.distribute.get_strategy()) is False
