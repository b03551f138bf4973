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


@pytest.mark.parametrize("name", ["hierarchical_annealed", "iwae_k50_annealed"])
def test_quality_configuration_runs(quality, name, monkeypatch):
    annealed = []
    original = quality.KLAnnealing

    def spy(*args, **kwargs):
        annealed.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(quality, "KLAnnealing", spy)
    x_train, x_test = quality.binarized_mnist(0)
    result = quality.run(name, x_train[:256], x_test[:32], epochs=1, eval_samples=4, seed=0,
                         train_eval=16)
    assert result["config"] == name
    assert annealed == [{"warmup_epochs": 1}]  # the warm-up capped at the run's epochs
    assert math.isfinite(result["test_log_likelihood"]) and result["test_log_likelihood"] < 0
    # the IW bound with K samples is at least the ELBO, up to Monte-Carlo noise
    assert result["test_log_likelihood"] >= result["test_elbo"] - 1.0
    assert 0 <= result["active_units"] <= 32
    assert result["generalization_gap"] == pytest.approx(
        result["train_log_likelihood"] - result["test_log_likelihood"], abs=0.011)


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
    # an annealed model's gain over kl_annealing, the vanilla model with the same warm-up
    results = [
        {"config": "iaf_annealed", "seed": 0, "test_log_likelihood": -104.0,
         "gain_over_vanilla": 3.0, "gain_over_kl_annealing": 1.0},
        {"config": "iaf_annealed", "seed": 1, "test_log_likelihood": -105.0,
         "gain_over_vanilla": 1.0, "gain_over_kl_annealing": -0.5},
    ]
    summary = quality.summarize_seeds(results)["iaf_annealed"]
    assert (summary["mean_gain_over_kl_annealing"], summary["min_gain_over_kl_annealing"],
            summary["max_gain_over_kl_annealing"]) == (0.25, -0.5, 1.0)


def test_quality_main_over_two_seeds(quality, capsys, monkeypatch):
    """main's bookkeeping over seeds (each configuration's own run is tested above)."""
    calls = []

    def run(name, x_train, x_test, epochs, eval_samples, seed, train_eval=0):
        calls.append((name, len(x_train), len(x_test), epochs, eval_samples, seed, train_eval))
        value = -100.0 - seed - {"vanilla": 2.0, "kl_annealing": 1.0, "iaf_annealed": 0.5}[name]
        return {"config": name, "test_log_likelihood": value, "test_elbo": value - 5,
                "test_kl": 20.0, "active_units": 32, "train_seconds": 1.0}

    monkeypatch.setattr(quality, "run", run)
    quality.main(["--epochs", "1", "--eval-samples", "2", "--seeds", "0", "1", "--limit", "256",
                  "--only", "vanilla", "kl_annealing", "iaf_annealed"])
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert calls == [(name, 256, 256, 1, 2, seed, 0) for seed in (0, 1)
                     for name in ("vanilla", "kl_annealing", "iaf_annealed")]
    assert report["seeds"] == [0, 1] and len(report["results"]) == 6
    assert report["train_examples"] == 256 and report["test_examples"] == 256
    assert [r["seed"] for r in report["results"]] == [0, 0, 0, 1, 1, 1]
    summary = report["summary"]
    assert summary["vanilla"]["mean_gain"] == 0.0 and "mean_gain_over_kl_annealing" not in (
        summary["vanilla"])
    assert summary["iaf_annealed"]["mean_gain"] == 1.5
    assert summary["iaf_annealed"]["mean_gain_over_kl_annealing"] == 0.5
    assert set(summary) == {"vanilla", "kl_annealing", "iaf_annealed"}
    assert "mean of 2 seeds" in captured.err and "over kl_annealing +0.50" in captured.err


def _in_process_run(module_of):
    """A stand-in for `subprocess.run` that runs the benchmark's commands in this
    process (`python -m vae_zoo ...` through the CLI's `main`, a script through its
    `main`): the same code without a second interpreter's start-up."""
    import contextlib
    import io
    import subprocess

    def run(command, **kwargs):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if command[1:3] == ["-m", "vae_zoo"]:
                from vae_zoo.drivers import cli

                code = cli.main(command[3:])
            else:
                code = module_of(command[1]).main(command[2:])
        return subprocess.CompletedProcess(command, code or 0, out.getvalue(), err.getvalue())

    return run


