"""Image grids written as PNG with matplotlib."""

from __future__ import annotations

import math

import numpy as np


def is_image_shape(shape) -> bool:
    """Whether examples of this shape can be drawn: `(H, W, 1)` or `(H, W, 3)`."""
    return len(shape) == 3 and shape[-1] in (1, 3)


def tile(images, columns=None) -> np.ndarray:
    """`[N, H, W, C]` images in [0, 1] → one `[rows*H, columns*W, C]` array (1-pixel gaps)."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1, c), np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = image
    return grid


def save_grid(images, path, columns=None) -> None:
    """Write `[N, H, W, C]` images in [0, 1] to `path` as one PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = tile(images, columns)
    if grid.shape[-1] == 1:
        plt.imsave(path, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        plt.imsave(path, grid)


def save_reconstructions(inputs, reconstructions, path, columns=8) -> None:
    """Rows of inputs, each followed by a row of their reconstructions."""
    inputs = np.asarray(inputs)
    reconstructions = np.asarray(reconstructions)
    n = (len(inputs) // columns) * columns or len(inputs)
    columns = min(columns, n)
    rows = []
    for start in range(0, n, columns):
        rows.append(inputs[start : start + columns])
        rows.append(reconstructions[start : start + columns])
    save_grid(np.concatenate(rows), path, columns)
