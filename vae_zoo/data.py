"""Input pipelines for the VAE zoo.

This module turns image data into batched `tf.data.Dataset` objects ready for
`model.fit`:

- `make_dataset` wraps in-memory arrays (numpy arrays or tensors).
- `load` reads a named dataset: the embedded `"mnist_sample"` (6,000 real MNIST
  digits shipped with the package, no network needed) or one of the TensorFlow
  Datasets (TFDS) names in `DATASETS`.

Both share one pipeline: cache the raw examples, shuffle them with a fresh
order on every epoch, batch, scale to `float32` in `[0, 1]`, optionally
binarize, and prefetch. Images come out as `[B, H, W, C]`; tabular data as
`[B, D]`.

Binarization modes (`BINARIZE_MODES`):

- `"none"`: keep the grey levels.
- `"dynamic"`: each pass over the data draws a fresh Bernoulli sample with
  success probability equal to the pixel intensity (values in `{0., 1.}`).
  Reproducible given `seed`, different on every epoch.
- `"static"`: one fixed Bernoulli draw, made once up front.

Example:

```python
from vae_zoo import data

train = data.load("mnist_sample", "train", batch_size=64, binarize="dynamic", seed=1)
x = next(iter(train))  # float32 [64, 28, 28, 1], values in {0., 1.}
```
"""

import importlib.resources
import io

import numpy as np
import tensorflow as tf

DATASETS = (
    "mnist_sample",
    "mnist",
    "fashion_mnist",
    "binarized_mnist",
    "cifar10",
    "celeb_a",
)
BINARIZE_MODES = ("none", "dynamic", "static")

_EMBEDDED = "mnist_sample"
_EMBEDDED_FILE = "mnist_sample.npz"
_EMBEDDED_SPLITS = ("train", "test")
_EMBEDDED_KEYS = ("x_train", "y_train", "x_test", "y_test")

# Native shape of each dataset's images (celeb_a after the default crop and
# resize) and whether it has a class label.
_NATIVE_SHAPES = {
    "mnist_sample": (28, 28, 1),
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "binarized_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "celeb_a": (64, 64, 3),
}
_HAS_LABELS = {
    "mnist_sample": True,
    "mnist": True,
    "fashion_mnist": True,
    "binarized_mnist": False,
    "cifar10": True,
    "celeb_a": False,
}
# Examples per batch when preprocessing TFDS images vectorised (before the
# cache), e.g. the celeb_a crop and resize.
_PREPROCESS_BATCH = 256
# Shuffle buffer when the dataset size is unknown.
_DEFAULT_SHUFFLE_BUFFER = 10_000
# Batches prepared ahead of the training step.
PREFETCH_BATCHES = 4


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


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
    _check_name(name)
    return _HAS_LABELS[name]


def input_shape_of(name, image_size=None):
    """Return the shape `(H, W, C)` of one image of dataset `name`.

    Args:
        name: one of `DATASETS`.
        image_size: optional int; images resized to `image_size x image_size`.

    Returns:
        A tuple, e.g. `(28, 28, 1)` for `"mnist"`, `(64, 64, 3)` for
        `"celeb_a"`.
    """
    _check_name(name)
    image_size = _check_image_size(image_size)
    height, width, channels = _NATIVE_SHAPES[name]
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
    _check_name(name)
    image_size = _check_image_size(image_size)
    if name == _EMBEDDED:
        x, y = _embedded_split(split, image_size)
        return x.astype(np.float32) / np.float32(255.0), y

    with_labels = _HAS_LABELS[name]
    ds, _ = _tfds_examples(name, split, with_labels, image_size, data_dir)
    xs, ys = [], []
    for element in ds.batch(4096).as_numpy_iterator():
        if with_labels:
            xs.append(element[0])
            ys.append(element[1])
        else:
            xs.append(element)
    channels = _NATIVE_SHAPES[name][2]
    shape = input_shape_of(name, image_size)
    x = np.concatenate(xs) if xs else np.zeros((0,) + shape, np.uint8)
    x = x.reshape((-1, shape[0], shape[1], channels))
    x = x.astype(np.float32) / np.float32(255.0)
    if not with_labels:
        return x, None
    y = np.concatenate(ys).astype(np.int64) if ys else np.zeros((0,), np.int64)
    return x, y


