"""Typed values with defaults and ranges, checked in one place.

A `Field` describes one setting: a recipe key (`vae_zoo.drivers.schema`) or an
objective's option (`vae_zoo.models.training_objectives`). `Field.check` is the one
validator: a wrong value raises a one-line `ValueError` naming where it was given, and
`suggest` the one did-you-mean helper every message uses.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Callable

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a table"}


def closest(word, options) -> str | None:
    """The option most like `word`, or None when none is close."""
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return match[0] if match else None


def did_you_mean(match) -> str:
    """`" (did you mean 'x'?)"` for a match, "" for None."""
    return f" (did you mean {match!r}?)" if match else ""


def suggest(word, options) -> str:
    """`did_you_mean` the option most like `word`."""
    return did_you_mean(closest(word, options))


def type_name(types) -> str:
    """"a number or a string" for `(float, str)` (a number includes the integers)."""
    shown = [t for t in types if not (t is int and float in types)]
    return " or ".join(dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in shown))


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting: its type(s), default and allowed values.

    Args:
        types: the accepted Python types (a bool is never an int or a float).
        default: the value when not given; None with `nullable=False` means required.
        choices: the allowed values, or a callable returning them (resolved when
            checked). A field that also takes numbers restricts only the names.
        minimum, exclusive_minimum, maximum: the range of a number.
        nullable: None is a value (not "must be set").
        convert: applied to a checked number (`float` makes an int option a float).
    """

    types: tuple
    default: Any = None
    choices: tuple | Callable | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    nullable: bool = False
    convert: Callable | None = None

    def check(self, where: str, value):
        """`value` if it fits, else a one-line ValueError beginning with `where`."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{where} must be set")
        if not any(isinstance(value, t) and not (t in (int, float) and isinstance(value, bool))
                   for t in self.types):
            raise ValueError(f"{where} must be {type_name(self.types)}, "
                             f"got {type(value).__name__} {value!r}")
        choices = self.choices() if callable(self.choices) else self.choices
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if choices is not None and value not in choices and not (number and int in self.types):
            raise ValueError(f"{where} = {value!r} is not one of: "
                             + ", ".join(repr(c) for c in choices) + suggest(value, choices))
        if not number:
            return value
        if self.minimum is not None and (value < self.minimum or (
                self.exclusive_minimum and value == self.minimum)):
            bound = ">" if self.exclusive_minimum else ">="
            raise ValueError(f"{where} must be {bound} {self.minimum}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{where} must be <= {self.maximum}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value!r}")
        return self.convert(value) if self.convert else value
