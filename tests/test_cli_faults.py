"""The command line's faults of the machine and of its arguments, each one line with exit
status 2 and nothing already saved lost: an unwritable or full folder, a path that is a
file, a Keras model that is not a vae_zoo VAE, a recipe argument that is not a recipe.

In-process and quick (no training): rows of the README's "Faults and bad input" table.
"""

import errno
import importlib.resources
import os
from pathlib import Path

import keras
import pytest
import tensorflow as tf

from vae_zoo import cli, runs


def _one_line_error(argv, capsys):
    status = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("vae-zoo: error: "), err
    return err[0][len("vae-zoo: error: "):]


def _full_disk(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize(
    "error, expected",
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/runs/.r.partial"),
         "permission denied: /data/runs/.r.partial"),
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
        (OSError(errno.ENOSPC, "No space left on device", "/data/m.keras"),
         "no space left on device: /data/m.keras"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/file/m"),
         "not a directory: /data/file/m"),
        (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"),
         "invalid cross-device link: /a -> /b"),
        (tf.errors.ResourceExhaustedError(None, None, "/data/logs/events; No space left on device"),
         "/data/logs/events; No space left on device"),
    ],
)
def test_errors_of_the_machine_are_one_line(error, expected, monkeypatch, capsys):
    def fail(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "recipes", fail)
    monkeypatch.delenv("VAE_ZOO_DEBUG", raising=False)
    assert _one_line_error(["recipes"], capsys) == expected
    monkeypatch.setenv("VAE_ZOO_DEBUG", "1")  # the traceback, for a developer
    with pytest.raises(type(error)):
        cli.main(["recipes"])


def test_a_read_only_output_folder(tmp_path, monkeypatch, capsys):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: the refusal a user would get, simulated
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self.parent == read_only:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    try:
        message = _one_line_error(["train", "--output", str(read_only / "run"), "--quiet"], capsys)
    finally:
        read_only.chmod(0o755)
    assert message == f"permission denied: {read_only / '.run.partial'}"
    assert list(read_only.iterdir()) == []


def test_a_full_disk_leaves_the_run_folder_there_was(tmp_path, monkeypatch, capsys):
    """`train --overwrite` failing to write (ENOSPC) keeps the old run folder as it was."""
    output = tmp_path / "run"
    output.mkdir()
    (output / "model.keras").write_bytes(b"the earlier run")

    def write_json(path, payload):
        Path(path).write_text("{")  # cut off by the full disk
        raise _full_disk(path)

    monkeypatch.setattr(runs, "write_json", write_json)
    argv = ["train", "--overwrite", "--quiet", "--output", str(output),
            "--set", "model.hidden_units=[4]", "--set", "model.latent_dim=2"]
    message = _one_line_error(argv, capsys)
    assert message == f"no space left on device: {runs.staging_path(output) / 'recipe.json'}"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left
    assert (output / "model.keras").read_bytes() == b"the earlier run"


@pytest.fixture
def tiny_model(tmp_path):
    from conftest import tiny_dense

    path = tmp_path / "model.keras"
    tiny_dense(input_shape=(28, 28, 1)).save(path)
    return path


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_a_full_disk_leaves_the_file_there_was(command, tiny_model, monkeypatch, capsys):
    """Output written where an earlier one is: a failed write leaves that one as it was."""
    from matplotlib import image

    if command == "sample":
        argv, earlier = ["sample", str(tiny_model), "-n", "4"], "samples-0.png"
        owner, name = image, "imsave"
    else:
        argv = ["evaluate", str(tiny_model), "--samples", "2", "--examples", "8"]
        earlier, owner, name = "evaluation.json", Path, "write_text"
    (tiny_model.parent / earlier).write_bytes(b"the earlier output")

    def cut_off(path, *args, **kwargs):
        Path(path).write_bytes(b"cut off")
        raise _full_disk(path)

    monkeypatch.setattr(owner, name, cut_off)
    assert _one_line_error(argv, capsys).startswith("no space left on device: ")
    assert (tiny_model.parent / earlier).read_bytes() == b"the earlier output"
    assert sorted(p.name for p in tiny_model.parent.iterdir()) == sorted(["model.keras", earlier])


def test_export_root_that_is_a_file(tiny_model, tmp_path, capsys):
    root = tmp_path / "saved_models"
    root.write_text("a file")
    argv = ["export", str(tiny_model), "--name", "m", "--root", str(root)]
    assert _one_line_error(argv, capsys) == f"--root {root} is not a folder"
    assert root.read_text() == "a file"
    below = root / "deeper"  # a file on the way: the system's words, one line
    argv = ["export", str(tiny_model), "--name", "m", "--root", str(below)]
    assert _one_line_error(argv, capsys) == f"not a directory: {below / 'm'}"


def test_a_plain_keras_model_is_not_a_vae(tmp_path, capsys):
    inputs = keras.Input((4, 4, 1))
    plain = keras.Model(inputs, keras.layers.Flatten()(inputs))
    path = tmp_path / "plain.keras"
    plain.save(path)
    root = tmp_path / "saved_models"
    for argv in (["evaluate", str(path), "--samples", "2", "--examples", "4"],
                 ["sample", str(path), "-n", "4"],
                 ["export", str(path), "--name", "m", "--root", str(root)]):
        assert _one_line_error(argv, capsys) == (
            f"{path} holds a Functional model, not a vae_zoo VAE")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.keras"]


def _path_from_packaged_recipes(target):
    """`target` relative to the packaged recipes' folder, as `../../...`."""
    folder = importlib.resources.files("vae_zoo.recipe_files")
    return os.path.relpath(target, str(folder))


def test_a_recipe_argument_never_leaves_the_runs_folder(tmp_path, monkeypatch, capsys):
    """A name with a path in it is not joined onto the packaged recipes' folder."""
    evil = tmp_path / "somewhere" / "evil.toml"
    evil.parent.mkdir()
    evil.write_text("[model]\nfamily = 'dense'\nlatent_dim = 2\n")
    name = _path_from_packaged_recipes(tmp_path / "somewhere" / "evil")
    monkeypatch.chdir(tmp_path)

    def train(recipe, *args, **kwargs):
        pytest.fail(f"would train into {runs.default_output(recipe)}")

    monkeypatch.setattr(runs, "train", train)
    assert _one_line_error(["train", name], capsys) == (
        f"recipe {name} is not a packaged recipe name; a path must name a .toml file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somewhere"]


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ""])
def test_a_hand_built_recipe_name_never_leaves_the_runs_folder(name):
    from vae_zoo.drivers import recipes, runs

    recipe = recipes.load("mnist_dense")
    with pytest.raises(ValueError, match="must be a plain name"):
        runs.default_output(recipe.replace(name=name))
    assert runs.default_output(recipe.replace(name="mine")).parent == Path(runs.RUNS_DIR)
