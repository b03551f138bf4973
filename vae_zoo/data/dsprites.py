"""A dSprites-like dataset drawn by code: 2-D shapes with five known factors of variation.

Matthey et al.'s dSprites (2017) holds 737,280 binary 64×64 images, one for every
combination of five independent factors; disentanglement metrics need those factors
and a way to draw an image for any of them. This module generates such a dataset on
demand, from factor indices, so nothing is downloaded and the full grid (3 GB of
pixels) is never held in memory:

| factor | values |
| --- | --- |
| `shape` | 3: square, ellipse, heart |
| `scale` | 6, evenly spaced in [0.5, 1] |
| `orientation` | 40, 2πk/40 for k = 0..39 (radians, counter-clockwise as displayed) |
| `pos_x` | 32, evenly spaced in [0, 1], left to right |
| `pos_y` | 32, evenly spaced in [0, 1], top to bottom |

Drawing (`rasterize`): a pixel is on when its centre lies inside the shape. Each shape
is defined in its own unit disc (it never leaves the disc when rotated): the square
max(|u|, |v|) ≤ 1/√2, the ellipse u² + (v/0.5)² ≤ 1 (long axis along the orientation),
the heart (x² + y² − 1)³ − x²y³ ≤ 0 with x = 1.25u, y = 1.25v + 0.25 (tip down at
orientation 0). A canvas point p (unit square, y down) maps to the shape's frame by
moving the centre c = (0.2 + 0.6·pos_x, 0.2 + 0.6·pos_y) to the origin, turning y up,
rotating by −orientation and dividing by the radius 0.18·scale; so a shape at scale 1
spans 36% of the image and always lies inside it. The arithmetic runs vectorized over
a batch of images and pixels (about 0.1 ms an image on one CPU core at 64×64) and draws
at any resolution (`image_size`).

`DSprites` is the dataset: the factor grid (`factor_sizes`, `sample_factors`,
`index_to_factors`), the images of any factors (`render`), and its train and test
splits: a permutation of the 737,280 grid indices fixed by `seed`, of which the first
`test_size` (default 10,000) are the test split and the rest the training split, each
sliceable like a TFDS split (`"train[:50000]"`, `"test[:10%]"`). It is registered as
the dataset `"dsprites_synthetic"` (seed 0; labels: the shape, 3 classes), so recipes
pick it with `data.dataset = "dsprites_synthetic"` and a split size with
`data.train_split = "train[:50000]"`.

Example:

```python
from vae_zoo.data import dsprites

ds = dsprites.DSprites(seed=0)
factors = ds.sample_factors(16, random_state=0)   # int64 [16, 5], factor indices
x = ds.render(factors)                            # float32 [16, 64, 64, 1] in {0, 1}
ds.factor_values(factors)[:, 1]                   # the scales, in [0.5, 1]
x_test, shapes = ds.arrays("test[:1000]")         # uint8 [1000, 64, 64, 1], int64 [1000]
```

Reference: Matthey, Higgins, Hassabis & Lerchner, "dSprites: Disentanglement testing
Sprites dataset", 2017 (github.com/deepmind/dsprites-dataset); Higgins et al., "β-VAE",
ICLR 2017.
"""

from __future__ import annotations

import functools

import numpy as np

from vae_zoo.data import own

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 737,280
IMAGE_SIZE = 64
TEST_SIZE = 10_000

SCALES = np.linspace(0.5, 1.0, FACTOR_SIZES[1])
ORIENTATIONS = 2 * np.pi * np.arange(FACTOR_SIZES[2]) / FACTOR_SIZES[2]
POSITIONS = np.linspace(0.0, 1.0, FACTOR_SIZES[3])
# Canvas geometry (unit square): shape centres in [MARGIN, 1 - MARGIN], radius at scale 1.
MARGIN = 0.2
RADIUS = 0.18
# Shape parameters in the unit disc.
SQUARE_HALF_SIDE = 1 / np.sqrt(2)
ELLIPSE_AXES = (1.0, 0.5)
HEART_ZOOM, HEART_SHIFT = 1.25, 0.25

