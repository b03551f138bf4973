"""What a new user meets first: progress bars, a quick command line, readable pictures,
epochs counted alike everywhere, and no TensorFlow log lines or stray files."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import binary_data, tiny_dense
from PIL import Image

from vae_zoo import cli, evaluate, plots, recipes
from vae_zoo.callbacks import EpochCSVLogger, ImageGrids, ProgressBar
from vae_zoo.training import distribute

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "saved_models" / "mnist_dense.keras"


def layout(png):
    """The "R rows x C columns of HxW images" a grid PNG describes itself with."""
    return Image.open(png).text["Description"]


# ------------------------------------------------------------------------ progress


@pytest.fixture(scope="module")
def progress_fit(tmp_path_factory):
    """One epoch of 40 steps at 32 steps per call with our bar and CSV log; every
    count a progress bar was updated with."""
    folder = tmp_path_factory.mktemp("fit")
    counts = []
    update = keras.utils.Progbar.update

    def recording(self, current, *args, **kwargs):
        counts.append((current, self.target))
        return update(self, current, *args, **kwargs)

    model = tiny_dense(input_shape=(4, 4, 1))
    model.compile(optimizer="adam", steps_per_execution=32, jit_compile=False)
    x = binary_data(40, (4, 4, 1))
    keras.utils.Progbar.update = recording
    try:
        model.fit(x, batch_size=1, epochs=2, verbose=1, callbacks=[
            ProgressBar(), EpochCSVLogger(str(folder / "history.csv")),
            ImageGrids(x[:32], output_dir=folder / "images", num_samples=4, steps=3),
        ])
    finally:
        keras.utils.Progbar.update = update
    return folder, counts


def test_training_bar_never_counts_past_the_epoch(progress_fit):
    _, counts = progress_fit
    assert counts and all(current <= target for current, target in counts), counts
    assert (40, 40) in counts


def test_history_counts_epochs_from_1(progress_fit):
    folder, _ = progress_fit
    with open(folder / "history.csv", newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]


def test_iw_log_likelihood_shows_a_bar(capsys):
    model = tiny_dense(input_shape=(4, 4, 1))
    x = binary_data(6, (4, 4, 1))
    quiet = evaluate.log_likelihood(model, x, num_samples=5, batch_size=4, chunk_size=2)
    assert capsys.readouterr().out == ""
    shown = evaluate.log_likelihood(model, x, num_samples=5, batch_size=4, chunk_size=2, verbose=1)
    out = capsys.readouterr().out
    assert "K = 5" in out and "6/6" in out
    np.testing.assert_array_equal(quiet, shown)


# ------------------------------------------------------------------------ pictures


def test_grids_are_large_and_labelled(tmp_path):
    x = binary_data(32, (28, 28, 1))
    plots.save_grid(x[:9], tmp_path / "plain.png")
    assert Image.open(tmp_path / "plain.png").size == (3 * 29 * 2 - 2, 3 * 29 * 2 - 2)  # 56 px
    plots.save_reconstructions(x, x, tmp_path / "recon.png")
    assert layout(tmp_path / "recon.png") == "8 rows x 8 columns of 28x28 images"
    assert Image.open(tmp_path / "recon.png").size[0] > 8 * 29 * 2  # room for the labels
    with pytest.raises(ValueError, match="3 row labels for 2 rows"):
        plots.save_grid(x[:4], tmp_path / "bad.png", 2, row_labels=["a", "b", "c"])


def test_per_epoch_grids_are_drawn_like_the_final_ones(progress_fit):
    folder, _ = progress_fit
    # 32 inputs: 4 rows of inputs and 4 of reconstructions, as in reconstructions.png
    assert layout(folder / "images" / "epoch_002_reconstructions.png") == (
        "8 rows x 8 columns of 4x4 images")
    assert layout(folder / "images" / "epoch_001_interpolations.png") == (
        "8 rows x 3 columns of 4x4 images")


def test_training_curves(tmp_path):
    history = {"epoch": [1.0, 2.0], "elbo": [-9.0, -8.0], "val_elbo": [-9.5, -8.2],
               "kl": [1.0, 2.0], "val_kl": [1.1, float("nan")]}
    plots.save_training_curves(history, tmp_path / "training.png")
    assert Image.open(tmp_path / "training.png").size[0] >= 800  # two panels


# ------------------------------------------------------------------------ command line


def test_recipes_are_described(capsys):
    assert cli.main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == recipes.available()
    described = dict(line.split(None, 1) for line in lines)
    assert "mnist_dense" in described and all(len(d) > 20 for d in described.values())


def test_list_and_usage(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("families", "dense", "likelihoods", "bernoulli", "priors", "mnist_sample"):
        assert word in out
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: vae-zoo") and "recipes" in err
    for command in ("train", "tune", "sample", "evaluate", "export", "recipes", "list"):
        with pytest.raises(SystemExit) as exit_status:
            cli.main([command, "--help"])
        assert exit_status.value.code == 0
    assert cli.STRATEGIES == distribute.STRATEGIES


def test_where_evaluate_writes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.json").write_text("{}")
    assert cli.evaluation_path(run / "model.keras") == run / "evaluation.json"
    assert cli.evaluation_path(run / "best.keras") == run / "best-evaluation.json"
    assert cli.evaluation_path(tmp_path / "mine.keras") == tmp_path / "mine-evaluation.json"
    assert cli.evaluation_path(SHIPPED) is None
    assert cli.evaluation_path(ROOT / "vae_zoo" / "m.keras") is None


def test_evaluating_a_shipped_model_writes_nothing(capsys):
    before = sorted(SHIPPED.parent.rglob("*"))
    assert cli.main(["evaluate", str(SHIPPED), "--samples", "2", "--examples", "4"]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert sorted(SHIPPED.parent.rglob("*")) == before


def test_the_command_is_recognized():
    from vae_zoo._quiet import _module_run_by_m

    assert _module_run_by_m(["python", "-X", "importtime", "-m", "vae_zoo", "recipes"]) == "vae_zoo"
    assert _module_run_by_m(["python", "-mvae_zoo"]) == "vae_zoo"
    assert _module_run_by_m(["python", "-c", "import vae_zoo"]) is None
    assert _module_run_by_m(["python", "script.py", "-m", "vae_zoo"]) is None


def _env():
    env = dict(os.environ)
    for name in ("VAE_ZOO_DEBUG", "TF_CPP_MIN_LOG_LEVEL"):
        env.pop(name, None)
    return env


# Seconds: a guard against a hang, not a time limit (importing TensorFlow once took over
# 120 s on a loaded 2-core machine).
HANG = 300


@pytest.mark.slow
def test_recipes_import_no_tensorflow():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "vae_zoo", "recipes"],
                         capture_output=True, text=True, env=_env(), timeout=HANG)
    assert out.returncode == 0 and "mnist_dense" in out.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines()
                if line.startswith("import time:")}
    assert "vae_zoo" in imported and not imported & {"tensorflow", "keras", "numpy"}


@pytest.mark.slow
def test_no_tensorflow_log_lines():
    """TensorFlow imported by vae_zoo, then run: nothing on stderr."""
    code = "import vae_zoo, tensorflow as tf; print(float(tf.constant(1.0) + 1))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), timeout=HANG)
    assert out.returncode == 0 and out.stdout == "2.0\n"
    assert out.stderr == ""


@pytest.mark.slow
def test_a_closed_pipe_ends_the_listing_quietly():
    """`vae-zoo recipes | head -1`: the reader is gone before the listing is written;
    no error, no TensorFlow log lines, status 0."""
    proc = subprocess.Popen([sys.executable, "-m", "vae_zoo", "recipes"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and stderr == ""
