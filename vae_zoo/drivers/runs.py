"""Run folders: train a recipe and write everything a run produces, atomically.

A run folder holds:
- `model.keras`: the trained model (`keras.models.load_model` needs no custom objects);
- `recipe.json`: the complete recipe, defaults filled in;
- `history.csv`: per-epoch metrics (`loss`, `elbo`, `reconstruction`, `kl`, `beta`
  and their `val_` twins on the test split);
- `logs/`: TensorBoard event files;
- `samples.png`: decoder means of z drawn from the prior (for a class-conditional
  model, one row per class);
- `reconstructions.png`: test inputs, each row followed by its reconstructions;
- `metrics.json`: test ELBO, its terms, importance-weighted log-likelihood, bits/dim.

The folder is written under a temporary name beside the target, `.<name>.partial`, and
renamed into place when complete, so an interrupted run never leaves a half-written run
folder, and an existing folder is never replaced unless `overwrite=True`.

Resume: the staging name depends only on the target, and holds `backup/`, a
`keras.callbacks.BackupAndRestore` checkpoint written atomically at the end of every
epoch. Rerunning the same command after a crash or a kill continues from the last
finished epoch (history.csv is cut back to the epochs the checkpoint holds, so no epoch
is lost or counted twice); a rerun with a different recipe starts afresh. `best.keras`
(lowest `val_loss` so far) is also kept, written atomically, and ends in the run folder.

NaN safety: a batch whose loss is NaN or infinite stops training (`TrainingDiverged`, a
`RuntimeError`), and the staging folder with the last good checkpoint is kept.

Training runs under the strategy the recipe's `train.strategy` names
(`vae_zoo.distribute`): the model and optimizer are built in its scope and batches hold
`data.batch_size` examples per replica. With several workers only the chief writes the
run folder; the others train in step with it and write to a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import keras
import numpy as np

from vae_zoo import evaluate, plots
from vae_zoo.data import first_examples
from vae_zoo.drivers import recipes as recipes_lib
from vae_zoo.training import distribute
from vae_zoo.training.callbacks import CollapseDiagnostics, ImageGrids, StopOnNaN
from vae_zoo.training.checkpointing import AtomicModelCheckpoint, pid_alive, write_json
from vae_zoo.training.keras_internals import AtomicBackupAndRestore

RUNS_DIR = "runs"


def default_output(recipe) -> Path:
    return Path(RUNS_DIR) / f"{recipe['name']}-{time.strftime('%Y%m%d-%H%M%S')}"


def model_inputs(ds, model):
    """`ds` without the labels an unconditional model ignores (batches of x only), so
    validation batches carry labels only for conditional models."""
    if model.conditional or not isinstance(ds.element_spec, tuple):
        return ds
    return ds.map(lambda x, *labels: x)


def sample_grid(model, n, label=None, seed=0):
    """Images to draw as a sample grid, and the grid's number of columns (None: square).

    Args:
        model: a `vae_zoo.models.VAE`.
        n: number of samples (a class-conditional model without `label` draws
            `n // num_classes` per class, at least 1).
        label: class label for a class-conditional model, or None.
        seed: int.

    Returns:
        `(images [N, *input_shape], columns)`: n prior samples; n samples of `label`;
        or, for a class-conditional model without `label`, one row per class.
    """
    if not model.conditional:
        if label is not None:
            raise ValueError(f"a label needs a conditional model, not a {type(model).__name__}")
        return model.sample(n, seed=seed).numpy(), None
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError(
            f"{type(model).__name__} is conditioned on vectors, not class labels; draw "
            "from it with model.sample(n, y=...)"
        )
    if label is not None:
        return model.sample(n, y=label, seed=seed).numpy(), None
    per_class = max(1, n // num_classes)
    labels = np.repeat(np.arange(num_classes), per_class)  # [num_classes * per_class]
    return model.sample(len(labels), y=labels, seed=seed).numpy(), per_class


def _monitoring_callbacks(recipe, model, x_test, y_test, folder):
    """Per-epoch diagnostics and image grids the recipe's [output] section asks for."""
    out = recipe["output"]
    chosen = []
    if out["diagnostics"]:
        chosen.append(CollapseDiagnostics(
            x_test[:500], None if y_test is None else y_test[:500], log_dir=folder / "logs"
        ))
    if out["images_every"] and plots.is_image_shape(model.data_shape):
        chosen.append(ImageGrids(
            x_test[:16], None if y_test is None else y_test[:16], output_dir=folder / "images",
            log_dir=folder / "logs", every=out["images_every"],
            num_samples=min(out["grid_size"], 64),
        ))
    return chosen


