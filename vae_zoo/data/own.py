"""Your own data: a folder of PNG/JPEG images, or an `.npz`/`.npy` file of arrays.

A `data.dataset` (or `vae_zoo.data.load` name) that is a path reads these:

- **A folder of images** (`.png`, `.jpg`, `.jpeg`; other files are ignored). When the
  images sit in subfolders, each subfolder (sorted by name) is a class and its images
  (at any depth below it) get its index as label; images directly in the folder have
  no label. All images are grey (1 channel) or all are colour (3 channels: RGB, an
  alpha channel is dropped). Without `image_size` they must share one size; with it,
  each is center-cropped to a square and resized to `image_size x image_size`. The
  folder is listed, and each image's header read, once per process; the images are
  decoded from disk as the pipeline streams.
- **An `.npz` file**: the images are `x_train` (test split `x_test` when present), else
  `x`, else the first array of image rank (3: `[N, H, W]`, 4: `[N, H, W, C]` with
  C = 1 or 3). Labels, optional, are `y_train`/`y_test` beside `x_train`/`x_test`, `y`
  beside `x` or the first array (also `labels`, `label`). `image_key`/`label_key` name
  the arrays instead (the named array is then the whole dataset).
- **An `.npy` file**: one array of images, no labels.

Values: uint8 arrays and images are scaled to [0, 1]; float arrays must lie in [0, 1].
Splits: `"train"` and `"test"`, optionally sliced as in TFDS (`"train[:90%]"`,
`"test[10:20]"`). Where the data have no test part of their own (a folder, a file
without `x_test`), every tenth example (index 9, 19, ... in path or array order) is the
test split and the rest the training split.

Bad data raises `ValueError` with one line naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path

import numpy as np

ARRAY_SUFFIXES = (".npz", ".npy")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Every HOLDOUT_EVERY-th example (counting from 1) is the test split of data that
# have none of their own.
HOLDOUT_EVERY = 10
_LABEL_KEYS = ("y", "labels", "label")
# PIL image modes by the channels vae_zoo reads them with (alpha dropped).
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_SPLIT = re.compile(r"^(train|test)(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?$")


def is_path(name) -> bool:
    """Whether a dataset name means a file or folder: it ends in .npz/.npy, begins with
    `/`, `.` or `~`, ends with a separator, or names something that exists."""
    if isinstance(name, os.PathLike):
        return True
    text = str(name)
    return (
        text.lower().endswith(ARRAY_SUFFIXES)
        or text.startswith(("/", ".", "~"))
        or text.endswith(("/", os.sep))
        or os.path.exists(text)
    )


def resolve_path(name) -> Path:
    """The absolute path a dataset name names (ValueError when nothing is there)."""
    path = Path(os.path.expanduser(str(name))).absolute()
    if not path.exists():
        raise ValueError(f"{name}: no such file or folder")
    return path


def is_tfds_folder(path: Path) -> Path | None:
    """The prepared TFDS version folder (with dataset_info.json) `path` is or holds."""
    if not path.is_dir():
        return None
    if (path / "dataset_info.json").is_file():
        return path
    versions = sorted(p for p in path.iterdir() if (p / "dataset_info.json").is_file())
    return versions[-1] if versions else None


# --------------------------------------------------------------------------- #
# Splits
# --------------------------------------------------------------------------- #


def parse_split(split, where):
    """`"train"`, `"test"` or a slice of them → (name, start, stop); start/stop are
    ints, `"N%"` strings or None."""
    match = _SPLIT.match(str(split).strip())
    if not match:
        raise ValueError(
            f"{where}: unknown split {split!r}; expected 'train' or 'test', optionally "
            "sliced (e.g. 'train[:90%]')"
        )
    return match.group(1), match.group(2), match.group(3)


def _bound(value, n):
    if value is None:
        return None
    if value.endswith("%"):
        return int(round(n * int(value[:-1]) / 100))
    return int(value)


def split_indices(n, split, where, *, held_out=True):
    """Indices of `split` among `n` examples. `held_out`: the test split is every
    HOLDOUT_EVERY-th example, the training split the others; else the `n` examples are
    the split itself."""
    name, start, stop = parse_split(split, where)
    index = np.arange(n)
    if held_out:
        test = index % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
        index = index[test] if name == "test" else index[~test]
    return index[slice(_bound(start, len(index)), _bound(stop, len(index)))]


# --------------------------------------------------------------------------- #
# Image folders
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class Folder:
    """A listed image folder: files in path order, their labels, class names."""

    files: tuple
    labels: np.ndarray | None
    classes: tuple
    channels: int
    size: tuple | None  # (H, W) shared by all images, or None when they differ


@functools.lru_cache(maxsize=8)
def scan_folder(path: Path, need_size=True) -> Folder:
    """List an image folder and read each image's header (size, mode)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise ValueError(f"{path}: not a folder of images or an .npz/.npy file")
    # plain strings, not Path objects: a folder may hold millions of files
    entries = sorted(os.scandir(path), key=lambda e: e.name)
    subfolders = [e.path for e in entries if e.is_dir()]
    top = [e.path for e in entries if e.is_file() and _is_image(e.name)]
    classes, files, labels = [], [], []
    for sub in subfolders:
        found = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(sub)
            for name in names
            if _is_image(name)
        )
        if found:
            labels += [len(classes)] * len(found)
            classes.append(os.path.basename(sub))
            files += found
    if classes and top:
        raise ValueError(
            f"{top[0]}: an image directly in a folder of class subfolders "
            f"({', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''}); move it "
            "into one of them"
        )
    if not classes:
        files = top
    if not files:
        raise ValueError(f"{path}: no .png, .jpg or .jpeg images in this folder")

    first = None
    size = None
    for file in files:
        try:
            with Image.open(file) as image:
                mode, (width, height) = image.mode, image.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"{file}: not a readable PNG or JPEG image ({_reason(error)})") from None
        channels = 1 if mode in _GREY_MODES else 3
        if first is None:
            first, first_channels, size = file, channels, (height, width)
            continue
        if channels != first_channels:
            kinds = {1: "grey (1 channel)", 3: "colour (3 channels)"}
            raise ValueError(
                f"{file}: a {kinds[channels]} image among {kinds[first_channels]} images "
                f"(e.g. {first}); all images of a folder must be grey or all colour"
            )
        if size is not None and (height, width) != size:
            if need_size:
                raise ValueError(
                    f"{file}: a {height}x{width} image among {size[0]}x{size[1]} images "
                    f"(e.g. {first}); set image_size (data.image_size) to resize them all"
                )
            size = None
    return Folder(
        files=tuple(files),
        labels=np.asarray(labels, np.int64) if classes else None,
        classes=tuple(classes),
        channels=first_channels,
        size=size,
    )


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _reason(error) -> str:
    text = " ".join(str(error).split())
    return text[:120] if text else type(error).__name__


