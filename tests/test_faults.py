"""Fault injection: kills, crashes in checkpoint writes, divergence and bad input.

Each case here is a row of the README's "Faults and bad input" table.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from vae_zoo import cli, runs

TINY = [
    "--set", "model.hidden_units=[16]",
    "--set", "model.latent_dim=2",
    "--set", "train.epochs=4",
    "--set", "evaluate.num_samples=5",
    "--set", "evaluate.examples=50",
    "--quiet",
]
POLL = 0.02
TIMEOUT = 120  # seconds any one wait may take


def _env():
    env = dict(os.environ)
    env.pop("VAE_ZOO_DEBUG", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _train_command(output):
    return [sys.executable, "-m", "vae_zoo.cli", "train", *TINY, "--output", str(output)]


def _checkpoint_epoch(output):
    meta = runs.staging_path(output) / "backup" / "training_metadata.json"
    try:
        return json.loads(meta.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def _wait_until(process, predicate, what):
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert process.poll() is None, f"training ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL)


def _kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _rerun(output):
    done = subprocess.run(_train_command(output), capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _assert_complete(output, epochs=4):
    with open(output / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))  # none lost, none twice
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    betas = [float(r["beta"]) for r in rows]  # KL annealing went on, not restarted
    assert betas == sorted(betas) and (epochs == 1 or betas[-1] > betas[0])
    model = runs.load_model(output)
    assert model.latent_shape == (2,)
    assert keras.models.load_model(output / "best.keras").latent_shape == (2,)
    assert json.loads((output / "metrics.json").read_text())["epochs"] == epochs
    assert not runs.staging_path(output).exists()
    assert not (output / "backup").exists()


@pytest.mark.parametrize("point", ["between_epochs", "mid_epoch"])
def test_sigkill_then_rerun_resumes(point, tmp_path):
    output = tmp_path / "run"
    process = subprocess.Popen(_train_command(output), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=_env())
    try:
        if point == "between_epochs":  # right after epoch 2's checkpoint
            _wait_until(process, lambda: _checkpoint_epoch(output) >= 2, "epoch 2's checkpoint")
        else:  # about half way through epoch 2: half an epoch after epoch 1's checkpoint
            _wait_until(process, lambda: _checkpoint_epoch(output) >= 1, "epoch 1's checkpoint")
            start = time.monotonic()
            _wait_until(process, lambda: _checkpoint_epoch(output) >= 2, "epoch 2's checkpoint")
            time.sleep((time.monotonic() - start) / 2)
        _kill(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not output.exists()  # nothing half-written at the target
    finished = _checkpoint_epoch(output)
    assert finished in (2, 3)
    stdout = _rerun(output)
    assert f"resuming {output} after epoch {finished}" in stdout
    _assert_complete(output)


# A kill in the middle of writing epoch 2's checkpoint: the weights file is left half
# written and the process dies at once.
KILLED_WHILE_WRITING = """
import os, signal, sys
import keras

real = keras.Model.save_weights

def save_weights(self, filepath, *args, **kwargs):
    real(self, filepath, *args, **kwargs)
    if "epoch-2-" in os.path.basename(str(filepath)):
        data = open(filepath, "rb").read()
        open(filepath, "wb").write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

keras.Model.save_weights = save_weights
from vae_zoo import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_kill_while_writing_checkpoint_keeps_previous(tmp_path):
    output = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_WRITING, *_train_command(output)[3:]],
        capture_output=True, env=_env(), timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL
    backup = runs.staging_path(output) / "backup"
    meta = json.loads((backup / "training_metadata.json").read_text())
    assert meta["epoch"] == 1  # epoch 2's checkpoint never became the current one
    model = runs.recipes_lib.build_model(json.loads(
        (runs.staging_path(output) / "recipe.json").read_text()))
    model.load_weights(backup / meta["weights"])  # the previous checkpoint loads
    _rerun(output)
    _assert_complete(output)


