"""`vae_zoo.fields`: the one validator of recipe keys and objectives' options, and the
one did-you-mean helper."""

import math
import re

import pytest

from vae_zoo.fields import Field, closest, suggest, type_name
from vae_zoo.models import training_objectives


@pytest.mark.parametrize("field, value, message", [
    (Field((int,), 1, minimum=1), 0, "k must be >= 1, got 0"),
    (Field((int,), 1), True, "k must be an integer, got bool True"),
    (Field((float, int), 1.0, minimum=0, exclusive_minimum=True), 0, "k must be > 0, got 0"),
    (Field((float, int), 1.0, maximum=1), 1.5, "k must be <= 1, got 1.5"),
    (Field((float, int), 1.0), math.nan, "k must be finite, got nan"),
    (Field((float, int), 1.0), "x", "k must be a number, got str 'x'"),
    (Field((str,), "adam", choices=("adam", "sgd")), "adan",
     "k = 'adan' is not one of: 'adam', 'sgd' (did you mean 'adam'?)"),
    (Field((str,), "a", choices=lambda: ("a", "b")), "c", "k = 'c' is not one of: 'a', 'b'"),
    (Field((int,), None), None, "k must be set"),
])
def test_a_wrong_value_is_one_line_naming_where(field, value, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        field.check("k", value)


def test_right_values_pass_and_convert():
    assert Field((int, str), "auto", choices=("auto",)).check("k", 7) == 7  # names restricted only
    assert Field((int, str), "auto", choices=("auto",)).check("k", "auto") == "auto"
    assert Field((int,), None, nullable=True).check("k", None) is None
    converted = Field((float, int), 1.0, convert=float).check("k", 3)
    assert converted == 3.0 and isinstance(converted, float)


def test_suggestions_and_type_names():
    assert closest("betatc", ["beta_tc", "elbo"]) == "beta_tc"
    assert closest("zzz", ["beta_tc"]) is None
    assert suggest("elbow", ["elbo"]) == " (did you mean 'elbo'?)" and suggest("q", ["elbo"]) == ""
    assert type_name((float, int)) == "a number" and type_name((bool, str)) == "a boolean or a string"


def test_objective_options_go_through_the_same_validator():
    """An objective's option is a `Field`: a NaN weight is refused like a NaN recipe value."""
    option = training_objectives.OBJECTIVES.get("beta_tc").options["beta"]
    assert isinstance(option, Field)
    with pytest.raises(ValueError, match=r"^objective\.beta must be finite, got nan$"):
        training_objectives.build({"name": "beta_tc", "dataset_size": 5, "beta": math.nan})
