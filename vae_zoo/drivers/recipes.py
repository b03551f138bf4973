"""Training recipes: TOML files that name a dataset, a model, a training schedule.

A recipe has the sections below; every key has a default except where noted, so a
recipe only states what it changes. Unknown sections or keys, wrong types and
out-of-range values raise `RecipeError` with one line naming the key.

```toml
[data]        dataset (a packaged name, a TFDS name, an image folder or an .npz/.npy
              file), binarize, batch_size, train_split, test_split, image_size,
              data_dir, image_key, label_key, cache_budget_mb, seed
[model]       family (required) and the family constructor's arguments
              (e.g. latent_dim, hidden_units, likelihood, posterior, prior, beta,
              objective: a name or {name = ..., options}, see
              `vae_zoo.models.training_objectives`);
              a conditional family (`conditional = True`) gets (x, y) batches
[train]       epochs, optimizer, learning_rate, seed, jit_compile, steps_per_execution,
              strategy ("auto", "one_device", "mirrored", "multi_worker")
[annealing]   schedule ("none", "linear", "sigmoid", "cyclical", "constant"),
              beta_min, beta_max, warmup_epochs, cycles, ratio
[evaluate]    num_samples (IW samples; 0 skips), examples
[output]      grid_size
[tune]        tuner, objective, max_trials, epochs, ... and the search space: beta,
              latent_dim, learning_rate, hidden_width, each a list of values or a
              table {min, max, sampling, step} (see `vae_zoo.tuning`)
```

A validated recipe is a frozen, typed `vae_zoo.drivers.config.Recipe`: read
`recipe.train.epochs` (or, as the mapping it came from, `recipe["train"]["epochs"]`);
`recipe.to_dict()` is its JSON.

Recipes are found by name among the packaged ones (`recipes/` in the repository,
installed as `vae_zoo.recipe_files`), or by the path of a .toml file: an argument with a
path separator or ending in .toml is a path, any other a packaged recipe's name.
`--set section.key=value` overrides are parsed as TOML values (bare words are strings; a
value opening an array, a table or a quoted string must be valid TOML).
"""

from __future__ import annotations

import copy
import importlib.resources
import os
import re
import tomllib
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from vae_zoo.drivers.config import Recipe
from vae_zoo.drivers.schema import (  # noqa: F401  (the schema's names, public here too)
    OPTIMIZERS,
    SAMPLINGS,
    SCHEMA,
    TUNABLE,
    TUNE_OBJECTIVES,
    TUNERS,
    Field,
    SPEC_ARGS,
    SIZE_LIST_ARGS,
    RecipeError,
    check_annealing,
    check_dataset,
    check_objective,
    check_sizes,
    check_spec,
    check_tune,
    check_value,
    hidden_layers_key_of,
    model_fields,
    source_options,
    suggest,
)

DEFAULT_RECIPE = "mnist_dense"


# ------------------------------------------------------------------------- loading


def available() -> list[str]:
    """Names of the packaged recipes."""
    folder = importlib.resources.files("vae_zoo.recipe_files")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read(name_or_path) -> tuple[str, str]:
    """(recipe name, TOML text) for a path or a packaged recipe name.

    An argument with a path separator (or ending in .toml) is a path, and must name a
    .toml file; any other is a packaged recipe's name. The name is a single file name
    either way (the file's stem), so a run folder named after it stays where it belongs.
    """
    text = str(name_or_path)
    separators = {"/", os.sep, os.altsep} - {None}
    if isinstance(name_or_path, os.PathLike) or text.endswith(".toml") or any(
        sep in text for sep in separators
    ):
        path = Path(name_or_path)
        if path.suffix != ".toml":
            raise RecipeError(f"recipe {text} is not a packaged recipe name; a path must name "
                              "a .toml file")
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
        return path.stem, _decode(path.read_bytes(), path)
    if text not in available():
        raise RecipeError(
            f"recipe not found: {text!r} (packaged recipes: " + ", ".join(available())
            + "; or give the path of a .toml file)"
        )
    resource = importlib.resources.files("vae_zoo.recipe_files").joinpath(f"{text}.toml")
    return text, _decode(resource.read_bytes(), text)


def _decode(data: bytes, where) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecipeError(f"recipe {where} is not UTF-8 text (byte {error.start}: "
                          f"{error.reason})") from None


# How a TOML array, inline table or string begins: a value beginning so is TOML or wrong.
_TOML_OPENERS = ("[", "{", '"', "'")


