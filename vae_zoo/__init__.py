"""vae_zoo: variational autoencoders for Keras 3 with TensorFlow Probability distributions.

`import vae_zoo` registers every model, head and prior with Keras, so
`keras.models.load_model("model.keras")` needs no `custom_objects`. The subpackages
are reachable from it (`vae_zoo.evaluate.log_likelihood(...)`); the ones with heavy
dependencies (keras-tuner, TFDS) are imported on first use.

Layers, each importing only from those above it in this list:
- core: `distributions`, `bijectors`, `heads` (with `priors`), `networks`, `bodies`,
  `objectives`, `schedules`, `models` (whose base derives from
  `training.fast_path.FastPath`, below them);
- `evaluate`, `plots`, `disentanglement` (with `estimators`): use the core only;
- `data`: input pipelines, a registry of datasets;
- `training`: `callbacks`, `distribute`, checkpointing;
- `drivers`: `recipes`, `runs`, `tuning`, `export`, `cli`.

Started as the `vae-zoo` command (its console script or `python -m vae_zoo`), the
package imports TensorFlow and the models only when a command needs them, so
`vae-zoo --help` and `vae-zoo recipes` answer at once; every other command imports
them before it runs.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

from vae_zoo._quiet import import_tensorflow, quiet_logs, started_as_command  # noqa: E402

_LIGHT = started_as_command()
quiet_logs()
if not _LIGHT:
    import_tensorflow()

# Public name → module, imported on first attribute access (PEP 562).
_SUBMODULES = {
    "registry": "vae_zoo.registry",
    "distributions": "vae_zoo.distributions",
    "bijectors": "vae_zoo.bijectors",
    "heads": "vae_zoo.heads",
    "priors": "vae_zoo.heads.priors",
    "networks": "vae_zoo.networks",
    "bodies": "vae_zoo.bodies",
    "objectives": "vae_zoo.objectives",
    "schedules": "vae_zoo.schedules",
    "evaluate": "vae_zoo.evaluate",
    "plots": "vae_zoo.plots",
    "disentanglement": "vae_zoo.disentanglement",
    "estimators": "vae_zoo.estimators",
    "data": "vae_zoo.data",
    "training": "vae_zoo.training",
    "callbacks": "vae_zoo.training.callbacks",
    "distribute": "vae_zoo.training.distribute",
    "drivers": "vae_zoo.drivers",
    "recipes": "vae_zoo.drivers.recipes",
    "runs": "vae_zoo.drivers.runs",
    "tuning": "vae_zoo.drivers.tuning",
    "export": "vae_zoo.drivers.export",
    "cli": "vae_zoo.drivers.cli",
}
if _LIGHT:
    _SUBMODULES["models"] = "vae_zoo.models"

__all__ = ["models", *(name for name in _SUBMODULES if name != "models")]


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(_SUBMODULES[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'vae_zoo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))


class _ShortNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import vae_zoo.callbacks` (and the other short names above) imports the module
    the name stands for: the same module object, not a copy."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package == __name__ and _SUBMODULES.get(name, fullname) != fullname:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(_SUBMODULES[spec.name.partition(".")[2]])

    def exec_module(self, module):
        pass


if not any(isinstance(finder, _ShortNames) for finder in sys.meta_path):
    sys.meta_path.append(_ShortNames())


if not _LIGHT:
    from vae_zoo import models  # noqa: E402,F401  (registers the serializable classes)
