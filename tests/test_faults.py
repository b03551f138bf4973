"""Fault injection: kills, crashes in checkpoint writes, divergence and bad input.

Each case here is a row of the README's "Faults and bad input" table.
"""

import contextlib
import csv
import io
import json
import shutil
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from vae_zoo import cli, export, runs
from vae_zoo.drivers import run_folder
from vae_zoo.models import MODELS

# Subprocesses, several devices or whole runs: out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

TINY = [
    "--set", "model.hidden_units=[16]",
    "--set", "model.latent_dim=2",
    "--set", "train.epochs=4",
    "--set", "evaluate.num_samples=5",
    "--set", "evaluate.examples=50",
    # The plain step: these tests are about files and resumption, and each training
    # process saves ~5 s of XLA compilation (the XLA path is tested in test_fast_path).
    "--set", "train.jit_compile=false",
    # 20 batches an epoch, a batch hook every 5: a kill "after batch 15 of epoch 3"
    "--set", "data.batch_size=250",
    "--set", "train.steps_per_execution=5",
    "--set", "output.diagnostics=false",
    "--quiet",
]


def _env():
    env = dict(os.environ)
    env.pop("VAE_ZOO_DEBUG", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _train_command(output):
    return [sys.executable, "-m", "vae_zoo", "train", *TINY, "--output", str(output)]


def _rerun(output):
    """The same command again (in this process: the killed run was the fresh process)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(_train_command(output)[3:]) == 0
    return printed.getvalue()


def _tiny_recipe():
    """TINY's recipe, for runs.train in this process."""
    from vae_zoo import recipes

    return recipes.load("mnist_dense", [TINY[i + 1] for i in range(len(TINY) - 1)
                                        if TINY[i] == "--set"])


def _assert_complete(output, epochs=4):
    with open(output / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))  # none lost or twice
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    betas = [float(r["beta"]) for r in rows]  # KL annealing went on, not restarted
    assert betas == sorted(betas) and (epochs == 1 or betas[-1] > betas[0])
    model = runs.load_model(output)
    assert model.latent_shape == (2,)
    assert keras.models.load_model(output / "best.keras").latent_shape == (2,)
    assert json.loads((output / "metrics.json").read_text())["epochs"] == epochs
    assert not runs.staging_path(output).exists()
    assert not (output / "backup").exists()


# Deterministic kills: the training command runs under this wrapper, which SIGKILLs its
# own process at a chosen point (nothing in vae_zoo knows about it; the rerun is the plain
# command). Points inside a checkpoint write are found by wrapping the file operations
# the write uses, so they do not depend on how `runs` names its helpers.
KILLER = """
import json, os, shutil, signal, sys
import keras
from vae_zoo import cli, runs

point = sys.argv[1]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if point == "mid_epoch" and self.epoch == 2 and batch >= 10:
            # The first batch hook at or after batch 11 of epoch 3 (batch 15 of 20 with
            # 5 steps per call): two epochs checkpointed, a third under way.
            die()


real_train = runs.train


def train(*args, **kwargs):
    kwargs["callbacks"] = [*kwargs.get("callbacks", ()), Kill()]
    return real_train(*args, **kwargs)


runs.train = train

real_save_weights = keras.Model.save_weights


def save_weights(self, filepath, *args, **kwargs):
    real_save_weights(self, filepath, *args, **kwargs)
    if point == "weights_half_written" and os.path.basename(str(filepath)).startswith("epoch-2."):
        data = open(filepath, "rb").read()
        open(filepath, "wb").write(data[: len(data) // 2])
        die()


keras.Model.save_weights = save_weights

real_fsync, real_replace = os.fsync, os.replace


def written_epoch(path):
    try:
        return json.loads(open(path).read()).get("epoch")
    except (OSError, ValueError, AttributeError):
        return None


def fsync(fd):
    path = os.readlink(f"/proc/self/fd/{fd}")
    if (point == "metadata_half_written" and "training_metadata.json" in os.path.basename(path)
            and written_epoch(path) == 2):
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        die()
    return real_fsync(fd)


def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if (point == "metadata_committed" and os.path.basename(str(dst)) == "training_metadata.json"
            and written_epoch(dst) == 3):
        die()  # epoch 1's weights file, no longer kept, is still there


real_rename, real_rmtree = os.rename, shutil.rmtree


def rename(src, dst, *args, **kwargs):
    real_rename(src, dst, *args, **kwargs)
    if point == "finish_mid_swap" and str(dst).endswith(".old"):
        die()  # the old run folder moved aside, the new one not yet in place


def rmtree(path, *args, **kwargs):
    real_rmtree(path, *args, **kwargs)
    if point == "finish_backup_removed" and os.path.basename(str(path)) == "backup":
        die()  # results complete, checkpoint gone, not yet renamed


os.fsync, os.replace, os.rename, shutil.rmtree = fsync, replace, rename, rmtree
sys.exit(cli.main(sys.argv[2:]))
"""

