"""keras-tuner searches over β, latent size, learning rate and hidden width.

A recipe's `[tune]` section declares the search space and how to search it:

```toml
[tune]
tuner = "hyperband"          # "random", "bayesian" (needs scikit-learn) or "hyperband"
objective = "elbo"           # validation ELBO, or "log_likelihood" (IW bound, num_samples K)
max_trials = 12              # random and bayesian
epochs = 10                  # per trial (Hyperband: the most any trial gets)
validation_fraction = 0.1    # held out of the training split; 0: select on the test split
beta = {min = 0.1, max = 4.0, sampling = "log"}
latent_dim = [8, 16, 32, 64]
learning_rate = {min = 3e-4, max = 3e-3, sampling = "log"}
hidden_width = [128, 256, 512]
```

Each hyperparameter is a list of values (`hp.Choice`) or a range table
`{min, max, sampling = "linear" | "log" | "reverse_log", step}` (`hp.Float`, or
`hp.Int` for latent_dim and hidden_width); left out, the recipe's value is used.
`hidden_width` is the width of the first hidden layer; the others keep their ratio to
it (hidden_units [512, 256] at width 128 become [128, 64]). The objective is maximized.

`VAEHyperModel(recipe)` is the `keras_tuner.HyperModel`: `build(hp)` builds and
compiles the recipe's model with the trial's values (models create their variables in
`__init__`, so keras-tuner can checkpoint them at once), `fit` trains it on the
recipe's data under the recipe's strategy. `search(recipe, output)` runs the whole
search and writes the best model; `vae-zoo tune` is its command line.

Distributed tuning uses keras-tuner's own protocol: one process with
`KERASTUNER_TUNER_ID=chief` runs the oracle at `KERASTUNER_ORACLE_IP:PORT`; workers with
other ids (`tuner0`, `tuner1`, ...) ask it for trials, train them and report each
result once. All processes run `search` with the same recipe and the same (shared)
output folder; the chief writes the best model when every trial has ended.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import keras
import keras_tuner
import numpy as np

from vae_zoo.drivers import recipes, runs
from vae_zoo.drivers.export import export_for_serving
from vae_zoo.drivers.hypermodel import (  # noqa: F401  (public here too)
    OBJECTIVE_METRICS,
    PROJECT,
    VAEHyperModel,
    apply,
    objective,
    overrides,
    search_space,
    trial_epochs,
)
from vae_zoo.training import distribute
from vae_zoo.training.checkpointing import write_json_atomic

# ------------------------------------------------------------------------- tuners


class _Reporting:
    """Tuner mixin: prints one line per finished trial and records it in `reported`."""

    report = True

    def run_trial(self, trial, *args, **kwargs):
        results = super().run_trial(trial, *args, **kwargs)
        name = self.oracle.objective.name
        values = [max(h.history[name]) for h in results
                  if isinstance(h, keras.callbacks.History) and h.history.get(name)]
        self.__dict__.setdefault("_scores", {})[trial.trial_id] = (
            float(np.mean(values)) if values else None
        )
        return results

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        score = self.__dict__.get("_scores", {}).get(trial.trial_id)
        entry = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id,
                 "status": str(trial.status), "score": score}
        self.__dict__.setdefault("reported", []).append(entry)
        if self.report:
            shown = "failed" if score is None else f"{self.oracle.objective.name} = {score:.3f}"
            values = _shown_values(trial.hyperparameters.values)
            print(f"trial {trial.trial_id} {entry['status']} by {self.tuner_id}: {shown} "
                  f"({values})", flush=True)
            if trial.status != "COMPLETED" and trial.message:
                print("  " + trial.message.strip().splitlines()[-1], flush=True)


class RandomSearch(_Reporting, keras_tuner.RandomSearch):
    pass


class BayesianOptimization(_Reporting, keras_tuner.BayesianOptimization):
    pass


class Hyperband(_Reporting, keras_tuner.Hyperband):
    pass


TUNERS = {"random": RandomSearch, "bayesian": BayesianOptimization, "hyperband": Hyperband}


def _shown_values(values) -> str:
    parts = []
    for name, value in values.items():
        if name in recipes.TUNABLE:
            parts.append(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}")
    return ", ".join(parts)


def role() -> str | None:
    """This process's part in distributed tuning: "chief", "worker", or None (alone),
    from keras-tuner's KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / _PORT variables."""
    if not os.environ.get("KERASTUNER_ORACLE_IP"):
        return None
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID")
               if not os.environ.get(v)]
    if missing:
        raise ValueError("distributed tuning: KERASTUNER_ORACLE_IP is set but not "
                         + " or ".join(missing))
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def check_data(hypermodel):
    """Refuse data the recipe's model cannot score (empty, NaN or inf, outside the
    likelihood's range, labels it has no class for), with the one-line errors
    `vae-zoo train` gives, before any trial runs."""
    _, _, x_val, y_val = hypermodel.datasets()
    model = recipes.build_model(hypermodel.recipe)
    runs.check_data(hypermodel.recipe, model, x_val)
    if y_val is not None:
        runs.check_labels(hypermodel.recipe, model, y_val)