def make_dataset(
    x,
    y=None,
    *,
    batch_size=128,
    shuffle=True,
    binarize="none",
    seed=None,
    drop_remainder=False,
    cache=True,
    repeat=False,
    prefetch=True,
):
    """Build a batched `tf.data.Dataset` from in-memory data.

    Args:
        x: numpy array or tensor, uint8 (scaled by 1/255) or float in
            `[0, 1]`. Images `[N, H, W]` get a channel axis (`[N, H, W, 1]`);
            `[N, H, W, C]` images and `[N, D]` tabular data are kept as is.
        y: optional labels, `len(y) == len(x)`.
        batch_size: examples per batch, at least 1.
        shuffle: shuffle the examples, with a new order on every epoch.
        binarize: one of `BINARIZE_MODES`. `"dynamic"` draws fresh
            Bernoulli(x) values on every pass; `"static"` draws them once
            (numpy generator seeded with `seed`, default 0).
        seed: optional int making the shuffle orders and the dynamic draws
            reproducible across processes.
        drop_remainder: drop the last, smaller batch.
        cache: cache the examples in memory before shuffling.
        repeat: repeat indefinitely (reshuffling each epoch).
        prefetch: prepare `PREFETCH_BATCHES` batches ahead of the consumer.

    Returns:
        A `tf.data.Dataset` whose elements are `x` batches (float32
        `[B, H, W, C]` or `[B, D]`) when `y` is None, else `(x, y)` pairs.
    """
    x = _check_x(x)
    if y is not None:
        y = np.asarray(y.numpy() if isinstance(y, tf.Tensor) else y)
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(
                f"len(y) must equal len(x): got len(y)={y.shape[0] if y.ndim else 'scalar'}"
                f" and len(x)={len(x)}."
            )
        if np.issubdtype(y.dtype, np.integer):
            y = y.astype(np.int64)
    _check_binarize(binarize)
    _check_batch_size(batch_size)

    if binarize == "static":
        x = _static_binarize(x, 0 if seed is None else seed)
    elements = x if y is None else (x, y)
    ds = tf.data.Dataset.from_tensor_slices(elements)
    return _pipeline(
        ds,
        num_examples=len(x),
        batch_size=batch_size,
        shuffle=shuffle,
        binarize=binarize,
        seed=seed,
        drop_remainder=drop_remainder,
        cache=cache,
        repeat=repeat,
        prefetch=prefetch,
    )


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
    _check_name(name)
    image_size = _check_image_size(image_size)
    _check_binarize(binarize)
    _check_batch_size(batch_size)
    if with_labels and not _HAS_LABELS[name]:
        raise ValueError(
            f"Dataset {name!r} has no class labels; use with_labels=False."
        )
    if shuffle is None:
        shuffle = str(split).startswith("train")

    if name == _EMBEDDED:
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

    ds, num_examples = _tfds_examples(name, split, with_labels, image_size, data_dir)
    if binarize == "static":
        ds = _static_binarize_dataset(ds, with_labels, 0 if seed is None else seed)
    return _pipeline(
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


# --------------------------------------------------------------------------- #
# Shared pipeline
# --------------------------------------------------------------------------- #


def _pipeline(
    ds,
    *,
    num_examples,
    batch_size,
    shuffle,
    binarize,
    seed,
    drop_remainder,
    cache,
    repeat,
    prefetch,
):
    """Cache, shuffle, batch, scale, binarize and prefetch unbatched examples.

    `ds` yields `x` or `(x, y)` examples with `x` uint8 (0..255) or float32 in
    `[0, 1]`. Scaling to float32 and dynamic binarization run on whole
    batches.
    """
    if cache:
        ds = ds.cache()
    if shuffle:
        buffer = num_examples if num_examples and num_examples > 0 else None
        if buffer is None:
            cardinality = int(ds.cardinality())
            buffer = cardinality if cardinality > 0 else _DEFAULT_SHUFFLE_BUFFER
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    # Scaling and binarization are a few vectorized ops per batch: one call at a time
    # keeps far ahead of the training step, and leaves the cores to it.
    ds = ds.map(_map_x(_to_float))
    if binarize == "dynamic":
        # One stateless seed pair per batch; `rerandomize_each_iteration`
        # gives a new (but seed-reproducible) sequence on every epoch.
        seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        ).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(_dynamic_binarize)
    if prefetch:
        ds = ds.prefetch(PREFETCH_BATCHES)
    return ds.with_options(_pipeline_options())


def _pipeline_options():
    # tf.data's autotuner stalls some epochs' first batch by ~0.3 s on a small
    # machine; the pipeline above has nothing left for it to tune.
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _map_x(fn):
    """Lift a function of `x` to elements that are `x` or `(x, y)`."""

    # Plain Python on element structure: nothing for AutoGraph to convert (and its
    # cache mixes up closures of this one code object).
    @tf.autograph.experimental.do_not_convert
    def mapped(*element):
        if len(element) == 1:
            return fn(element[0])
        return (fn(element[0]),) + tuple(element[1:])

    return mapped


def _to_float(x):
    if x.dtype == tf.uint8:
        return tf.cast(x, tf.float32) * (1.0 / 255.0)
    return tf.cast(x, tf.float32)


def _dynamic_binarize(element, seed):
    def draw(x):
        noise = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype)
        return tf.cast(noise < x, x.dtype)

    if isinstance(element, tuple):
        return _map_x(draw)(*element)
    return draw(element)


def _static_binarize(x, seed):
    """One fixed Bernoulli(x) draw; returns uint8 in {0, 255}."""
    rng = np.random.default_rng(seed)
    probs = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x
    return np.where(rng.random(x.shape, dtype=np.float32) < probs, 255, 0).astype(
        np.uint8
    )


