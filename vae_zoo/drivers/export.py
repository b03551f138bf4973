"""Export a VAE as a TensorFlow SavedModel for TF Serving: signatures, versioned folders.

`export_for_serving(model, base_dir)` writes `base_dir/<version>/`, the layout
`tensorflow_model_server --model_base_path=base_dir` watches (it serves the highest
integer version). The SavedModel is written by `keras.export.ExportArchive` into a
hidden staging folder in `base_dir` and renamed to its version number only when
complete, so a crash never leaves a half-written version (TF Serving ignores names that
are not integers) and an existing version is never touched.

The signatures (`encode`, `decode`, `reconstruct`, `sample`, `log_likelihood`,
`serving_default`) are described in `vae_zoo.drivers.signatures`.

`assets.extra/vae_zoo.json` (an extra file TF Serving ignores) records the family,
config, shapes and signatures; `find_export` and `sample_grid` read it so that
`vae-zoo sample saved_models/<name>` works without the `.keras` file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vae_zoo import plots
from vae_zoo.drivers import signatures
from vae_zoo.drivers.signatures import DEFAULT_SIGNATURE, likelihood_parameters  # noqa: F401
from vae_zoo.training.checkpointing import FileLock, fsync_folder, fsync_tree

METADATA_PATH = Path("assets.extra") / "vae_zoo.json"
STAGING_PREFIX = ".export-"
DEFAULT_MAX_SAMPLES = 10_000


# ---------------------------------------------------------------------- versions


def versions(base_dir) -> list[int]:
    """The version numbers present in `base_dir` (folders named by an integer), sorted."""
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        return []
    return sorted(int(p.name) for p in base_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(base_dir) -> int:
    """One more than the highest version in `base_dir` (1 for none)."""
    present = versions(base_dir)
    return present[-1] + 1 if present else 1


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    return int(version)


def find_export(path) -> Path | None:
    """The SavedModel version folder `path` names, or None if it names none.

    `path` is a version folder (holding `saved_model.pb`) or a model's base folder,
    whose highest version is taken, as TF Serving does.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    present = versions(path)
    if present and (path / str(present[-1]) / "saved_model.pb").is_file():
        return path / str(present[-1])
    return None


def metadata(export_dir) -> dict:
    """The `assets.extra/vae_zoo.json` record of an export."""
    file = Path(export_dir) / METADATA_PATH
    if not file.is_file():
        raise ValueError(f"{export_dir} is a SavedModel but not a vae_zoo export (no {METADATA_PATH})")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except ValueError:
        raise ValueError(f"cannot read {file}: not valid JSON (corrupt export)") from None


def load_saved_model(export_dir):
    """`tf.saved_model.load`, with a one-line error for a corrupt or unreadable one."""
    try:
        return tf.saved_model.load(str(export_dir))
    except Exception as error:  # DecodeError, OSError, NotFoundError, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load SavedModel {export_dir}: {first}") from None


