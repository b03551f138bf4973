"""Run folders: train a recipe and write everything a run produces, atomically.

A run folder holds:
- `model.keras`: the trained model (`keras.models.load_model` needs no custom objects);
- `recipe.json`: the complete recipe, defaults filled in;
- `history.csv`: per-epoch metrics (`loss`, `elbo`, `reconstruction`, `kl`, `beta`
  and their `val_` twins on the test split), epochs numbered from 1 as on the console;
- `training.png`: ELBO, reconstruction and KL per epoch, train and test;
- `logs/`: TensorBoard event files;
- `samples.png`: decoder means of z drawn from the prior (for a class-conditional
  model, one labelled row per class);
- `reconstructions.png`: test inputs, each row followed by its reconstructions
  (rows labelled);
- `metrics.json`: test ELBO, its terms, importance-weighted log-likelihood, bits/dim.

The folder is written under a temporary name beside the target, `.<name>.partial`, and
moved into place when complete, so an interrupted run never leaves a half-written run
folder, and an existing folder is never replaced unless `overwrite=True`. One process
at a time writes it: an OS lock on `.<name>.lock`, which ends with its process however
that ends. `vae_zoo.drivers.run_folder` holds these steps.

Resume: the staging name depends only on the target, and holds `backup/`, a verified
checkpoint (`checkpointing.EpochCheckpoint`: model and optimizer variables, SHA-256 in
its metadata, the previous checkpoint kept) written at the end of every epoch.
Rerunning the same command after a crash or a kill continues from the last finished
epoch (history.csv is cut back to the epochs the checkpoint holds, so no epoch is lost
or counted twice); a damaged checkpoint falls back to the previous one. A rerun whose
recipe differs stops with one line naming the changes: `resume=True` continues with
changed training-only keys (`run_folder.RESUMABLE_CHANGES`), `restart=True` discards the
checkpoint. The checkpoint of the epoch with the lowest `val_loss` so far is kept as
well, and `best.keras` is made from it when training ends (or stops on divergence),
written atomically, and ends in the run folder. Finishing (results flushed and marked
finished, then the move into place, swapping an old folder out last) is recoverable at
every step: the same command completes it without training again.

NaN safety: a batch whose loss is NaN or infinite, or an epoch whose weights or
optimizer slots are not finite, stops training at once (`TrainingDiverged`, a
`RuntimeError`); nothing non-finite is checkpointed or saved, and the staging folder
with the last good checkpoint is kept.

Training runs under the strategy the recipe's `train.strategy` names
(`vae_zoo.distribute`): the model and optimizer are built in its scope and batches hold
`data.batch_size` examples per replica. With several workers only the chief writes the
run folder and its checkpoint; the others train in step with it and write to a
temporary folder of their own (one per run folder and task, emptied when they start
and removed when they finish). Fault tolerance: when any worker dies, the supervisor
kills the others and restarts every worker with the same command (the same `--output`
on a filesystem the workers share). The chief decides from its staging folder (resume,
start afresh, complete an interrupted finishing, or stop with an error) and tells the
other workers before anything else, so every worker restores the chief's checkpoint,
says `resuming ... after epoch N`, and continues at the same epoch; a chief that stops
before training stops the others with one line.
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vae_zoo import evaluate, plots
from vae_zoo.data import first_examples
from vae_zoo.drivers import recipes as recipes_lib
from vae_zoo.drivers import run_folder
from vae_zoo.drivers.run_folder import staging_path  # noqa: F401 (re-exported)
from vae_zoo.training import distribute
from vae_zoo.training.callbacks import (
    CollapseDiagnostics, EpochCSVLogger, ImageGrids, ProgressBar, StopOnNaN,
)
from vae_zoo.training.checkpointing import (  # noqa: F401 (TrainingDiverged: re-exported)
    DamagedCheckpoint, EpochCheckpoint, TrainingDiverged, check_finite, checkpoint_metadata,
    restore_checkpoint, save_best_model, write_json,
)

RUNS_DIR = "runs"


def default_output(recipe) -> Path:
    """`runs/<recipe name>-<timestamp>`; a name that is not a plain file name (a recipe
    dict built by hand) is refused, so the folder never lands outside `runs/`."""
    name = str(recipe.name)
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"recipe name {name!r} must be a plain name (it names the run folder)")
    return Path(RUNS_DIR) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def model_inputs(ds, model):
    """`ds` without the labels an unconditional model ignores (batches of x only), so
    validation batches carry labels only for conditional models."""
    if model.conditional or not isinstance(ds.element_spec, tuple):
        return ds
    return ds.map(lambda x, *labels: x)


def _monitoring_callbacks(recipe, model, x_test, y_test, folder):
    """Per-epoch diagnostics and image grids the recipe's [output] section asks for."""
    out = recipe.output
    chosen = []
    if out.diagnostics:
        chosen.append(CollapseDiagnostics(
            x_test[:500], None if y_test is None else y_test[:500], log_dir=folder / "logs"
        ))
    if out.images_every and plots.is_image_shape(model.data_shape):
        shown = plots.RECONSTRUCTED  # the same rows as the final reconstructions.png
        chosen.append(ImageGrids(
            x_test[:shown], None if y_test is None else y_test[:shown], output_dir=folder / "images",
            log_dir=folder / "logs", every=out.images_every,
            num_samples=out.grid_size,
        ))
    return chosen


