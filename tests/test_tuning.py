"""keras-tuner searches: the [tune] recipe section, the HyperModel, the three tuners, the
`vae-zoo tune` command and distributed tuning with a chief and 2 workers."""

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections import Counter

import keras
import keras_tuner
import numpy as np
import pytest

from vae_zoo import cli, recipes, tuning
from vae_zoo.drivers.recipes import RecipeError

# Subprocesses, several devices or whole runs: out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

# Tiny trials: 1 epoch of an 8-unit dense VAE on 4,500 digits (500 held out).
# Plain steps (train.jit_compile=false): every trial builds a new model, and these tests
# are about the search, not the compiled step (XLA is tested in test_fast_path).
TINY = ["model.latent_dim=2", "model.hidden_units=[8]", "data.batch_size=250",
        "train.epochs=1", "annealing.schedule=none", "tune.epochs=1", "train.jit_compile=false"]
SPACE = ["tune.latent_dim=[1,2]", "tune.beta={min=0.5,max=2.0,sampling='log'}",
         "tune.learning_rate={min=1e-3,max=1e-2,sampling='log'}", "tune.hidden_width=[4,8]"]


def sets(overrides):
    return [word for o in overrides for word in ("--set", o)]


def run_cli(argv):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(argv)
    return status, printed.getvalue()


@pytest.fixture(scope="module")
def cli_search(tmp_path_factory):
    """`vae-zoo tune` with RandomSearch over 3 trials of the 4-hyperparameter space."""
    out = tmp_path_factory.mktemp("tune") / "search"
    overrides = TINY + SPACE + ["tune.max_trials=3", "tune.tuner=random"]
    status, printed = run_cli(["tune", "mnist_dense", *sets(overrides), "--output", str(out),
                               "--quiet", "--top", "2"])
    assert status == 0, printed
    return out, printed, recipes.load("mnist_dense", overrides)


# ---------------------------------------------------------------------- the recipe


def test_packaged_tuning_recipe():
    recipe = recipes.load("tune_mnist_dense")
    space = tuning.search_space(recipe)
    assert set(space) == {"beta", "latent_dim", "learning_rate", "hidden_width"}
    assert space["beta"]["sampling"] == "log" and space["learning_rate"]["sampling"] == "log"
    assert recipe["tune"]["objective"] == "elbo" and tuning.objective(recipe).direction == "max"
    assert tuning.objective(recipe).name == "val_elbo"
    assert recipes.load("mnist_dense")["tune"]["beta"] is None  # no space by default


@pytest.mark.parametrize(
    "override, message",
    [
        ("tune.bta=[1.0]", r"unknown recipe key tune\.bta \(did you mean 'beta'\?\)"),
        ("tune.tuner=grid", r"tune\.tuner = 'grid' is not one of"),
        ("tune.objective=kl", r"tune\.objective = 'kl' is not one of"),
        ("tune.beta=0.5", r"tune\.beta must be a list or a table"),
        ("tune.beta=[]", r"tune\.beta must list at least one value"),
        ("tune.beta=[1.0,-1.0]", r"tune\.beta\[1\] must be >= 0"),
        ("tune.latent_dim=[2,2.5]", r"tune\.latent_dim\[1\] must be an integer"),
        ("tune.latent_dim=[4,4]", r"tune\.latent_dim lists a value twice"),
        ("tune.beta={min=0.5}", r"tune\.beta\.max must be set"),
        ("tune.beta={min=2.0,max=1.0}", r"tune\.beta\.min must be < tune\.beta\.max"),
        ("tune.beta={min=0.0,max=1.0,sampling='log'}", r"log sampling needs min > 0"),
        ("tune.beta={min=0.1,max=1.0,sampling='lg'}", r"sampling = 'lg' is not one of.*'log'"),
        ("tune.beta={min=0.1,max=1.0,mx=2}", r"unknown recipe key tune\.beta\.mx \(did you mean 'max'\?\)"),
        ("tune.learning_rate=[0.0]", r"tune\.learning_rate\[0\] must be > 0"),
        ("tune.validation_fraction=1.0", r"tune\.validation_fraction must be < 1"),
    ],
)
def test_bad_tune_section_names_the_key(override, message):
    with pytest.raises(RecipeError, match=message):
        recipes.load("mnist_dense", [override])


def test_space_must_fit_the_family():
    with pytest.raises(RecipeError, match="'fully_conv' has no hidden layers to tune"):
        recipes.load("mnist_fully_conv", ["tune.hidden_width=[8]"])
    with pytest.raises(RecipeError, match="'discrete' has no latent_dim to tune"):
        recipes.load("mnist_discrete", ["tune.latent_dim=[8]"])
    with pytest.raises(RecipeError, match="annealing.beta_max is set"):
        recipes.load("mnist_dense", ["tune.beta=[1.0]", "annealing.beta_max=2.0"])


