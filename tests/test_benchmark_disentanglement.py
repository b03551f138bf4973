"""benchmarks/disentanglement.py still runs, on tiny settings (its figures are in README)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

# A whole run (two models trained and scored): out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "data.image_size=16", "--set", "data.train_split=train[:128]",
        "--set", "data.batch_size=16", "--set", "model.filters=[4, 4]",
        "--set", "model.kernel_sizes=[3, 3]", "--set", "model.strides=[2, 2]",
        "--set", "model.dense_units=[8]", "--set", "model.latent_dim=3",
        "--set", "train.jit_compile=false", "--set", "train.steps_per_execution=1"]


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location(
        "disentanglement_benchmark", ROOT / "benchmarks" / "disentanglement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_model_of_the_benchmark_builds(benchmark):
    betas = {}
    for name in benchmark.MODELS:
        recipe, model = benchmark.build(name, TINY[1::2])  # the values of --set
        assert model.latent_shape == (3,) and model.data_shape == (16, 16, 1)
        betas[name] = float(model.beta.numpy())
    assert betas["vae"] == 1.0 and betas["beta_vae"] == 4.0


def test_disentanglement_benchmark_small(benchmark, capsys):
    # one model trained and scored (the others differ only in their recipe overrides)
    benchmark.main(["--steps", "3", "--num-points", "300", "--num-votes", "20",
                    "--test-examples", "32", "--only", "beta_vae", *TINY])
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["benchmark"] == "disentanglement" and report["steps"] == 3
    assert [(r["model"], r["beta"]) for r in report["results"]] == [("beta_vae", 4.0)]
    for r in report["results"]:
        assert math.isfinite(r["test_elbo"]) and r["test_elbo"] < 0 and r["test_kl"] >= 0
        for name in ("mig", "dci_disentanglement", "dci_completeness", "sap",
                     "factor_vae_eval_accuracy", "beta_vae_eval_accuracy"):
            assert 0 <= r[name] <= 1, name
    assert "factor_vae" in captured.err and "sap" in captured.err  # the table