# point → epochs in the checkpoint the rerun resumes from
KILL_POINTS = {
    # (right after an epoch's checkpoint: "metadata_committed", before its last step)
    "mid_epoch": 2,
    "weights_half_written": 1,  # epoch 2's checkpoint never became the current one
    "metadata_half_written": 1,
    "metadata_committed": 3,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_rerun_resumes(point, tmp_path):
    output = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, point, *_train_command(output)[3:]],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not output.exists()  # nothing half-written at the target
    backup = runs.staging_path(output) / "backup"
    meta = json.loads((backup / "training_metadata.json").read_text())
    assert meta["epoch"] == KILL_POINTS[point]
    model = runs.recipes_lib.build_model(runs.recipes_lib.validate(json.loads(
        (runs.staging_path(output) / "recipe.json").read_text())))
    model.load_weights(backup / meta["weights"])  # the current checkpoint loads
    weights = sorted(p.name for p in backup.glob("*.weights.h5"))
    current_and_previous = sorted([meta["weights"]] + (
        [meta["previous"]["weights"]] if meta["previous"] else []))
    if point == "mid_epoch":  # older weights files were removed
        assert weights == current_and_previous
    if point == "metadata_committed":  # killed before removing the oldest one
        assert weights == sorted(current_and_previous + ["epoch-1.weights.h5"])
    with open(runs.staging_path(output) / "history.csv") as f:
        assert len(list(csv.DictReader(f))) >= meta["epoch"]  # rows of finished epochs kept
    stdout = _rerun(output)
    assert f"resuming {output} after epoch {meta['epoch']} from {backup}" in stdout
    _assert_complete(output)