def test_apply_and_overrides():
    recipe = recipes.load("mnist_dense")  # hidden_units [512, 256]
    values = {"beta": 0.25, "latent_dim": 8, "learning_rate": 3e-4, "hidden_width": 128,
              "tuner/epochs": 4}
    tuned = tuning.apply(recipe, values)
    assert tuned["model"]["hidden_units"] == [128, 64]
    assert tuned["model"]["beta"] == 0.25 and tuned["model"]["latent_dim"] == 8
    assert tuned["train"]["learning_rate"] == 3e-4 and tuned["name"] == "mnist_dense"
    sets_ = tuning.overrides(recipe, values)
    assert sets_ == ["model.beta=0.25", "model.latent_dim=8", "train.learning_rate=0.0003",
                     "model.hidden_units=[128,64]"]
    assert recipes.load("mnist_dense", sets_) == tuned  # --set reproduces the trial
    conv = recipes.load("mnist_conv")  # dense_units [256]: hidden_width sets the conv family's
    assert tuning.apply(conv, {"hidden_width": 64})["model"]["dense_units"] == [64]


def test_hypermodel_declares_the_space_and_builds():
    recipe = recipes.load("mnist_dense", TINY + SPACE)
    hypermodel = tuning.VAEHyperModel(recipe)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    space = {p.name: p for p in hp.space}
    assert type(space["beta"]).__name__ == "Float" and type(space["latent_dim"]).__name__ == "Choice"
    assert space["beta"].sampling == "log" and space["learning_rate"].sampling == "log"
    assert list(space["latent_dim"].values) == [1, 2] and list(space["hidden_width"].values) == [4, 8]
    hp.values.update(beta=1.5, latent_dim=2, hidden_width=4)
    model = hypermodel.build(hp)
    assert model.latent_shape == (2,) and float(model.beta.numpy()) == 1.5
    assert tuple(model.family_config["hidden_units"]) == (4,)
    assert model.optimizer.built  # keras-tuner's checkpoints hold the optimizer too


