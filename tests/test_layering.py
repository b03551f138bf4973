"""The package's layers import only downwards (README, "Layout").

Every `import` of a vae_zoo module, at the top of a file or inside a function, is read
from the source with `ast` and checked against the forbidden directions below. Short
names (`from vae_zoo import recipes`) are resolved to the modules they stand for.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import vae_zoo

PACKAGE = Path(vae_zoo.__file__).parent

# Layer of each module, by its dotted name's prefix; utilities may be used by anyone.
UTILITIES = ("vae_zoo", "vae_zoo._quiet", "vae_zoo.registry", "vae_zoo.fields", "vae_zoo.positions", "vae_zoo.__main__")
LAYERS = {  # the first layer whose prefix a module has is its layer
    # below the models: how Keras runs their step (the base model's parent class)
    "fast_path": ("vae_zoo.training.fast_path", "vae_zoo.training.compiled_step",
                  "vae_zoo.training.arrays"),
    "core": ("vae_zoo.distributions", "vae_zoo.bijectors", "vae_zoo.heads", "vae_zoo.networks",
             "vae_zoo.bodies", "vae_zoo.objectives", "vae_zoo.aggregate_posterior",
             "vae_zoo.schedules", "vae_zoo.models"),
    "analysis": ("vae_zoo.evaluate", "vae_zoo.plots", "vae_zoo.disentanglement",
                 "vae_zoo.estimators"),
    "data": ("vae_zoo.data", "vae_zoo.datasets"),
    "training": ("vae_zoo.training",),
    "drivers": ("vae_zoo.drivers",),
}
# What each layer may import besides utilities (itself included).
ALLOWED = {
    "fast_path": {"fast_path"},
    "core": {"fast_path", "core"},
    "analysis": {"fast_path", "core", "analysis"},
    "data": {"data"},
    "training": {"fast_path", "core", "analysis", "data", "training"},
    "drivers": {"fast_path", "core", "analysis", "data", "training", "drivers"},
}
# Finer rules inside the core: (importer prefix, forbidden prefix).
FORBIDDEN = [
    ("vae_zoo.heads", "vae_zoo.models"),  # heads never import models
    ("vae_zoo.networks", "vae_zoo.distributions"),  # networks never build distributions
    ("vae_zoo.networks", "vae_zoo.heads"),
    ("vae_zoo.bodies", "vae_zoo.distributions"),  # bodies build layers, not distributions
    ("vae_zoo.bodies", "vae_zoo.heads"),
    ("vae_zoo.bodies", "vae_zoo.models"),
    ("vae_zoo.objectives", "vae_zoo.models"),  # objectives import no models
    ("vae_zoo.objectives", "vae_zoo.heads"),
    ("vae_zoo.aggregate_posterior", "vae_zoo.models"),
    ("vae_zoo.aggregate_posterior", "vae_zoo.heads"),
    ("vae_zoo.distributions", "vae_zoo.heads"),
    ("vae_zoo.bijectors", "vae_zoo.heads"),
    ("vae_zoo.bijectors", "vae_zoo.models"),
]
THIRD_PARTY_FORBIDDEN = [
    ("vae_zoo.networks", "tensorflow_probability"),  # no distributions in bodies
    ("vae_zoo.bodies", "tensorflow_probability"),
]


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(name):
    """A short name (`vae_zoo.recipes`) as the module it stands for."""
    short = name.split(".", 2)
    if len(short) >= 2 and short[0] == "vae_zoo" and short[1] in vae_zoo._SUBMODULES:
        target = vae_zoo._SUBMODULES[short[1]]
        return target + ("." + short[2] if len(short) == 3 else "")
    return name


def imports_of(path):
    """Every module `path` imports, resolved (relative imports made absolute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(resolve(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(resolve(candidate) if resolve(candidate) != candidate
                          or (PACKAGE.parent / candidate.replace(".", "/")).exists()
                          or (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists()
                          else resolve(base))
    return found


def layer_of(name):
    if name in UTILITIES:
        return "utility"
    for layer, prefixes in LAYERS.items():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return layer
    return None


def violations(graph):
    """(importer, imported, rule) for every forbidden edge of `graph` {module: imports}."""
    found = []
    for importer, imported in graph.items():
        source = layer_of(importer)
        for target in imported:
            if not target.startswith("vae_zoo"):
                for prefix, forbidden in THIRD_PARTY_FORBIDDEN:
                    if importer.startswith(prefix) and target.split(".")[0] == forbidden:
                        found.append((importer, target, f"{prefix} never imports {forbidden}"))
                continue
            destination = layer_of(target)
            if destination is None:
                found.append((importer, target, "module in no layer"))
            elif source not in (None, "utility") and destination != "utility" \
                    and destination not in ALLOWED[source]:
                found.append((importer, target, f"{source} never imports {destination}"))
            for prefix, forbidden in FORBIDDEN:
                if importer.startswith(prefix) and target.startswith(forbidden):
                    found.append((importer, target, f"{prefix} never imports {forbidden}"))
    return found


def package_graph():
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def test_every_module_belongs_to_a_layer():
    assert [name for name in package_graph() if layer_of(name) is None] == []


def test_layers_import_only_downwards():
    assert violations(package_graph()) == []


@pytest.mark.parametrize("importer, imported", [
    ("vae_zoo.heads.priors", "vae_zoo.models.base"),
    ("vae_zoo.networks", "vae_zoo.distributions"),
    ("vae_zoo.networks", "tensorflow_probability"),
    ("vae_zoo.objectives", "vae_zoo.models"),
    ("vae_zoo.models.base", "vae_zoo.evaluate"),
    ("vae_zoo.models.base", "vae_zoo.training.callbacks"),
    ("vae_zoo.evaluate", "vae_zoo.data"),
    ("vae_zoo.training.distribute", "vae_zoo.drivers.recipes"),
    ("vae_zoo.data.sources", "vae_zoo.models"),
])
def test_the_checker_catches_each_forbidden_direction(importer, imported):
    assert violations({importer: {imported}}) != []


def test_short_names_resolve_to_their_modules():
    assert imports_of(PACKAGE / "drivers" / "tuning.py") >= {
        "vae_zoo.drivers.recipes", "vae_zoo.training.distribute"}
    assert resolve("vae_zoo.callbacks") == "vae_zoo.training.callbacks"


@pytest.mark.slow
def test_import_vae_zoo_reaches_every_subpackage():
    """In a fresh process, `import vae_zoo` alone reaches the documented subpackages,
    and the short names import the layout's modules (the same objects)."""
    code = (
        "import vae_zoo\n"
        "names = ['models', 'data', 'heads', 'priors', 'objectives', 'evaluate', 'callbacks',\n"
        "         'export', 'tuning', 'recipes', 'plots', 'schedules', 'distribute', 'runs']\n"
        "assert all(getattr(vae_zoo, n) for n in names)\n"
        "assert callable(vae_zoo.evaluate.log_likelihood)\n"
        "from vae_zoo.callbacks import KLAnnealing\n"
        "import vae_zoo.recipes, vae_zoo.drivers.recipes, vae_zoo.training.callbacks\n"
        "assert vae_zoo.recipes is vae_zoo.drivers.recipes\n"
        "assert KLAnnealing is vae_zoo.training.callbacks.KLAnnealing\n"
        "print('reached')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "reached" in result.stdout, result.stderr[-2000:]