# Images drawn per vectorized call (bounds the temporary arrays to ~16 MB at 64×64).
_RENDER_CHUNK = 1024


# --------------------------------------------------------------------------- #
# Factors
# --------------------------------------------------------------------------- #


def check_factors(factors) -> np.ndarray:
    """Factor indices as int64 `[N, 5]`, each within its factor's size (ValueError)."""
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"factors must have shape [N, {len(FACTOR_SIZES)}], got {factors.shape}")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors must be integer indices, got dtype {factors.dtype}")
    factors = factors.astype(np.int64)
    if len(factors) and ((factors < 0).any() or (factors >= np.array(FACTOR_SIZES)).any()):
        bad = int(np.argmax(((factors < 0) | (factors >= np.array(FACTOR_SIZES))).any(axis=0)))
        raise ValueError(f"factor {FACTOR_NAMES[bad]!r} indices must lie in "
                         f"[0, {FACTOR_SIZES[bad]}), got values in "
                         f"[{factors[:, bad].min()}, {factors[:, bad].max()}]")
    return factors


def index_to_factors(index) -> np.ndarray:
    """Grid indices (0..737,279, row-major over `FACTOR_NAMES`) → factor indices
    int64 `[N, 5]`."""
    index = np.asarray(index, np.int64).reshape(-1)
    if len(index) and (index.min() < 0 or index.max() >= NUM_IMAGES):
        raise ValueError(f"grid indices must lie in [0, {NUM_IMAGES}), got values in "
                         f"[{index.min()}, {index.max()}]")
    return np.stack(np.unravel_index(index, FACTOR_SIZES), axis=1).astype(np.int64)


def factors_to_index(factors) -> np.ndarray:
    """Factor indices `[N, 5]` → grid indices int64 `[N]` (inverse of `index_to_factors`)."""
    return np.ravel_multi_index(tuple(check_factors(factors).T), FACTOR_SIZES).astype(np.int64)


def factor_values(factors) -> np.ndarray:
    """Factor indices `[N, 5]` → their values, float64 `[N, 5]`: the shape index, the
    scale in [0.5, 1], the orientation in radians, pos_x and pos_y in [0, 1]."""
    factors = check_factors(factors)
    return np.stack([factors[:, 0].astype(np.float64), SCALES[factors[:, 1]],
                     ORIENTATIONS[factors[:, 2]], POSITIONS[factors[:, 3]],
                     POSITIONS[factors[:, 4]]], axis=1)


# --------------------------------------------------------------------------- #
# Drawing
# --------------------------------------------------------------------------- #


def rasterize(factors, image_size=IMAGE_SIZE) -> np.ndarray:
    """Draw the images of `factors`: a pixel is on when its centre lies in the shape.

    Args:
        factors: int `[N, 5]` factor indices (order `FACTOR_NAMES`).
        image_size: side of the square image in pixels.

    Returns:
        bool `[N, image_size, image_size]`; row 0 is the top of the image.
    """
    factors = check_factors(factors)
    image_size = int(image_size)
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    out = np.zeros((len(factors), image_size, image_size), bool)
    for start in range(0, len(factors), _RENDER_CHUNK):
        out[start:start + _RENDER_CHUNK] = _rasterize_chunk(
            factors[start:start + _RENDER_CHUNK], image_size)
    return out


def _tables():
    """float32 lookup tables, per factor index: radius (scale), cos and sin
    (orientation), centre coordinate (position). numpy and TensorFlow draw from the
    same tables with the same float32 operations, so their images are identical."""
    return (
        (RADIUS * SCALES).astype(np.float32),
        np.cos(ORIENTATIONS).astype(np.float32),
        np.sin(ORIENTATIONS).astype(np.float32),
        (MARGIN + (1 - 2 * MARGIN) * POSITIONS).astype(np.float32),
    )


_RADII, _COS, _SIN, _CENTRES = _tables()