def check_labels(recipe, model, *label_arrays):
    """Refuse class labels a conditional model has no class for (before any training)."""
    for y in label_arrays:
        bad = evaluate.label_out_of_range(model, y)
        if bad is not None:
            raise ValueError(
                f"dataset {recipe.data.dataset!r} has labels outside "
                f"[0, {model.num_classes}) (got label {bad}); set model.num_classes to its "
                "number of classes"
            )


def check_data(recipe, model, *arrays):
    """Refuse data the model's likelihood cannot score (before any training)."""
    for x in arrays:
        if len(x) == 0:
            raise ValueError(f"dataset {recipe.data.dataset!r} gave no examples")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"dataset {recipe.data.dataset!r} contains NaN or inf values")
        problem = model.likelihood.support_problem(x)
        if problem:
            d = recipe.data
            raise ValueError(
                f"data {d.dataset!r} with data.binarize = {d.binarize!r} does not fit "
                f"model.likelihood: {problem}"
                + ("; set data.binarize = 'dynamic' or 'static', or pick a Gaussian or 8-bit "
                   "likelihood" if d.binarize == "none" else "")
            )


def _fit_callbacks(recipe, model, staging, x_test, y_test, resumed_epoch, chief):
    """The recipe's callbacks in order: the divergence guard first (nothing after it
    runs on a diverged batch or epoch); the CSV row of an epoch before its checkpoint,
    so a resumed run cuts history.csv back to the checkpoint and loses no row."""
    if resumed_epoch:
        run_folder.cut_history(staging / "history.csv", resumed_epoch)
    chosen = [StopOnNaN()] + _monitoring_callbacks(recipe, model, x_test, y_test, staging) + [
        EpochCSVLogger(str(staging / "history.csv"), append=bool(resumed_epoch)),
        keras.callbacks.TensorBoard(log_dir=str(staging / "logs")),
        ProgressBar(),  # Keras' bar, not past the epoch's steps (steps_per_execution)
    ]
    # every worker saves; only the chief's staging folder is kept. The lowest val_loss
    # keeps its epoch's checkpoint: best.keras is made from it when training ends.
    return chosen + [EpochCheckpoint(run_folder.checkpoint_folder(staging), monitor="val_loss")]