def parse_override(text: str) -> tuple[str, str, Any]:
    """`"section.key=value"` → (section, key, value); value parsed as TOML, else a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise RecipeError(f"override {text!r} is not of the form section.key=value")
    path, raw = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as error:
        if raw.strip()[:1] in _TOML_OPENERS:  # meant as an array, table or quoted string
            reason = re.sub(r" \(at (line \d+, column \d+|end of document)\)$", "", str(error))
            raise RecipeError(
                f"override {text!r}: {raw.strip()!r} is not a valid TOML value ({reason})"
            ) from None
        value = raw.strip()  # a bare word: a string
    return section, key.strip(), value


def load(name_or_path=DEFAULT_RECIPE, overrides=()) -> Recipe:
    """Read, override and validate a recipe: a complete `Recipe` (defaults filled), its
    `name` the recipe's."""
    name, text = _read(name_or_path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"recipe {name!r} is not valid TOML: {error}") from None
    for override in overrides:
        section, key, value = parse_override(override)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise RecipeError(f"recipe section [{section}] is not a table")
        raw[section][key] = value
    raw["name"] = name
    return validate(raw)


# ------------------------------------------------------------------------- validation


def is_conditional(recipe) -> bool:
    """Whether the recipe's model family trains on `(x, y)` batches (class labels)."""
    from vae_zoo.models import MODELS

    return bool(MODELS.get(recipe.model.family).conditional)


def validate(raw: Mapping) -> Recipe:
    """Check a parsed recipe (nested mappings, as TOML or `Recipe.to_dict` gives them)
    and fill defaults: the one validator of recipes. Raises `RecipeError`."""
    from vae_zoo.models import MODELS

    raw = copy.deepcopy(raw.to_dict() if isinstance(raw, Recipe) else dict(raw))
    name = raw.pop("name", None)
    known = list(SCHEMA) + ["model"]
    for section, body in raw.items():
        if section not in known:
            raise RecipeError(f"unknown recipe section [{section}]{suggest(section, known)}")
        if not isinstance(body, dict):
            raise RecipeError(f"recipe section [{section}] must be a table")
    recipe = {}
    for section, fields in SCHEMA.items():
        body = raw.get(section, {})
        for key in body:
            if key not in fields:
                raise RecipeError(f"unknown recipe key {section}.{key}{suggest(key, fields)}")
        recipe[section] = {
            key: check_value(f"{section}.{key}", body.get(key, field.default), field)
            for key, field in fields.items()
        }

    model = dict(raw.get("model", {}))
    family = model.pop("family", None)
    if family is None:
        raise RecipeError("model.family must be set (one of: " + ", ".join(MODELS.names()) + ")")
    if not isinstance(family, str) or family not in MODELS:
        raise RecipeError(
            f"model.family = {family!r} is not one of: {', '.join(MODELS.names())}"
            + suggest(str(family), MODELS.names())
        )
    fields = model_fields(MODELS.get(family))
    for key in model:
        if key not in fields:
            raise RecipeError(f"unknown recipe key model.{key}{suggest(key, fields)}")
    checked = {"family": family}
    for key, field in fields.items():
        if key not in model:
            if field.default is None and key == "latent_dim":
                raise RecipeError("model.latent_dim must be set")
            continue
        where = f"model.{key}"
        value = check_value(where, model[key], field)
        if key in SPEC_ARGS:
            check_spec(where, value, SPEC_ARGS[key])
        if key == "objective":
            check_objective(where, value, MODELS.get(family))
        if key in SIZE_LIST_ARGS:
            check_sizes(where, value)
        checked[key] = value
    recipe = Recipe.from_dict({**recipe, "model": checked, "name": name})
    check_dataset(recipe.data)
    _require_labels(recipe)
    check_tune(recipe, fields)
    check_annealing(recipe, model_value(recipe, "beta"))
    return recipe


def model_value(recipe, key):
    """The value of a [model] argument: the recipe's, else the family's default."""
    from vae_zoo.models import MODELS

    if key in recipe.model.arguments:
        return recipe.model.arguments[key]
    return model_fields(MODELS.get(recipe.model.family))[key].default


def hidden_layers_key(recipe) -> str | None:
    """The [model] key listing the widths of the model's dense hidden layers:
    "hidden_units" (dense bodies), "dense_units" (conv bodies) or None (no such layers)."""
    from vae_zoo.models import MODELS

    return hidden_layers_key_of(recipe.model, model_fields(MODELS.get(recipe.model.family)))


