"""The shared input pipeline: in-memory arrays or a stream of examples → batches.

- `make_dataset` wraps in-memory arrays (numpy arrays or tensors).
- `batched_pipeline` is what every source goes through: cache (optional), shuffle
  with a fresh order on every epoch, batch, scale to `float32` in `[0, 1]`,
  optionally binarize, and prefetch. Images come out as `[B, H, W, C]`; tabular data
  as `[B, D]`.

Binarization modes (`BINARIZE_MODES`):

- `"none"`: keep the grey levels.
- `"dynamic"`: each pass over the data draws a fresh Bernoulli sample with
  success probability equal to the pixel intensity (values in `{0., 1.}`).
  Reproducible given `seed`, different on every epoch.
- `"static"`: one fixed Bernoulli draw, made once up front.
"""


import numpy as np
import tensorflow as tf

BINARIZE_MODES = ("none", "dynamic", "static")

# Shuffle buffer when the dataset size is unknown.
_DEFAULT_SHUFFLE_BUFFER = 10_000
# Batches prepared ahead of the training step.
PREFETCH_BATCHES = 4
# Decoded examples are cached in memory only when they fit this many MiB (the
# default of `load`'s `cache_budget_mb` and of `data.cache_budget_mb`); larger data
# stream from disk on every pass.
CACHE_BUDGET_MB = 1024
# Shuffle buffer (MiB of decoded examples) of a stream too large to cache.
STREAM_SHUFFLE_MB = 64


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


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
    x = check_x(x)
    if y is not None:
        y = np.asarray(y.numpy() if isinstance(y, tf.Tensor) else y)
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(
                f"len(y) must equal len(x): got len(y)={y.shape[0] if y.ndim else 'scalar'}"
                f" and len(x)={len(x)}."
            )
        if np.issubdtype(y.dtype, np.integer):
            y = y.astype(np.int64)
    check_binarize(binarize)
    check_batch_size(batch_size)

    if binarize == "static":
        x = static_binarize(x, 0 if seed is None else seed)
    elements = x if y is None else (x, y)
    ds = tf.data.Dataset.from_tensor_slices(elements)
    return batched_pipeline(
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


def first_examples(ds, limit):
    """First `limit` examples of a dataset as numpy arrays `(x, y)`; y is None for a
    dataset without labels."""
    xs, ys, count = [], [], 0
    for batch in ds:
        labelled = isinstance(batch, (tuple, list))
        xs.append((batch[0] if labelled else batch).numpy())
        if labelled:
            ys.append(batch[1].numpy())
        count += len(xs[-1])
        if count >= limit:
            break
    if not xs:  # an empty dataset: no examples, of the shape it declares
        spec = ds.element_spec[0] if isinstance(ds.element_spec, tuple) else ds.element_spec
        return np.zeros((0, *spec.shape[1:]), spec.dtype.as_numpy_dtype), None
    return np.concatenate(xs)[:limit], (np.concatenate(ys)[:limit] if ys else None)


# --------------------------------------------------------------------------- #
# Shared pipeline
# --------------------------------------------------------------------------- #


def batched_pipeline(
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


def static_binarize(x, seed):
    """One fixed Bernoulli(x) draw; returns uint8 in {0, 255}."""
    rng = np.random.default_rng(seed)
    probs = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x
    return np.where(rng.random(x.shape, dtype=np.float32) < probs, 255, 0).astype(
        np.uint8
    )


def static_binarize_dataset(ds, with_labels, seed):
    """Fixed per-example Bernoulli draw for a TFDS stream (before the cache).

    Example `i` uses the stateless seed `(seed, i)`, so the draw is the same
    on every epoch and every run. Output is uint8 in {0, 255}.
    """

    def draw(index, element):
        x = element[0] if with_labels else element
        x = static_binarize_example(x, index, seed)
        return (x, element[1]) if with_labels else x

    return ds.enumerate().map(draw, num_parallel_calls=tf.data.AUTOTUNE)


def static_binarize_example(x, index, seed):
    """Fixed Bernoulli draw of one uint8 example, seeded by `(seed, index)`; uint8
    in {0, 255}."""
    probs = tf.cast(x, tf.float32) * (1.0 / 255.0)
    noise = tf.random.stateless_uniform(
        tf.shape(x), seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
    )
    return tf.cast(noise < probs, tf.uint8) * 255


def fits_cache(num_examples, shape, budget_mb):
    """Whether `num_examples` uint8 examples of `shape` fit `budget_mb` MiB."""
    if num_examples is None or any(d is None for d in shape):
        return False
    return num_examples * int(np.prod(shape)) <= budget_mb * 2**20


def stream_shuffle_buffer(num_examples, shape):
    """Shuffle buffer (examples) of a stream: `STREAM_SHUFFLE_MB` of examples, at least
    1,024, at most the dataset."""
    size = max(1, int(np.prod([d or 1 for d in shape])))
    buffer = max(1024, STREAM_SHUFFLE_MB * 2**20 // size)
    return min(buffer, num_examples) if num_examples else buffer


def crop_resize_image(image, size, method="bilinear"):
    """Center-crop one image `[H, W, C]` to a square and resize it to `size x size`
    (uint8 stays uint8; float stays float32 in [0, 1])."""
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    image = image[top : top + side, left : left + side, :]
    resized = tf.image.resize(image, (size, size), method=method,
                              antialias=(method == "bilinear"))
    if image.dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    return tf.clip_by_value(tf.cast(resized, tf.float32), 0.0, 1.0)


def crop_resize(x, size):
    """`crop_resize_image` over a numpy batch `[N, H, W, C]`."""
    if not len(x):
        return np.zeros((0, size, size, x.shape[-1]), x.dtype)
    ds = tf.data.Dataset.from_tensor_slices(x).map(lambda i: crop_resize_image(i, size))
    return np.concatenate(list(ds.batch(4096).as_numpy_iterator()))


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #


def check_image_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}.")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}.")
    return int(image_size)


def check_binarize(binarize):
    if binarize not in BINARIZE_MODES:
        raise ValueError(
            f"Unknown binarize mode {binarize!r}; expected one of {BINARIZE_MODES}."
        )


def check_batch_size(batch_size):
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")


def check_x(x):
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
