"""Datasets by name: a registry of entries, each saying where its examples come from.

`DATASETS` are the registered names: the embedded `"mnist_sample"` (6,000 real MNIST
digits shipped with the package, no network needed), `"dsprites_synthetic"` (a
dSprites-like grid of 737,280 shapes with known factors, drawn by code on demand:
`vae_zoo.data.dsprites`) and TensorFlow Datasets (TFDS) names. A `DatasetEntry` holds what the pipeline needs to know of one dataset (its
image shape, whether it has labels, its TFDS name and preprocessing); adding a
dataset is one `register(DatasetEntry(...))`, with no table elsewhere to edit.

Besides the registered names, `load` and the functions taking a dataset name accept
any TFDS name (features found in the builder's info: the `Image` feature, preferably
`"image"`, and the `ClassLabel` feature, preferably `"label"`, unless `image_key` /
`label_key` name them), a prepared TFDS folder (one holding `dataset_info.json`, read
without its builder class), a folder of PNG/JPEG images or an `.npz`/`.npy` file (see
`vae_zoo.data.own` for their rules). A name is a path when it ends in .npz/.npy,
begins with `/`, `.` or `~`, or names an existing file or folder.

`load` reads a dataset through the shared pipeline (`vae_zoo.data.pipeline`);
`load_arrays` reads a whole split into memory. Folders and TFDS datasets whose decoded
images exceed `cache_budget_mb` (default `CACHE_BUDGET_MB`) stream from disk on every
pass (the file order shuffled for folders, a shuffle buffer for TFDS) instead of being
cached in memory.

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
import os

import numpy as np
import tensorflow as tf

from vae_zoo.data import dsprites, own
from vae_zoo.data.pipeline import (
    CACHE_BUDGET_MB,
    batched_pipeline,
    check_batch_size,
    check_binarize,
    check_image_size,
    crop_resize_image,
    fits_cache,
    make_dataset,
    static_binarize_dataset,
    stream_shuffle_buffer,
)
from vae_zoo.fields import closest, did_you_mean

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
        path: the image folder, array file or prepared TFDS folder it reads, if any.
        image_key: the TFDS feature (or array of an .npz file) holding the images.
        label_key: the TFDS feature (or array) holding the labels.
        num_classes: the number of classes, when known.
        generator: for a dataset drawn by code, the object that draws it: its
            `split_size(split)`, `arrays(split, image_size)` and `examples(split,
            with_labels=, image_size=, shuffle=, seed=)` (as `dsprites.DSprites`).
    """

    name: str
    image_shape: tuple
    has_labels: bool
    tfds_name: str | None = None
    binary: bool = False
    center_crop: bool = False
    path: str | None = None
    image_key: str | None = "image"
    label_key: str | None = "label"
    num_classes: int | None = None
    generator: object = None

    @property
    def in_memory(self) -> bool:
        """Whether the whole dataset lives in memory (the embedded sample)."""
        return self.tfds_name is None and self.path is None and self.generator is None

    @property
    def kind(self) -> str:
        """"embedded", "generated", "tfds", "tfds_folder", "folder" or "arrays"."""
        if self.tfds_name is not None:
            return "tfds" if self.path is None else "tfds_folder"
        if self.generator is not None:
            return "generated"
        if self.path is None:
            return "embedded"
        return "arrays" if self.path.lower().endswith(own.ARRAY_SUFFIXES) else "folder"


class UnknownDataset(ValueError):
    """A dataset name that is neither registered, nor a TFDS name, nor a path."""

    def __init__(self, name, suggestion=None):
        self.name, self.suggestion = name, suggestion
        super().__init__(
            f"Unknown dataset {name!r}; expected one of {names()}, a TFDS dataset name, "
            f"an image folder or an .npz/.npy file{did_you_mean(suggestion)}."
        )


_ENTRIES: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    """Add a dataset to the registry (its name must be new)."""
    if entry.name in _ENTRIES and _ENTRIES[entry.name] != entry:
        raise ValueError(f"dataset {entry.name!r} is already registered")
    _ENTRIES[entry.name] = entry
    return entry


register(DatasetEntry("mnist_sample", (28, 28, 1), has_labels=True))
register(DatasetEntry("dsprites_synthetic", dsprites.DSPRITES.image_shape, has_labels=True,
                      num_classes=len(dsprites.SHAPES), generator=dsprites.DSPRITES))
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


