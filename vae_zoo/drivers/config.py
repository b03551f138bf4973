"""A recipe as a frozen, typed config: `Recipe`, one dataclass per section.

`vae_zoo.recipes.load` validates a recipe once into a `Recipe`, and a run reads its
attributes (`recipe.data.batch_size`, `recipe.train.epochs`). Each key's type, default
and range is the `vae_zoo.fields.Field` in its metadata: the dataclasses are the schema
(`SECTIONS`), and `vae_zoo.drivers.recipes.validate` the one validator. A `Recipe` and
its sections also read as the nested mapping they came from (`recipe["data"]["seed"]`),
and `to_dict()` gives the JSON of `recipe.json`.

The sections are frozen; the values inside are as TOML gave them (a list of widths, a
prior's spec table).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

from vae_zoo.fields import Field

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
# Seeds: what NumPy's and Keras's seeding accepts.
SEED_MAX = 2**32 - 1
TUNERS = ("random", "bayesian", "hyperband")
TUNE_OBJECTIVES = ("elbo", "log_likelihood")


def _schedules():
    from vae_zoo.schedules import SCHEDULES

    return ("none",) + tuple(SCHEDULES.names())


def _binarize_modes():
    from vae_zoo import data

    return data.BINARIZE_MODES


def _strategies():
    from vae_zoo.training.distribute import STRATEGIES

    return STRATEGIES


def key(*args, **kwargs):
    """A section's key: a dataclass field whose `Field(*args, **kwargs)` checks it."""
    field = Field(*args, **kwargs)
    return dataclasses.field(default=field.default, metadata={"field": field})


class _Fields(Mapping):
    """A frozen dataclass read as the mapping of its fields."""

    def __getitem__(self, name):
        if name not in self._names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))