def _rasterize_chunk(factors, size):
    centres = (np.arange(size, dtype=np.float32) + np.float32(0.5)) / np.float32(size)
    radius, cos, sin, cx, cy = (table[factors[:, k]][:, None, None] for table, k in (
        (_RADII, 1), (_COS, 2), (_SIN, 2), (_CENTRES, 3), (_CENTRES, 4)))
    dx = centres[None, None, :] - cx  # [N, 1, size], columns
    dy = cy - centres[None, :, None]  # [N, size, 1], rows, y up
    # Rotate by -orientation into the shape's frame, in units of its radius.
    u = (cos * dx + sin * dy) / radius  # [N, size, size]
    v = (cos * dy - sin * dx) / radius
    inside = np.zeros(u.shape, bool)
    for shape, test in enumerate(_SHAPE_TESTS):
        rows = factors[:, 0] == shape
        if rows.any():
            inside[rows] = test(u[rows], v[rows], np)
    return inside


def rasterize_tf(factors, image_size=IMAGE_SIZE):
    """`rasterize` in TensorFlow ops (for tf.data pipelines): the same images, bit
    for bit. `factors`: int64 tensor `[N, 5]`; returns bool `[N, S, S]`."""
    import tensorflow as tf

    size = int(image_size)
    centres = (tf.range(size, dtype=tf.float32) + 0.5) / float(size)
    radius, cos, sin, cx, cy = (
        tf.gather(tf.constant(table), factors[:, k])[:, None, None] for table, k in (
            (_RADII, 1), (_COS, 2), (_SIN, 2), (_CENTRES, 3), (_CENTRES, 4)))
    dx = centres[None, None, :] - cx
    dy = cy - centres[None, :, None]
    u = (cos * dx + sin * dy) / radius
    v = (cos * dy - sin * dx) / radius
    shape = factors[:, 0][:, None, None]
    inside = tf.zeros(tf.shape(u), tf.bool)
    for index, test in enumerate(_SHAPE_TESTS):
        inside = tf.where(shape == index, test(u, v, tf.math), inside)
    return inside


# Shape membership of points (u, v) of the shape's frame; `ops` is numpy or tf.math.
def _in_square(u, v, ops):
    return ops.maximum(ops.abs(u), ops.abs(v)) <= np.float32(SQUARE_HALF_SIDE)


def _in_ellipse(u, v, ops):
    a, b = (np.float32(axis) for axis in ELLIPSE_AXES)
    x, y = u / a, v / b
    return x * x + y * y <= 1


def _in_heart(u, v, ops):
    x, y = np.float32(HEART_ZOOM) * u, np.float32(HEART_ZOOM) * v + np.float32(HEART_SHIFT)
    r = x * x + y * y - 1
    return r * r * r - x * x * y * y * y <= 0


_SHAPE_TESTS = (_in_square, _in_ellipse, _in_heart)


# --------------------------------------------------------------------------- #
# The dataset
# --------------------------------------------------------------------------- #