def test_train_throughput_every_path(capsys, monkeypatch):
    train_throughput = _load("train_throughput")
    scripts = {}

    def script(path):
        if path not in scripts:
            spec = importlib.util.spec_from_file_location(Path(path).stem, path)
            scripts[path] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(scripts[path])
        return scripts[path]

    monkeypatch.setattr(train_throughput.subprocess, "run", _in_process_run(script))
    monkeypatch.setattr(train_throughput, "matmul_peak_gflops", lambda: 100.0)
    monkeypatch.setattr(train_throughput, "memory_bandwidth_gbs", lambda: 50.0)
    # without XLA's compilations (several seconds each), which tests/test_fast_path.py covers
    train_throughput.main(["--rounds", "1", "--epochs", "2", "--examples", "256",
                           "--set", "train.jit_compile=false"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["benchmark"] == "train_throughput" and report["train_images"] == 256
    rows = {(r["path"], r["impl"]): r for r in report["results"]}
    assert set(rows) == {(p, i) for p in ("numpy", "tf.data", "cli") for i in ("baseline", "vae_zoo")
                         } | {("plain", "vae_zoo")}
    for (path, impl), row in rows.items():
        assert row["examples_per_s"] > 0 and row["whole_run_s"] > 0, (path, impl)
        assert row["timed_epochs"] == 1 and row["max_epoch_over_median"] == 1.0
        assert 0 < row["fraction_of_matmul_peak"] < row["fraction_of_machine_limit"]
        # the limit: matmul FLOPs at 100 GFLOP/s + 28 bytes per parameter at 50 GB/s / 128
        limit = 6_537_216 / 100e9 + 28 * 1_091_920 / 50e9 / 128
        assert row["fraction_of_machine_limit"] == pytest.approx(
            row["examples_per_s"] * limit, abs=1e-3)
        if impl == "vae_zoo":
            assert row["speedup"] > 0 and row["whole_run_speedup"] > 0, path
    assert rows[("plain", "vae_zoo")]["baseline_examples_per_s"] == \
        rows[("numpy", "baseline")]["examples_per_s"]
    assert report["overrides"] == ["train.jit_compile=false"]
    assert report["memory_bandwidth_gbs"] == 50.0
    assert rows[("numpy", "vae_zoo")]["steps_per_execution"] == 32
    assert rows[("plain", "vae_zoo")]["steps_per_execution"] == 1
    assert rows[("cli", "vae_zoo")]["jit_compile"] is False
    assert math.isfinite(rows[("numpy", "vae_zoo")]["test_elbo"])


def test_machine_limit_counts_the_models_parameters_and_flops():
    """The limit's parameter count is the mnist_dense model's own trainable weights, and
    its FLOPs are 6 × the multiply-adds of its Dense kernels."""
    from vae_zoo import recipes

    train_throughput = _load("train_throughput")
    model = recipes.build_model(recipes.load("mnist_dense"))
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    assert trainable == train_throughput.dense_parameters() == 1_091_920
    kernels = sum(math.prod(w.shape) for w in model.trainable_weights if len(w.shape) == 2)
    assert train_throughput.dense_training_flops() == 6 * kernels


def test_eval_profile_parts_add_up():
    """eval_throughput's profile: decoder, likelihood and rest add up to the chunk, each
    also as × the limit."""
    import numpy as np

    from conftest import binary_data, tiny_dense

    eval_throughput = _load("eval_throughput")
    model = tiny_dense(input_shape=(4, 4, 1))
    profile = eval_throughput.chunk_profile(model, binary_data(100, (4, 4, 1)), 5000, limit=2.0)
    parts = profile["decoder_s"] + profile["likelihood_s"] + profile["rest_s"]
    assert parts == pytest.approx(profile["chunk_s"], abs=0.02)
    assert profile["chunk_images"] == 100 and profile["chunk_samples"] >= 1
    assert np.isclose(profile["decoder_times_limit"], profile["decoder_s"] / 2.0, atol=0.01)


def test_gpu_check_without_a_gpu_says_so():
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["benchmark"] == "gpu_check" and report["gpu_found"] is False
    assert report["note"] == "no GPU found: GPU steps skipped"
    assert report["install"]["status"] == "skipped" and report["tensorflow"]
    detect, *others = report["steps"]
    assert detect["name"] == "detect" and detect["status"] == "ok"
    assert {s["name"] for s in others} == {"tests", "train_default", "train_mixed_float16",
                                           "train_mirrored", "eval"}
    assert all(s["status"] == "skipped" and s["reason"] == "no GPU found" for s in others)