def _static_binarize_dataset(ds, with_labels, seed):
    """Fixed per-example Bernoulli draw for a TFDS stream (before the cache).

    Example `i` uses the stateless seed `(seed, i)`, so the draw is the same
    on every epoch and every run. Output is uint8 in {0, 255}.
    """

    def draw(index, element):
        x = element[0] if with_labels else element
        probs = tf.cast(x, tf.float32) * (1.0 / 255.0)
        noise = tf.random.stateless_uniform(
            tf.shape(x), seed=tf.stack([tf.cast(seed, tf.int64), index])
        )
        x = tf.cast(noise < probs, tf.uint8) * 255
        return (x, element[1]) if with_labels else x

    return ds.enumerate().map(draw, num_parallel_calls=tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- #
# Sources
# --------------------------------------------------------------------------- #


def _embedded_split(split, image_size=None):
    """uint8 images `[N, H, W, 1]` and int64 labels `[N]` of the embedded sample."""
    if split not in _EMBEDDED_SPLITS:
        raise ValueError(
            f"Unknown split {split!r} for 'mnist_sample'; expected one of {_EMBEDDED_SPLITS}."
        )
    arrays = load_embedded_mnist()
    x = arrays[f"x_{split}"][..., np.newaxis]
    if image_size is not None and image_size != x.shape[1]:
        x = _resize_uint8(tf.constant(x), image_size, "bilinear").numpy()
    return x, arrays[f"y_{split}"].astype(np.int64)


def _tfds_examples(name, split, with_labels, image_size, data_dir):
    """Read a TFDS split as unbatched uint8 images `[H, W, C]` (and labels).

    Returns `(ds, num_examples)`; `num_examples` may be None if unknown.
    """
    import tensorflow_datasets as tfds

    try:
        raw = tfds.load(name, split=split, data_dir=data_dir)
    except Exception as err:  # noqa: BLE001 - re-raised with context below
        detail = str(err).strip().splitlines()
        detail = f"{type(err).__name__}: {detail[0][:200]}" if detail else type(err).__name__
        raise RuntimeError(
            f"Could not load TFDS dataset {name!r} (split {split!r}) [{detail}]; "
            f"prepare it under a local TFDS directory and pass data_dir=..., "
            f"or use the embedded 'mnist_sample' dataset which needs no download."
        ) from err

    cardinality = int(raw.cardinality())
    num_examples = cardinality if cardinality >= 0 else None

    def pick(example):
        image = example["image"]
        if name == "binarized_mnist":
            # Stored as {0, 1}; map to {0, 255} so the shared /255 scaling works.
            image = tf.where(image > 0, tf.constant(255, tf.uint8), tf.constant(0, tf.uint8))
        if with_labels:
            return image, tf.cast(example["label"], tf.int64)
        return image

    ds = raw.map(pick, num_parallel_calls=tf.data.AUTOTUNE)

    native = _NATIVE_SHAPES[name][0]
    target = image_size if image_size is not None else native
    crop = name == "celeb_a"
    if crop or target != native:
        method = "nearest" if name == "binarized_mnist" else "bilinear"

        def resize(*element):
            images = element[0]
            if crop:
                images = _center_crop_square(images)
            images = _resize_uint8(images, target, method)
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


def _resize_uint8(images, size, method):
    """Resize uint8 images (`[B, H, W, C]`) to `size x size`, keeping uint8."""
    resized = tf.image.resize(
        images, (size, size), method=method, antialias=(method == "bilinear")
    )
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {DATASETS}.")


def _check_image_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}.")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}.")
    return int(image_size)


def _check_binarize(binarize):
    if binarize not in BINARIZE_MODES:
        raise ValueError(
            f"Unknown binarize mode {binarize!r}; expected one of {BINARIZE_MODES}."
        )


def _check_batch_size(batch_size):
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")


def _check_x(x):
    """Validate `x`; return a uint8 or float32 numpy array with a channel axis."""
    if isinstance(x, (tf.Tensor, tf.Variable)):
        x = x.numpy()
    x = np.asarray(x)
    if x.ndim not in (2, 3, 4):
        raise ValueError(
            f"x must have shape [N, D], [N, H, W] or [N, H, W, C], got shape {x.shape}."
        )
    if x.shape[0] == 0 or x.size == 0:
        raise ValueError(f"x is empty (shape {x.shape}).")
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or inf values.")
        low, high = float(np.min(x)), float(np.max(x))
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"float x must lie in [0, 1], got values in [{low:g}, {high:g}];"
                " scale it first (uint8 input is divided by 255 automatically)."
            )
        x = x.astype(np.float32, copy=False)
    else:
        raise ValueError(
            f"Unsupported x dtype {x.dtype}; expected uint8 or float in [0, 1]."
        )
    if x.ndim == 3:
        x = x[..., np.newaxis]
    return x
