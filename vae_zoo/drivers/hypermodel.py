"""The keras-tuner HyperModel of a recipe: search space, trial recipes, trial data.

`VAEHyperModel(recipe)` builds and compiles the recipe's model with a trial's values
(`apply`) and fits it on the search's data (`_split`: a held-out part of the training
split, or the test split); `vae_zoo.tuning` runs the search. See `vae_zoo.tuning` for
the `[tune]` section.
"""

from __future__ import annotations

import dataclasses
import json

import keras
import keras_tuner
import numpy as np

from vae_zoo import data
from vae_zoo.drivers import recipes, runs
from vae_zoo.training import distribute
from vae_zoo.training.callbacks import IWLogLikelihood, ProgressBar

OBJECTIVE_METRICS = {"elbo": "val_elbo", "log_likelihood": "val_log_likelihood"}
PROJECT = "search"  # keras-tuner's project folder inside the output folder


# ------------------------------------------------------------------------- recipes


def objective(recipe) -> keras_tuner.Objective:
    """The keras-tuner objective of a recipe's [tune] section (always maximized)."""
    return keras_tuner.Objective(OBJECTIVE_METRICS[recipe.tune.objective], direction="max")


def trial_epochs(recipe) -> int:
    """Epochs per trial: tune.epochs, else train.epochs (Hyperband: the most a trial gets)."""
    return recipe.tune.epochs or recipe.train.epochs


def search_space(recipe) -> dict:
    """The declared hyperparameters: name → list of values or range table."""
    return {name: spec for name in recipes.TUNABLE
            if (spec := recipe["tune"][name]) is not None}


def _scaled_widths(widths, width):
    """Layer widths with the first set to `width` and the others kept in proportion."""
    widths = [int(w) for w in widths]
    return [max(1, round(w * width / widths[0])) for w in widths]


def apply(recipe, values) -> dict:
    """A copy of `recipe` with hyperparameter values set, validated.

    Args:
        recipe: a validated recipe.
        values: hyperparameter name → value (`beta`, `latent_dim`, `learning_rate`,
            `hidden_width`); other names (keras-tuner's `tuner/...`) are ignored.
    """
    changed = recipe.to_dict()
    for name, value in values.items():
        if name not in recipes.TUNABLE:
            continue
        (section, key), integer, _, _ = recipes.TUNABLE[name]
        value = int(value) if integer else float(value)
        if name == "hidden_width":
            key = recipes.hidden_layers_key(recipe)
            value = _scaled_widths(recipes.model_value(recipe, key), value)
        changed[section][key] = value
    return recipes.validate(changed)