class _PoisonWeights(keras.callbacks.Callback):
    """Turns the weights into NaN before batch 3 of epoch 2."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 2:
            for variable in self.model.trainable_variables:
                variable.assign(np.full(variable.shape, np.nan, "float32"))


@pytest.mark.numerics
def test_poisoned_weights_stop_training_and_keep_last_good_checkpoint(tmp_path):
    from vae_zoo import recipes

    recipe = recipes.load("mnist_dense", [
        "model.hidden_units=[16]", "model.latent_dim=2", "train.epochs=4",
        "evaluate.num_samples=5", "evaluate.examples=50",
        "train.steps_per_execution=1",  # batch hooks every batch: poison batch 3 exactly
    ])
    output = tmp_path / "run"
    with pytest.raises(runs.TrainingDiverged) as caught:
        runs.train(recipe, output, verbose=0, callbacks=[_PoisonWeights()])
    staging = runs.staging_path(output)
    assert str(caught.value) == (
        f"training diverged at epoch 2, batch 3 (loss is nan); last good checkpoint (epoch 1) "
        f"kept at {staging / 'backup'}; lower train.learning_rate and rerun with --resume"
    )
    assert not output.exists()
    meta = json.loads((staging / "backup" / "training_metadata.json").read_text())
    assert meta["epoch"] == 1
    model = recipes.build_model(recipe)
    model.load_weights(staging / "backup" / meta["weights"])
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)
    assert keras.models.load_model(staging / "best.keras").latent_shape == (2,)


@pytest.mark.numerics
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


def test_labels_out_of_range_for_a_conditional_recipe_are_refused(tmp_path, capsys):
    output = tmp_path / "run"
    message = _one_line_error(
        ["train", *TINY, "--set", "model.family=conditional", "--set", "model.num_classes=5",
         "--output", str(output)], capsys)
    assert message.startswith("dataset 'mnist_sample' has labels outside [0, 5) (got label ")
    assert message.endswith("); set model.num_classes to its number of classes")
    assert list(tmp_path.iterdir()) == []


def test_a_live_writer_of_the_same_run_folder_is_refused(tmp_path, capsys):
    from vae_zoo.training.checkpointing import FileLock

    output = tmp_path / "run"
    lock = FileLock(run_folder.lock_path(output), "held").acquire()  # another writer
    try:
        message = _one_line_error(["train", *TINY, "--output", str(output)], capsys)
    finally:
        lock.release()
    assert message.startswith(f"run folder {runs.staging_path(output)} is being written by "
                              f"process {os.getpid()} on ")
    # a lock file left by a dead process (its PID now another live process) blocks nothing
    run_folder.lock_path(output).write_text(f"process {os.getppid()} on this host (since then)")
    assert cli.main(["train", *TINY, "--set", "train.epochs=1", "--output", str(output)]) == 0
    assert not run_folder.lock_path(output).exists()


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
        (np.full((3, 4, 4, 1), "1"), "data must be numbers (float, or uint8 in 0..255), got "
         "dtype <U1"),
        (np.full((3, 4, 4, 1), 1 + 0j), "data must be numbers (float, or uint8 in 0..255), got "
         "dtype complex128"),
    ],
    ids=["nan", "inf", "empty", "shape", "grey_for_bernoulli", "strings", "complex"],
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
        (["sample", str(SHIPPED), "-n", "0"], "-n must be >= 1, got 0"),
        (["evaluate", str(SHIPPED), "--samples", "0"], "--samples and --examples must be >= 1"),
        (["evaluate", str(SHIPPED), "--examples", "0"], "--samples and --examples must be >= 1"),
        (["train", "--set", "train.learning_rate=nan"], "train.learning_rate must be finite, got nan"),
        (["train", "--set", "train.learning_rate=0"], "train.learning_rate must be > 0, got 0"),
        (["train", "--set", "model.latent_dim=2.5"],
         "model.latent_dim must be an integer, got float 2.5"),
        (["train", "--set", "data.batch_size=0"], "data.batch_size must be >= 1, got 0"),
        (["train", "--set", "model.family=nosuch"], "model.family = 'nosuch' is not one of: "
         + ", ".join(MODELS.names())),
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


def test_keras_file_with_damaged_contents(tmp_path, capsys):
    import zipfile

    from conftest import tiny_dense

    good = tmp_path / "good.keras"
    tiny_dense(input_shape=(4, 4, 1)).save(good)
    damaged = tmp_path / "damaged.keras"  # a zip, but config.json cut short
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data[: len(data) // 2] if item.filename == "config.json" else data)
    for command in (["evaluate", str(damaged)], ["sample", str(damaged)],
                    ["export", str(damaged), "--name", "m", "--root", str(tmp_path / "s")]):
        assert _one_line_error(command, capsys).startswith(f"cannot load model {damaged}: ")
    assert not (tmp_path / "s").exists()


def test_a_model_that_does_not_fit_its_runs_dataset(tmp_path, capsys):
    from conftest import tiny_dense
    from vae_zoo.training.checkpointing import write_json

    tiny_dense(input_shape=(4, 4, 1)).save(tmp_path / "model.keras")
    write_json(tmp_path / "recipe.json", {"model": {"family": "dense", "latent_dim": 2}})
    assert _one_line_error(["evaluate", str(tmp_path), "--samples", "2"], capsys) == (
        "model input shape (4, 4, 1) does not match dataset 'mnist_sample' (28, 28, 1)")


def test_multi_line_errors_are_joined(monkeypatch, capsys):
    def fail(args):
        raise ValueError("first line\n  second line")

    monkeypatch.setitem(cli.COMMANDS, "recipes", fail)
    assert _one_line_error(["recipes"], capsys) == "first line second line"


@pytest.mark.parametrize(
    "fault, expected",
    [
        ("empty", "dataset 'mnist_sample' gave no examples"),
        ("nan", "dataset 'mnist_sample' contains NaN or inf values"),
        ("empty_train", "dataset 'mnist_sample' split 'train' gave no training examples"),
    ],
)
def test_a_recipe_dataset_that_is_empty_or_not_finite(fault, expected, tmp_path, monkeypatch):
    import tensorflow as tf

    from vae_zoo import recipes

    recipe = recipes.load("mnist_dense", ["model.hidden_units=[8]", "model.latent_dim=2",
                                          "train.epochs=1"])
    x = np.zeros((0 if fault == "empty" else 8, 28, 28, 1), "float32")
    if fault == "nan":
        x[:, 0, 0, 0] = np.nan

    def datasets(x):
        return tf.data.Dataset.from_tensor_slices(x).batch(4)

    train = datasets(x[:0] if fault == "empty_train" else x)
    monkeypatch.setattr(runs.recipes_lib, "build_datasets",
                        lambda recipe, replicas=1: (train, datasets(x)))
    with pytest.raises(ValueError, match=f"^{expected}$"):
        runs.train(recipe, tmp_path / "run", verbose=0)
    assert list(tmp_path.iterdir()) == []


def test_labels_out_of_range_in_the_training_split_only(tmp_path, monkeypatch, capsys):
    """The test split is checked before training; the training split as it streams into
    the compiled (XLA) step, which would otherwise train on a zero one-hot vector."""
    import tensorflow as tf

    x = np.zeros((8, 28, 28, 1), "float32")
    good, bad = np.arange(8) % 3, np.full(8, 7)
    monkeypatch.setattr(runs.recipes_lib, "build_datasets", lambda recipe, replicas=1: (
        tf.data.Dataset.from_tensor_slices((x, bad)).batch(4),
        tf.data.Dataset.from_tensor_slices((x, good)).batch(4)))
    message = _one_line_error(["train", "--set", "model.family=conditional", "--set",
                               "model.num_classes=3", "--set", "model.hidden_units=[8]",
                               "--set", "train.epochs=1", "--set", "train.jit_compile=true",
                               "--quiet", "--output", str(tmp_path / "run")], capsys)
    assert message == "labels must lie in [0, 3), got label 7"
    assert list(tmp_path.iterdir()) == []


def test_annealing_needs_a_dataset_of_known_length(tmp_path, monkeypatch):
    """An epoch-based β schedule on a dataset that does not declare its length is a
    one-line error before training (not a silently constant β)."""
    import tensorflow as tf

    from vae_zoo import recipes

    recipe = recipes.load("mnist_dense", ["model.hidden_units=[8]", "model.latent_dim=2",
                                          "train.epochs=1"])
    x = np.zeros((8, 28, 28, 1), "float32")
    unknown = tf.data.Dataset.from_tensor_slices(x).filter(lambda _: True).batch(4)
    monkeypatch.setattr(runs.recipes_lib, "build_datasets",
                        lambda recipe, replicas=1: (unknown, unknown))
    with pytest.raises(ValueError, match="^annealing.schedule = 'linear' needs the number of "
                                         "batches per epoch, which dataset 'mnist_sample' "
                                         "does not declare$"):
        runs.train(recipe, tmp_path / "run", verbose=0)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_a_run_folder_only_when_asked(tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "old.txt").write_text("keep me")
    one_epoch = [*TINY, "--set", "train.epochs=1", "--output", str(output)]
    assert _one_line_error(["train", *one_epoch], capsys) == (
        f"run folder {output} already exists (use --overwrite to replace it)")
    assert (output / "old.txt").read_text() == "keep me"
    # a failing --overwrite run (bad data, refused before training) keeps the old folder
    assert _one_line_error(["train", *one_epoch, "--overwrite", "--set", "data.binarize=none"],
                           capsys).startswith("data 'mnist_sample' with data.binarize = 'none'")
    assert (output / "old.txt").read_text() == "keep me"
    assert cli.main(["train", *one_epoch, "--overwrite"]) == 0
    assert not (output / "old.txt").exists() and (output / "model.keras").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging or old copy left


class _Interrupt(Exception):
    pass


class _InterruptAt(keras.callbacks.Callback):
    """Stops a run (as a crash would) at the start of epoch `epoch` (1-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise _Interrupt()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A staging folder holding checkpoints of epochs 1 and 2 of TINY's recipe (the run
    stopped as by a crash at the start of epoch 3)."""
    output = tmp_path_factory.mktemp("interrupted") / "run"
    recipe = _tiny_recipe()
    with pytest.raises(_Interrupt):
        runs.train(recipe, output, verbose=0, callbacks=[_InterruptAt(3)])
    return runs.staging_path(output)


def _interrupted_run(interrupted, output):
    """A copy of `interrupted` as the staging folder of `output`; its backup folder."""
    shutil.copytree(interrupted, runs.staging_path(output))
    return runs.staging_path(output) / "backup"


def test_a_full_disk_after_a_checkpoint_says_where_it_is_kept(tmp_path):
    import errno

    class FullDisk(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    recipe = _tiny_recipe()
    output = tmp_path / "run"
    with pytest.raises(runs.RunStopped) as caught:
        runs.train(recipe, output, verbose=0, callbacks=[FullDisk()])
    backup = runs.staging_path(output) / "backup"
    assert str(caught.value) == (
        f"no space left on device: {tmp_path / 'x'}; last good checkpoint (epoch 1) kept at "
        f"{backup}; rerun the same command to resume")
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1


def test_a_checkpoint_of_another_recipe_is_kept_until_the_user_says(interrupted, tmp_path,
                                                                    capsys):
    output = tmp_path / "run"
    backup = _interrupted_run(interrupted, output)
    message = _one_line_error(["train", *TINY, "--set", "model.latent_dim=3",
                               "--output", str(output)], capsys)
    assert message == (
        f"{backup.parent} holds a checkpoint after epoch 2 of a different recipe "
        "(model.latent_dim 2 -> 3); model.latent_dim cannot change in a resumed run; pass "
        "--restart to discard it, or use another --output")
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    # --resume does not override a change of the model
    assert _one_line_error(["train", *TINY, "--set", "model.latent_dim=3", "--resume",
                            "--output", str(output)], capsys) == message
    assert cli.main(["train", *TINY, "--set", "model.latent_dim=3", "--set", "train.epochs=1",
                     "--restart", "--output", str(output)]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert runs.load_model(output).latent_shape == (3,)


def test_resume_with_a_lower_learning_rate(interrupted, tmp_path, capsys):
    """The advice of the divergence message works: lower the rate, rerun with --resume."""
    output = tmp_path / "run"
    backup = _interrupted_run(interrupted, output)
    lower = ["--set", "train.learning_rate=0.0001", "--output", str(output)]
    assert _one_line_error(["train", *TINY, *lower], capsys) == (
        f"{backup.parent} holds a checkpoint after epoch 2 of a different recipe "
        "(train.learning_rate 0.001 -> 0.0001); pass --resume to continue it with the new "
        "values, or --restart to discard it")
    assert cli.main(["train", *TINY, *lower, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "continuing the checkpoint with changed training settings: train.learning_rate" in out
    assert f"resuming {output} after epoch 2 from {backup}" in out
    _assert_complete(output)
    model = runs.load_model(output)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    assert json.loads((output / "recipe.json").read_text())["train"]["learning_rate"] == 1e-4


def test_a_damaged_checkpoint_falls_back_or_says_what_to_run(interrupted, tmp_path, capsys):
    output = tmp_path / "run"
    backup = _interrupted_run(interrupted, output)
    good = (backup / "epoch-1.weights.h5").read_bytes()
    data = (backup / "epoch-2.weights.h5").read_bytes()
    (backup / "epoch-2.weights.h5").write_bytes(data[:3000])  # e.g. a power loss
    (backup / "epoch-1.weights.h5").write_bytes(good[:100])
    message = _one_line_error(["train", *TINY, "--output", str(output)], capsys)
    assert message.startswith(f"{backup / 'epoch-2.weights.h5'} is damaged (checksum mismatch); "
                              f"{backup / 'epoch-1.weights.h5'} is damaged (")
    assert message.endswith("and no earlier checkpoint is kept; rerun with --restart to "
                            "start afresh")
    (backup / "epoch-1.weights.h5").write_bytes(good)
    assert cli.main(["train", *TINY, "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert (f"checkpoint {backup / 'epoch-2.weights.h5'} is damaged (checksum mismatch); "
            "resuming from the previous one (epoch 1)") in out
    assert f"resuming {output} after epoch 1 from {backup}" in out
    _assert_complete(output)


@pytest.mark.numerics
def test_nan_weights_behind_a_finite_loss_stop_the_run_and_are_never_saved(tmp_path):
    from vae_zoo import recipes

    class PoisonKernel(keras.callbacks.Callback):
        """NaN into an encoder kernel after the last batch of epoch 3: the epoch's loss,
        computed before, is finite on every CPU."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch + 1 == self.params["steps"]:
                kernel = self.model.encoder.trainable_variables[0]
                kernel.assign(kernel * np.nan)

    recipe = recipes.load("mnist_dense", [
        "model.hidden_units=[16]", "model.latent_dim=2", "train.epochs=4",
        "evaluate.examples=50",
        "train.steps_per_execution=1",  # a batch hook after every batch: the last one exactly
    ])
    output = tmp_path / "run"
    with pytest.raises(runs.TrainingDiverged) as caught:
        runs.train(recipe, output, verbose=0, callbacks=[PoisonKernel()])
    backup = runs.staging_path(output) / "backup"
    assert str(caught.value) == (
        f"training diverged at epoch 3 (non-finite values in "
        f"{caught.value.cause.split(' in ', 1)[1]}); last good checkpoint (epoch 2) kept at "
        f"{backup}; lower train.learning_rate and rerun with --resume")
    assert "/encoder/" in caught.value.cause
    meta = json.loads((backup / "training_metadata.json").read_text())
    assert meta["epoch"] == 2 and not output.exists()
    model = runs.recipes_lib.build_model(recipe)
    model.load_weights(backup / meta["weights"])
    assert all(np.isfinite(v.numpy()).all() for v in model.weights)
    best = keras.models.load_model(runs.staging_path(output) / "best.keras")
    assert all(np.isfinite(v.numpy()).all() for v in best.weights)