class DSprites:
    """The synthetic dSprites grid: factors, images and seeded train/test splits.

    Also the ground truth the disentanglement metrics take
    (`vae_zoo.disentanglement`): `factor_names`, `factor_sizes`, `sample_factors`
    and `render`.

    Args:
        seed: int; fixes which grid points form the test and training splits.
        test_size: grid points in the test split; the others are the training split.
        image_size: side of the images `render` and the splits give, in pixels.

    Example:
    ```python
    ds = DSprites(seed=0)
    factors, x = ds.sample(64, random_state=1)   # int64 [64, 5], float32 [64, 64, 64, 1]
    ```
    """

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    num_factors = len(FACTOR_SIZES)
    # The shape is categorical; the other factors are ordered.
    categorical = (True, False, False, False, False)

    def __init__(self, seed=0, test_size=TEST_SIZE, image_size=IMAGE_SIZE):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if isinstance(test_size, bool) or not isinstance(test_size, (int, np.integer)) \
                or not 0 < test_size < NUM_IMAGES:
            raise ValueError(f"test_size must be an int in [1, {NUM_IMAGES}), got {test_size!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
                or image_size < 1:
            raise ValueError(f"image_size must be an int >= 1, got {image_size!r}")
        self.seed, self.test_size, self.image_size = int(seed), int(test_size), int(image_size)

    def __repr__(self):
        return (f"DSprites(seed={self.seed}, test_size={self.test_size}, "
                f"image_size={self.image_size})")

    @property
    def image_shape(self):
        return (self.image_size, self.image_size, 1)

    # Factors and images.

    def sample_factors(self, num, random_state=None) -> np.ndarray:
        """`num` factor vectors drawn uniformly from the grid: int64 `[num, 5]`.

        `random_state`: a `np.random.Generator`, or a seed for one.
        """
        rng = np.random.default_rng(random_state)
        return np.stack([rng.integers(0, size, num) for size in FACTOR_SIZES],
                        axis=1).astype(np.int64)

    def render(self, factors, image_size=None) -> np.ndarray:
        """The images of `factors` (int `[N, 5]`) as float32 `[N, S, S, 1]` in {0, 1}
        (S = `image_size`, default the dataset's), what a model takes."""
        return rasterize(factors, image_size or self.image_size)[..., None].astype(np.float32)

    def sample(self, num, random_state=None):
        """`(factors, images)`: `sample_factors` and their `render`."""
        factors = self.sample_factors(num, random_state)
        return factors, self.render(factors)

    factor_values = staticmethod(factor_values)
    index_to_factors = staticmethod(index_to_factors)
    factors_to_index = staticmethod(factors_to_index)

    # Splits.

    @functools.cached_property
    def _permutation(self):
        return np.random.default_rng(self.seed).permutation(NUM_IMAGES).astype(np.int64)

    def split_indices(self, split) -> np.ndarray:
        """Grid indices int64 `[N]` of a split: `"train"` or `"test"`, optionally sliced
        as in TFDS (`"train[:50000]"`, `"test[:10%]"`)."""
        name, _, _ = own.parse_split(split, "dsprites_synthetic")
        part = (self._permutation[:self.test_size] if name == "test"
                else self._permutation[self.test_size:])
        return part[own.split_indices(len(part), split, "dsprites_synthetic", held_out=False)]

    def split_size(self, split) -> int:
        name, _, _ = own.parse_split(split, "dsprites_synthetic")
        total = self.test_size if name == "test" else NUM_IMAGES - self.test_size
        return len(own.split_indices(total, split, "dsprites_synthetic", held_out=False))

    def split_factors(self, split) -> np.ndarray:
        """Factor indices int64 `[N, 5]` of a split, in the split's order."""
        return index_to_factors(self.split_indices(split))

    def arrays(self, split, image_size=None):
        """A whole split in memory: uint8 images `[N, S, S, 1]` in {0, 255} and the
        shapes, int64 `[N]` (the labels)."""
        factors = self.split_factors(split)
        images = rasterize(factors, image_size or self.image_size)
        return images[..., None].astype(np.uint8) * np.uint8(255), factors[:, 0].copy()

    def examples(self, split, *, with_labels=False, image_size=None, shuffle=False,
                 seed=None):
        """A split as a `tf.data.Dataset` of unbatched uint8 images `[S, S, 1]` in
        {0, 255} (and int64 shape labels), drawn on demand from the split's factor
        indices. `shuffle`: a fresh order on every pass, drawn before the images.

        Returns `(dataset, num_examples)`.
        """
        import tensorflow as tf

        from vae_zoo.positions import positions

        size = image_size or self.image_size
        index = tf.constant(self.split_indices(split))
        count = int(index.shape[0])
        ds = positions(count, shuffle=shuffle, seed=seed)
        sizes = tf.constant(np.array(FACTOR_SIZES, np.int64))

        def render_batch(batch):
            grid = tf.gather(index, batch)  # [B] grid indices → [B, 5] factors
            factors = tf.transpose(tf.stack(tf.unravel_index(grid, sizes)))
            images = tf.cast(rasterize_tf(factors, size), tf.uint8)[..., None] * 255
            return (images, factors[:, 0]) if with_labels else images

        ds = ds.batch(256).map(render_batch).unbatch()
        return ds.apply(tf.data.experimental.assert_cardinality(count)), count


DSPRITES = DSprites()
