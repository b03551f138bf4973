"""Tests for `vae_zoo.data` (offline: TFDS is exercised through mock data)."""

import numpy as np
import pytest
import tensorflow as tf

from vae_zoo import data


def _epoch(ds):
    """All batches of one pass, concatenated per component."""
    batches = list(ds.as_numpy_iterator())
    if isinstance(batches[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*batches))
    return np.concatenate(batches)


# --------------------------------------------------------------------------- #
# Embedded sample
# --------------------------------------------------------------------------- #


def test_load_embedded_mnist_shapes_and_dtypes():
    arrays = data.load_embedded_mnist()
    expected = {
        "x_train": (5000, 28, 28),
        "y_train": (5000,),
        "x_test": (1000, 28, 28),
        "y_test": (1000,),
    }
    assert set(arrays) == set(expected)
    for key, shape in expected.items():
        assert arrays[key].shape == shape
        assert arrays[key].dtype == np.uint8
    assert arrays["x_train"].max() > 200
    assert set(np.unique(arrays["y_test"])) <= set(range(10))


def test_load_mnist_sample_test_split():
    ds = data.load("mnist_sample", "test", batch_size=250)
    x = next(iter(ds))
    assert x.shape == (250, 28, 28, 1)
    assert x.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert float(tf.reduce_max(x)) > 0.5
    # The test split is not shuffled by default: first batch = first images.
    expected = data.load_embedded_mnist()["x_test"][:250, :, :, None] / 255.0
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)


def test_load_mnist_sample_with_labels():
    ds = data.load("mnist_sample", "test", batch_size=500, with_labels=True)
    x, y = _epoch(ds)
    assert x.shape == (1000, 28, 28, 1) and y.shape == (1000,)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, data.load_embedded_mnist()["y_test"])


def test_load_arrays_and_input_shape():
    x, y = data.load_arrays("mnist_sample", "test")
    assert x.shape == (1000, 28, 28, 1) and x.dtype == np.float32
    assert y.dtype == np.int64
    x16, _ = data.load_arrays("mnist_sample", "test", image_size=16)
    assert x16.shape == (1000, 16, 16, 1)
    assert data.input_shape_of("mnist_sample") == (28, 28, 1)
    assert data.input_shape_of("mnist") == (28, 28, 1)
    assert data.input_shape_of("cifar10") == (32, 32, 3)
    assert data.input_shape_of("celeb_a") == (64, 64, 3)
    assert data.input_shape_of("celeb_a", image_size=32) == (32, 32, 3)


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="Unknown dataset 'svhn'.*mnist_sample"):
        data.load("svhn")
    with pytest.raises(ValueError, match="Unknown split"):
        data.load("mnist_sample", "validation")


# --------------------------------------------------------------------------- #
# TFDS names (mocked)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize(
    "name, shape, labels",
    [
        ("mnist", (28, 28, 1), True),
        ("fashion_mnist", (28, 28, 1), True),
        ("binarized_mnist", (28, 28, 1), False),
        ("cifar10", (32, 32, 3), True),
        ("celeb_a", (64, 64, 3), False),
    ],
)
def test_tfds_names_offline(tfds, name, shape, labels):
    with tfds.testing.mock_data(num_examples=6):
        ds = data.load(name, "train", batch_size=4, seed=0, with_labels=labels)
        element = _epoch(ds)
    x, y = element if labels else (element, None)
    assert x.shape == (6,) + shape
    assert x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert data.input_shape_of(name) == shape
    if labels:
        assert y.shape == (6,) and y.dtype == np.int64
    if name == "binarized_mnist":
        assert set(np.unique(x)) <= {0.0, 1.0}


def test_tfds_binarized_mnist_real_encoding(tfds):
    # The real dataset stores pixels as {0, 1}; they must map to {0., 1.}.
    with tfds.testing.mock_data(num_examples=4, max_value=2):
        x = _epoch(data.load("binarized_mnist", "test", batch_size=4))
    assert set(np.unique(x)) == {0.0, 1.0}


def test_tfds_celeb_a_image_size_and_no_labels(tfds):
    with tfds.testing.mock_data(num_examples=3):
        x = next(iter(data.load("celeb_a", "validation", image_size=32)))
        assert x.shape == (3, 32, 32, 3)
        with pytest.raises(ValueError, match="no class labels"):
            data.load("celeb_a", with_labels=True)


def test_tfds_load_arrays_and_binarize(tfds):
    with tfds.testing.mock_data(num_examples=5):
        x, y = data.load_arrays("cifar10", "test")
        assert x.shape == (5, 32, 32, 3) and x.dtype == np.float32 and y.shape == (5,)
        x, y = data.load_arrays("binarized_mnist", "test")
        assert y is None
        for mode in ("dynamic", "static"):
            xb = _epoch(data.load("mnist", "train", binarize=mode, seed=1))
            assert set(np.unique(xb)) <= {0.0, 1.0}


def test_tfds_failure_is_runtime_error(tfds, monkeypatch):
    def fail(*args, **kwargs):
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(tfds, "load", fail)
    with pytest.raises(RuntimeError, match="'mnist'.*data_dir.*mnist_sample") as info:
        data.load("mnist")
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- #
# make_dataset: shuffling and binarization
# --------------------------------------------------------------------------- #


def _indexed(n=64):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 4, 4), dtype=np.uint8)
    return x, np.arange(n)


def test_make_dataset_shapes():
    x, y = _indexed()
    xb, yb = next(iter(data.make_dataset(x, y, batch_size=10, shuffle=False)))
    assert xb.shape == (10, 4, 4, 1) and xb.dtype == tf.float32
    np.testing.assert_allclose(xb.numpy()[..., 0], x[:10] / 255.0, atol=1e-6)
    assert yb.dtype == tf.int64
    ds = data.make_dataset(x, batch_size=10, drop_remainder=True, shuffle=False)
    assert [b.shape[0] for b in ds] == [10] * 6
    xrgb = np.zeros((5, 3, 3, 3), np.uint8)
    assert next(iter(data.make_dataset(xrgb, batch_size=5))).shape == (5, 3, 3, 3)