# Entries of names that are not registered, by (name, data_dir, image_key, label_key);
# and the last one resolved for each name.
_RESOLVED: dict = {}
_LAST: dict = {}


def entry(name, *, data_dir=None, image_key=None, label_key=None) -> DatasetEntry:
    """The entry of dataset `name`: registered, or resolved from a TFDS name, a
    prepared TFDS folder, an image folder or an array file (ValueError, one line, for
    an unknown name or bad data; `UnknownDataset` for a name that is nothing).

    `data_dir` is the TFDS data directory; `image_key` / `label_key` name the image
    and label features of a TFDS dataset, or arrays of an .npz file.
    """
    keys = (image_key, label_key)
    if name in _ENTRIES:
        if keys != (None, None) and _ENTRIES[name].tfds_name is None:
            raise ValueError(f"image_key and label_key do not apply to dataset {name!r}")
        if keys == (None, None):
            return _ENTRIES[name]
        name = _ENTRIES[name].tfds_name
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise UnknownDataset(name)
    if data_dir is None and keys == (None, None) and name in _LAST:
        return _LAST[name]
    cache_key = (str(name), data_dir, image_key, label_key)
    if cache_key not in _RESOLVED:
        _RESOLVED[cache_key] = _resolve(name, data_dir, image_key, label_key)
    _LAST[name] = _RESOLVED[cache_key]
    return _RESOLVED[cache_key]


def _resolve(name, data_dir, image_key, label_key):
    if not own.is_path(name):
        return _tfds_entry(str(name), data_dir, image_key, label_key)
    path = own.resolve_path(name)
    builder_dir = own.is_tfds_folder(path)
    if builder_dir is not None:
        return _tfds_entry(str(name), None, image_key, label_key, builder_dir)
    if path.suffix.lower() in own.ARRAY_SUFFIXES and path.is_file():
        shape, labelled, classes = own.array_info(path, None, image_key, label_key)
        return DatasetEntry(str(name), shape, labelled, path=str(path), image_key=image_key,
                            label_key=label_key, num_classes=classes or None)
    if (image_key, label_key) != (None, None):
        raise ValueError(f"{path}: image_key and label_key name arrays of an .npz file or "
                         "features of a TFDS dataset, not images of a folder")
    folder = own.scan_folder(path, need_size=False)
    shape = (*(folder.size or (None, None)), folder.channels)
    return DatasetEntry(str(name), shape, folder.labels is not None, path=str(path),
                        image_key=None, label_key=None, num_classes=len(folder.classes) or None)


def _tfds_entry(name, data_dir, image_key, label_key, builder_dir=None):
    """A TFDS dataset's entry, its image and label features from the builder's info."""
    import tensorflow_datasets as tfds

    try:
        if builder_dir is not None:
            builder = tfds.builder_from_directory(str(builder_dir))
        else:
            builder = tfds.builder(name, data_dir=data_dir)
        features = builder.info.features
    except tfds.core.DatasetNotFoundError:
        raise UnknownDataset(name, _suggest_tfds(name, data_dir)) from None
    except Exception as err:  # noqa: BLE001 - one line, the cause named
        raise RuntimeError(_tfds_failure(name, None, err)) from err
    where = f"TFDS dataset {builder.name!r}" if builder_dir is None else str(builder_dir)
    items = dict(features.items())
    listing = ", ".join(f"{k} ({type(v).__name__})" for k, v in items.items())

    def pick(key, kinds, preferred, what, setting):
        if key is not None:
            if key not in items:
                raise ValueError(f"{where}: no feature {key!r} (features: {listing})")
            if not isinstance(items[key], kinds):
                raise ValueError(f"{where}: feature {key!r} is a {type(items[key]).__name__}, "
                                 f"not {what}")
            return key
        found = [k for k, v in items.items() if isinstance(v, kinds)]
        if preferred in found or not found:
            return preferred if preferred in found else None
        if len(found) > 1:
            raise ValueError(f"{where}: several {what} features ({', '.join(found)}); set "
                             f"{setting} to one")
        return found[0]

    image_key = pick(image_key, tfds.features.Image, "image", "an image (Image)",
                     "image_key (data.image_key)")
    if image_key is None:
        raise ValueError(f"{where}: no image (Image) feature (features: {listing}); set "
                         "image_key (data.image_key)")
    label_key = pick(label_key, tfds.features.ClassLabel, "label", "a label (ClassLabel)",
                     "label_key (data.label_key)")
    shape = tuple(items[image_key].shape)
    if shape[-1] not in (1, 3):
        raise ValueError(f"{where}: images {image_key!r} of shape {shape}; expected 1 (grey) "
                         "or 3 (RGB) channels")
    num_classes = items[label_key].num_classes if label_key else None
    return DatasetEntry(
        name, shape, label_key is not None, tfds_name=builder.name,
        path=None if builder_dir is None else str(builder_dir),
        image_key=image_key, label_key=label_key, num_classes=num_classes,
    )