def folder_info(path: Path, image_size):
    """(image shape (H, W, C), whether it has labels, number of classes)."""
    folder = scan_folder(path, need_size=image_size is None)
    height, width = (image_size, image_size) if image_size else folder.size
    return (height, width, folder.channels), folder.labels is not None, len(folder.classes)


def folder_examples(path: Path, split, *, with_labels, image_size, shuffle, seed,
                    static_seed=None):
    """Stream a folder's split as uint8 images `[H, W, C]` (and int64 labels), decoded
    from disk. `shuffle`: the file order is shuffled anew each pass, before decoding.
    `static_seed`: binarize each image with a draw fixed by its file's index."""
    import tensorflow as tf

    from vae_zoo.data.pipeline import crop_resize_image, static_binarize_example
    from vae_zoo.positions import positions

    folder = scan_folder(path, need_size=image_size is None)
    indices = split_indices(len(folder.files), split, str(path))
    files = tf.constant([folder.files[i] for i in indices], tf.string)
    labels = tf.constant(folder.labels[indices] if folder.labels is not None
                         else np.zeros(len(indices), np.int64))
    numbers = tf.constant(indices.astype(np.int64))
    shape = folder_info(path, image_size)[0]
    count = len(indices)
    # a fresh order of positions on every pass, not a shuffle buffer of file names
    ds = positions(count, shuffle=shuffle, seed=seed)

    def fetch(position):
        return numbers[position], files[position], labels[position]

    ds = ds.map(fetch)

    def decode(index, file, label):
        image = tf.io.decode_image(tf.io.read_file(file), channels=shape[2],
                                   expand_animations=False, dtype=tf.uint8)
        if image_size is not None:
            image = crop_resize_image(image, image_size)
        image = tf.ensure_shape(image, shape)
        if static_seed is not None:
            image = static_binarize_example(image, index, static_seed)
        return (image, label) if with_labels else image

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.apply(tf.data.experimental.assert_cardinality(count)), count


# --------------------------------------------------------------------------- #
# Array files
# --------------------------------------------------------------------------- #


@functools.lru_cache(maxsize=2)
def _read_arrays(path: Path) -> dict:
    try:
        if path.suffix.lower() == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as npz:
            return {key: np.asarray(npz[key]) for key in npz.files}
    except Exception as error:  # noqa: BLE001 - numpy's many ways to fail: one line
        raise ValueError(f"{path}: not a readable {path.suffix} file ({_reason(error)})") from None


