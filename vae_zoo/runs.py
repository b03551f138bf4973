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

The folder is written under a temporary name beside the target and renamed into place
when complete, so an interrupted run never leaves a half-written run folder, and an
existing folder is never replaced unless `overwrite=True`.

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

import numpy as np

from vae_zoo import recipes as recipes_lib

RUNS_DIR = "runs"


def default_output(recipe) -> Path:
    return Path(RUNS_DIR) / f"{recipe['name']}-{time.strftime('%Y%m%d-%H%M%S')}"


def first_examples(ds, limit):
    """First `limit` examples of a dataset as numpy arrays `(x, y)`; y is None for a
    dataset without labels."""
    xs, ys, count = [], [], 0
    for batch in ds:
        labelled = isinstance(batch, (tuple, list))
        xs.append((batch[0] if labelled else batch).numpy())
        if labelled:
            ys.append(batch[1].numpy())
        count += len(xs[-1])
        if count >= limit:
            break
    return np.concatenate(xs)[:limit], (np.concatenate(ys)[:limit] if ys else None)


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
    from vae_zoo import callbacks, plots

    out = recipe["output"]
    chosen = []
    if out["diagnostics"]:
        chosen.append(callbacks.CollapseDiagnostics(
            x_test[:500], None if y_test is None else y_test[:500], log_dir=folder / "logs"
        ))
    if out["images_every"] and plots.is_image_shape(model.data_shape):
        chosen.append(callbacks.ImageGrids(
            x_test[:16], None if y_test is None else y_test[:16], output_dir=folder / "images",
            log_dir=folder / "logs", every=out["images_every"],
            num_samples=min(out["grid_size"], 64),
        ))
    return chosen


def _write_json(path, payload):
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def train(recipe, output=None, overwrite=False, verbose=1, callbacks=()) -> Path | None:
    """Train the model a validated recipe describes and write its run folder.

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
    import keras

    from vae_zoo import distribute, evaluate, plots

    strategy = distribute.strategy_for(recipe["train"]["strategy"])
    chief = distribute.is_chief(strategy)
    output = Path(output) if output else default_output(recipe)
    if chief and output.exists() and not overwrite:
        raise FileExistsError(f"run folder {output} already exists (use --overwrite to replace it)")
    if chief:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = output.parent / f".{output.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    else:  # another worker: the same training, its files thrown away
        staging = Path(tempfile.mkdtemp(prefix="vae_zoo-worker-"))
    extra_callbacks = list(callbacks)
    try:
        keras.utils.set_random_seed(recipe["train"]["seed"])
        train_ds, test_ds = recipes_lib.build_datasets(
            recipe, replicas=distribute.num_replicas(strategy)
        )
        with strategy.scope():
            model = recipes_lib.compile_model(recipes_lib.build_model(recipe), recipe)
        distribute.prepare_model(model, strategy)
        _write_json(staging / "recipe.json", recipe)
        x_test, labels = first_examples(test_ds, recipe["evaluate"]["examples"])
        y_test = labels if model.conditional else None  # what the model is conditioned on
        fit_callbacks = recipes_lib.build_callbacks(recipe) + _monitoring_callbacks(
            recipe, model, x_test, y_test, staging
        ) + [
            keras.callbacks.CSVLogger(str(staging / "history.csv")),
            keras.callbacks.TensorBoard(log_dir=str(staging / "logs")),
        ] + extra_callbacks
        model.fit(
            distribute.shard(train_ds),
            validation_data=distribute.shard(model_inputs(test_ds, model)),
            epochs=recipe["train"]["epochs"],
            callbacks=fit_callbacks,
            verbose=verbose,
            shuffle=False,  # the dataset reshuffles itself every epoch
        )
        model.save(staging / "model.keras")  # on every worker, as tf.distribute asks
        if not chief:
            shutil.rmtree(staging, ignore_errors=True)
            return None

        metrics = {"epochs": recipe["train"]["epochs"]}
        num_samples = recipe["evaluate"]["num_samples"]
        if num_samples:
            metrics.update(evaluate.summarize(model, x_test, num_samples=num_samples, y=y_test))
        _write_json(staging / "metrics.json", metrics)

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
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output.exists():  # overwrite=True: swap the old folder out only now
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        output.rename(old)
        staging.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(output)
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
    import keras

    import vae_zoo.models  # noqa: F401  (registers the classes)

    path = resolve_model_path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"cannot load model {path}: not a .keras archive (corrupt or another format)")
    try:
        return keras.models.load_model(path)
    except Exception as error:  # corrupt zip, wrong format, unknown class, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load model {path}: {first}") from None
