"""The life of a run folder on disk: staging, lock, resume decision, finishing.

A run folder `DIR` is written as `.DIR.partial` beside it (`staging_path`) and moved
into place only when complete (`publish`). One process writes it at a time: an OS lock
on `.DIR.lock` (`lock`), which ends with its process however that ends. The staging
folder's `backup/` (`checkpoint_folder`) holds the checkpoint a rerun resumes from, if
the recipe is the same, or differs only in training-only keys (`RESUMABLE_CHANGES`) and
the rerun says `--resume`; `--restart` discards it. Finishing marks the results finished
before it removes the checkpoint and moves the folder (an old one, with `--overwrite`,
aside to `.DIR.old` first), so `finish_interrupted` can complete any step a crash
interrupted. Under several workers the chief decides and tells the others (`start`).

`vae_zoo.drivers.runs` trains in these folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from vae_zoo.training import distribute
from vae_zoo.training.checkpointing import (
    FileLock, checkpoint_metadata, fsync_folder, fsync_tree, write_json_atomic,
)

# Keys a rerun may change and still continue the checkpoint (with --resume): they
# change how training goes on, not what is being trained. Any other change needs
# --restart.
RESUMABLE_CHANGES = {
    "train": ("epochs", "learning_rate", "jit_compile", "steps_per_execution"),
    "annealing": None,  # None: every key of the section
    "evaluate": None,
    "output": None,
    "tune": None,
}
FINISHED = ".finished"  # in a staging folder: its results are complete


def staging_path(output) -> Path:
    """The staging folder of a run folder: stable across reruns, so a rerun resumes."""
    output = Path(output)
    return output.parent / f".{output.name}.partial"


def lock_path(output) -> Path:
    output = Path(output)
    return output.parent / f".{output.name}.lock"


def old_path(output) -> Path:
    """Where `--overwrite` moves the old run folder while it swaps the new one in."""
    output = Path(output)
    return output.parent / f".{output.name}.old"


def checkpoint_folder(staging) -> Path:
    return staging / "backup"


def has_checkpoint(staging) -> bool:
    return checkpoint_metadata(checkpoint_folder(staging)) is not None


def _changed_keys(saved, recipe):
    """`section.key` names whose values differ between two recipes, with both values."""
    changed = []
    for section in sorted(set(saved) | set(recipe)):
        a, b = saved.get(section, {}), recipe.get(section, {})
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                changed.append((section, a, b))
            continue
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                changed.append((f"{section}.{key}", a.get(key), b.get(key)))
    return changed


def _resumable(name) -> bool:
    section, _, key = name.partition(".")
    if section not in RESUMABLE_CHANGES:
        return False
    keys = RESUMABLE_CHANGES[section]
    return keys is None or key in keys


def _resume_decision(staging, recipe, resume, restart):
    """Whether to continue `staging`'s checkpoint: True, False (start afresh), or a
    one-line `ValueError` when the recipe changed and neither flag says what to do.
    Reads files only, so every worker of a cluster decides alike."""
    if restart or not has_checkpoint(staging):
        return False
    try:
        saved = json.loads((staging / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # a checkpoint without its recipe cannot be trusted
    changed = _changed_keys(saved, json.loads(json.dumps(recipe.to_dict())))
    if not changed:
        return True
    epoch = checkpoint_metadata(checkpoint_folder(staging))["epoch"]
    listed = ", ".join(f"{name} {old!r} -> {new!r}" for name, old, new in changed[:4])
    listed += f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    fixed = [name for name, _, _ in changed if not _resumable(name)]
    if not fixed and resume:
        print(f"continuing the checkpoint with changed training settings: {listed}", flush=True)
        return True
    advice = ("pass --resume to continue it with the new values, or --restart to discard it"
              if not fixed else
              f"{', '.join(fixed)} cannot change in a resumed run; pass --restart to discard "
              "it, or use another --output")
    raise ValueError(f"{staging} holds a checkpoint after epoch {epoch} of a different recipe "
                     f"({listed}); {advice}")


def cut_history(path, epochs):
    """Keep the header and the first `epochs` rows of a CSV log."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[: 1 + epochs]
    if kept and not kept[-1].endswith("\n"):
        kept = kept[:-1]  # a row cut off by the kill
    path.write_text("".join(kept))