class _PoisonWeights(keras.callbacks.Callback):
    """Turns the weights into NaN before batch 3 of epoch 2."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 2:
            for variable in self.model.trainable_variables:
                variable.assign(np.full(variable.shape, np.nan, "float32"))


def test_poisoned_weights_stop_training_and_keep_last_good_checkpoint(tmp_path):
    from vae_zoo import recipes

    recipe = recipes.load("mnist_dense", [
        "model.hidden_units=[16]", "model.latent_dim=2", "train.epochs=4",
        "evaluate.num_samples=5", "evaluate.examples=50",
    ])
    output = tmp_path / "run"
    with pytest.raises(runs.TrainingDiverged) as caught:
        runs.train(recipe, output, verbose=0, callbacks=[_PoisonWeights()])
    staging = runs.staging_path(output)
    assert str(caught.value) == (
        f"training diverged at epoch 2, batch 3 (loss is nan); last good checkpoint kept "
        f"at {staging / 'backup'}; lower train.learning_rate and rerun"
    )
    assert not output.exists()
    meta = json.loads((staging / "backup" / "training_metadata.json").read_text())
    assert meta["epoch"] == 1
    model = recipes.build_model(recipe)
    model.load_weights(staging / "backup" / meta["weights"])
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)
    assert keras.models.load_model(staging / "best.keras").latent_shape == (2,)


def test_huge_learning_rate_is_one_line_error(tmp_path, capsys):
    output = tmp_path / "run"
    argv = ["train", *TINY, "--set", "train.learning_rate=1e6", "--output", str(output)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vae-zoo: error: training diverged at epoch ")
    assert "(loss is nan)" in err[0] or "(loss is inf)" in err[0]
    assert not output.exists()


# ------------------------------------------------------------------------ bad input


def _one_line_error(argv, capsys):
    status = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("vae-zoo: error: "), err
    return err[0][len("vae-zoo: error: "):]


def test_grey_levels_for_a_bernoulli_likelihood_are_refused(tmp_path, capsys):
    output = tmp_path / "run"
    message = _one_line_error(
        ["train", *TINY, "--set", "data.binarize=none", "--output", str(output)], capsys)
    assert message.startswith(
        "data 'mnist_sample' with data.binarize = 'none' does not fit model.likelihood: "
        "a Bernoulli likelihood needs binary data (0 or 1), got ")
    assert message.endswith(
        "; set data.binarize = 'dynamic' or 'static', or pick a Gaussian or 8-bit likelihood")
    assert not output.exists() and not runs.staging_path(output).exists()


def test_a_live_writer_of_the_same_run_folder_is_refused(tmp_path, capsys):
    output = tmp_path / "run"
    staging = runs.staging_path(output)
    staging.mkdir()
    (staging / "owner.pid").write_text(str(os.getppid()))  # a live process, not us
    message = _one_line_error(["train", *TINY, "--output", str(output)], capsys)
    assert message == f"run folder {staging} is being written by process {os.getppid()}"
    assert (staging / "owner.pid").read_text() == str(os.getppid())


@pytest.fixture(scope="module")
def dense():
    from conftest import tiny_dense

    return tiny_dense(input_shape=(4, 4, 1))


@pytest.mark.parametrize(
    "x, message",
    [
        (np.full((3, 4, 4, 1), np.nan, "float32"), "data contains NaN or infinite values"),
        (np.full((3, 4, 4, 1), np.inf, "float32"), "data contains NaN or infinite values"),
        (np.zeros((0, 4, 4, 1), "float32"),
         "no data to evaluate (got an array of shape (0, 4, 4, 1))"),
        (np.zeros((3, 5, 5, 1), "float32"),
         "data shape (5, 5, 1) does not match the model's input shape (4, 4, 1)"),
        (np.full((3, 4, 4, 1), 0.5, "float32"),
         "data do not fit the model's likelihood: a Bernoulli likelihood needs binary data "
         "(0 or 1), got 48 values like 0.5"),
    ],
    ids=["nan", "inf", "empty", "shape", "grey_for_bernoulli"],
)
@pytest.mark.parametrize("routine", ["log_likelihood", "elbo", "posterior_statistics"])
def test_evaluate_refuses_bad_data(dense, x, message, routine):
    from vae_zoo import evaluate

    with pytest.raises(ValueError) as caught:
        getattr(evaluate, routine)(dense, x)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "likelihood",
    ["categorical_256", {"name": "discretized_logistic_mixture", "num_components": 2}],
    ids=["categorical_256", "logistic"],
)
def test_eight_bit_likelihoods_refuse_values_off_the_grid(likelihood):
    from conftest import tiny_dense
    from vae_zoo import evaluate

    model = tiny_dense(input_shape=(4, 4, 1), likelihood=likelihood)
    on_grid = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 1)).astype("float32") / 255
    assert np.isfinite(evaluate.elbo(model, on_grid)["elbo"]).all()
    off_grid = on_grid.copy()
    off_grid[0, 0, 0, 0] = 0.5 / 255  # half way between two 8-bit values
    with pytest.raises(ValueError, match=r"^data do not fit the model's likelihood: an 8-bit "
                       r"likelihood \(\w+\) needs values k/255 in \[0, 1\], got 1 values like "
                       r"0\.00196078$"):
        evaluate.log_likelihood(model, off_grid, num_samples=2)


def test_evaluate_refuses_a_label_out_of_range():
    from vae_zoo import evaluate
    from vae_zoo.models import ConditionalVAE

    model = ConditionalVAE(input_shape=(4, 4, 1), latent_dim=2, num_classes=3,
                           hidden_units=(8,), seed=0)
    x = np.zeros((2, 4, 4, 1), "float32")
    assert np.isfinite(evaluate.elbo(model, x, y=np.array([0, 2]))["elbo"]).all()
    for routine in (evaluate.elbo, evaluate.log_likelihood, evaluate.posterior_statistics):
        with pytest.raises(ValueError, match=r"^labels must lie in \[0, 3\), got label 3$"):
            routine(model, x, y=np.array([0, 3]))
    with pytest.raises(ValueError, match=r"^1 labels for 2 examples$"):
        evaluate.elbo(model, x, y=np.array([0]))


SHIPPED = Path(__file__).resolve().parents[1] / "saved_models" / "mnist_dense"


@pytest.mark.parametrize("damage", ["missing_pb", "corrupt_pb", "corrupt_metadata"])
def test_sample_from_a_damaged_export(damage, tmp_path, capsys):
    import shutil

    base = tmp_path / "mnist_dense"
    shutil.copytree(SHIPPED, base)
    version = base / "1"
    if damage == "missing_pb":
        (version / "saved_model.pb").unlink()
        expected = f"no saved_model.pb in {version} (incomplete or corrupt export)"
    elif damage == "corrupt_pb":
        (version / "saved_model.pb").write_bytes(b"\x00garbage" * 10)
        expected = f"cannot load SavedModel {version}: "
    else:
        (version / "assets.extra" / "vae_zoo.json").write_text("{not json")
        meta = version / "assets.extra" / "vae_zoo.json"
        expected = f"cannot read {meta}: not valid JSON (corrupt export)"
    png = tmp_path / "s.png"
    message = _one_line_error(["sample", str(base), "-n", "4", "--output", str(png)], capsys)
    assert message.startswith(expected)
    assert not png.exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--set", "model.beta=-1"], "model.beta must be >= 0, got -1"),
        (["train", "--set", "model.latent_dim=0"], "model.latent_dim must be >= 1, got 0"),
        (["train", "--set", "model.latnet_dim=3"],
         "unknown recipe key model.latnet_dim (did you mean 'latent_dim'?)"),
        (["train", "--set", "bogus.x=1"], "unknown recipe section [bogus]"),
        (["train", "--set", "train.epochs=abc"], "train.epochs must be an integer, got str 'abc'"),
        (["train", "nosuch.toml"], "recipe file not found: nosuch.toml"),
        (["evaluate", "no/such/run"],
         "no model at no/such/run (give a run folder or a .keras file)"),
        (["sample", str(SHIPPED), "--label", "3"],
         f"--label needs a conditional model; {SHIPPED / '1'} holds a dense model"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, expected, capsys):
    assert _one_line_error(argv, capsys) == expected


def test_corrupt_keras_file(tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"x")
    assert _one_line_error(["evaluate", str(bad)], capsys) == (
        f"cannot load model {bad}: not a .keras archive (corrupt or another format)")


def test_overwrite_replaces_a_run_folder_only_when_asked(tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "old.txt").write_text("keep me")
    one_epoch = [*TINY, "--set", "train.epochs=1", "--output", str(output)]
    assert _one_line_error(["train", *one_epoch], capsys) == (
        f"run folder {output} already exists (use --overwrite to replace it)")
    assert (output / "old.txt").read_text() == "keep me"
    assert cli.main(["train", *one_epoch, "--overwrite"]) == 0
    assert not (output / "old.txt").exists() and (output / "model.keras").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging or old copy left


def test_a_checkpoint_of_another_recipe_is_not_resumed(tmp_path, capsys):
    output = tmp_path / "run"
    staging = runs.staging_path(output)
    (staging / "backup").mkdir(parents=True)
    (staging / "recipe.json").write_text(json.dumps({"name": "something else"}))
    (staging / "backup" / "training_metadata.json").write_text(
        json.dumps({"epoch": 3, "batch": 0, "weights": "missing.weights.h5"}))
    (staging / "history.csv").write_text("epoch,loss\n0,1.0\n1,1.0\n2,1.0\n")
    assert cli.main(["train", *TINY, "--set", "train.epochs=1", "--output", str(output)]) == 0
    assert "resuming" not in capsys.readouterr().out
    _assert_complete(output, epochs=1)