def test_reshuffle_each_epoch_and_reproducible():
    x, y = _indexed()
    ds = data.make_dataset(x, y, batch_size=16, seed=7)
    _, order1 = _epoch(ds)
    _, order2 = _epoch(ds)
    assert not np.array_equal(order1, order2)
    np.testing.assert_array_equal(np.sort(order1), y)
    np.testing.assert_array_equal(np.sort(order2), y)
    _, again = _epoch(data.make_dataset(x, y, batch_size=16, seed=7))
    np.testing.assert_array_equal(again, order1)
    # Images stay paired with their labels.
    xs, ys = _epoch(ds)
    np.testing.assert_allclose(xs[..., 0], x[ys] / 255.0, atol=1e-6)


def test_repeat_reshuffles():
    x, y = _indexed(32)
    ds = data.make_dataset(x, y, batch_size=32, seed=3, repeat=True)
    (_, a), (_, b) = list(ds.take(2).as_numpy_iterator())
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(np.sort(a), np.sort(b))


def test_dynamic_binarization():
    probs = np.linspace(0.0, 1.0, 8, dtype=np.float32)
    x = np.tile(probs, (32, 1))  # tabular [32, 8]
    ds = data.make_dataset(x, batch_size=32, shuffle=False, binarize="dynamic", seed=5)
    first, second = _epoch(ds), _epoch(ds)
    assert set(np.unique(first)) <= {0.0, 1.0}
    assert not np.array_equal(first, second)
    # Same seed, fresh dataset: same first draw.
    fresh = data.make_dataset(x, batch_size=32, shuffle=False, binarize="dynamic", seed=5)
    np.testing.assert_array_equal(_epoch(fresh), first)
    # The empirical mean approaches the pixel probabilities.
    draws = np.stack([first, second] + [_epoch(ds) for _ in range(18)])
    mean = draws.mean(axis=(0, 1))
    np.testing.assert_allclose(mean, probs, atol=0.08)
    assert mean[0] == 0.0 and mean[-1] == 1.0


def test_static_binarization_fixed():
    x, _ = _indexed()
    ds = data.make_dataset(x, batch_size=64, shuffle=False, binarize="static")
    first, second = _epoch(ds), _epoch(ds)
    assert set(np.unique(first)) == {0.0, 1.0}
    np.testing.assert_array_equal(first, second)
    other = data.make_dataset(x, batch_size=64, shuffle=False, binarize="static", seed=1)
    assert not np.array_equal(_epoch(other), first)


def test_tabular_float_and_tensor_input():
    x = np.random.default_rng(1).random((20, 5))  # float64 [N, D]
    batches = list(data.make_dataset(x, batch_size=8, shuffle=False))
    assert [tuple(b.shape) for b in batches] == [(8, 5), (8, 5), (4, 5)]
    assert batches[0].dtype == tf.float32
    np.testing.assert_allclose(np.concatenate(batches), x, rtol=1e-6)
    xb = next(iter(data.make_dataset(tf.constant(x, tf.float32), batch_size=20)))
    assert xb.shape == (20, 5)


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        (np.zeros((0, 4), np.float32), None, {}, "empty"),
        (np.array([[0.5, np.nan]]), None, {}, "NaN or inf"),
        (np.array([[0.5, np.inf]]), None, {}, "NaN or inf"),
        (np.array([[0.5, 1.5]]), None, {}, r"\[0, 1\]"),
        (np.array([[-0.1, 0.5]]), None, {}, r"\[0, 1\]"),
        (np.zeros((2, 4), np.int32), None, {}, "Unsupported x dtype"),
        (np.zeros((3, 4), np.uint8), np.arange(2), {}, r"len\(y\)"),
        (np.zeros((3, 4), np.uint8), None, {"binarize": "otsu"}, "binarize mode"),
        (np.zeros((3, 4), np.uint8), None, {"batch_size": 0}, "batch_size"),
        (np.zeros((3,), np.uint8), None, {}, "shape"),
    ],
)
def test_make_dataset_validation(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.make_dataset(x, y, **kwargs)


def test_load_validation():
    with pytest.raises(ValueError, match="binarize mode"):
        data.load("mnist_sample", binarize="yes")
    with pytest.raises(ValueError, match="batch_size"):
        data.load("mnist_sample", batch_size=0)
    with pytest.raises(ValueError, match="no class labels"):
        data.load("binarized_mnist", with_labels=True)


def test_a_registered_dataset_entry_is_a_name_everywhere():
    """One `register(DatasetEntry(...))` makes a name that `data` and recipes accept;
    a name cannot be registered twice with different entries."""
    from vae_zoo import recipes

    entry = data.DatasetEntry("test_registry_digits", (28, 28, 1), has_labels=True,
                              tfds_name="mnist")
    data.register(entry)
    data.register(entry)  # the same entry again: fine
    assert data.entry("test_registry_digits") is entry and "test_registry_digits" in data.names()
    assert data.input_shape_of("test_registry_digits", 14) == (14, 14, 1)
    assert data.has_labels("test_registry_digits")
    recipe = recipes.load("mnist_dense", ["data.dataset=test_registry_digits"])
    assert recipe["data"]["dataset"] == "test_registry_digits"
    with pytest.raises(ValueError, match="already registered"):
        data.register(data.DatasetEntry("test_registry_digits", (32, 32, 3), has_labels=False))
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_set'"):
        data.entry("no_such_set")