def _listing(arrays) -> str:
    return ", ".join(f"{key} {list(value.shape)}" for key, value in arrays.items()) or "none"


def _image_array(path, arrays, key):
    x = arrays[key]
    where = f"{path}" if key == "" else f"{path}: array {key!r}"
    if x.ndim not in (3, 4):
        raise ValueError(f"{where} has shape {list(x.shape)}; expected images [N, H, W] or "
                         "[N, H, W, C]")
    if x.ndim == 4 and x.shape[-1] not in (1, 3):
        raise ValueError(f"{where} has {x.shape[-1]} channels; expected 1 (grey) or 3 (RGB)")
    return x


@functools.lru_cache(maxsize=4)
def array_parts(path: Path, image_key=None, label_key=None):
    """`(x, y, x_test, y_test)` of an array file as its keys say (see the module doc);
    y's and the test arrays may be None."""
    arrays = _read_arrays(path)
    if image_key is not None:
        if image_key not in arrays:
            raise ValueError(f"{path}: no array {image_key!r} (arrays: {_listing(arrays)})")
        x_key, test_key = image_key, None
    elif "x_train" in arrays:
        x_key, test_key = "x_train", ("x_test" if "x_test" in arrays else None)
    elif "x" in arrays:
        x_key, test_key = "x", None
    else:
        x_key = next((k for k, v in arrays.items() if v.ndim in (3, 4)), None)
        test_key = None
        if x_key is None:
            raise ValueError(
                f"{path}: no array of images (rank 3 [N, H, W] or 4 [N, H, W, C]) in this "
                f"file; arrays: {_listing(arrays)}"
            )
    x = _image_array(path, arrays, x_key)
    x_test = _image_array(path, arrays, test_key) if test_key else None
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise ValueError(f"{path}: x_test images {list(x_test.shape[1:])} differ from "
                         f"{x_key} images {list(x.shape[1:])}")

    def labels_for(key, n, candidates):
        if key is None:
            key = next((k for k in candidates if k in arrays), None)
            if key is None:
                return None
        elif key not in arrays:
            raise ValueError(f"{path}: no array {key!r} (arrays: {_listing(arrays)})")
        y = arrays[key]
        if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: labels {key!r} must be {n} integers (one per image), "
                             f"got {y.dtype} {list(y.shape)}")
        if len(y) and y.min() < 0:
            raise ValueError(f"{path}: labels {key!r} must be >= 0, got {int(y.min())}")
        return y.astype(np.int64)

    own = {"x_train": ("y_train",), "x": ("y",)}.get(x_key, _LABEL_KEYS)
    y = labels_for(label_key, len(x), () if image_key is not None and label_key is None else own)
    y_test = None
    if x_test is not None:
        y_test = labels_for(None, len(x_test), ("y_test",))
        if (y is None) != (y_test is None):
            raise ValueError(f"{path}: labels for one split only (y_train and y_test go "
                             "together)")
    return x, y, x_test, y_test


def array_info(path: Path, image_size, image_key=None, label_key=None):
    """(image shape (H, W, C), whether it has labels, number of classes)."""
    x, y, _, y_test = array_parts(path, image_key, label_key)
    height, width = (image_size, image_size) if image_size else x.shape[1:3]
    channels = x.shape[3] if x.ndim == 4 else 1
    classes = 0 if y is None else int(max(y.max(initial=-1), -1 if y_test is None else
                                          y_test.max(initial=-1))) + 1
    return (height, width, channels), y is not None, classes


def array_split(path: Path, split, image_size, image_key=None, label_key=None):
    """`(x, y)` of one split: x uint8 or float32 `[N, H, W, C]` (checked, resized), y
    int64 `[N]` or None."""
    from vae_zoo.data.pipeline import check_x, crop_resize

    x, y, x_test, y_test = array_parts(path, image_key, label_key)
    name = parse_split(split, str(path))[0]
    if x_test is not None:
        x, y = (x_test, y_test) if name == "test" else (x, y)
        index = split_indices(len(x), split, str(path), held_out=False)
    else:
        index = split_indices(len(x), split, str(path))
    x = x[index]
    y = None if y is None else y[index]
    if len(x) == 0:
        return np.zeros((0,) + array_info(path, image_size, image_key, label_key)[0],
                        np.uint8), (None if y is None else y)
    try:
        x = check_x(x)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if image_size is not None and x.shape[1:3] != (image_size, image_size):
        x = crop_resize(x, image_size)
    return x, y
