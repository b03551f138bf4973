"""Files that survive a crash: strict atomic JSON, fsync, locks, verified checkpoints.

- `write_json`, `write_json_atomic`: strict JSON (NaN and infinities become `null`);
  the atomic form writes a temporary file, flushes it to disk and renames it over the
  target (readers see the old file or the new one, never half of one).
- `fsync_file`, `fsync_tree`, `fsync_folder`: make written files and renames durable;
  `move_into_place`: a written file flushed and renamed over its target, durably.
- `FileLock`: an operating-system lock (`flock`) held while one process writes a
  folder; it ends with the process, however that ends, so a reused PID or a reboot
  never leaves a folder locked, and it records host, PID and start time for messages.
- `check_finite`: every weight and optimizer slot finite, or `TrainingDiverged`.
- `EpochCheckpoint`, `restore_checkpoint`: the resumable-training checkpoint (model
  and optimizer variables, so the optimizer's step and a β schedule of it continue),
  with a SHA-256 of each weights file in its metadata and the previous checkpoint kept
  until the new one is written, flushed and verified; a damaged checkpoint falls back
  to the previous one. Under several workers every worker saves (the chief into the
  checkpoint folder, the others into their own temporary folders) and every worker
  restores the chief's. Given a metric to `monitor`, the checkpoint of the best epoch
  so far is kept too (its file is already written: nothing more per epoch), and
  `save_best_model` makes a `.keras` model of it once, when training ends.
- `AtomicModelCheckpoint`: `keras.callbacks.ModelCheckpoint` that refuses non-finite
  weights, writes beside the target, flushes and renames into place.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import math
import os
import socket
from pathlib import Path

import h5py
import keras
import numpy as np

METADATA = "training_metadata.json"


class TrainingDiverged(RuntimeError):
    """The loss, or a weight or optimizer slot, became NaN or infinite.

    `epoch` and `batch` are 1-based (`batch` None when found at the end of an epoch);
    `cause` says what was not finite, e.g. "loss is nan"; `message` replaces the
    default one (which says where and why).
    """

    def __init__(self, epoch, batch, cause, message=None):
        self.epoch, self.batch, self.cause = epoch, batch, cause
        where = f"epoch {epoch}" + (f", batch {batch}" if batch is not None else "")
        super().__init__(message or f"training diverged at {where} ({cause})")


class DamagedCheckpoint(RuntimeError):
    """No checkpoint in a folder is intact; the message names the damaged file."""


def _strict(value):
    """`value` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, np.ndarray):
        return _strict(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(payload, indent=2) -> str:
    """Strict JSON text of `payload`, keys sorted, non-finite floats as null."""
    return json.dumps(_strict(payload), indent=indent, sort_keys=True, allow_nan=False) + "\n"


def write_json(path, payload):
    """Write strict, indented JSON (not atomic: for staging folders)."""
    Path(path).write_text(dumps(payload), encoding="utf-8")


def write_json_atomic(path, payload, indent=None):
    """Write strict JSON to a temporary file, flush it to disk, rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(dumps(payload, indent=indent))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_folder(path.parent)


def fsync_file(path):
    """Flush one written file to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_into_place(partial, path):
    """Flush the written file `partial` to disk and rename it over `path`, durably."""
    fsync_file(partial)
    os.replace(partial, path)
    fsync_folder(Path(path).parent)


def fsync_tree(root):
    """Flush every file of `root` to disk, so a folder renamed into place is complete."""
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(folder, name))