def _suggest_tfds(name, data_dir):
    import tensorflow_datasets as tfds

    options = list(names()) + list(tfds.list_builders(with_community_datasets=False))
    for folder in (data_dir, os.environ.get("TFDS_DATA_DIR")):
        if folder and os.path.isdir(folder):
            options += [p for p in os.listdir(folder) if not p.startswith(".")]
    return closest(name, options)


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


def has_labels(name, **options):
    """Whether dataset `name` has class labels (`load(..., with_labels=True)` works).
    `options`: `data_dir`, `image_key`, `label_key` as `entry` takes them."""
    return entry(name, **options).has_labels


def input_shape_of(name, image_size=None, **options):
    """Return the shape `(H, W, C)` of one image of dataset `name`.

    Args:
        name: one of `DATASETS`, a TFDS name, an image folder or an array file.
        image_size: optional int; images resized to `image_size x image_size`.
        **options: `data_dir`, `image_key`, `label_key` as `entry` takes them.

    Returns:
        A tuple, e.g. `(28, 28, 1)` for `"mnist"`, `(64, 64, 3)` for
        `"celeb_a"`.
    """
    return _shape_of(entry(name, **options), check_image_size(image_size))


def _shape_of(source, image_size):
    if source.kind == "folder":
        return own.folder_info(own.resolve_path(source.path), image_size)[0]
    height, width, channels = source.image_shape
    if image_size is not None:
        height = width = image_size
    if height is None or width is None:
        raise ValueError(f"{_where(source)}: images of varying size; set image_size "
                         "(data.image_size) to resize them all")
    return (height, width, channels)


def _where(source):
    return source.path or f"TFDS dataset {source.name!r}"