class Section(_Fields):
    """A frozen section of a recipe, readable as a mapping of its keys."""

    @classmethod
    def schema(cls) -> dict[str, Field]:
        """Key → `Field`, in the section's order."""
        return {f.name: f.metadata["field"] for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict:
        return dict(self.items())


@dataclasses.dataclass(frozen=True, eq=False)
class DataConfig(Section):
    """[data]: where the examples come from and how they are batched."""

    dataset: str = key((str,), "mnist_sample")  # a packaged name, a TFDS name or a path
    binarize: str = key((str,), "dynamic", choices=_binarize_modes)
    batch_size: int = key((int,), 128, minimum=1)
    train_split: str = key((str,), "train")
    test_split: str = key((str,), "test")
    image_size: int | None = key((int,), None, minimum=1, nullable=True)
    data_dir: str | None = key((str,), None, nullable=True)
    image_key: str | None = key((str,), None, nullable=True)
    label_key: str | None = key((str,), None, nullable=True)
    cache_budget_mb: int | None = key((int,), None, minimum=0, nullable=True)  # None: default
    seed: int = key((int,), 0, minimum=0, maximum=SEED_MAX)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainConfig(Section):
    """[train]: the optimizer, the epochs and how the step runs."""

    epochs: int = key((int,), 30, minimum=1)
    optimizer: str = key((str,), "adam", choices=OPTIMIZERS)
    learning_rate: float = key((float, int), 1e-3, minimum=0, exclusive_minimum=True)
    seed: int = key((int,), 0, minimum=0, maximum=SEED_MAX)
    jit_compile: bool | str = key((bool, str), "auto", choices=(True, False, "auto"))
    steps_per_execution: int | str = key((int, str), "auto", minimum=1, choices=("auto",))
    strategy: str = key((str,), "auto", choices=_strategies)


@dataclasses.dataclass(frozen=True, eq=False)
class AnnealingConfig(Section):
    """[annealing]: β as a schedule of the epochs (`vae_zoo.schedules.BetaSchedule`)."""

    schedule: str = key((str,), "none", choices=_schedules)
    beta_min: float = key((float, int), 0.0, minimum=0)
    beta_max: float | None = key((float, int), None, minimum=0, nullable=True)
    warmup_epochs: float = key((float, int), 10, minimum=0)
    cycles: int = key((int,), 4, minimum=1)
    ratio: float = key((float, int), 0.5, minimum=0, exclusive_minimum=True, maximum=1)


@dataclasses.dataclass(frozen=True, eq=False)
class EvaluateConfig(Section):
    """[evaluate]: the final importance-weighted evaluation."""

    num_samples: int = key((int,), 1000, minimum=0)  # 0 skips it
    examples: int = key((int,), 1000, minimum=1)


@dataclasses.dataclass(frozen=True, eq=False)
class OutputConfig(Section):
    """[output]: the pictures and diagnostics of a run."""

    grid_size: int = key((int,), 64, minimum=1)
    images_every: int = key((int,), 5, minimum=0)
    diagnostics: bool = key((bool,), True)


@dataclasses.dataclass(frozen=True, eq=False)
class TuneConfig(Section):
    """[tune]: the search (`vae_zoo.tuning`) and its space: each hyperparameter a list
    of values or a range table (checked by `vae_zoo.drivers.schema.check_tune`)."""

    tuner: str = key((str,), "random", choices=TUNERS)
    objective: str = key((str,), "elbo", choices=TUNE_OBJECTIVES)
    max_trials: int = key((int,), 10, minimum=1)
    epochs: int | None = key((int,), None, minimum=1, nullable=True)  # None: train.epochs
    executions_per_trial: int = key((int,), 1, minimum=1)
    hyperband_factor: int = key((int,), 3, minimum=2)
    num_samples: int = key((int,), 100, minimum=1)  # IW samples, objective log_likelihood
    examples: int = key((int,), 1000, minimum=1)  # validation examples for it
    validation_fraction: float = key((float, int), 0.1, minimum=0)  # 0: the test split
    seed: int = key((int,), 0, minimum=0, maximum=SEED_MAX)
    beta: Any = key((list, dict), None, nullable=True)
    latent_dim: Any = key((list, dict), None, nullable=True)
    learning_rate: Any = key((list, dict), None, nullable=True)
    hidden_width: Any = key((list, dict), None, nullable=True)


# Section name → its dataclass, in a recipe's order ([model] is the family's own).
SECTIONS = {"data": DataConfig, "train": TrainConfig, "annealing": AnnealingConfig,
            "evaluate": EvaluateConfig, "output": OutputConfig, "tune": TuneConfig}


class ModelConfig(Mapping):
    """[model]: the family and the arguments the recipe gives its constructor (checked
    against its signature); read-only."""

    def __init__(self, family: str, arguments: Mapping):
        self.family = family
        self.arguments = types.MappingProxyType(dict(arguments))

    def __getitem__(self, name):
        return self.family if name == "family" else self.arguments[name]

    def __iter__(self):
        return iter(("family", *self.arguments))

    def __len__(self):
        return 1 + len(self.arguments)

    def __setattr__(self, name, value):
        if "arguments" in self.__dict__:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super().__setattr__(name, value)

    def to_dict(self) -> dict:
        return dict(self.items())

    def __reduce__(self):  # copies and pickles rebuild it (a mappingproxy cannot be)
        return ModelConfig, (self.family, dict(self.arguments))

    def __repr__(self):
        return f"ModelConfig({self.to_dict()!r})"


@dataclasses.dataclass(frozen=True, eq=False)
class Recipe(_Fields):
    """A validated recipe: its name and its sections, each frozen."""

    name: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    annealing: AnnealingConfig
    evaluate: EvaluateConfig
    output: OutputConfig
    tune: TuneConfig

    @classmethod
    def from_dict(cls, sections: Mapping) -> Recipe:
        """A `Recipe` from checked sections (complete, as `validate` leaves them)."""
        model = dict(sections["model"])
        family = model.pop("family")
        return cls(name=sections.get("name"), model=ModelConfig(family, model),
                   **{name: section(**sections[name]) for name, section in SECTIONS.items()})

    def replace(self, **sections) -> Recipe:
        """A copy with whole sections (or the name) replaced: `dataclasses.replace`."""
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict:
        """The recipe as JSON-able nested dicts (what `recipe.json` holds)."""
        return {name: value.to_dict() if hasattr(value, "to_dict") else value
                for name, value in self.items()}