def _toml(value) -> str:
    """A TOML literal for a number or a list of numbers (6 significant digits)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_toml(v) for v in value) + "]"
    if isinstance(value, float):
        text = f"{value:.6g}"
        return text if any(c in text for c in ".en") else text + ".0"
    return json.dumps(value)


def overrides(recipe, values) -> list[str]:
    """`section.key=value` overrides (for `vae-zoo train --set`) that turn `recipe`
    into `apply(recipe, values)`."""
    changed = apply(recipe, values)
    result = []
    for name in values:
        if name not in recipes.TUNABLE:
            continue
        (section, key), _, _, _ = recipes.TUNABLE[name]
        key = key or recipes.hidden_layers_key(recipe)
        result.append(f"{section}.{key}={_toml(changed[section][key])}")
    return result


# ------------------------------------------------------------------------- data


def _split(recipe, replicas):
    """(train, validation) datasets for the search, batched by the global batch.

    With `tune.validation_fraction` f > 0 the last f of a seeded permutation of the
    training split is held out (TFDS datasets: the split's last f percent), so the
    search never sees the test split; with f = 0 it selects on the test split.
    """
    d = recipe.data
    fraction = recipe.tune.validation_fraction
    if fraction == 0:
        return recipes.build_datasets(recipe, replicas=replicas)
    conditional = recipes.is_conditional(recipe)
    batch_size = d.batch_size * replicas
    if data.entry(d.dataset).in_memory:  # hold out a seeded random subset
        x, y = data.load_arrays(d.dataset, d.train_split, d.image_size)
        order = np.random.default_rng(d.seed).permutation(len(x))
        held = max(1, int(round(fraction * len(x))))
        train_idx, val_idx = order[:-held], order[-held:]
        train = data.make_dataset(
            x[train_idx], y[train_idx] if conditional else None, batch_size=batch_size,
            shuffle=True, binarize=d.binarize, seed=d.seed,
        )
        validation = data.make_dataset(
            x[val_idx], y[val_idx], batch_size=batch_size, shuffle=False,
            binarize="none" if d.binarize == "none" else "static", seed=d.seed + 1,
        )
        return train, validation
    if "[" in d.train_split:
        raise ValueError(
            f"tune.validation_fraction needs a whole training split, not data.train_split = "
            f"{d.train_split!r}; set tune.validation_fraction = 0 and data.test_split "
            "to your validation slice instead"
        )
    percent = f"{100 * (1 - fraction):g}"
    held_out = recipe.replace(data=dataclasses.replace(
        recipe.data, train_split=f"{d.train_split}[:{percent}%]",
        test_split=f"{d.train_split}[{percent}%:]"))
    return recipes.build_datasets(held_out, replicas=replicas)


# ------------------------------------------------------------------------- hypermodel


class VAEHyperModel(keras_tuner.HyperModel):
    """The keras-tuner HyperModel of a recipe with a `[tune]` search space.

    Args:
        recipe: a validated recipe (`vae_zoo.recipes.load`) whose [tune] section
            declares at least one hyperparameter.

    Example:
    ```python
    recipe = vae_zoo.recipes.load("tune_mnist_dense")
    tuner = keras_tuner.RandomSearch(VAEHyperModel(recipe), objective=objective(recipe),
                                     max_trials=5, directory="tuning")
    tuner.search()
    ```
    """

    def __init__(self, recipe):
        super().__init__(name=recipe.get("name"), tunable=True)
        self.recipe = recipe
        self.space = search_space(recipe)
        if not self.space:
            raise ValueError(
                f"recipe {recipe.get('name')!r} declares no search space: set at least one of "
                + ", ".join(f"tune.{name}" for name in recipes.TUNABLE)
            )
        self._data = {}  # replicas → (train, validation, x_val, y_val)

    def declare_hyperparameters(self, hp):
        self.values(hp)

    def values(self, hp) -> dict:
        """Declare the search space in `hp`; returns this trial's value of each."""
        chosen = {}
        for name, spec in self.space.items():
            integer = recipes.TUNABLE[name][1]
            if isinstance(spec, list):
                chosen[name] = hp.Choice(name, [int(v) if integer else float(v) for v in spec])
                continue
            kind, number = (hp.Int, int) if integer else (hp.Float, float)
            chosen[name] = kind(name, number(spec["min"]), number(spec["max"]),
                                step=spec.get("step"), sampling=spec.get("sampling", "linear"))
        return chosen

    def recipe_for(self, hp) -> dict:
        """The recipe with this trial's hyperparameter values."""
        return apply(self.recipe, self.values(hp))

    def build(self, hp):
        recipe = self.recipe_for(hp)
        train = self.datasets(distribute.num_replicas())[0]
        keras.utils.set_random_seed(recipe.train.seed)
        model = recipes.build_model(recipe, recipes.steps_per_epoch(train), trial_epochs(recipe))
        recipes.compile_model(model, recipe)
        # Optimizer variables now, like the model's own: keras-tuner's checkpoints then
        # restore the optimizer state too (Hyperband continues trials from them).
        model.optimizer.build(model.trainable_variables)
        return distribute.prepare_model(model, model.distribute_strategy)

    def datasets(self, replicas=1):
        """`(train, validation, x_val, y_val)`: the search's data (see `_split`), and
        the first `tune.examples` validation examples as arrays (for the IW objective)."""
        if replicas not in self._data:
            train, validation = _split(self.recipe, replicas)
            x_val, labels = data.first_examples(validation, self.recipe.tune.examples)
            conditional = recipes.is_conditional(self.recipe)
            self._data[replicas] = (train, validation, x_val, labels if conditional else None)
        return self._data[replicas]

    def fit(self, hp, model, *args, epochs=None, initial_epoch=0, callbacks=None,
            verbose="auto", **kwargs):
        recipe = self.recipe_for(hp)
        strategy = model.distribute_strategy
        train, validation, x_val, y_val = self.datasets(distribute.num_replicas(strategy))
        # The β schedule is the model's, of the optimizer's step: a trial that Hyperband
        # continues from a checkpoint continues its schedule too.
        own = [ProgressBar()]  # a trial's bar never counts past its epoch
        if recipe.tune.objective == "log_likelihood":
            own.append(IWLogLikelihood(x_val, y_val, recipe.tune.num_samples,
                                       seed=recipe.tune.seed))
        return model.fit(
            distribute.shard(train),
            validation_data=distribute.shard(runs.model_inputs(validation, model)),
            epochs=epochs or trial_epochs(recipe),
            initial_epoch=initial_epoch,
            callbacks=own + list(callbacks or []),  # ours first: they add the objective
            verbose=verbose,
            shuffle=False,
        )
