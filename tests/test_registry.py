"""Tests for `vae_zoo.registry`: lookup, building from specs, error messages."""

import pytest

from vae_zoo import heads
from vae_zoo.registry import Registry, spec_name


@pytest.fixture
def registry():
    """A fresh registry with two entries (the package registries stay untouched)."""
    reg = Registry("widget")

    @reg.register("circle")
    class Circle:
        def __init__(self, radius=1.0, color="red"):
            self.radius, self.color = radius, color

    @reg.register("square")
    class Square:
        def __init__(self, side=1.0):
            self.side = side

    return reg


def test_names_contains_and_get(registry):
    """names() is sorted; `in` and get() find registered entries; registry_name is set."""
    assert registry.names() == ["circle", "square"]
    assert "circle" in registry and "triangle" not in registry
    assert registry.get("square").registry_name == "square"


def test_unknown_name_lists_choices_and_suggests(registry):
    """An unknown name raises ValueError naming the kind, every choice and a close match."""
    with pytest.raises(ValueError) as info:
        registry.get("cirle")
    message = str(info.value)
    assert "unknown widget 'cirle'" in message
    assert "did you mean 'circle'?" in message
    assert "choose one of: circle, square" in message


def test_unknown_name_without_close_match(registry):
    """With nothing similar, the error still lists the choices but suggests nothing."""
    with pytest.raises(ValueError, match="choose one of: circle, square") as info:
        registry.build("zzzzzz")
    assert "did you mean" not in str(info.value)


def test_package_registry_suggestion():
    """The real likelihood registry suggests 'bernoulli' for a typo."""
    with pytest.raises(ValueError, match=r"did you mean 'bernoulli'\?"):
        heads.LIKELIHOODS.build("bernouli")


def test_build_from_name_dict_and_instance(registry):
    """build() accepts a name, a {"name": ..., **options} dict plus kwargs, or an instance."""
    assert registry.build("circle").radius == 1.0
    spec = {"name": "circle", "radius": 2.0}
    circle = registry.build(spec, color="blue")
    assert (circle.radius, circle.color) == (2.0, "blue")
    assert spec == {"name": "circle", "radius": 2.0}  # the spec is not mutated
    assert registry.build(circle) is circle


def test_dict_spec_without_name_raises(registry):
    """A dict spec with no "name" key raises ValueError mentioning 'name'."""
    with pytest.raises(ValueError, match="needs a 'name' key"):
        registry.build({"radius": 2.0})


def test_non_string_name_raises_type_error(registry):
    """get() with a non-string raises TypeError."""
    with pytest.raises(TypeError, match="must be a string"):
        registry.get(3)


def test_duplicate_registration(registry):
    """Registering another object under a taken name raises; re-registering the same is fine."""
    circle = registry.get("circle")
    assert registry.register("circle")(circle) is circle
    with pytest.raises(ValueError, match="already registered"):
        registry.register("circle")(type("Other", (), {}))


def test_spec_name(registry):
    """spec_name reads a string, a dict's "name", an instance's registry_name, else the class name."""
    assert spec_name("circle") == "circle"
    assert spec_name({"name": "square", "side": 2}) == "square"
    assert spec_name(registry.build("square")) == "square"
    assert spec_name(object()) == "object"