def _require_labels(recipe):
    from vae_zoo import data

    dataset = recipe.data.dataset
    if is_conditional(recipe) and not data.has_labels(dataset, **source_options(recipe.data)):
        raise RecipeError(
            f"model.family = {recipe.model.family!r} needs class labels, and "
            f"data.dataset = {dataset!r} has none"
        )


# ------------------------------------------------------------------------- building


def input_shape(recipe) -> tuple:
    from vae_zoo import data

    return data.input_shape_of(recipe.data.dataset, recipe.data.image_size,
                               **source_options(recipe.data))


def build_beta(recipe, steps_per_epoch=None, epochs=None):
    """The model's `beta` the recipe asks for: [model] beta, or a
    `vae_zoo.schedules.BetaSchedule` when [annealing] names a schedule.

    Epoch-based settings are converted with `steps_per_epoch` (the training dataset's
    batches per epoch); without it the model keeps the constant [model] beta.
    `epochs` (default train.epochs) sets the length of a cyclical schedule.
    """
    from vae_zoo.schedules import BetaSchedule

    beta = model_value(recipe, "beta")
    annealing = recipe.annealing
    if annealing.schedule == "none" or not steps_per_epoch:
        return beta
    epochs = epochs or recipe.train.epochs
    return BetaSchedule(
        annealing.schedule,
        beta_max=beta if annealing.beta_max is None else annealing.beta_max,
        beta_min=annealing.beta_min,
        warmup_steps=annealing.warmup_epochs * steps_per_epoch,
        total_steps=epochs * steps_per_epoch,
        cycles=annealing.cycles,
        ratio=annealing.ratio,
    )


def build_model(recipe, steps_per_epoch=None, epochs=None):
    """The model a recipe names (not compiled); its β anneals as [annealing] says when
    `steps_per_epoch` is given (see `build_beta`)."""
    from vae_zoo.models import MODELS

    kwargs = dict(recipe.model.arguments)
    for key, value in kwargs.items():
        if isinstance(value, list):
            kwargs[key] = tuple(value)
    try:
        kwargs["beta"] = build_beta(recipe, steps_per_epoch, epochs)
        return MODELS.get(recipe.model.family)(
            input_shape=input_shape(recipe), seed=recipe.train.seed, **kwargs
        )
    except (TypeError, ValueError) as error:
        raise RecipeError(f"[model]: {error}") from None


def build_optimizer(recipe):
    import keras

    train = recipe.train
    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return classes[train.optimizer](learning_rate=float(train.learning_rate))


def compile_model(model, recipe):
    train = recipe.train
    model.compile(
        optimizer=build_optimizer(recipe),
        jit_compile=train.jit_compile,
        steps_per_execution=train.steps_per_execution,
    )
    return model


def build_datasets(recipe, with_labels=None, replicas=1):
    """(train dataset, test dataset) as the recipe's [data] section describes them.

    Dynamic or static binarization of the training data goes with one fixed (static)
    binarization of the test data, so test figures are comparable across epochs.

    Args:
        recipe: a validated recipe.
        with_labels: yield `(x, y)` training batches with int64 labels `[B]`; default:
            when the model family is conditional (`is_conditional`). Test batches
            carry labels whenever the dataset has them (unconditional models ignore
            them; plots colour the latent scatter by them).
        replicas: replicas in sync (`vae_zoo.distribute.num_replicas`): batches hold
            the global batch, `data.batch_size` (per replica) × replicas.
    """
    from vae_zoo import data

    d = recipe.data
    batch_size = d.batch_size * int(replicas)
    common = dict(batch_size=batch_size, image_size=d.image_size,
                  cache_budget_mb=d.cache_budget_mb, **source_options(d))
    train = data.load(
        d.dataset, d.train_split, shuffle=True, binarize=d.binarize, seed=d.seed,
        with_labels=is_conditional(recipe) if with_labels is None else bool(with_labels),
        **common,
    )
    test_binarize = "none" if d.binarize == "none" else "static"
    test = data.load(
        d.dataset, d.test_split, shuffle=False, binarize=test_binarize,
        seed=d.seed + 1, with_labels=data.has_labels(d.dataset, **source_options(d)),
        **common,
    )
    return train, test


def steps_per_epoch(dataset):
    """Batches in one epoch of a dataset, or None when it does not declare its length."""
    steps = int(dataset.cardinality())
    return steps if steps >= 0 else None