def sample_grid(export_dir, n, label=None, seed=0):
    """Prior samples from an export's `sample` signature, as `vae-zoo sample` draws them.

    `export_dir` is a version folder or a model's base folder (its highest version).
    Like `vae_zoo.plots.sample_rows`, but from the SavedModel alone (no `.keras` file):
    n samples; n samples of `label`; or, for a class-conditional model without
    `label`, one row of `max(1, n // num_classes)` per class (every row drawn with the
    same seed).

    Returns:
        `(images [N, *input_shape] numpy, columns or None)`.
    """
    found = find_export(export_dir)
    if found is None:
        raise FileNotFoundError(f"no SavedModel at {export_dir}")
    export_dir = found
    info = metadata(export_dir)
    if not plots.is_image_shape(info["input_shape"]):
        raise ValueError(
            f"model input shape {tuple(info['input_shape'])} is not an image; nothing to draw"
        )
    condition = info["condition"]
    if label is not None and condition is None:
        raise ValueError(f"--label needs a conditional model; {export_dir} holds a {info['family']} model")
    if condition is not None and condition["name"] != "label":
        raise ValueError(
            f"{export_dir} is conditioned on vectors, not class labels; call its sample "
            "signature with a condition"
        )
    if n > info["max_samples"]:
        raise ValueError(f"this export draws at most {info['max_samples']} samples, got {n}")
    if condition is not None and label is not None and not 0 <= label < condition["size"]:
        raise ValueError(f"labels must lie in [0, {condition['size']}), got label {label}")
    sample = load_saved_model(export_dir).signatures["sample"]

    def draw(count, **y):
        out = sample(num_samples=tf.constant(count, tf.int32), seed=tf.constant(seed, tf.int32), **y)
        return out["samples"].numpy()

    if condition is None:
        return draw(n), None
    if label is not None:
        return draw(n, label=tf.constant(label, tf.int32)), None
    per_class = max(1, n // condition["size"])
    rows = [draw(per_class, label=tf.constant(k, tf.int32)) for k in range(condition["size"])]
    return np.concatenate(rows), per_class


# ---------------------------------------------------------------------- writing


def _lock_of(staging) -> Path:
    return staging.with_name(staging.name + ".lock")


def _remove_stale_staging(base_dir):
    """Delete staging folders left by exports whose process died (a hard crash).

    Each export holds an OS lock on its staging folder's `.lock` file while it writes;
    the kernel drops it when the process ends. A folder whose lock no one holds is
    stale, whatever host or PID made it (on a shared filesystem a PID means nothing)."""
    for lock in base_dir.glob(f"{STAGING_PREFIX}*.lock"):
        if not FileLock.is_held(lock):
            shutil.rmtree(lock.with_suffix(""), ignore_errors=True)
            lock.unlink(missing_ok=True)


def _publish(staging, base_dir, version):
    """Rename `staging` to its version folder; never replaces an existing version."""
    number = next_version(base_dir) if version is None else version
    while True:
        target = base_dir / str(number)
        if not target.exists():
            try:
                os.rename(staging, target)  # fails if another export made a non-empty target
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            else:
                fsync_folder(base_dir)  # make the rename itself durable
                return target
        if version is not None:
            raise FileExistsError(f"version {target} already exists; versions are never replaced")
        number += 1  # raced with another export: take the next number


def export_for_serving(model, base_dir, version=None, max_samples=DEFAULT_MAX_SAMPLES,
                       verbose=False, progress=False) -> Path:
    """Write the model as SavedModel version `base_dir/<version>/` for TF Serving.

    Args:
        model: a `vae_zoo.models.VAE` (any family).
        base_dir: the model's base folder (`saved_models/<name>`), what
            `tensorflow_model_server --model_base_path` points to; created if missing.
        version: positive int; default the next free one (highest present + 1).
        max_samples: the largest `num_samples` the `sample` and `log_likelihood`
            signatures accept (bounds a request's memory and time).
        verbose: let Keras print the endpoints it wrote.
        progress: show a progress bar over the export's stages (tracing the
            signatures, writing the SavedModel, its metadata and the move into
            place), with the time left (`keras.utils.Progbar`).

    Returns:
        The version folder's path.

    Raises:
        FileExistsError: `version` already exists (it is left untouched).
        ValueError: a bad version or a model that cannot be exported.
    """
    base_dir = Path(base_dir)
    if version is not None:
        version = _check_version(version)
        if (base_dir / str(version)).exists():
            raise FileExistsError(
                f"version {base_dir / str(version)} already exists; versions are never replaced"
            )
    max_samples = int(max_samples)
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    base_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(base_dir)
    staging = base_dir / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    lock = FileLock(_lock_of(staging), f"export {staging}").acquire()
    bar = keras.utils.Progbar(3, verbose=1 if progress else 0, unit_name="stage")
    try:
        archive, functions = signatures.archive(model, max_samples)
        bar.update(1)
        archive.write_out(str(staging), verbose=verbose)
        bar.update(2)
        record = signatures.describe_export(model, functions, max_samples)
        (staging / METADATA_PATH).parent.mkdir(parents=True, exist_ok=True)
        (staging / METADATA_PATH).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        fsync_tree(staging)
        target = _publish(staging, base_dir, version)
        bar.update(3)
        return target
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        lock.release()
