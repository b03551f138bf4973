"""Training recipes: TOML files that name a dataset, a model, a training schedule.

A recipe has the sections below; every key has a default except where noted, so a
recipe only states what it changes. Unknown sections or keys, wrong types and
out-of-range values raise `RecipeError` with one line naming the key.

```toml
[data]        dataset, binarize, batch_size, train_split, test_split, image_size,
              data_dir, seed
[model]       family (required) and the family constructor's arguments
              (e.g. latent_dim, hidden_units, likelihood, posterior, prior, beta);
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

Recipes are found by path or by name among the packaged ones (`recipes/` in the
repository, installed as `vae_zoo.recipe_files`). `--set section.key=value` overrides are
parsed as TOML values (bare words are strings).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.resources
import inspect
import math
import tomllib
from pathlib import Path
from typing import Any

DEFAULT_RECIPE = "mnist_dense"


class RecipeError(ValueError):
    """A recipe (or an override) names something wrong; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One recipe key: its type(s), default and allowed values."""

    types: tuple
    default: Any
    choices: tuple | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    nullable: bool = False


def _schedules():
    from vae_zoo.callbacks import SCHEDULES

    return ("none",) + tuple(SCHEDULES.names())


def _datasets():
    from vae_zoo import data

    return data.DATASETS


def _binarize_modes():
    from vae_zoo import data

    return data.BINARIZE_MODES


OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")  # see vae_zoo.distribute
TUNERS = ("random", "bayesian", "hyperband")
TUNE_OBJECTIVES = ("elbo", "log_likelihood")

# The [tune] search space: hyperparameter → (recipe key it sets, integer?, minimum,
# exclusive minimum). `hidden_width` sets the width of the first hidden layer of the
# model's dense part (`hidden_layers_key`) and scales the other layers with it.
TUNABLE = {
    "beta": (("model", "beta"), False, 0, False),
    "latent_dim": (("model", "latent_dim"), True, 1, False),
    "learning_rate": (("train", "learning_rate"), False, 0, True),
    "hidden_width": (("model", None), True, 1, False),
}
SAMPLINGS = ("linear", "log", "reverse_log")
_RANGE_KEYS = ("min", "max", "sampling", "step")

# Section → key → Field. Choices given as callables are resolved lazily.
SCHEMA = {
    "data": {
        "dataset": Field((str,), "mnist_sample", choices=_datasets),
        "binarize": Field((str,), "dynamic", choices=_binarize_modes),
        "batch_size": Field((int,), 128, minimum=1),
        "train_split": Field((str,), "train"),
        "test_split": Field((str,), "test"),
        "image_size": Field((int,), None, minimum=1, nullable=True),
        "data_dir": Field((str,), None, nullable=True),
        "seed": Field((int,), 0),
    },
    "train": {
        "epochs": Field((int,), 30, minimum=1),
        "optimizer": Field((str,), "adam", choices=OPTIMIZERS),
        "learning_rate": Field((float, int), 1e-3, minimum=0, exclusive_minimum=True),
        "seed": Field((int,), 0),
        "jit_compile": Field((bool, str), "auto", choices=(True, False, "auto")),
        "steps_per_execution": Field((int, str), "auto", minimum=1, choices=("auto",)),
        "strategy": Field((str,), "auto", choices=STRATEGIES),
    },
    "annealing": {
        "schedule": Field((str,), "none", choices=_schedules),
        "beta_min": Field((float, int), 0.0, minimum=0),
        "beta_max": Field((float, int), None, minimum=0, nullable=True),
        "warmup_epochs": Field((float, int), 10, minimum=0),
        "cycles": Field((int,), 4, minimum=1),
        "ratio": Field((float, int), 0.5, minimum=0, exclusive_minimum=True),
    },
    "evaluate": {
        "num_samples": Field((int,), 1000, minimum=0),
        "examples": Field((int,), 1000, minimum=1),
    },
    "output": {
        "grid_size": Field((int,), 64, minimum=1),
        "images_every": Field((int,), 5, minimum=0),
        "diagnostics": Field((bool,), True),
    },
    "tune": {
        "tuner": Field((str,), "random", choices=TUNERS),
        "objective": Field((str,), "elbo", choices=TUNE_OBJECTIVES),
        "max_trials": Field((int,), 10, minimum=1),
        "epochs": Field((int,), None, minimum=1, nullable=True),  # default train.epochs
        "executions_per_trial": Field((int,), 1, minimum=1),
        "hyperband_factor": Field((int,), 3, minimum=2),
        "num_samples": Field((int,), 100, minimum=1),  # IW samples, objective log_likelihood
        "examples": Field((int,), 1000, minimum=1),  # validation examples for it
        "validation_fraction": Field((float, int), 0.1, minimum=0),  # 0: the test split
        "seed": Field((int,), 0),
        **{name: Field((list, dict), None, nullable=True) for name in TUNABLE},
    },
}

# Model arguments that come from elsewhere in the recipe, not from [model].
_DERIVED_MODEL_ARGS = ("input_shape", "seed")
# Integer model arguments (some with no default) and their minimum.
_INT_MODEL_ARGS = {"latent_dim": 1, "num_classes": 2, "condition_dim": 1}
_SPEC_ARGS = {"likelihood": "LIKELIHOODS", "posterior": "POSTERIORS", "prior": "PRIORS"}


# ------------------------------------------------------------------------- loading


def available() -> list[str]:
    """Names of the packaged recipes."""
    folder = importlib.resources.files("vae_zoo.recipe_files")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read(name_or_path) -> tuple[str, str]:
    """(recipe name, TOML text) for a path or a packaged recipe name."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
        return path.stem, path.read_text(encoding="utf-8")
    resource = importlib.resources.files("vae_zoo.recipe_files").joinpath(f"{name_or_path}.toml")
    if not resource.is_file():
        raise RecipeError(
            f"recipe not found: {name_or_path!r} (not a file; packaged recipes: "
            + ", ".join(available())
            + ")"
        )
    return str(name_or_path), resource.read_text(encoding="utf-8")


