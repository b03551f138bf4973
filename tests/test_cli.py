"""The `vae-zoo` command: a tiny end-to-end run, and one-line errors with exit status 2."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from vae_zoo import cli

# Subprocesses, several devices or whole runs: out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

TINY = [
    "--set", "model.latent_dim=2",
    "--set", "model.hidden_units=[16]",
    "--set", "train.epochs=2",
    "--set", "annealing.warmup_epochs=1",
    "--set", "evaluate.num_samples=5",
    "--set", "evaluate.examples=40",
    "--set", "output.grid_size=4",
    "--set", "output.images_every=1",
    "--quiet",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert cli.main(["train", *TINY, "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    """A tiny run of the conditional recipe; samples.png: 10 rows (digits) of 2."""
    out = tmp_path_factory.mktemp("runs") / "cvae"
    tiny = [*TINY, "--set", "train.epochs=1", "--set", "output.grid_size=20"]
    assert cli.main(["train", "mnist_cvae", *tiny, "--output", str(out)]) == 0
    return out


def grid_shape(png):
    """(rows, columns) of a grid PNG, as it describes itself ("R rows x C columns of ...")."""
    from PIL import Image

    words = Image.open(png).text["Description"].split()
    return int(words[0]), int(words[3])


def test_train_writes_run_folder(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    expected = {"model.keras", "recipe.json", "history.csv", "logs", "samples.png",
                "reconstructions.png", "metrics.json", "latents.png", "images", "training.png"}
    assert expected <= names
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "elbo", "reconstruction", "kl", "beta", "val_elbo",
            "active_units", "marginal_kl"} <= set(header)
    assert (run_dir / "images" / "epoch_001_interpolations.png").is_file()
    assert any((run_dir / "logs" / "images").glob("events.out.tfevents*"))
    assert any((run_dir / "logs" / "diagnostics").glob("events.out.tfevents*"))
    assert len((run_dir / "history.csv").read_text().splitlines()) == 3  # 2 epochs
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["log_likelihood"] >= metrics["elbo"] - 5.0
    assert any((run_dir / "logs").rglob("events.out.tfevents*"))
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.latent_shape == (2,)
    assert not any(p.name.startswith(".") for p in run_dir.parent.iterdir())  # no staging left


def test_sample_and_evaluate(run_dir, tmp_path, capsys):
    png = tmp_path / "grid.png"
    assert cli.main(["sample", str(run_dir), "-n", "9", "--output", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "eval.json"
    args = ["evaluate", str(run_dir / "model.keras"), "--samples", "4", "--examples", "20"]
    assert cli.main([*args, "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["examples"] == 20 and np.isfinite(result["log_likelihood"])
    assert "log_likelihood" in capsys.readouterr().out


def test_conditional_run_uses_labels(cvae_run, tmp_path):
    assert json.loads((cvae_run / "recipe.json").read_text())["model"]["family"] == "conditional"
    metrics = json.loads((cvae_run / "metrics.json").read_text())
    assert np.isfinite(metrics["log_likelihood"]) and metrics["examples"] == 40
    assert grid_shape(cvae_run / "samples.png") == (10, 2)  # one row per class
    assert (cvae_run / "reconstructions.png").is_file()
    out = tmp_path / "eval.json"
    args = ["evaluate", str(cvae_run), "--samples", "4", "--examples", "20", "--output", str(out)]
    assert cli.main(args) == 0
    assert np.isfinite(json.loads(out.read_text())["log_likelihood"])


def test_sample_a_label(cvae_run, tmp_path):
    png = tmp_path / "threes.png"
    assert cli.main(["sample", str(cvae_run), "--label", "3", "-n", "8", "--output", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert grid_shape(png) == (3, 3)
    every_class = tmp_path / "all.png"
    assert cli.main(["sample", str(cvae_run), "-n", "30", "--output", str(every_class)]) == 0
    assert grid_shape(every_class) == (10, 3)


@pytest.mark.parametrize(
    "run, label, message",
    [
        ("cvae_run", "12", r"labels must lie in [0, 10), got label 12"),
        ("run_dir", "3", "--label needs a conditional model"),
    ],
)
def test_bad_label_is_one_line_error(run, label, message, request, capsys):
    folder = request.getfixturevalue(run)
    assert cli.main(["sample", str(folder), "--label", label, "-n", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vae-zoo: error:") and message in err[0]


def test_existing_run_folder_is_kept(run_dir, capsys):
    before = (run_dir / "model.keras").read_bytes()
    assert cli.main(["train", *TINY, "--output", str(run_dir)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run_dir / "model.keras").read_bytes() == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--set", "model.latnet_dim=3"], "unknown recipe key model.latnet_dim"),
        (["train", "--set", "train.epochs=abc"], "train.epochs must be an integer"),
        (["train", "missing_recipe.toml"], "recipe file not found"),
        (["sample", "no/such/run"], "no model at"),
        (["train", "--bogus"], "unrecognized arguments"),
    ],
)
def test_errors_are_one_line_with_status_2(argv, message, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as stop:  # argparse's own errors exit from parse_args
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vae-zoo: error:") and message in err[0]


def test_corrupt_model_file(tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    assert cli.main(["sample", str(bad)]) == 2
    assert "not a .keras archive" in capsys.readouterr().err


def test_console_script_runs_in_a_fresh_process():
    """The installed entry point: a recipe error is exactly one stderr line, status 2."""
    env = dict(os.environ)
    env.pop("VAE_ZOO_DEBUG", None)
    out = subprocess.run(
        [sys.executable, "-m", "vae_zoo", "train", "--set", "model.latnet_dim=3"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "vae-zoo: error: unknown recipe key model.latnet_dim (did you mean 'latent_dim'?)"
    ]
    listing = subprocess.run([sys.executable, "-m", "vae_zoo", "recipes"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert "mnist_dense" in listing.stdout.split()
