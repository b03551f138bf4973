"""The Keras and TensorFlow internals vae_zoo relies on, all in this one module.

Each use below is a private attribute or method of Keras 3.15 / TensorFlow 2.21 with
no public equivalent for what is needed. `tests/test_keras_internals.py` checks each
one's behaviour directly, so an upgrade that changes one fails there, by name, rather
than somewhere in a training run.

- `keras.callbacks.BackupAndRestore._save_model` / `_load_model` (with its
  `_current_epoch`, `_last_batch_seen` and `Model._initial_epoch`): overridden by
  `AtomicBackupAndRestore`, so a checkpoint is replaced in one atomic step.
- `Model._maybe_symbolic_build`: `fit`'s first-batch build, skipped by
  `skip_first_batch_build` under several workers (vae_zoo models build in
  `__init__`).
- `StrategyExtended._in_multi_worker_mode()`: whether a strategy spans workers
  (`in_multi_worker_mode`).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras

from vae_zoo.training.checkpointing import write_json_atomic


def in_multi_worker_mode(strategy) -> bool:
    """Whether `strategy` is configured with a cluster of several workers."""
    return bool(strategy.extended._in_multi_worker_mode())


def skip_first_batch_build(model):
    """Make `fit` skip its symbolic first-batch build on this instance.

    Keras averages the first batch over the replicas to build the model, which fails
    under several workers for `(x, y)` batches and for a batch that splits unevenly;
    vae_zoo models create their variables in `__init__`, so nothing is lost.
    """
    object.__setattr__(model, "_maybe_symbolic_build", lambda iterator=None, data_batch=None: None)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose checkpoint is replaced in one atomic step.

    Each save writes a new weights file (the model's and the optimizer's variables, so
    the optimizer's step and a β schedule of it continue), then atomically replaces
    `training_metadata.json`, which names that file and the finished epoch; only then
    is the previous weights file removed. A crash or kill at any point leaves the
    previous checkpoint loadable (Keras' own writes the weights in place). Nothing is
    saved once `guard` (a `callbacks.StopOnNaN`) has seen the loss diverge.
    """

    METADATA = "training_metadata.json"

    def __init__(self, backup_dir, guard=None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.diverged is not None:
            return  # keep the last good checkpoint
        super().on_epoch_end(epoch, logs)

    def _load_model(self):
        meta_path = Path(self.backup_dir) / self.METADATA
        if not meta_path.is_file():
            return
        meta = json.loads(meta_path.read_text())
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(Path(self.backup_dir) / meta["weights"])
        self.model._initial_epoch = meta["epoch"]

    def _save_model(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        meta_path = backup / self.METADATA
        old = json.loads(meta_path.read_text())["weights"] if meta_path.is_file() else None
        name = f"epoch-{self._current_epoch}-batch-{self._last_batch_seen}.weights.h5"
        if name == old:
            name = "again-" + name
        self.model.save_weights(backup / name, overwrite=True)
        write_json_atomic(meta_path, {"epoch": self._current_epoch,
                                      "batch": self._last_batch_seen, "weights": name})
        for stale in backup.glob("*.weights.h5"):
            if stale.name != name:
                stale.unlink(missing_ok=True)