def build_tuner(recipe, directory, overwrite=False, strategy=None, report=True, hypermodel=None):
    """The keras-tuner tuner `tune.tuner` names, over `VAEHyperModel(recipe)`.

    Args:
        recipe: a validated recipe with a search space.
        directory: folder for keras-tuner's project (`<directory>/search`).
        overwrite: start a new search rather than resume the one in `directory`.
        strategy: a single-worker `tf.distribute.Strategy` each trial runs under
            (default: the recipe's `train.strategy`).
        report: print one line per finished trial.
        hypermodel: the `VAEHyperModel(recipe)` to use (default: a new one).
    """
    tune = recipe.tune
    if strategy is None:
        strategy = distribute.strategy_for(recipe.train.strategy)
    if distribute.is_multi_worker(strategy):
        raise ValueError(
            "tuning runs each trial on one machine (train.strategy one_device or mirrored); "
            "to tune on several machines, use distributed tuning (KERASTUNER_* variables)"
        )
    common = dict(
        objective=objective(recipe),
        # keras-tuner reads seed 0 as "no seed" (a fresh random one each search):
        # shift, so every tune.seed, 0 included, repeats its search.
        seed=tune.seed + 1,
        executions_per_trial=tune.executions_per_trial,
        distribution_strategy=strategy if distribute.num_replicas(strategy) > 1 else None,
        directory=str(directory),
        project_name=PROJECT,
        overwrite=overwrite,
    )
    hypermodel = hypermodel or VAEHyperModel(recipe)
    cls = TUNERS[tune.tuner]
    try:
        if tune.tuner == "hyperband":
            tuner = cls(hypermodel, max_epochs=trial_epochs(recipe),
                        factor=tune.hyperband_factor, hyperband_iterations=1, **common)
        else:
            tuner = cls(hypermodel, max_trials=tune.max_trials, **common)
    except ImportError as error:
        raise RuntimeError(
            f"tune.tuner = {tune.tuner!r}: {error} (pip install 'keras-tuner[bayesian]')"
        ) from None
    tuner.report = report
    return tuner


def trial_records(tuner) -> list[dict]:
    """Every trial the oracle knows: id, status, score, best step, hyperparameters."""
    records = []
    def order(item):
        return (0, int(item[0]), "") if item[0].isdigit() else (1, 0, item[0])

    for trial_id, trial in sorted(tuner.oracle.trials.items(), key=order):
        records.append({
            "trial_id": trial_id,
            "status": str(trial.status),
            "score": None if trial.score is None else float(trial.score),
            "best_step": trial.best_step,
            "hyperparameters": {k: v for k, v in trial.hyperparameters.values.items()},
        })
    return records


def search(recipe, output=None, overwrite=False, verbose=1, top=3, report=True,
           export=True) -> dict:
    """Run the search a recipe's [tune] section describes; write the best model.

    The output folder holds keras-tuner's project (`search/`), `trials.json` (every
    trial), `recipe.json` (the recipe with the best values), `model.keras` (the best
    trial's weights at its best epoch; `vae-zoo evaluate` and `vae-zoo sample` take
    the folder like a run folder) and `serving/1/`, the best model exported for TF
    Serving (`vae_zoo.export.export_for_serving`).

    Under distributed tuning (`role()`), a worker runs trials and returns what it
    reported; the chief serves the oracle until every trial has ended, then writes the
    folder. The chief resumes a search it finds in the folder unless `overwrite`
    (start the chief first then: it clears the folder).

    Args:
        recipe: a validated recipe with a search space.
        output: folder (default `runs/tune-<recipe>-<timestamp>`; distributed tuning
            needs the same folder, shared, on the chief and every worker).
        overwrite: replace an existing folder (a new search).
        verbose: Keras `fit` verbosity per trial, and keras-tuner's trial summaries.
        top: how many best trials to return.
        report: print one line per trial this process finishes.
        export: export the best model for serving.

    Returns:
        dict: "role", "output", "objective", "best" (the `top` best trial records, with
        "overrides" for `vae-zoo train --set`), "trials" (all), "reported" (the trials
        this process ran), "model" (path of the best model) and "export".
    """
    part = role()
    if output is None:
        if part is not None:
            raise ValueError(
                "distributed tuning needs an output folder shared by the chief and workers"
            )
        output = Path(runs.RUNS_DIR) / f"tune-{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    output = Path(output)
    if part is None and output.exists() and not overwrite:
        raise FileExistsError(
            f"tuning folder {output} already exists (use --overwrite to replace it)"
        )
    hypermodel = VAEHyperModel(recipe)
    check_data(hypermodel)  # before an old folder is removed or any trial runs
    if part != "worker" and overwrite:
        shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)
    tuner = build_tuner(recipe, output, report=report, hypermodel=hypermodel)
    if part == "chief":
        print(f"chief: oracle at {os.environ['KERASTUNER_ORACLE_IP']}:"
              f"{os.environ['KERASTUNER_ORACLE_PORT']}, waiting for workers", flush=True)
    tuner.search(verbose=verbose)
    result = {"role": part or "single", "output": str(output),
              "objective": tuner.oracle.objective.name,
              "reported": list(tuner.__dict__.get("reported", []))}
    if part == "worker":
        return result

    trials = trial_records(tuner)
    best = []
    for trial in tuner.oracle.get_best_trials(top):
        record = next(t for t in trials if t["trial_id"] == trial.trial_id)
        best.append(dict(record, overrides=overrides(recipe, record["hyperparameters"])))
    (output / "trials.json").write_text(json.dumps(trials, indent=2) + "\n", encoding="utf-8")
    result.update(trials=trials, best=best, model=None, export=None)
    if not best:
        return result
    best_recipe = apply(recipe, best[0]["hyperparameters"])
    model = tuner.get_best_models(1)[0]
    model.save(output / "partial-model.keras")  # then renamed: never half a model.keras
    os.replace(output / "partial-model.keras", output / "model.keras")
    write_json_atomic(output / "recipe.json", best_recipe.to_dict(), indent=2)
    result["model"] = str(output / "model.keras")
    if export:
        # the best model as a TF-Serving SavedModel `output/serving/<version>/`
        result["export"] = str(export_for_serving(model, output / "serving"))
    return result

