"""Datasets by name: a registry of entries, each saying where its examples come from.

`DATASETS` are the registered names: the embedded `"mnist_sample"` (6,000 real MNIST
digits shipped with the package, no network needed) and TensorFlow Datasets (TFDS)
names. A `DatasetEntry` holds what the pipeline needs to know of one dataset (its
image shape, whether it has labels, its TFDS name and preprocessing); adding a
dataset is one `register(DatasetEntry(...))`, with no table elsewhere to edit.

`load` reads a named dataset through the shared pipeline (`vae_zoo.data.pipeline`);
`load_arrays` reads a whole split into memory.

Example:

```python
from vae_zoo import data

train = data.load("mnist_sample", "train", batch_size=64, binarize="dynamic", seed=1)
x = next(iter(train))  # float32 [64, 28, 28, 1], values in {0., 1.}
```
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import io

import numpy as np
import tensorflow as tf

from vae_zoo.data.pipeline import (
    batched_pipeline,
    check_batch_size,
    check_binarize,
    check_image_size,
    make_dataset,
    static_binarize_dataset,
)

_EMBEDDED_FILE = "mnist_sample.npz"
_EMBEDDED_SPLITS = ("train", "test")
_EMBEDDED_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Examples per batch when preprocessing TFDS images vectorised (before the
# cache), e.g. the celeb_a crop and resize.
_PREPROCESS_BATCH = 256


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """One named dataset.

    Attributes:
        name: the name recipes and `load` use.
        image_shape: `(H, W, C)` of one image as `load` gives it by default (after
            the entry's own crop and resize).
        has_labels: whether examples carry an integer class label.
        tfds_name: the TFDS builder name, or None for the embedded sample.
        binary: images stored as {0, 1} (mapped to {0, 255}; resized by nearest).
        center_crop: crop to a square before resizing (celeb_a).
    """

    name: str
    image_shape: tuple
    has_labels: bool
    tfds_name: str | None = None
    binary: bool = False
    center_crop: bool = False

    @property
    def in_memory(self) -> bool:
        """Whether the whole dataset lives in memory (the embedded sample)."""
        return self.tfds_name is None


_ENTRIES: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    """Add a dataset to the registry (its name must be new)."""
    if entry.name in _ENTRIES and _ENTRIES[entry.name] != entry:
        raise ValueError(f"dataset {entry.name!r} is already registered")
    _ENTRIES[entry.name] = entry
    return entry


register(DatasetEntry("mnist_sample", (28, 28, 1), has_labels=True))
register(DatasetEntry("mnist", (28, 28, 1), has_labels=True, tfds_name="mnist"))
register(DatasetEntry("fashion_mnist", (28, 28, 1), has_labels=True, tfds_name="fashion_mnist"))
register(DatasetEntry("binarized_mnist", (28, 28, 1), has_labels=False,
                      tfds_name="binarized_mnist", binary=True))
register(DatasetEntry("cifar10", (32, 32, 3), has_labels=True, tfds_name="cifar10"))
register(DatasetEntry("celeb_a", (64, 64, 3), has_labels=False, tfds_name="celeb_a",
                      center_crop=True))


def names() -> tuple:
    """The registered dataset names, in registration order."""
    return tuple(_ENTRIES)


def entry(name) -> DatasetEntry:
    """The registry entry of dataset `name` (ValueError for an unknown name)."""
    if name not in _ENTRIES:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {names()}.")
    return _ENTRIES[name]


def load_embedded_mnist():
    """Load the embedded MNIST sample.

    Returns:
        A dict of four uint8 numpy arrays: `"x_train"` `[5000, 28, 28]`,
        `"y_train"` `[5000]`, `"x_test"` `[1000, 28, 28]` and `"y_test"`
        `[1000]`. See `vae_zoo/datasets/README.md` for the attribution.
    """
    resource = importlib.resources.files("vae_zoo.datasets").joinpath(_EMBEDDED_FILE)
    with io.BytesIO(resource.read_bytes()) as buffer:
        with np.load(buffer) as npz:
            return {key: np.asarray(npz[key]) for key in _EMBEDDED_KEYS}


def has_labels(name):
    """Whether dataset `name` has class labels (`load(..., with_labels=True)` works)."""
    return entry(name).has_labels


def input_shape_of(name, image_size=None):
    """Return the shape `(H, W, C)` of one image of dataset `name`.

    Args:
        name: one of `DATASETS`.
        image_size: optional int; images resized to `image_size x image_size`.

    Returns:
        A tuple, e.g. `(28, 28, 1)` for `"mnist"`, `(64, 64, 3)` for
        `"celeb_a"`.
    """
    image_size = check_image_size(image_size)
    height, width, channels = entry(name).image_shape
    if image_size is not None:
        height = width = image_size
    return (height, width, channels)


def load_arrays(name, split="train", image_size=None, *, data_dir=None):
    """Load a whole split into memory as numpy arrays.

    Rarely needed: prefer `load`, which streams batches.

    Args:
        name: one of `DATASETS`.
        split: split name. `"train"` or `"test"` for `"mnist_sample"`; any
            TFDS split string (e.g. `"train[:90%]"`) for the others.
        image_size: optional int; resize images to `image_size x image_size`
            (celeb_a is center-cropped to a square first; default 64).
        data_dir: optional TFDS data directory.

    Returns:
        `(x, y)`: `x` float32 `[N, H, W, C]` in `[0, 1]`; `y` int64 `[N]`, or
        `None` for datasets without class labels (binarized_mnist, celeb_a).
    """
    source = entry(name)
    image_size = check_image_size(image_size)
    if source.in_memory:
        x, y = _embedded_split(split, image_size)
        return x.astype(np.float32) / np.float32(255.0), y

    with_labels = source.has_labels
    ds, _ = _tfds_examples(source, split, with_labels, image_size, data_dir)
    xs, ys = [], []
    for element in ds.batch(4096).as_numpy_iterator():
        if with_labels:
            xs.append(element[0])
            ys.append(element[1])
        else:
            xs.append(element)
    channels = source.image_shape[2]
    shape = input_shape_of(name, image_size)
    x = np.concatenate(xs) if xs else np.zeros((0,) + shape, np.uint8)
    x = x.reshape((-1, shape[0], shape[1], channels))
    x = x.astype(np.float32) / np.float32(255.0)
    if not with_labels:
        return x, None
    y = np.concatenate(ys).astype(np.int64) if ys else np.zeros((0,), np.int64)
    return x, y


def load(
    name,
    split="train",
    *,
    batch_size=128,
    shuffle=None,
    binarize="none",
    seed=None,
    with_labels=False,
    image_size=None,
    data_dir=None,
    drop_remainder=False,
    repeat=False,
):
    """Load a named dataset as a batched `tf.data.Dataset`.

    `"mnist_sample"` is embedded in the package (splits `"train"` and
    `"test"`); the other names in `DATASETS` are read with
    `tfds.load(name, split=split, data_dir=data_dir)`, so they must be
    downloadable or already prepared under `data_dir`.

    Args:
        name: one of `DATASETS`.
        split: split name, e.g. `"train"`, `"test"`, `"validation"` or a
            TFDS slice such as `"train[:90%]"`.
        batch_size: examples per batch, at least 1.
        shuffle: shuffle with a new order every epoch. Defaults to True for
            splits starting with `"train"`, False otherwise.
        binarize: one of `BINARIZE_MODES` (see `make_dataset`).
        seed: optional int making shuffling and binarization reproducible.
        with_labels: yield `(x, y)` pairs with int64 labels `[B]`. Not
            available for `"binarized_mnist"` and `"celeb_a"`.
        image_size: optional int; resize images to `image_size x image_size`
            (celeb_a is center-cropped to a square first; default 64).
        data_dir: optional TFDS data directory.
        drop_remainder: drop the last, smaller batch.
        repeat: repeat indefinitely (reshuffling each epoch).

    Returns:
        A `tf.data.Dataset` of float32 `[B, H, W, C]` batches in `[0, 1]`
        (shape given by `input_shape_of(name, image_size)`), or `(x, y)`
        pairs when `with_labels` is True.
    """
    source = entry(name)
    image_size = check_image_size(image_size)
    check_binarize(binarize)
    check_batch_size(batch_size)
    if with_labels and not source.has_labels:
        raise ValueError(
            f"Dataset {name!r} has no class labels; use with_labels=False."
        )
    if shuffle is None:
        shuffle = str(split).startswith("train")

    if source.in_memory:
        x, y = _embedded_split(split, image_size)
        return make_dataset(
            x,
            y if with_labels else None,
            batch_size=batch_size,
            shuffle=shuffle,
            binarize=binarize,
            seed=seed,
            drop_remainder=drop_remainder,
            repeat=repeat,
        )

    ds, num_examples = _tfds_examples(source, split, with_labels, image_size, data_dir)
    if binarize == "static":
        ds = static_binarize_dataset(ds, with_labels, 0 if seed is None else seed)
    return batched_pipeline(
        ds,
        num_examples=num_examples,
        batch_size=batch_size,
        shuffle=shuffle,
        binarize=binarize,
        seed=seed,
        drop_remainder=drop_remainder,
        cache=True,
        repeat=repeat,
        prefetch=True,
    )


def _embedded_split(split, image_size=None):
    """uint8 images `[N, H, W, 1]` and int64 labels `[N]` of the embedded sample."""
    if split not in _EMBEDDED_SPLITS:
        raise ValueError(
            f"Unknown split {split!r} for 'mnist_sample'; expected one of {_EMBEDDED_SPLITS}."
        )
    arrays = load_embedded_mnist()
    x = arrays[f"x_{split}"][..., np.newaxis]
    if image_size is not None and image_size != x.shape[1]:
        x = resize_uint8(tf.constant(x), image_size, "bilinear").numpy()
    return x, arrays[f"y_{split}"].astype(np.int64)


def _tfds_examples(entry, split, with_labels, image_size, data_dir):
    """Read a TFDS split as unbatched uint8 images `[H, W, C]` (and labels).

    Returns `(ds, num_examples)`; `num_examples` may be None if unknown.
    """
    import tensorflow_datasets as tfds

    try:
        raw = tfds.load(entry.tfds_name, split=split, data_dir=data_dir)
    except Exception as err:  # noqa: BLE001 - re-raised with context below
        detail = str(err).strip().splitlines()
        detail = f"{type(err).__name__}: {detail[0][:200]}" if detail else type(err).__name__
        raise RuntimeError(
            f"Could not load TFDS dataset {entry.tfds_name!r} (split {split!r}) [{detail}]; "
            f"prepare it under a local TFDS directory and pass data_dir=..., "
            f"or use the embedded 'mnist_sample' dataset which needs no download."
        ) from err

    cardinality = int(raw.cardinality())
    num_examples = cardinality if cardinality >= 0 else None

    def pick(example):
        image = example["image"]
        if entry.binary:
            # Stored as {0, 1}; map to {0, 255} so the shared /255 scaling works.
            image = tf.where(image > 0, tf.constant(255, tf.uint8), tf.constant(0, tf.uint8))
        if with_labels:
            return image, tf.cast(example["label"], tf.int64)
        return image

    ds = raw.map(pick, num_parallel_calls=tf.data.AUTOTUNE)

    native = entry.image_shape[0]
    target = image_size if image_size is not None else native
    crop = entry.center_crop
    if crop or target != native:
        method = "nearest" if entry.binary else "bilinear"

        def resize(*element):
            images = element[0]
            if crop:
                images = _center_crop_square(images)
            images = resize_uint8(images, target, method)
            return images if len(element) == 1 else (images,) + tuple(element[1:])

        ds = (
            ds.batch(_PREPROCESS_BATCH)
            .map(resize, num_parallel_calls=tf.data.AUTOTUNE)
            .unbatch()
        )
        if num_examples is not None:
            ds = ds.apply(tf.data.experimental.assert_cardinality(num_examples))
    return ds, num_examples


def _center_crop_square(images):
    """Center-crop a batch `[B, H, W, C]` to `[B, S, S, C]`, `S = min(H, W)`."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    size = tf.minimum(height, width)
    top = (height - size) // 2
    left = (width - size) // 2
    return images[:, top : top + size, left : left + size, :]


def resize_uint8(images, size, method):
    """Resize uint8 images (`[B, H, W, C]`) to `size x size`, keeping uint8."""
    resized = tf.image.resize(
        images, (size, size), method=method, antialias=(method == "bilinear")
    )
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


