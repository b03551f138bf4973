"""Name → constructor registries, so recipes, configs and the CLI name things by string.

Every pluggable piece of vae_zoo (likelihood heads, posterior heads, priors, model
families, annealing schedules) is registered under a short name. A recipe or a
`get_config` stores that name (or `{"name": ..., **options}`); `Registry.build` turns it
back into an object. Adding a variant means adding one decorated class in its own module.
"""

from __future__ import annotations

from typing import Any, Callable

from vae_zoo.fields import suggest


class Registry:
    """A named collection of constructors.

    Args:
        kind: what the entries are ("likelihood", "prior", ...), used in error messages.

    Example:
    ```python
    LIKELIHOODS = Registry("likelihood")

    @LIKELIHOODS.register("bernoulli")
    class BernoulliLikelihood(...): ...

    head = LIKELIHOODS.build({"name": "gaussian", "scale": 0.1})
    ```
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable:
        def decorator(obj):
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            obj.registry_name = name
            return obj

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        try:
            return self._entries[name]
        except KeyError:
            suggestion = suggest(name, self._entries)
            raise ValueError(
                f"unknown {self.kind} {name!r}{suggestion}; choose one of: "
                + ", ".join(self.names())
            ) from None

    def build(self, spec, **kwargs):
        """Build from a name, a `{"name": ..., **options}` dict, or pass an instance through.

        `kwargs` are structural arguments the caller supplies (e.g. the latent shape);
        options in `spec` are the user's choices.
        """
        if isinstance(spec, str):
            return self.get(spec)(**kwargs)
        if isinstance(spec, dict):
            options = dict(spec)
            if "name" not in options:
                raise ValueError(f"{self.kind} spec {spec!r} needs a 'name' key")
            name = options.pop("name")
            return self.get(name)(**options, **kwargs)
        return spec


def spec_name(spec) -> str:
    """The registry name in a spec (a string or a `{"name": ...}` dict)."""
    if isinstance(spec, dict):
        return spec["name"]
    if isinstance(spec, str):
        return spec
    return getattr(spec, "registry_name", type(spec).__name__)