def _finish_interrupted(output, overwrite) -> bool:
    """Complete the finishing of a run a crash interrupted; True when `output` now
    holds that finished run (nothing to train). Every step of `publish` leaves a state
    this recognizes, so rerunning the same command always ends with one run folder
    and no leftovers."""
    staging, old = staging_path(output), old_path(output)
    finished = (staging / FINISHED).is_file()
    if old.exists():
        if output.exists():  # the swap was done; only the old copy is left
            shutil.rmtree(old)
        elif finished:  # killed between moving the old folder aside and the new one in
            _rename(staging, output)
            shutil.rmtree(old)
            (output / FINISHED).unlink(missing_ok=True)
            print(f"finished {output} (its results were complete; the old folder is removed)")
            return True
        else:  # cannot happen with publish's order; never lose the old folder
            _rename(old, output)
    if not finished:
        return False
    if output.exists() and not overwrite:
        raise FileExistsError(f"run folder {output} already exists and {staging} holds a "
                              "finished run (use --overwrite to replace it)")
    publish(staging, output)
    print(f"finished {output} (its results were complete in {staging})")
    return True


def _rename(source, target):
    os.rename(source, target)
    fsync_folder(Path(target).parent)


def publish(staging, output):
    """Move the finished staging folder into place (swapping an old one out last).

    The results are flushed and marked finished first, so from then on a rerun of the
    same command completes these steps instead of training again."""
    fsync_tree(staging)
    write_json_atomic(staging / FINISHED, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    shutil.rmtree(checkpoint_folder(staging), ignore_errors=True)
    if output.exists():  # overwrite=True: swap the old folder out only now
        old = old_path(output)
        _rename(output, old)
        _rename(staging, output)
        shutil.rmtree(old)
    else:
        _rename(staging, output)
    (output / FINISHED).unlink(missing_ok=True)


def _worker_folder(output, task) -> Path:
    """The temporary folder a non-chief worker writes for the run folder `output`: one
    name per run folder and task, so a restarted worker replaces what a killed one left."""
    digest = hashlib.sha256(str(Path(output).resolve()).encode()).hexdigest()[:16]
    task_type, task_id = task
    return Path(tempfile.gettempdir()) / f"vae_zoo-worker-{task_type}-{task_id}-{digest}"


def _open_staging(output, overwrite, recipe, resume, restart):
    """The chief's staging folder beside the run folder, and the checkpoint folder to
    resume from (None: start afresh)."""
    if output.exists() and not overwrite:
        raise FileExistsError(f"run folder {output} already exists (use --overwrite to replace it)")
    staging = staging_path(output)
    resume = _resume_decision(staging, recipe, resume, restart)
    resume_from = checkpoint_folder(staging) if resume else None
    if staging.is_dir() and resume_from is None:
        shutil.rmtree(staging)
    staging.mkdir(exist_ok=True)
    return staging, resume_from


# What the chief tells the other workers before training (`distribute.from_chief`).
_TRAIN, _RESUME, _DONE, _FAILED = 0, 1, 2, 3


def start(output, overwrite, recipe, resume, restart, strategy, chief, lock):
    """(folder this process writes, checkpoint folder to resume from or None), or
    (None, None) when there is nothing to train (an interrupted finishing completed).

    The chief takes the lock and decides from the files; then it tells the other
    workers, which wait for it, so every worker does what the chief does whenever it
    starts, whatever the chief changes meanwhile. They write their files to a temporary
    folder (`_worker_folder`, emptied first) and resume from the chief's checkpoint."""
    if not chief:
        action = distribute.from_chief([_FAILED], strategy)[0]
        if action == _FAILED:
            raise RuntimeError("the chief stopped before training (see its error)")
        if action == _DONE:
            return None, None
        folder = _worker_folder(output, distribute.task(strategy))
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder, checkpoint_folder(staging_path(output)) if action == _RESUME else None
    try:
        lock.acquire()
        if _finish_interrupted(output, overwrite):
            staging, checkpoint, action = None, None, _DONE
        else:
            staging, checkpoint = _open_staging(output, overwrite, recipe, resume, restart)
            action = _TRAIN if checkpoint is None else _RESUME
    except BaseException:
        distribute.from_chief([_FAILED], strategy)
        raise
    distribute.from_chief([action], strategy)
    return staging, checkpoint


def clean_up(staging, chief):
    """After a failure: keep a chief's staging folder that holds a checkpoint (a rerun
    resumes from it); remove anything else this process staged."""
    if staging is not None and not (chief and has_checkpoint(staging)):
        shutil.rmtree(staging, ignore_errors=True)


def lock(output) -> FileLock:
    """The lock of run folder `output` (not yet taken)."""
    return FileLock(lock_path(output), f"run folder {staging_path(output)}")