def test_checkpoint_of_subclassed_model_round_trips(tmp_path):
    """keras-tuner checkpoints with save_weights before any fit; our models are built."""
    recipe = recipes.load("mnist_dense", TINY + SPACE)
    hypermodel = tuning.VAEHyperModel(recipe)
    hp = keras_tuner.HyperParameters()
    first = hypermodel.build(hp)
    first.save_weights(tmp_path / "checkpoint.weights.h5")
    keras.utils.set_random_seed(7)  # a different initialization...
    second = tuning.VAEHyperModel(recipes.load("mnist_dense", TINY + SPACE + ["train.seed=7"])).build(hp)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(first.get_weights(), second.get_weights()))
    second.load_weights(tmp_path / "checkpoint.weights.h5")  # ...restored exactly
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_no_search_space_is_one_line_error(tmp_path, capsys):
    assert cli.main(["tune", "mnist_dense", "--output", str(tmp_path / "t"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "declares no search space: set at least one of tune.beta" in err[0]


# ---------------------------------------------------------------------- searches


def test_cli_tune_prints_best_trials(cli_search):
    out, printed, _ = cli_search
    lines = printed.splitlines()
    trial_lines = [line for line in lines if re.match(r"trial \d+ COMPLETED by tuner0: val_elbo = ", line)]
    assert len(trial_lines) == 3
    assert f"tuning folder: {out} (3 of 3 trials completed)" in lines
    assert "best trials by val_elbo (higher is better):" in lines
    ranked = [line for line in lines if re.match(r"  \d\. trial ", line)]
    assert len(ranked) == 2 and "model.beta=" in ranked[0] and "model.hidden_units=" in ranked[0]
    assert f"best model: {out / 'model.keras'}" in lines
    assert f"exported for TF Serving: {out / 'serving' / '1'}" in lines
    assert lines[-1].startswith("train the best: vae-zoo train mnist_dense --set")


def test_best_model_is_the_best_trials_checkpoint(cli_search):
    out, _, recipe = cli_search
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 3 and all(t["status"] == "COMPLETED" for t in trials)
    best = max(trials, key=lambda t: t["score"])
    saved = keras.models.load_model(out / "model.keras")
    assert saved.latent_shape == (best["hyperparameters"]["latent_dim"],)
    assert saved.initial_beta == pytest.approx(best["hyperparameters"]["beta"])
    # The same weights as the best trial's checkpoint (its best epoch).
    tuned = tuning.apply(recipe, best["hyperparameters"])
    assert json.loads((out / "recipe.json").read_text()) == json.loads(json.dumps(tuned.to_dict()))
    rebuilt = recipes.compile_model(recipes.build_model(tuned), tuned)
    rebuilt.optimizer.build(rebuilt.trainable_variables)
    rebuilt.load_weights(out / "search" / f"trial_{best['trial_id']}" / "checkpoint.weights.h5")
    for a, b in zip(saved.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert (out / "serving" / "1" / "saved_model.pb").is_file()


def test_tuning_folder_works_like_a_run_folder(cli_search, tmp_path):
    out, _, _ = cli_search
    status, printed = run_cli(["evaluate", str(out), "--samples", "3", "--examples", "20",
                               "--output", str(tmp_path / "eval.json")])
    assert status == 0 and np.isfinite(json.loads((tmp_path / "eval.json").read_text())["log_likelihood"])


def test_existing_tuning_folder_is_kept(cli_search, capsys):
    out, _, _ = cli_search
    before = (out / "trials.json").read_text()
    assert cli.main(["tune", "mnist_dense", *sets(TINY + SPACE), "--output", str(out)]) == 2
    assert "already exists (use --overwrite" in capsys.readouterr().err
    assert (out / "trials.json").read_text() == before


def test_hyperband_with_log_likelihood_objective(tmp_path):
    """Hyperband continues trials from their checkpoints; the IW bound is the objective."""
    recipe = recipes.load("mnist_dense", TINY + [
        "tune.tuner=hyperband", "tune.epochs=2", "tune.hyperband_factor=2",
        "tune.objective=log_likelihood", "tune.num_samples=5", "tune.examples=50",
        "tune.latent_dim=[1,2]",
    ])
    result = tuning.search(recipe, tmp_path / "hb", verbose=0, report=False, export=False)
    assert result["objective"] == "val_log_likelihood"
    trials = result["trials"]
    assert trials and all(t["status"] == "COMPLETED" and np.isfinite(t["score"]) for t in trials)
    assert {t["hyperparameters"]["tuner/epochs"] for t in trials} == {1, 2}
    continued = [t for t in trials if "tuner/trial_id" in t["hyperparameters"]]
    assert continued and all(t["hyperparameters"]["tuner/initial_epoch"] == 1 for t in continued)
    # Each trial's score is the best epoch's IW bound, as this process reported it.
    reported = {r["trial_id"]: r["score"] for r in result["reported"]}
    assert reported == {t["trial_id"]: pytest.approx(t["score"]) for t in trials}
    assert result["export"] is None and (tmp_path / "hb" / "model.keras").is_file()


def test_bayesian_optimization(tmp_path):
    pytest.importorskip("sklearn", reason="BayesianOptimization needs keras-tuner[bayesian]")
    recipe = recipes.load("mnist_dense", TINY + [
        "tune.tuner=bayesian", "tune.max_trials=2", "tune.beta={min=0.5,max=2.0,sampling='log'}",
    ])
    result = tuning.search(recipe, tmp_path / "bo", verbose=0, report=False, export=False)
    assert len(result["trials"]) == 2
    assert all(t["status"] == "COMPLETED" for t in result["trials"])
    assert result["best"][0]["score"] == max(t["score"] for t in result["trials"])


# ---------------------------------------------------------------------- distributed


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_tuning_chief_and_two_workers(tmp_path):
    """A chief oracle and 2 workers on 127.0.0.1 run the 4-point space once each."""
    out = tmp_path / "shared"
    overrides = TINY + ["tune.max_trials=4", "tune.latent_dim=[1,2]", "tune.beta=[0.5,1.0]"]
    argv = [sys.executable, "-m", "vae_zoo", "tune", "mnist_dense", *sets(overrides),
            "--output", str(out), "--quiet"]
    port = free_port()
    procs = {}
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                       KERASTUNER_ORACLE_PORT=str(port), TF_CPP_MIN_LOG_LEVEL="2")
            env.pop("TF_CONFIG", None)
            procs[tuner_id] = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True)
        outputs = {}
        for tuner_id, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"{tuner_id}: {stderr[-3000:]}"
            outputs[tuner_id] = stdout
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    trials = json.loads((out / "trials.json").read_text())
    ids = [t["trial_id"] for t in trials]
    assert len(ids) == 4 and all(t["status"] == "COMPLETED" for t in trials)
    assert sorted((t["hyperparameters"]["latent_dim"], t["hyperparameters"]["beta"]) for t in trials) == [
        (1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
    # Every trial was run and reported by exactly one worker.
    ran = Counter()
    for worker in ("tuner0", "tuner1"):
        for trial_id, by in re.findall(r"^trial (\d+) COMPLETED by (\w+):", outputs[worker], re.M):
            assert by == worker
            ran[trial_id] += 1
        assert "worker done: ran trials" in outputs[worker]
    assert ran == Counter({trial_id: 1 for trial_id in ids})
    assert "chief: oracle at 127.0.0.1:" in outputs["chief"]
    assert "(4 of 4 trials completed)" in outputs["chief"]
    assert (out / "model.keras").is_file() and (out / "serving" / "1").is_dir()


def test_default_seed_makes_the_search_repeatable(tmp_path):
    # keras-tuner reads seed 0 as "pick a random one": tune.seed = 0 must not mean that.
    recipe = recipes.load("tune_mnist_dense")
    assert recipe["tune"]["seed"] == 0
    seeds = [tuning.build_tuner(recipe, tmp_path / str(i), report=False).oracle.seed
             for i in range(2)]
    assert seeds[0] == seeds[1] == 1