def _write_results(recipe, model, staging, x_test, labels, y_test, verbose):
    """metrics.json and the pictures of a trained model: training curves from
    history.csv, prior samples, reconstructions and the latent scatter. `verbose`
    (fit's): a progress bar for the IW evaluation unless 0."""
    metrics = {"epochs": recipe.train.epochs}
    num_samples = recipe.evaluate.num_samples
    if num_samples:
        metrics.update(evaluate.summarize(model, x_test, num_samples=num_samples, y=y_test,
                                          verbose=verbose))
    write_json(staging / "metrics.json", metrics)
    with open(staging / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    history = {key: [plots.number(row[key]) for row in rows] for key in (rows[0] if rows else ())}
    plots.save_training_curves(history, staging / "training.png")
    if plots.is_image_shape(model.data_shape):
        images, columns, row_labels = plots.sample_rows(model, recipe.output.grid_size, seed=0)
        plots.save_grid(images, staging / "samples.png", columns, row_labels=row_labels,
                        title="prior samples")
        shown = min(len(x_test), plots.RECONSTRUCTED)
        y_shown = None if y_test is None else y_test[:shown]
        plots.save_reconstructions(
            x_test[:shown], model.reconstruct(x_test[:shown], y_shown).numpy(),
            staging / "reconstructions.png",
        )
    if labels is not None:
        means = evaluate.posterior_statistics(model, x_test, y=y_test)["mean"]
        plots.save_latent_scatter(means, labels, staging / "latents.png")


def _restore(model, strategy, checkpoint, recipe):
    """Load the checkpoint into `model` (in the strategy's scope, so optimizer slots are
    distributed like the model); the epoch it holds. The recipe's learning rate wins
    over the checkpoint's (it may have been changed with --resume)."""
    try:
        with strategy.scope():
            epoch = restore_checkpoint(model, checkpoint, log=lambda line: print(line, flush=True))
    except DamagedCheckpoint as error:
        raise DamagedCheckpoint(f"{error}; rerun with --restart to start afresh") from None
    rate = model.optimizer.learning_rate
    if isinstance(rate, keras.Variable):
        rate.assign(recipe.train.learning_rate)
    return epoch


def _kept(staging, chief):
    """Where the last good checkpoint is kept, as a message says it (None: nowhere)."""
    if not (chief and staging is not None and run_folder.has_checkpoint(staging)):
        return None
    backup = run_folder.checkpoint_folder(staging)
    return f"last good checkpoint (epoch {checkpoint_metadata(backup)['epoch']}) kept at {backup}"


def _diverged_message(error, staging, chief):
    kept = _kept(staging, chief)
    advice = (f"{kept}; lower train.learning_rate and rerun with --resume" if kept
              else "no epoch finished, nothing kept")
    return f"{error}; {advice}"


def train(recipe, output=None, overwrite=False, verbose=1, callbacks=(), resume=False,
          restart=False) -> Path | None:
    """Train the model a validated recipe describes and write its run folder.

    Top-down: the run folder's decisions (`run_folder.start`: lock, resume, restart,
    chief and workers), then `plan` (datasets, the model with its β schedule in the
    strategy's scope, checks of the data, the checkpoint restored if one is kept, the
    callbacks), then `execute` (`fit`, the evaluation and pictures), then the move
    into place (`run_folder.publish`).

    Args:
        recipe: a `Recipe` from `vae_zoo.recipes.load` (or `validate`).
        output: run folder path (default `runs/<recipe>-<timestamp>`).
        overwrite: replace an existing folder at `output`.
        verbose: Keras `fit` verbosity (1 = progress bar).
        callbacks: extra Keras callbacks for `fit`, after the recipe's own.
        resume: continue a kept checkpoint even though training-only keys
            (`RESUMABLE_CHANGES`: epochs, learning rate, annealing, ...) changed.
        restart: discard a kept checkpoint and start afresh.

    Returns:
        The run folder's path; None on the non-chief workers of a multi-worker run,
        which write no run folder.

    Raises:
        TrainingDiverged: the loss, or a weight or optimizer slot, became non-finite;
            the last good checkpoint is kept, and rerunning resumes from it.
    """
    strategy = distribute.strategy_for(recipe.train.strategy)
    chief = distribute.is_chief(strategy)
    output = Path(output) if output else default_output(recipe)
    output.parent.mkdir(parents=True, exist_ok=True)
    lock = run_folder.lock(output)
    staging = None
    try:
        staging, checkpoint = run_folder.start(output, overwrite, recipe, resume, restart,
                                               strategy, chief, lock)
        if staging is None:
            return output if chief else None
        planned = plan(recipe, strategy, chief, staging, checkpoint, output, callbacks)
        execute(planned, verbose)
        if not chief:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        run_folder.publish(staging, output)
    except TrainingDiverged as error:
        run_folder.clean_up(staging, chief)
        raise TrainingDiverged(error.epoch, error.batch, error.cause,
                               _diverged_message(error, staging, chief)) from None
    except (OSError, tf.errors.OpError) as error:  # full disk, read-only folder, ...
        run_folder.clean_up(staging, chief)
        kept = _kept(staging, chief)
        if kept is None:
            raise
        raise RunStopped(f"{describe_error(error)}; {kept}; rerun the same command to "
                         "resume") from error
    except BaseException:
        run_folder.clean_up(staging, chief)
        raise
    finally:
        lock.release()
    return output


@dataclasses.dataclass
class Plan:
    """What `train` decided before it fits, in the run's staging folder: the model
    (built, compiled, restored), its data, the examples it is checked and pictured on,
    the epoch it starts from and the callbacks of `fit`, in order."""

    recipe: dict
    staging: Path
    chief: bool
    model: keras.Model
    train_ds: tf.data.Dataset
    test_ds: tf.data.Dataset
    x_test: np.ndarray
    labels: np.ndarray | None
    y_test: np.ndarray | None  # what a conditional model is conditioned on
    initial_epoch: int
    callbacks: list


def plan(recipe, strategy, chief, staging, checkpoint, output, callbacks=()) -> Plan:
    """Build, check and restore the model of `recipe` for `staging`; nothing is fitted."""
    keras.utils.set_random_seed(recipe.train.seed)
    train_ds, test_ds = recipes_lib.build_datasets(recipe,
                                                   replicas=distribute.num_replicas(strategy))
    steps = recipes_lib.steps_per_epoch(train_ds)
    if steps is None and recipe.annealing.schedule != "none":
        raise ValueError(f"annealing.schedule = {recipe.annealing.schedule!r} needs "
                         f"the number of batches per epoch, which dataset "
                         f"{recipe.data.dataset!r} does not declare")
    with strategy.scope():
        model = recipes_lib.build_model(recipe, steps)
        recipes_lib.compile_model(model, recipe)
    distribute.prepare_model(model, strategy)
    x_test, labels = first_examples(test_ds, recipe.evaluate.examples)
    y_test = labels if model.conditional else None
    # the test split goes through the same pipeline (binarized whenever training data
    # are), so it shows a mismatch with the likelihood without touching train_ds
    check_data(recipe, model, x_test)
    # (not by iterating train_ds: an extra pass would move its shuffle order)
    if int(train_ds.cardinality()) == 0:
        raise ValueError(f"dataset {recipe.data.dataset!r} split "
                         f"{recipe.data.train_split!r} gave no training examples")
    if y_test is not None:
        check_labels(recipe, model, y_test)
    epoch = 0
    if checkpoint is not None:
        epoch = _restore(model, strategy, checkpoint, recipe) or 0
        print(f"resuming {output} after epoch {epoch} from {checkpoint}", flush=True)
    chosen = _fit_callbacks(recipe, model, staging, x_test, y_test, epoch, chief) + list(callbacks)
    return Plan(recipe, staging, chief, model, train_ds, test_ds, x_test, labels, y_test,
                epoch, chosen)


def execute(plan: Plan, verbose=1):
    """Fit the planned model, save it and, on the chief, write its results and
    `best.keras` into the staging folder."""
    model, staging = plan.model, plan.staging
    write_json(staging / "recipe.json", plan.recipe.to_dict())

    def best():
        save_best_model(model, run_folder.checkpoint_folder(staging), staging / "best.keras",
                        log=lambda line: print(line, flush=True))

    try:
        model.fit(
            distribute.shard(plan.train_ds),
            validation_data=distribute.shard(model_inputs(plan.test_ds, model)),
            epochs=plan.recipe.train.epochs,
            initial_epoch=plan.initial_epoch,
            callbacks=plan.callbacks,
            verbose=verbose,
            shuffle=False,  # the dataset reshuffles itself every epoch
        )
    except TrainingDiverged:
        if plan.chief:  # the best model so far, beside the kept checkpoint
            try:
                best()
            except (OSError, tf.errors.OpError) as error:
                print(f"best.keras not written: {describe_error(error)}", flush=True)
        raise
    check_finite(model, plan.recipe.train.epochs)
    model.save(staging / "model.keras")  # on every worker, as tf.distribute asks
    if plan.chief:
        _write_results(plan.recipe, model, staging, plan.x_test, plan.labels, plan.y_test,
                       verbose)
        best()  # last: it loads the best epoch's weights into the model


def describe_error(error) -> str:
    """A fault's message on one line. An error of the operating system says what and
    where: "permission denied: PATH", "no space left on device: PATH"."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        names = [str(n) for n in (error.filename, error.filename2) if n is not None]
        message = error.strerror[:1].lower() + error.strerror[1:]
        message += f": {' -> '.join(names)}" if names else ""
    elif isinstance(error, tf.errors.OpError):
        message = error.message
    else:
        message = str(error)
    return " ".join(message.split()) or type(error).__name__


class RunStopped(RuntimeError):
    """A run stopped by a fault of the machine (full disk, ...) after it checkpointed:
    the message says what happened and where the last good checkpoint is kept."""


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
