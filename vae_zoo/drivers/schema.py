"""The recipe schema: every section's keys with their types, defaults and ranges (the
typed config's dataclasses, `vae_zoo.drivers.config`).

`vae_zoo.recipes` validates recipes against it; `[model]` fields come from the chosen
family's constructor (`model_fields`), `[tune]` search spaces are checked by
`check_tune`. Errors are `RecipeError`s with one line naming the key.
"""

from __future__ import annotations

import inspect

from vae_zoo.drivers.config import (  # noqa: F401 (the choices, public here too)
    OPTIMIZERS, SECTIONS, SEED_MAX, TUNE_OBJECTIVES, TUNERS,
)
from vae_zoo.fields import Field, did_you_mean, suggest  # noqa: F401 (suggest: used by recipes)


class RecipeError(ValueError):
    """A recipe (or an override) names something wrong; the message names the key."""


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

# Section → key → Field, from the typed config's dataclasses ([model] is the family's).
SCHEMA = {name: section.schema() for name, section in SECTIONS.items()}

# Model arguments that come from elsewhere in the recipe, not from [model].
_DERIVED_MODEL_ARGS = ("input_shape", "seed")
# Integer model arguments (some with no default) and their minimum.
_INT_MODEL_ARGS = {"latent_dim": 1, "num_classes": 2, "condition_dim": 1, "num_samples": 1,
                   "num_latents": 1, "num_categories": 2, "latent_channels": 1}
# Model arguments listing layer sizes (widths, kernel sizes, strides): each at least 1.
SIZE_LIST_ARGS = ("hidden_units", "dense_units", "baseline_units", "filters", "kernel_sizes",
                  "strides", "discriminator_units", "latent_dims", "ladder_units")
SPEC_ARGS = {"likelihood": "LIKELIHOODS", "posterior": "POSTERIORS", "prior": "PRIORS"}



def check_value(where: str, value, field: Field):
    """`Field.check` with its one-line error as a `RecipeError`."""
    try:
        return field.check(where, value)
    except ValueError as error:
        raise RecipeError(str(error)) from None


def model_fields(family_cls) -> dict[str, Field]:
    """Fields of [model] from the family constructor's signature and defaults, and the
    shared arguments it takes (`Family.shared_defaults`)."""
    fields = {}
    parameters = [
        (param.name, None if param.default is param.empty else param.default)
        for param in inspect.signature(family_cls.__init__).parameters.values()
        if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
    ]
    shared = getattr(family_cls, "shared_defaults", dict)()
    for name, default in parameters + list(shared.items()):
        if name in ("self",) + _DERIVED_MODEL_ARGS:
            continue
        if name in SPEC_ARGS or name == "objective":
            kinds = (str, dict)
        elif isinstance(default, bool):
            kinds = (bool,)
        elif isinstance(default, float):
            kinds = (float, int)
        elif isinstance(default, int):
            kinds = (int,)
        elif isinstance(default, (tuple, list)):
            kinds = (list, tuple)
        elif isinstance(default, str):
            kinds = (str,)
        elif name in _INT_MODEL_ARGS:
            kinds = (int,)
        else:
            kinds = (object,)
        minimum = 0 if name == "beta" else _INT_MODEL_ARGS.get(name)
        fields[name] = Field(kinds, default, minimum=minimum)
    return fields



def check_sizes(where, values):
    """Each layer size a list of them (`SIZE_LIST_ARGS`) gives is an integer >= 1."""
    for i, value in enumerate(values):
        check_value(f"{where}[{i}]", value, Field((int,), None, minimum=1))