FINISH_POINTS = ["finish_backup_removed", "finish_mid_swap"]


@pytest.mark.parametrize("point", FINISH_POINTS)
def test_sigkill_while_finishing_then_rerun_completes(point, tmp_path):
    """Every step of moving a finished run into place is completed by the same command
    (here with --overwrite over an older run folder), without training again."""
    output = tmp_path / "run"
    output.mkdir()
    (output / "old.txt").write_text("the older run")
    command = [*_train_command(output)[3:], "--set", "train.epochs=1", "--overwrite"]
    killed = subprocess.run([sys.executable, "-c", KILLER, point, *command],
                            capture_output=True, text=True, env=_env(), timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if point == "finish_mid_swap":
        assert not output.exists() and run_folder.old_path(output).exists()
    else:
        assert (output / "old.txt").exists()
    assert cli.main(["train", *command[1:]]) == 0
    _assert_complete(output, epochs=1)
    assert not (output / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no leftovers


# ------------------------------------------------------------- tune and export input

TUNE = ["--set", "model.latent_dim=2", "--set", "model.hidden_units=[8]",
        "--set", "data.batch_size=250", "--set", "train.epochs=1", "--set", "tune.epochs=1",
        "--set", "tune.max_trials=1", "--set", "tune.latent_dim=[1,2]", "--quiet"]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data.binarize=none"], "data 'mnist_sample' with data.binarize = 'none' does not fit "
         "model.likelihood: a Bernoulli likelihood needs binary data (0 or 1), got "),
        (["model.family=conditional", "model.num_classes=5"],
         "dataset 'mnist_sample' has labels outside [0, 5) (got label "),
    ],
    ids=["grey_for_bernoulli", "labels"],
)
def test_tune_refuses_data_that_do_not_fit_before_touching_the_folder(
        overrides, expected, tmp_path, capsys):
    output = tmp_path / "tuning"
    output.mkdir()
    (output / "old.txt").write_text("keep me")
    sets = [word for o in overrides for word in ("--set", o)]
    message = _one_line_error(["tune", "mnist_dense", *TUNE, *sets, "--output", str(output),
                               "--overwrite"], capsys)
    assert message.startswith(expected)
    assert sorted(p.name for p in output.iterdir()) == ["old.txt"]  # no trial ran


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["tune", "--top", "0"], "--top must be >= 1, got 0"),
        (["tune", "--set", "model.latnet_dim=3"],
         "unknown recipe key model.latnet_dim (did you mean 'latent_dim'?)"),
        (["tune", "--set", "tune.max_trials=0"], "tune.max_trials must be >= 1, got 0"),
        (["tune", "nosuch.toml"], "recipe file not found: nosuch.toml"),
        (["export", "no/such/run", "--name", "m"],
         "no model at no/such/run (give a run folder or a .keras file)"),
        (["export", str(SHIPPED), "--name", "a/b"], "--name must be a plain folder name, got 'a/b'"),
    ],
)
def test_bad_tune_and_export_arguments(argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a mistaken default output folder would land here
    assert _one_line_error(argv, capsys) == expected
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_corrupt_model_and_a_bad_version(tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"x")
    root = tmp_path / "served"
    assert _one_line_error(["export", str(bad), "--name", "m", "--root", str(root)], capsys) == (
        f"cannot load model {bad}: not a .keras archive (corrupt or another format)")
    good = tmp_path / "good.keras"
    from conftest import tiny_dense

    tiny_dense(input_shape=(4, 4, 1)).save(good)
    assert _one_line_error(["export", str(good), "--name", "m", "--root", str(root),
                            "--version", "0"], capsys) == "version must be a positive integer, got 0"
    assert export.versions(root / "m") == []


def test_iw_bound_is_finite_where_the_weights_underflow():
    """log p(x|z) of 784 pixels under an untrained model is about -550: exp() of it is 0
    in float32, so only a log-sum-exp (also across chunks) keeps the bound finite."""
    from conftest import binary_data, tiny_dense
    from vae_zoo import evaluate

    model = tiny_dense(input_shape=(28, 28, 1))
    x = binary_data(n=3, shape=(28, 28, 1))
    ll = evaluate.log_likelihood(model, x, num_samples=6, chunk_size=4)
    assert np.all(np.isfinite(ll)) and ll.max() < -110, ll
