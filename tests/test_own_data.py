"""Your own data: any TFDS dataset (a real builder, prepared in a temporary data_dir),
image folders, .npz/.npy files; streaming; one-line messages for bad data."""

import os
import subprocess
import sys

import numpy as np
import pytest

from vae_zoo import data, recipes

tfds = pytest.importorskip("tensorflow_datasets")

RNG = np.random.default_rng(0)
DIGITS = RNG.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)


def _epoch(ds):
    batches = list(ds.as_numpy_iterator())
    if isinstance(batches[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*batches))
    return np.concatenate(batches)


def _rows(x):
    """Examples as a sorted list of byte strings (order-free comparison)."""
    rows = np.round(np.asarray(x) * 255).astype(np.uint8).reshape(len(x), -1)
    return sorted(row.tobytes() for row in rows)


def _which(x):
    """Index in DIGITS of each image of x."""
    rows = np.round(x * 255).astype(np.uint8).reshape(len(x), 1, -1)
    return np.argmax(np.all(rows == DIGITS.reshape(1, len(DIGITS), -1), axis=-1), axis=1)


# --------------------------------------------------------------------------- #
# A TFDS dataset prepared locally by a real builder
# --------------------------------------------------------------------------- #


class TinyDigits(tfds.core.GeneratorBasedBuilder):
    """20 grey 8x8 images with labels 0..2: 14 train, 6 test."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "picture": tfds.features.Image(shape=(8, 8, 1)),
                "digit": tfds.features.ClassLabel(num_classes=3),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 14), "test": self._generate_examples(14, 20)}

    def _generate_examples(self, start, stop):
        for i in range(start, stop):
            yield i, {"picture": DIGITS[i], "digit": i % 3, "index": i}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    TinyDigits(data_dir=str(data_dir)).download_and_prepare()
    return data_dir


def test_a_tfds_dataset_prepared_locally_loads_by_name_and_by_folder(prepared):
    options = dict(data_dir=str(prepared))
    assert data.input_shape_of("tiny_digits", **options) == (8, 8, 1)
    assert data.has_labels("tiny_digits", **options)
    source = data.entry("tiny_digits", **options)
    assert (source.image_key, source.label_key, source.num_classes) == ("picture", "digit", 3)
    x, y = _epoch(data.load("tiny_digits", "test", batch_size=4, with_labels=True, **options))
    index = _which(x)  # TFDS stores examples in an order of its own
    assert sorted(index) == list(range(14, 20))
    np.testing.assert_allclose(x, DIGITS[index] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, index % 3)
    # the prepared folder itself, read without the builder class
    folder = str(prepared / "tiny_digits" / "1.0.0")
    x2, _ = data.load_arrays(folder, "test", image_size=4)
    assert x2.shape == (6, 4, 4, 1)
    # streamed (no cache) and cached: the same examples, reshuffled every pass
    for budget in (0, None):
        ds = data.load(folder, "train", batch_size=5, seed=1, cache_budget_mb=budget)
        first, second = _epoch(ds), _epoch(ds)
        assert _rows(first) == _rows(second) == _rows(DIGITS[:14] / 255.0)
        assert not np.array_equal(first, second)


def test_tfds_feature_keys_named_and_checked(prepared):
    with pytest.raises(ValueError) as info:
        data.load("tiny_digits", data_dir=str(prepared), image_key="image")
    assert str(info.value) == (
        "TFDS dataset 'tiny_digits': no feature 'image' (features: picture (Image), "
        "digit (ClassLabel), index (Scalar))")
    with pytest.raises(ValueError) as info:
        data.load("tiny_digits", data_dir=str(prepared), label_key="index")
    assert str(info.value) == ("TFDS dataset 'tiny_digits': feature 'index' is a Scalar, "
                               "not a label (ClassLabel)")


def test_unknown_tfds_name_suggests_close_names():
    with pytest.raises(data.UnknownDataset) as info:
        data.load("mnsit")
    assert str(info.value) == (
        f"Unknown dataset 'mnsit'; expected one of {data.names()}, a TFDS dataset name, an "
        "image folder or an .npz/.npy file (did you mean 'mnist'?).")
    with pytest.raises(recipes.RecipeError) as info:
        recipes.load("mnist_dense", ["data.dataset=fashion_mnst"])
    registered = ", ".join(repr(name) for name in data.names())  # other tests add some
    assert str(info.value) == (
        f"data.dataset = 'fashion_mnst' is not one of: {registered}; nor a TFDS dataset, an "
        "image folder or an .npz/.npy file (did you mean 'fashion_mnist'?)")


def test_a_missing_module_is_named_not_blamed_on_the_data(monkeypatch):
    def fail(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'",
                                  name="importlib_resources")

    monkeypatch.setattr(tfds, "load", fail)
    with pytest.raises(RuntimeError) as info:
        data.load("cifar10")
    assert str(info.value) == (
        "Could not load TFDS dataset 'cifar10' (split 'train') [ModuleNotFoundError: No module "
        "named 'importlib_resources']; tensorflow-datasets needs the Python module "
        "'importlib_resources', which is not installed: reinstall vae_zoo with its "
        "dependencies (pip install vae_zoo) or install it alone.")


def test_a_packaged_tfds_builder_reaches_its_download_step(tmp_path, monkeypatch):
    """tfds.load of a packaged builder into an empty data_dir goes as far as the download
    (the builder's checksums, found through its code path, need every module
    tensorflow-datasets imports on the way); the failed download is named as such."""

    def offline(self, *args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", offline)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", offline)
    with pytest.raises(RuntimeError) as info:
        data.load("mnist", data_dir=str(tmp_path))
    assert str(info.value).startswith(
        "Could not load TFDS dataset 'mnist' (split 'train') [ConnectionError: offline]; "
        "prepare it under a local TFDS directory")


@pytest.mark.slow
def test_vae_zoo_train_reads_a_locally_prepared_tfds_dataset_in_a_fresh_process(
        prepared, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        '[data]\ndataset = "tiny_digits"\nbatch_size = 7\n'
        '[model]\nfamily = "dense"\nlatent_dim = 2\nhidden_units = [8]\n'
        '[evaluate]\nnum_samples = 2\nexamples = 6\n[output]\ngrid_size = 4\n'
        'images_every = 0\ndiagnostics = false\n'
    )
    env = dict(os.environ)
    env.pop("VAE_ZOO_DEBUG", None)
    out = subprocess.run(
        [sys.executable, "-m", "vae_zoo", "train", str(recipe), "--set", "train.epochs=1",
         "--set", f"data.data_dir={prepared}", "--output", str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "run" / "model.keras").is_file()


# --------------------------------------------------------------------------- #
# Image folders
# --------------------------------------------------------------------------- #


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(path)


@pytest.fixture
def folder(tmp_path):
    """12 grey 8x8 PNGs in class subfolders a (7) and b (5)."""
    root = tmp_path / "digits"
    for i in range(12):
        _png(root / ("a" if i < 7 else "b") / f"{i:02d}.png", DIGITS[i])
    return root


def test_an_image_folder_with_class_subfolders(folder):
    assert data.input_shape_of(str(folder)) == (8, 8, 1)
    assert data.has_labels(str(folder)) and data.entry(str(folder)).num_classes == 2
    # every tenth file (sorted by path) is the test split: file 09 (class b)
    x, y = _epoch(data.load(str(folder), "test", with_labels=True))
    np.testing.assert_allclose(x, DIGITS[9:10] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, [1])
    x, y = data.load_arrays(str(folder), "train")
    keep = [i for i in range(12) if i != 9]
    np.testing.assert_allclose(x, DIGITS[keep] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, [0] * 7 + [1] * 4)
    assert data.load_arrays(str(folder), "train[:50%]")[0].shape == (6, 8, 8, 1)
    # streamed with the file order shuffled each pass, or cached: the same examples
    for budget in (0, None):
        ds = data.load(str(folder), batch_size=4, seed=3, cache_budget_mb=budget)
        first, second = _epoch(ds), _epoch(ds)
        assert _rows(first) == _rows(second) == _rows(DIGITS[keep] / 255.0)
        assert not np.array_equal(first, second)
        static = data.load(str(folder), batch_size=11, binarize="static", shuffle=False,
                           cache_budget_mb=budget)
        assert set(np.unique(_epoch(static))) <= {0.0, 1.0}
        np.testing.assert_array_equal(_epoch(static), _epoch(static))


def test_an_rgb_jpeg_folder_without_labels_is_cropped_and_resized(tmp_path):
    from PIL import Image

    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        Image.fromarray(RNG.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
    (root / "notes.txt").write_text("not an image")
    assert not data.has_labels(str(root))
    assert data.input_shape_of(str(root)) == (10, 14, 3)
    x = _epoch(data.load(str(root), "train", image_size=6))
    assert x.shape == (3, 6, 6, 3) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1


def test_a_recipe_trains_on_an_image_folder(folder, tmp_path):
    from vae_zoo.drivers import cli

    recipe = recipes.load("mnist_cvae", [f"data.dataset={folder}", "data.image_size=4",
                                         "model.num_classes=2"])
    assert recipes.input_shape(recipe) == (4, 4, 1)
    train, test = recipes.build_datasets(recipe)
    x, y = next(iter(train))
    assert x.shape == (11, 4, 4, 1) and y.shape == (11,)
    assert cli.main(["train", "mnist_dense", "--set", f"data.dataset={folder}",
                     "--set", "train.epochs=1", "--set", "model.hidden_units=[8]",
                     "--set", "model.latent_dim=2", "--set", "evaluate.num_samples=0",
                     "--set", "output.diagnostics=false", "--set", "output.images_every=0",
                     "--set", "output.grid_size=4", "--set", "data.cache_budget_mb=0",
                     "--output", str(tmp_path / "run"), "--quiet"]) == 0


# --------------------------------------------------------------------------- #
# Array files
# --------------------------------------------------------------------------- #


def test_npz_key_rules_and_test_splits(tmp_path):
    x = DIGITS[..., 0]
    y = np.arange(20) % 4
    path = tmp_path / "split.npz"
    np.savez(path, x_train=x[:15], y_train=y[:15], x_test=x[15:], y_test=y[15:])
    xt, yt = data.load_arrays(str(path), "test")
    np.testing.assert_allclose(xt[..., 0], x[15:] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(yt, y[15:])
    assert data.load_arrays(str(path), "train")[0].shape == (15, 8, 8, 1)

    path = tmp_path / "xy.npz"
    np.savez(path, y=y, x=x)
    xt, yt = data.load_arrays(str(path), "test")  # held out: examples 9 and 19
    np.testing.assert_array_equal(yt, y[[9, 19]])
    assert data.entry(str(path)).num_classes == 4

    path = tmp_path / "first.npz"  # the first array of image rank, labels "labels"
    np.savez(path, names=np.arange(3), images=DIGITS / np.float32(255), labels=y)
    xb, yb = _epoch(data.load(str(path), "train", with_labels=True, shuffle=False))
    assert xb.shape == (18, 8, 8, 1) and yb.shape == (18,)
    assert data.load_arrays(str(path), "train", image_key="images", label_key=None)[1] is None
    assert data.input_shape_of(str(path), 4) == (4, 4, 1)

    path = tmp_path / "only.npy"
    np.save(path, np.repeat(DIGITS, 3, axis=-1))
    assert data.input_shape_of(str(path)) == (8, 8, 3) and not data.has_labels(str(path))
    xb = _epoch(data.load(str(path), "test", binarize="static"))
    assert xb.shape == (2, 8, 8, 3) and set(np.unique(xb)) <= {0.0, 1.0}
    recipe = recipes.load("mnist_dense", [f"data.dataset={path}"])
    assert recipes.input_shape(recipe) == (8, 8, 3)


# --------------------------------------------------------------------------- #
# Bad data: one line naming the file
# --------------------------------------------------------------------------- #


def _message(name, **kwargs):
    with pytest.raises(ValueError) as info:
        data.input_shape_of(name, **kwargs)
    return str(info.value)


def test_bad_data_gets_one_line_naming_the_file(tmp_path, folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _message(str(empty)) == f"{empty}: no .png, .jpg or .jpeg images in this folder"
    assert _message(str(tmp_path / "nothing.npz")) == f"{tmp_path / 'nothing.npz'}: no such file or folder"

    (folder / "b" / "10.png").write_bytes(b"\x89PNG not really")
    assert _message(str(folder)) == (
        f"{folder / 'b' / '10.png'}: not a readable PNG or JPEG image (cannot identify image "
        f"file '{folder / 'b' / '10.png'}')")
    _png(folder / "b" / "10.png", np.repeat(DIGITS[10], 3, axis=-1))
    assert _message(str(folder)) == (
        f"{folder / 'b' / '10.png'}: a colour (3 channels) image among grey (1 channel) images "
        f"(e.g. {folder / 'a' / '00.png'}); all images of a folder must be grey or all colour")
    _png(folder / "b" / "10.png", DIGITS[10, :6])
    assert _message(str(folder)) == (
        f"{folder / 'b' / '10.png'}: a 6x8 image among 8x8 images (e.g. "
        f"{folder / 'a' / '00.png'}); set image_size (data.image_size) to resize them all")
    assert data.input_shape_of(str(folder), 5) == (5, 5, 1)

    path = tmp_path / "tabular.npz"
    np.savez(path, features=np.zeros((4, 3)), y=np.arange(4))
    assert _message(str(path)) == (
        f"{path}: no array of images (rank 3 [N, H, W] or 4 [N, H, W, C]) in this file; "
        "arrays: features [4, 3], y [4]")
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip")
    assert _message(str(path)).startswith(f"{path}: not a readable .npz file (")
    path = tmp_path / "range.npy"
    np.save(path, np.full((3, 4, 4), 2.0))
    with pytest.raises(ValueError) as info:
        data.load(str(path))
    assert str(info.value) == (
        f"{path}: float x must lie in [0, 1], got values in [2, 2]; scale it first (uint8 "
        "input is divided by 255 automatically).")
    # the recipe says the same line
    with pytest.raises(recipes.RecipeError) as info:
        recipes.load("mnist_dense", [f"data.dataset={empty}"])
    assert str(info.value) == f"{empty}: no .png, .jpg or .jpeg images in this folder"
