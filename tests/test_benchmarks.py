"""The issue-4 benchmark scripts still run, on tiny settings (their figures are in README)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

# Subprocesses, several devices or whole runs: out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quality():
    return _load("quality")


def test_quality_binarization_is_fixed_by_the_seed(quality):
    a_train, a_test = quality.binarized_mnist(0)
    b_train, _ = quality.binarized_mnist(0)
    c_train, _ = quality.binarized_mnist(1)
    assert a_train.shape == (5000, 28, 28, 1) and a_test.shape == (1000, 28, 28, 1)
    assert set(a_train[:50].ravel().tolist()) == {0.0, 1.0}
    assert (a_train == b_train).all() and (a_train != c_train).any()


@pytest.mark.parametrize("name", ["mixture_prior", "iwae_k50_annealed"])
def test_quality_configuration_runs(quality, name):
    x_train, x_test = quality.binarized_mnist(0)
    result = quality.run(name, x_train[:256], x_test[:32], epochs=1, eval_samples=4, seed=0)
    assert result["config"] == name
    assert math.isfinite(result["test_log_likelihood"]) and result["test_log_likelihood"] < 0
    # the IW bound with K samples is at least the ELBO, up to Monte-Carlo noise
    assert result["test_log_likelihood"] >= result["test_elbo"] - 1.0
    assert 0 <= result["active_units"] <= 32


def test_gradient_variance_benchmark_small(capsys):
    gradient_variance = _load("gradient_variance")
    gradient_variance.main(["--draws", "3", "--batch-size", "8", "--warmup-steps", "0",
                            "--baseline-steps", "2", "--reference-draws", "2"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["benchmark"] == "gradient_variance" and report["draws"] == 3
    names = {r["estimator"] for r in report["results"]}
    assert {"reinforce_no_baseline", "gumbel_softmax", "gaussian_reparameterization"} <= names


def test_quality_summary_over_seeds(quality):
    results = [
        {"config": "vanilla", "seed": 0, "test_log_likelihood": -107.0, "gain_over_vanilla": 0.0},
        {"config": "iwae_k50", "seed": 0, "test_log_likelihood": -104.5, "gain_over_vanilla": 2.5},
        {"config": "vanilla", "seed": 1, "test_log_likelihood": -106.0, "gain_over_vanilla": 0.0},
        {"config": "iwae_k50", "seed": 1, "test_log_likelihood": -104.5, "gain_over_vanilla": 1.5},
    ]
    summary = quality.summarize_seeds(results)
    assert summary["vanilla"]["mean_log_likelihood"] == -106.5
    assert summary["iwae_k50"] == {
        "seeds": [0, 1], "mean_log_likelihood": -104.5, "min_log_likelihood": -104.5,
        "max_log_likelihood": -104.5, "mean_gain": 2.0, "min_gain": 1.5, "max_gain": 2.5,
    }


def test_quality_main_over_two_seeds(quality, capsys, monkeypatch):
    annealed = []
    original = quality.KLAnnealing

    def spy(*args, **kwargs):
        annealed.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(quality, "KLAnnealing", spy)
    quality.main(["--epochs", "1", "--eval-samples", "2", "--seeds", "0", "1", "--limit", "256",
                  "--only", "vanilla", "kl_annealing"])
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["seeds"] == [0, 1] and len(report["results"]) == 4
    assert report["train_examples"] == 256 and report["test_examples"] == 256
    assert [r["seed"] for r in report["results"]] == [0, 0, 1, 1]
    assert report["summary"]["vanilla"]["mean_gain"] == 0.0
    assert set(report["summary"]) == {"vanilla", "kl_annealing"}
    assert "mean of 2 seeds" in captured.err
    assert annealed == [{"warmup_epochs": 1}] * 2  # kl_annealing only, warm-up capped at the run