def fsync_folder(folder):
    """Flush a folder's entries (makes a rename inside it durable); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileLock:
    """An exclusive `flock` on the file `path`, held until `release` or the process ends.

    The lock belongs to the open file, so the kernel drops it when the process exits
    or is killed: a stale lock file never blocks anyone, whatever PID it names (a PID
    reused after a reboot or in a container, or one of another host on a shared
    filesystem). The file records host, PID and start time for the message of a
    refused `acquire`.

    Args:
        path: the lock file (created if missing).
        what: what the message says is being written ("run folder DIR").
    """

    def __init__(self, path, what):
        self.path = Path(path)
        self.what = what
        self._file = None

    def acquire(self):
        """Take the lock; FileExistsError naming the holder if another process has it."""
        while self._file is None:
            f = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise FileExistsError(f"{self.what} is being written by {holder}") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder removed the file as we opened it: take the new one
                f.close()
                continue
            f.seek(0)
            f.truncate()
            started = datetime.datetime.now().isoformat(timespec="seconds")
            f.write(f"process {os.getpid()} on {socket.gethostname()} (since {started})")
            f.flush()
            self._file = f
        return self

    def release(self):
        """Remove the lock file and drop the lock (nothing if it is not held)."""
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)
        self._file.close()  # closing drops the flock
        self._file = None

    @staticmethod
    def is_held(path) -> bool:
        """Whether a live process holds the lock on `path` (probed without waiting)."""
        try:
            f = open(path, "r", encoding="utf-8")
        except OSError:
            return False
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return False


def nonfinite_variables(model) -> list[str]:
    """Paths of the model's weights and optimizer slots (also those of the optimizers
    of a family's auxiliary parts, e.g. FactorVAE's discriminator) holding NaN or
    infinity."""
    variables = list(model.weights)
    auxiliary = getattr(model, "auxiliary_optimizers", dict)().values()
    for optimizer in [getattr(model, "optimizer", None), *auxiliary]:
        if optimizer is not None and optimizer.built:
            variables += list(optimizer.variables)
    return [v.path for v in variables if not np.all(np.isfinite(np.asarray(v)))]


def check_finite(model, epoch, batch=None):
    """Raise `TrainingDiverged` (at 1-based `epoch`) if a weight or slot is not finite."""
    bad = nonfinite_variables(model)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise TrainingDiverged(epoch, batch, f"non-finite values in {bad[0]}{more}")


def checkpoint_metadata(directory) -> dict | None:
    """The metadata of `directory`'s checkpoint, or None (none, or unreadable)."""
    path = Path(directory) / METADATA
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        int(meta["epoch"]), str(meta["weights"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


def _verify(path, digest=None) -> str | None:
    """Why the weights file `path` is not intact (None if it is)."""
    if not path.is_file():
        return "missing"
    if digest is not None and sha256(path) != digest:
        return "checksum mismatch"
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
    except Exception as error:  # truncated, not HDF5, unreadable dataset
        return f"unreadable: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    return None


def save_checkpoint(model, directory, epoch, keep_previous=True, score=None):
    """Write the model's and optimizer's variables as checkpoint `epoch` of `directory`.

    The weights file is written, flushed and verified first; then the metadata (epoch,
    file, SHA-256, the previous checkpoint's entry and the best one's) replaces the old
    one atomically; only then are files of no kept checkpoint removed.

    `score`: the monitored metric of this epoch (lower is better; None: not scored).
    The best-scored checkpoint is kept, with its score, as the metadata's `best`; a
    best entry of this epoch or a later one (left by an epoch that is being done
    again after a resume) is dropped.
    """
    check_finite(model, epoch)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    old = checkpoint_metadata(directory)
    name = f"epoch-{epoch}.weights.h5"
    model.save_weights(directory / name, overwrite=True)
    fsync_file(directory / name)
    problem = _verify(directory / name)
    if problem:
        raise OSError(f"checkpoint {directory / name} was written but is {problem}")
    entry = {"epoch": int(epoch), "weights": name, "sha256": sha256(directory / name)}
    previous = best = None
    if keep_previous and old is not None and old["weights"] != name:
        previous = {k: old.get(k) for k in ("epoch", "weights", "sha256")}
    if old is not None and isinstance(old.get("best"), dict) and old["best"]["epoch"] < epoch:
        best = old["best"]
    if score is not None and math.isfinite(float(score)) and (
            best is None or float(score) < best["score"]):
        best = {**entry, "score": float(score)}
    write_json_atomic(directory / METADATA, {**entry, "previous": previous, "best": best},
                      indent=2)
    kept = {name} | {e["weights"] for e in (previous, best) if e}
    for stale in directory.glob("*.weights.h5"):
        if stale.name not in kept:
            stale.unlink(missing_ok=True)


def save_best_model(model, directory, path, log=print):
    """Save the best checkpoint of `directory` as the `.keras` model `path`; the path,
    or None when there is no best checkpoint.

    Loads the checkpoint's weights into `model` (so call it last), checks them finite
    and writes beside `path`, flushes and renames into place. A damaged best checkpoint
    is named through `log` and nothing is written.
    """
    meta = checkpoint_metadata(directory)
    best = meta.get("best") if meta else None
    if not isinstance(best, dict):
        return None
    weights = Path(directory) / best["weights"]
    problem = _verify(weights, best.get("sha256"))
    if problem:
        log(f"best checkpoint {weights} is damaged ({problem}); {Path(path).name} not written")
        return None
    model.load_weights(weights)
    check_finite(model, best["epoch"])
    path = Path(path)
    partial = path.with_name("partial-" + path.name)
    model.save(partial)
    move_into_place(partial, path)
    return path


def restore_checkpoint(model, directory, log=print):
    """Load `directory`'s newest intact checkpoint into `model`; its epoch, or None.

    A damaged current checkpoint (checksum mismatch, truncated or missing file) falls
    back to the previous one, saying so through `log`. `DamagedCheckpoint` when a
    checkpoint exists but none is intact.
    """
    directory = Path(directory)
    meta = checkpoint_metadata(directory)
    if meta is None:
        if (directory / METADATA).exists():
            raise DamagedCheckpoint(f"checkpoint metadata {directory / METADATA} is damaged")
        return None
    candidates = [meta] + ([meta["previous"]] if meta.get("previous") else [])
    damage = []
    for entry in candidates:
        path = directory / entry["weights"]
        problem = _verify(path, entry.get("sha256"))
        if problem is None:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            try:
                model.load_weights(path)
            except Exception as error:
                problem = f"not loadable: {str(error).splitlines()[0] if str(error) else error!r}"
        if problem is None:
            if damage:
                log(f"checkpoint {damage[0]}; resuming from the previous one (epoch "
                    f"{entry['epoch']})")
            return int(entry["epoch"])
        damage.append(f"{path} is damaged ({problem})")
    raise DamagedCheckpoint("; ".join(damage) + " and no earlier checkpoint is kept")


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a verified checkpoint at the end of every epoch (`save_checkpoint`), and
    keeps the one with the lowest `monitor` (an epoch log, e.g. "val_loss"), if given,
    for `save_best_model`.

    Restore with `restore_checkpoint` before `fit` and pass the epoch it returns as
    `fit(initial_epoch=...)`. Under several workers give the chief the checkpoint folder
    and every other worker a temporary one: all of them save (as tf.distribute's fault
    tolerance asks), only the chief's is kept.
    """

    def __init__(self, directory, monitor=None):
        super().__init__()
        self.directory = Path(directory)
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        score = (logs or {}).get(self.monitor) if self.monitor else None
        save_checkpoint(self.model, self.directory, epoch + 1, score=score)


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that checks the weights are finite, writes beside the target,
    flushes the file and renames it into place."""

    def __init__(self, filepath, **kwargs):
        self.final_path = Path(filepath)
        super().__init__(str(self.final_path.with_name("partial-" + self.final_path.name)),
                         **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        check_finite(self.model, epoch + 1)
        super().on_epoch_end(epoch, logs)
        if os.path.exists(self.filepath):
            move_into_place(self.filepath, self.final_path)
