"""Files that survive a crash: atomic JSON writes, fsync, atomic model checkpoints.

- `write_json_atomic`: write to a temporary file, flush it to disk, rename it over the
  target (readers see the old file or the new one, never half of one).
- `fsync_tree`, `fsync_folder`: make written files and renames durable.
- `pid_alive`: whether a process id names a running process (stale-lock checks).
- `AtomicModelCheckpoint`: `keras.callbacks.ModelCheckpoint` that writes beside the
  target and renames into place.

`keras_internals.AtomicBackupAndRestore` is the resumable-training checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras


def write_json(path, payload):
    """Write `payload` as indented, key-sorted JSON (not atomic: for staging folders)."""
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_json_atomic(path, payload, indent=None):
    """Write JSON to a temporary file, flush it to disk, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(payload, indent=indent, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_tree(root):
    """Flush every file of `root` to disk, so a folder renamed into place is complete."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


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


def pid_alive(pid) -> bool:
    """Whether process `pid` exists on this machine (True when we may not signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that writes beside the target and renames into place."""

    def __init__(self, filepath, **kwargs):
        self.final_path = Path(filepath)
        super().__init__(str(self.final_path.with_name("partial-" + self.final_path.name)),
                         **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if os.path.exists(self.filepath):
            os.replace(self.filepath, self.final_path)