def load_arrays(name, split="train", image_size=None, *, data_dir=None, image_key=None,
                label_key=None):
    """Load a whole split into memory as numpy arrays.

    Rarely needed: prefer `load`, which streams batches.

    Args:
        name: as `load` takes it.
        split: split name. `"train"` or `"test"` for `"mnist_sample"`, image folders
            and array files (sliced as `"train[:90%]"` for the last two); any TFDS
            split string (e.g. `"train[:90%]"`) for TFDS datasets.
        image_size: optional int; resize images to `image_size x image_size`
            (celeb_a is center-cropped to a square first; default 64).
        data_dir: optional TFDS data directory.
        image_key, label_key: the image and label features (arrays) to read.

    Returns:
        `(x, y)`: `x` float32 `[N, H, W, C]` in `[0, 1]`; `y` int64 `[N]`, or
        `None` for datasets without class labels (binarized_mnist, celeb_a).
    """
    source = entry(name, data_dir=data_dir, image_key=image_key, label_key=label_key)
    image_size = check_image_size(image_size)
    if source.in_memory:
        x, y = _embedded_split(split, image_size)
        return x.astype(np.float32) / np.float32(255.0), y
    if source.kind == "arrays":
        x, y = own.array_split(own.resolve_path(source.path), split, image_size,
                               source.image_key, source.label_key)
        return (x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x), y
    if source.kind == "generated":
        x, y = source.generator.arrays(split, image_size)
        return x.astype(np.float32) / np.float32(255.0), y

    with_labels = source.has_labels
    ds, _, _ = _stream_examples(source, split, with_labels, image_size, data_dir)
    xs, ys = [], []
    for element in ds.batch(4096).as_numpy_iterator():
        if with_labels:
            xs.append(element[0])
            ys.append(element[1])
        else:
            xs.append(element)
    shape = _shape_of(source, image_size)
    x = np.concatenate(xs) if xs else np.zeros((0,) + shape, np.uint8)
    x = x.reshape((-1,) + shape)
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
    image_key=None,
    label_key=None,
    cache_budget_mb=None,
):
    """Load a dataset as a batched `tf.data.Dataset`.

    `"mnist_sample"` is embedded in the package (splits `"train"` and
    `"test"`); `"dsprites_synthetic"` is drawn on demand (splits `"train"`, 727,280
    images, and `"test"`, 10,000, sliced as `"train[:50000]"`; labels: the shape); the
    other names in `DATASETS`, and any other TFDS name, are read
    with `tfds.load(name, split=split, data_dir=data_dir)`, so they must be
    downloadable or already prepared under `data_dir`. A path reads a prepared
    TFDS folder, a folder of images or an .npz/.npy file (`vae_zoo.data.own`).

    Args:
        name: one of `DATASETS`, a TFDS name, or a path.
        split: split name, e.g. `"train"`, `"test"`, `"validation"` or a
            TFDS slice such as `"train[:90%]"` (folders and array files: `"train"`
            and `"test"`, sliced the same way).
        batch_size: examples per batch, at least 1.
        shuffle: shuffle with a new order every epoch. Defaults to True for
            splits starting with `"train"`, False otherwise.
        binarize: one of `BINARIZE_MODES` (see `make_dataset`).
        seed: optional int making shuffling and binarization reproducible.
        with_labels: yield `(x, y)` pairs with int64 labels `[B]`. Not
            available for datasets without labels (`"binarized_mnist"`,
            `"celeb_a"`, a folder without class subfolders, ...).
        image_size: optional int; resize images to `image_size x image_size`
            (celeb_a and your own images are center-cropped to a square first).
        data_dir: optional TFDS data directory.
        drop_remainder: drop the last, smaller batch.
        repeat: repeat indefinitely (reshuffling each epoch).
        image_key, label_key: the image and label features of a TFDS dataset, or
            arrays of an .npz file (default: found as `vae_zoo.data.own` says).
        cache_budget_mb: cache decoded examples in memory when they fit this many
            MiB (default `CACHE_BUDGET_MB`); larger folders and TFDS datasets stream
            from disk on every pass. 0 always streams.

    Returns:
        A `tf.data.Dataset` of float32 `[B, H, W, C]` batches in `[0, 1]`
        (shape given by `input_shape_of(name, image_size)`), or `(x, y)`
        pairs when `with_labels` is True.
    """
    source = entry(name, data_dir=data_dir, image_key=image_key, label_key=label_key)
    image_size = check_image_size(image_size)
    check_binarize(binarize)
    check_batch_size(batch_size)
    budget = CACHE_BUDGET_MB if cache_budget_mb is None else cache_budget_mb
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0:
        raise ValueError(f"cache_budget_mb must be a number >= 0, got {cache_budget_mb!r}.")
    if with_labels and not source.has_labels:
        raise ValueError(
            f"Dataset {name!r} has no class labels; use with_labels=False."
        )
    if shuffle is None:
        shuffle = str(split).startswith("train")

    if source.in_memory or source.kind == "arrays":
        if source.in_memory:
            x, y = _embedded_split(split, image_size)
        else:
            x, y = own.array_split(own.resolve_path(source.path), split, image_size,
                                   source.image_key, source.label_key)
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

    static_seed = (0 if seed is None else seed) if binarize == "static" else None
    ds, num_examples, cached = _stream_examples(
        source, split, with_labels, image_size, data_dir, shuffle=shuffle, seed=seed,
        budget_mb=budget, static_seed=static_seed,
    )
    if not cached and shuffle and source.kind not in ("folder", "generated"):
        ds = ds.shuffle(stream_shuffle_buffer(num_examples, _shape_of(source, image_size)), seed=seed,
                        reshuffle_each_iteration=True)
    return batched_pipeline(
        ds,
        num_examples=num_examples,
        batch_size=batch_size,
        shuffle=shuffle and cached,
        binarize=binarize,
        seed=seed,
        drop_remainder=drop_remainder,
        cache=cached,
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


def _stream_examples(source, split, with_labels, image_size, data_dir, *, shuffle=False,
                     seed=None, budget_mb=0, static_seed=None):
    """Unbatched uint8 examples of a generated, folder or TFDS split, binarized with a
    fixed draw when `static_seed` is set (generated images are binary already).

    Returns `(ds, num_examples, cached)`: `cached` says whether the examples fit
    `budget_mb` (the caller caches and shuffles them); otherwise a folder's file order
    is already shuffled (when `shuffle`), and a TFDS split's files are.
    """
    shape = _shape_of(source, image_size)
    if source.kind == "generated":
        cached = fits_cache(source.generator.split_size(split), shape, budget_mb)
        ds, num_examples = source.generator.examples(
            split, with_labels=with_labels, image_size=image_size,
            shuffle=shuffle and not cached, seed=seed)
        # drawn binary: a static binarization would change nothing
        return ds, num_examples, cached
    if source.kind == "folder":
        path = own.resolve_path(source.path)
        count = len(own.split_indices(len(own.scan_folder(path, image_size is None).files),
                                      split, str(path)))
        cached = fits_cache(count, shape, budget_mb)
        ds, num_examples = own.folder_examples(
            path, split, with_labels=with_labels, image_size=image_size,
            shuffle=shuffle and not cached, seed=seed, static_seed=static_seed,
        )
        return ds, num_examples, cached
    ds, num_examples = _tfds_examples(source, split, with_labels, image_size, data_dir,
                                      shuffle_files=shuffle and static_seed is None, seed=seed)
    if static_seed is not None:
        ds = static_binarize_dataset(ds, with_labels, static_seed)
    return ds, num_examples, fits_cache(num_examples, shape, budget_mb)


def _tfds_failure(name, split, err):
    """One line on why a TFDS dataset could not be read, naming the real cause."""
    detail = str(err).strip().splitlines()
    detail = f"{type(err).__name__}: {detail[0][:200]}" if detail else type(err).__name__
    what = f"TFDS dataset {name!r}" + (f" (split {split!r})" if split is not None else "")
    if isinstance(err, ImportError):
        module = getattr(err, "name", None) or "a module"
        return (
            f"Could not load {what} [{detail}]; tensorflow-datasets needs the Python "
            f"module {module!r}, which is not installed: reinstall vae_zoo with its "
            f"dependencies (pip install vae_zoo) or install it alone."
        )
    return (
        f"Could not load {what} [{detail}]; "
        f"prepare it under a local TFDS directory and pass data_dir=..., "
        f"or use the embedded 'mnist_sample' dataset which needs no download."
    )


def _tfds_examples(entry, split, with_labels, image_size, data_dir, *, shuffle_files=False,
                   seed=None):
    """Read a TFDS split as unbatched uint8 images `[H, W, C]` (and labels).

    Returns `(ds, num_examples)`; `num_examples` may be None if unknown.
    """
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(try_autocache=False, shuffle_seed=seed)
    try:
        if entry.kind == "tfds_folder":
            raw = tfds.builder_from_directory(entry.path).as_dataset(
                split=split, shuffle_files=shuffle_files, read_config=read_config)
        else:
            raw = tfds.load(entry.tfds_name, split=split, data_dir=data_dir,
                            shuffle_files=shuffle_files, read_config=read_config)
    except Exception as err:  # noqa: BLE001 - re-raised with context below
        raise RuntimeError(_tfds_failure(entry.tfds_name, split, err)) from err

    cardinality = int(raw.cardinality())
    num_examples = cardinality if cardinality >= 0 else None
    image_key, label_key = entry.image_key, entry.label_key

    def pick(example):
        image = example[image_key]
        if entry.binary:
            # Stored as {0, 1}; map to {0, 255} so the shared /255 scaling works.
            image = tf.where(image > 0, tf.constant(255, tf.uint8), tf.constant(0, tf.uint8))
        if with_labels:
            return image, tf.cast(example[label_key], tf.int64)
        return image

    ds = raw.map(pick, num_parallel_calls=tf.data.AUTOTUNE)

    native = entry.image_shape[0]
    target = image_size if image_size is not None else native
    crop = entry.center_crop
    if None in entry.image_shape[:2] or (
        image_size is not None and entry.image_shape[0] != entry.image_shape[1]
    ):
        # Images of varying or non-square size: cropped and resized one by one.
        def resize_one(*element):
            images = crop_resize_image(element[0], target)
            return images if len(element) == 1 else (images,) + tuple(element[1:])

        if image_size is not None:
            ds = ds.map(resize_one, num_parallel_calls=tf.data.AUTOTUNE)
    elif crop or target != native:
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