def check_labels(recipe, model, *label_arrays):
    """Refuse class labels a conditional model has no class for (before any training)."""
    for y in label_arrays:
        bad = evaluate.label_out_of_range(model, y)
        if bad is not None:
            raise ValueError(
                f"dataset {recipe['data']['dataset']!r} has labels outside "
                f"[0, {model.num_classes}) (got label {bad}); set model.num_classes to its "
                "number of classes"
            )


def check_data(recipe, model, *arrays):
    """Refuse data the model's likelihood cannot score (before any training)."""
    for x in arrays:
        if len(x) == 0:
            raise ValueError(f"dataset {recipe['data']['dataset']!r} gave no examples")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"dataset {recipe['data']['dataset']!r} contains NaN or inf values")
        problem = model.likelihood.support_problem(x)
        if problem:
            d = recipe["data"]
            raise ValueError(
                f"data {d['dataset']!r} with data.binarize = {d['binarize']!r} does not fit "
                f"model.likelihood: {problem}"
                + ("; set data.binarize = 'dynamic' or 'static', or pick a Gaussian or 8-bit "
                   "likelihood" if d["binarize"] == "none" else "")
            )


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite during training."""


def staging_path(output) -> Path:
    """The staging folder of a run folder: stable across reruns, so a rerun resumes."""
    output = Path(output)
    return output.parent / f".{output.name}.partial"


def _resume_state(staging, recipe):
    """Epochs finished in `staging`'s checkpoint, or None when there is nothing to resume
    (no checkpoint, or one of another recipe, which is then discarded)."""
    meta = _checkpoint_metadata(staging)
    recipe_file = staging / "recipe.json"
    if not meta.is_file() or not recipe_file.is_file():
        return None
    try:
        same = json.loads(recipe_file.read_text()) == json.loads(json.dumps(recipe))
        epoch = int(json.loads(meta.read_text())["epoch"])
    except (ValueError, KeyError, TypeError):
        return None
    return epoch if same else None


def _cut_history(path, epochs):
    """Keep the header and the first `epochs` rows of a CSV log; the best val_loss in
    them (None if there is none)."""
    if not path.is_file():
        return None
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[: 1 + epochs]
    if kept and not kept[-1].endswith("\n"):
        kept = kept[:-1]  # a row cut off by the kill
    path.write_text("".join(kept))
    header = kept[0].rstrip("\n").split(",") if kept else []
    if "val_loss" not in header:
        return None
    column = header.index("val_loss")
    values = [float(row.split(",")[column]) for row in kept[1:]]
    finite = [v for v in values if np.isfinite(v)]
    return min(finite) if finite else None


def _claim(staging):
    """Mark `staging` as ours; refuse one a live process is writing."""
    owner = staging / "owner.pid"
    if owner.is_file():
        pid = owner.read_text().strip()
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            raise FileExistsError(f"run folder {staging} is being written by process {pid}")
    owner.write_text(str(os.getpid()))


def _checkpoint_metadata(staging) -> Path:
    return staging / "backup" / AtomicBackupAndRestore.METADATA


def _has_checkpoint(staging) -> bool:
    return _checkpoint_metadata(staging).is_file()


def _open_staging(output, overwrite, chief, recipe):
    """(staging folder, epochs to resume from or None). The chief stages beside the
    run folder (resuming a checkpoint of the same recipe); other workers write to a
    temporary folder."""
    if not chief:  # another worker: the same training, its files thrown away
        return Path(tempfile.mkdtemp(prefix="vae_zoo-worker-")), None
    if output.exists() and not overwrite:
        raise FileExistsError(f"run folder {output} already exists (use --overwrite to replace it)")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(output)
    resume_from = None
    if staging.is_dir():
        _claim(staging)
        resume_from = _resume_state(staging, recipe)
        if resume_from is None:
            shutil.rmtree(staging)
    staging.mkdir(exist_ok=True)
    _claim(staging)
    return staging, resume_from


def _fit_callbacks(recipe, model, staging, x_test, y_test, resume_from, resumable, guard):
    """The recipe's callbacks in order. The CSV row of an epoch is written before its
    checkpoint, so a resumed run cuts history.csv back to the checkpoint and loses no
    row."""
    best = None
    if resume_from is not None:
        best = _cut_history(staging / "history.csv", resume_from)
    chosen = [guard] + _monitoring_callbacks(recipe, model, x_test, y_test, staging) + [
        keras.callbacks.CSVLogger(str(staging / "history.csv"), append=resume_from is not None),
        keras.callbacks.TensorBoard(log_dir=str(staging / "logs")),
    ]
    if resumable:
        chosen += [
            AtomicModelCheckpoint(staging / "best.keras", monitor="val_loss", save_best_only=True,
                                  initial_value_threshold=best),
            AtomicBackupAndRestore(str(staging / "backup"), guard=guard, delete_checkpoint=False),
        ]
    return chosen


def _write_results(recipe, model, staging, x_test, labels, y_test):
    """metrics.json and the pictures of a trained model."""
    metrics = {"epochs": recipe["train"]["epochs"]}
    num_samples = recipe["evaluate"]["num_samples"]
    if num_samples:
        metrics.update(evaluate.summarize(model, x_test, num_samples=num_samples, y=y_test))
    write_json(staging / "metrics.json", metrics)
    if plots.is_image_shape(model.data_shape):
        images, columns = sample_grid(model, recipe["output"]["grid_size"], seed=0)
        plots.save_grid(images, staging / "samples.png", columns)
        shown = min(len(x_test), 32)
        y_shown = None if y_test is None else y_test[:shown]
        plots.save_reconstructions(
            x_test[:shown], model.reconstruct(x_test[:shown], y_shown).numpy(),
            staging / "reconstructions.png",
        )
    if labels is not None:
        means = evaluate.posterior_statistics(model, x_test, y=y_test)["mean"]
        plots.save_latent_scatter(means, labels, staging / "latents.png")


def _publish(staging, output):
    """Rename the finished staging folder into place (swapping an old one out last)."""
    shutil.rmtree(staging / "backup", ignore_errors=True)
    (staging / "owner.pid").unlink(missing_ok=True)
    if output.exists():  # overwrite=True: swap the old folder out only now
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        output.rename(old)
        staging.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(output)


def train(recipe, output=None, overwrite=False, verbose=1, callbacks=()) -> Path | None:
    """Train the model a validated recipe describes and write its run folder.

    One pass: datasets, then the model (its β schedule from [annealing]) in the
    strategy's scope, checks of the data, `fit` with the recipe's callbacks, the
    evaluation and pictures, and the rename into place.

    Args:
        recipe: a dict from `vae_zoo.recipes.load`.
        output: run folder path (default `runs/<recipe>-<timestamp>`).
        overwrite: replace an existing folder at `output`.
        verbose: Keras `fit` verbosity (1 = progress bar).
        callbacks: extra Keras callbacks for `fit`, after the recipe's own.

    Returns:
        The run folder's path; None on the non-chief workers of a multi-worker run,
        which write no run folder.
    """
    extra_callbacks = list(callbacks)
    strategy = distribute.strategy_for(recipe["train"]["strategy"])
    chief = distribute.is_chief(strategy)
    output = Path(output) if output else default_output(recipe)
    staging, resume_from = _open_staging(output, overwrite, chief, recipe)
    # No checkpoints under MultiWorkerMirroredStrategy: Keras 3's BackupAndRestore has no
    # notion of workers (each would write, and restore on its own; workers resuming from
    # different epochs never pair their all-reduces). See README, "Faults and bad input".
    resumable = chief and not distribute.is_multi_worker(strategy)
    guard = StopOnNaN()
    try:
        keras.utils.set_random_seed(recipe["train"]["seed"])
        train_ds, test_ds = recipes_lib.build_datasets(
            recipe, replicas=distribute.num_replicas(strategy)
        )
        steps = recipes_lib.steps_per_epoch(train_ds)
        if steps is None and recipe["annealing"]["schedule"] != "none":
            raise ValueError(f"annealing.schedule = {recipe['annealing']['schedule']!r} needs "
                             f"the number of batches per epoch, which dataset "
                             f"{recipe['data']['dataset']!r} does not declare")
        with strategy.scope():
            model = recipes_lib.build_model(recipe, steps)
            recipes_lib.compile_model(model, recipe)
        distribute.prepare_model(model, strategy)
        write_json(staging / "recipe.json", recipe)
        x_test, labels = first_examples(test_ds, recipe["evaluate"]["examples"])
        y_test = labels if model.conditional else None  # what the model is conditioned on
        # the test split goes through the same pipeline (binarized whenever training data
        # are), so it shows a mismatch with the likelihood without touching train_ds
        check_data(recipe, model, x_test)
        # (not by iterating train_ds: an extra pass would move its shuffle order)
        if int(train_ds.cardinality()) == 0:
            raise ValueError(f"dataset {recipe['data']['dataset']!r} split "
                             f"{recipe['data']['train_split']!r} gave no training examples")
        if y_test is not None:
            check_labels(recipe, model, y_test)
        if resume_from is not None:
            print(f"resuming {output} after epoch {resume_from} from {staging / 'backup'}",
                  flush=True)
        model.fit(
            distribute.shard(train_ds),
            validation_data=distribute.shard(model_inputs(test_ds, model)),
            epochs=recipe["train"]["epochs"],
            callbacks=_fit_callbacks(recipe, model, staging, x_test, y_test, resume_from,
                                     resumable, guard) + extra_callbacks,
            verbose=verbose,
            shuffle=False,  # the dataset reshuffles itself every epoch
        )
        if guard.diverged is not None:
            epoch, batch, loss = guard.diverged
            kept = (f"last good checkpoint kept at {staging / 'backup'}"
                    if _has_checkpoint(staging) else "no epoch finished, nothing kept")
            raise TrainingDiverged(
                f"training diverged at epoch {epoch + 1}, batch {batch + 1} (loss is {loss}); "
                f"{kept}; lower train.learning_rate and rerun"
            )
        model.save(staging / "model.keras")  # on every worker, as tf.distribute asks
        if not chief:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        _write_results(recipe, model, staging, x_test, labels, y_test)
    except BaseException:
        if not (resumable and _has_checkpoint(staging)):
            shutil.rmtree(staging, ignore_errors=True)
        # else: keep the last good checkpoint; rerunning the command resumes from it
        raise
    _publish(staging, output)
    return output


def resolve_model_path(path) -> Path:
    """A `.keras` file, or a run folder holding `model.keras`."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path} (give a run folder or a .keras file)")
    return path


def load_model(path):
    """Load a vae_zoo model from a run folder or a `.keras` file (one-line errors)."""
    path = resolve_model_path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"cannot load model {path}: not a .keras archive (corrupt or another format)")
    try:
        model = keras.models.load_model(path)
    except Exception as error:  # corrupt zip, wrong format, unknown class, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load model {path}: {first}") from None
    from vae_zoo.models import VAE

    if not isinstance(model, VAE):  # a Keras model of another kind: no VAE methods
        raise ValueError(f"{path} holds a {type(model).__name__} model, not a vae_zoo VAE")
    return model