def parse_override(text: str) -> tuple[str, str, Any]:
    """`"section.key=value"` → (section, key, value); value parsed as TOML, else a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise RecipeError(f"override {text!r} is not of the form section.key=value")
    path, raw = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key.strip(), value


def load(name_or_path=DEFAULT_RECIPE, overrides=()) -> dict:
    """Read, override and validate a recipe; returns a complete dict (defaults filled).

    The result has one dict per section plus `"name"` (the recipe's name).
    """
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
    recipe = validate(raw)
    recipe["name"] = name
    return recipe


# ------------------------------------------------------------------------- validation


def _suggest(word, options) -> str:
    match = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _type_name(types) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _check_value(where: str, value, field: Field):
    if value is None:
        if field.nullable:
            return None
        raise RecipeError(f"{where} must be set")
    ok = any(
        isinstance(value, t) and not (t in (int, float) and isinstance(value, bool))
        for t in field.types
    )
    if not ok:
        raise RecipeError(
            f"{where} must be {_type_name(field.types)}, got {type(value).__name__} {value!r}"
        )
    choices = field.choices() if callable(field.choices) else field.choices
    # A field taking ints and named values (steps_per_execution: an int or "auto")
    # restricts only the names.
    numeric = int in field.types and isinstance(value, int) and not isinstance(value, bool)
    if choices is not None and value not in choices and not numeric:
        raise RecipeError(
            f"{where} = {value!r} is not one of: "
            + ", ".join(repr(c) for c in choices)
            + _suggest(str(value), [str(c) for c in choices])
        )
    if field.minimum is not None and isinstance(value, (int, float)):
        if value < field.minimum or (field.exclusive_minimum and value == field.minimum):
            bound = ">" if field.exclusive_minimum else ">="
            raise RecipeError(f"{where} must be {bound} {field.minimum}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"{where} must be finite, got {value!r}")
    return value


def _model_fields(family_cls) -> dict[str, Field]:
    """Fields of [model] from the family constructor's signature and defaults."""
    fields = {}
    for param in inspect.signature(family_cls.__init__).parameters.values():
        if param.name in ("self",) + _DERIVED_MODEL_ARGS or param.kind in (
            param.VAR_KEYWORD,
            param.VAR_POSITIONAL,
        ):
            continue
        default = None if param.default is param.empty else param.default
        if param.name in _SPEC_ARGS:
            types = (str, dict)
        elif isinstance(default, bool):
            types = (bool,)
        elif isinstance(default, float):
            types = (float, int)
        elif isinstance(default, int):
            types = (int,)
        elif isinstance(default, (tuple, list)):
            types = (list, tuple)
        elif isinstance(default, str):
            types = (str,)
        elif param.name in _INT_MODEL_ARGS:
            types = (int,)
        else:
            types = (object,)
        minimum = 0 if param.name == "beta" else _INT_MODEL_ARGS.get(param.name)
        fields[param.name] = Field(types, default, minimum=minimum)
    return fields


def is_conditional(recipe) -> bool:
    """Whether the recipe's model family trains on `(x, y)` batches (class labels)."""
    from vae_zoo.models import MODELS

    return bool(MODELS.get(recipe["model"]["family"]).conditional)


def _check_spec(where, value, registry_name):
    from vae_zoo import heads, priors

    registry = getattr(heads, registry_name, None) or getattr(priors, registry_name)
    name = value.get("name") if isinstance(value, dict) else value
    if not isinstance(name, str):
        raise RecipeError(f"{where} needs a 'name' (one of: {', '.join(registry.names())})")
    if name not in registry:
        raise RecipeError(
            f"{where} = {name!r} is not one of: {', '.join(registry.names())}"
            + _suggest(name, registry.names())
        )


def validate(raw: dict) -> dict:
    """Check a parsed recipe and fill defaults. Raises `RecipeError`."""
    from vae_zoo.models import MODELS

    raw = copy.deepcopy(raw)
    raw.pop("name", None)
    known = list(SCHEMA) + ["model"]
    for section, body in raw.items():
        if section not in known:
            raise RecipeError(f"unknown recipe section [{section}]{_suggest(section, known)}")
        if not isinstance(body, dict):
            raise RecipeError(f"recipe section [{section}] must be a table")
    recipe = {}
    for section, fields in SCHEMA.items():
        body = raw.get(section, {})
        for key in body:
            if key not in fields:
                raise RecipeError(f"unknown recipe key {section}.{key}{_suggest(key, fields)}")
        recipe[section] = {
            key: _check_value(f"{section}.{key}", body.get(key, field.default), field)
            for key, field in fields.items()
        }

    model = dict(raw.get("model", {}))
    family = model.pop("family", None)
    if family is None:
        raise RecipeError("model.family must be set (one of: " + ", ".join(MODELS.names()) + ")")
    if not isinstance(family, str) or family not in MODELS:
        raise RecipeError(
            f"model.family = {family!r} is not one of: {', '.join(MODELS.names())}"
            + _suggest(str(family), MODELS.names())
        )
    fields = _model_fields(MODELS.get(family))
    for key in model:
        if key not in fields:
            raise RecipeError(f"unknown recipe key model.{key}{_suggest(key, fields)}")
    checked = {"family": family}
    for key, field in fields.items():
        if key not in model:
            if field.default is None and key == "latent_dim":
                raise RecipeError("model.latent_dim must be set")
            continue
        where = f"model.{key}"
        value = _check_value(where, model[key], field)
        if key in _SPEC_ARGS:
            _check_spec(where, value, _SPEC_ARGS[key])
        checked[key] = value
    recipe["model"] = checked
    _check_labels(recipe)
    _check_tune(recipe, fields)
    return recipe


def model_value(recipe, key):
    """The value of a [model] argument: the recipe's, else the family's default."""
    from vae_zoo.models import MODELS

    if key in recipe["model"]:
        return recipe["model"][key]
    return _model_fields(MODELS.get(recipe["model"]["family"]))[key].default


def hidden_layers_key(recipe) -> str | None:
    """The [model] key listing the widths of the model's dense hidden layers:
    "hidden_units" (dense bodies), "dense_units" (conv bodies) or None (no such layers)."""
    from vae_zoo.models import MODELS

    return _hidden_layers_key(recipe["model"], _model_fields(MODELS.get(recipe["model"]["family"])))


def _hidden_layers_key(model, fields):
    body = model.get("body", fields["body"].default if "body" in fields else None)
    if body != "conv" and "hidden_units" in fields:
        return "hidden_units"
    return "dense_units" if "dense_units" in fields else None


def _check_tune(recipe, model_fields):
    """Check the [tune] search space: each hyperparameter a list of values or a range
    table, with values the recipe key it sets accepts."""
    tune = recipe["tune"]
    if not tune["validation_fraction"] < 1:
        raise RecipeError(f"tune.validation_fraction must be < 1, got {tune['validation_fraction']!r}")
    for name, ((section, key), integer, minimum, exclusive) in TUNABLE.items():
        spec = tune[name]
        if spec is None:
            continue
        where = f"tune.{name}"
        target = _hidden_layers_key(recipe["model"], model_fields) if key is None else key
        if section == "model" and (target is None or target not in model_fields):
            raise RecipeError(
                f"{where}: model.family = {recipe['model']['family']!r} has no "
                f"{'hidden layers' if name == 'hidden_width' else key} to tune"
            )
        if name == "beta" and recipe["annealing"]["beta_max"] is not None:
            raise RecipeError(f"{where} cannot be tuned while annealing.beta_max is set "
                              "(the schedule would override it)")
        value_field = Field((int,) if integer else (float, int), None, minimum=minimum,
                            exclusive_minimum=exclusive)
        if isinstance(spec, list):
            if not spec:
                raise RecipeError(f"{where} must list at least one value")
            for i, value in enumerate(spec):
                _check_value(f"{where}[{i}]", value, value_field)
            if len(set(spec)) != len(spec):
                raise RecipeError(f"{where} lists a value twice: {spec!r}")
            continue
        for part in spec:
            if part not in _RANGE_KEYS:
                raise RecipeError(f"unknown recipe key {where}.{part}{_suggest(part, _RANGE_KEYS)}")
        for part in ("min", "max"):
            if part not in spec:
                raise RecipeError(f"{where}.{part} must be set (or give {where} as a list of values)")
            _check_value(f"{where}.{part}", spec[part], value_field)
        if not spec["min"] < spec["max"]:
            raise RecipeError(f"{where}.min must be < {where}.max, got {spec['min']!r} and {spec['max']!r}")
        sampling = _check_value(f"{where}.sampling", spec.get("sampling", "linear"),
                                Field((str,), "linear", choices=SAMPLINGS))
        if sampling != "linear" and spec["min"] <= 0:
            raise RecipeError(f"{where}: {sampling} sampling needs min > 0, got {spec['min']!r}")
        if "step" in spec:
            _check_value(f"{where}.step", spec["step"], Field(
                (int,) if integer else (float, int), None, minimum=0, exclusive_minimum=True))


def _check_labels(recipe):
    from vae_zoo import data

    dataset = recipe["data"]["dataset"]
    if is_conditional(recipe) and not data.has_labels(dataset):
        raise RecipeError(
            f"model.family = {recipe['model']['family']!r} needs class labels, and "
            f"data.dataset = {dataset!r} has none"
        )


# ------------------------------------------------------------------------- building


def input_shape(recipe) -> tuple:
    from vae_zoo import data

    return data.input_shape_of(recipe["data"]["dataset"], recipe["data"]["image_size"])


def build_model(recipe):
    """The model a recipe names (not compiled)."""
    from vae_zoo.models import MODELS

    kwargs = {key: value for key, value in recipe["model"].items() if key != "family"}
    for key, value in kwargs.items():
        if isinstance(value, list):
            kwargs[key] = tuple(value)
    try:
        return MODELS.get(recipe["model"]["family"])(
            input_shape=input_shape(recipe), seed=recipe["train"]["seed"], **kwargs
        )
    except (TypeError, ValueError) as error:
        raise RecipeError(f"[model]: {error}") from None


def build_optimizer(recipe):
    import keras

    train = recipe["train"]
    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return classes[train["optimizer"]](learning_rate=float(train["learning_rate"]))


def compile_model(model, recipe):
    train = recipe["train"]
    model.compile(
        optimizer=build_optimizer(recipe),
        jit_compile=train["jit_compile"],
        steps_per_execution=train["steps_per_execution"],
    )
    return model


def build_callbacks(recipe) -> list:
    """Training callbacks a recipe asks for (KL annealing)."""
    from vae_zoo.callbacks import KLAnnealing

    annealing = dict(recipe["annealing"])
    schedule = annealing.pop("schedule")
    if schedule == "none":
        return []
    return [KLAnnealing(schedule, **annealing)]


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

    d = recipe["data"]
    batch_size = d["batch_size"] * int(replicas)
    common = dict(batch_size=batch_size, image_size=d["image_size"], data_dir=d["data_dir"])
    train = data.load(
        d["dataset"], d["train_split"], shuffle=True, binarize=d["binarize"], seed=d["seed"],
        with_labels=is_conditional(recipe) if with_labels is None else bool(with_labels),
        **common,
    )
    test_binarize = "none" if d["binarize"] == "none" else "static"
    test = data.load(
        d["dataset"], d["test_split"], shuffle=False, binarize=test_binarize,
        seed=d["seed"] + 1, with_labels=data.has_labels(d["dataset"]), **common,
    )
    return train, test