def check_annealing(recipe, beta):
    """An annealing schedule rises from annealing.beta_min to the β it anneals to
    (annealing.beta_max, else `beta`, the model's β); it never falls."""
    annealing = recipe["annealing"]
    if annealing["schedule"] == "none":
        return
    beta_min = annealing["beta_min"]
    if annealing["beta_max"] is not None:
        top, top_key = annealing["beta_max"], "annealing.beta_max"
    else:
        top, top_key = beta, "model.beta"
    if beta_min > top:
        raise RecipeError(f"annealing.beta_min = {beta_min!r} must be <= {top_key} = {top!r} "
                          "(β anneals up from beta_min)")
    spec = recipe["tune"]["beta"]
    if annealing["beta_max"] is None and spec is not None:  # the schedule's top is tuned
        lowest = min(spec) if isinstance(spec, list) else spec.get("min")
        if isinstance(lowest, (int, float)) and beta_min > lowest:
            raise RecipeError(f"annealing.beta_min = {beta_min!r} must be <= the lowest "
                              f"tune.beta, {lowest!r} (β anneals up from beta_min)")


def source_options(data_section) -> dict:
    """The [data] keys that say where a dataset's examples are (`vae_zoo.data.entry`)."""
    return {key: data_section[key] for key in ("data_dir", "image_key", "label_key")}


def check_dataset(data_section):
    """data.dataset names a packaged dataset, a TFDS dataset, an image folder or an
    .npz/.npy file, whose data are readable; one line naming the key or the file."""
    from vae_zoo import data

    name = data_section["dataset"]
    try:
        data.entry(name, **source_options(data_section))
        data.input_shape_of(name, data_section["image_size"], **source_options(data_section))
    except data.UnknownDataset as error:
        raise RecipeError(
            f"data.dataset = {name!r} is not one of: "
            + ", ".join(repr(c) for c in data.names())
            + "; nor a TFDS dataset, an image folder or an .npz/.npy file"
            + did_you_mean(error.suggestion)
        ) from None
    except ValueError as error:
        raise RecipeError(str(error)) from None


def check_spec(where, value, registry_name):
    from vae_zoo import heads

    registry = getattr(heads, registry_name)
    name = value.get("name") if isinstance(value, dict) else value
    if not isinstance(name, str):
        raise RecipeError(f"{where} needs a 'name' (one of: {', '.join(registry.names())})")
    if name not in registry:
        raise RecipeError(
            f"{where} = {name!r} is not one of: {', '.join(registry.names())}"
            + suggest(name, registry.names())
        )



def check_objective(where, value, family):
    """model.objective names a registered training objective whose options exist and
    hold valid values (`vae_zoo.models.training_objectives`) and that trains models of
    the class `family`; one line naming the key."""
    from vae_zoo.models import training_objectives

    try:
        training_objectives.build(value).check_family(family)
    except ValueError as error:  # "objective..." (the option, or the name)
        raise RecipeError(f"{where.rpartition('.')[0]}.{error}") from None


def hidden_layers_key_of(model, fields):
    body = model.get("body", fields["body"].default if "body" in fields else None)
    if body != "conv" and "hidden_units" in fields:
        return "hidden_units"
    return "dense_units" if "dense_units" in fields else None



def check_tune(recipe, model_fields):
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
        target = hidden_layers_key_of(recipe["model"], model_fields) if key is None else key
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
                check_value(f"{where}[{i}]", value, value_field)
            if len(set(spec)) != len(spec):
                raise RecipeError(f"{where} lists a value twice: {spec!r}")
            continue
        for part in spec:
            if part not in _RANGE_KEYS:
                raise RecipeError(f"unknown recipe key {where}.{part}{suggest(part, _RANGE_KEYS)}")
        for part in ("min", "max"):
            if part not in spec:
                raise RecipeError(f"{where}.{part} must be set (or give {where} as a list of values)")
            check_value(f"{where}.{part}", spec[part], value_field)
        if not spec["min"] < spec["max"]:
            raise RecipeError(f"{where}.min must be < {where}.max, got {spec['min']!r} and {spec['max']!r}")
        sampling = check_value(f"{where}.sampling", spec.get("sampling", "linear"),
                                Field((str,), "linear", choices=SAMPLINGS))
        if sampling != "linear" and spec["min"] <= 0:
            raise RecipeError(f"{where}: {sampling} sampling needs min > 0, got {spec['min']!r}")
        if "step" in spec:
            check_value(f"{where}.step", spec["step"], Field(
                (int,) if integer else (float, int), None, minimum=0, exclusive_minimum=True))


