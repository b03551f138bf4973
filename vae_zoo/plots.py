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


def save_array(grid, path) -> None:
    """Write one `[H, W, C]` image in [0, 1] (C = 1 or 3) as a PNG.

    Uses no pyplot and leaves matplotlib's backend alone (notebooks keep theirs).
    """
    from matplotlib import image

    if grid.shape[-1] == 1:
        image.imsave(path, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        image.imsave(path, np.clip(grid, 0.0, 1.0))


def save_grid(images, path, columns=None) -> None:
    """Write `[N, H, W, C]` images in [0, 1] to `path` as one PNG grid."""
    save_array(tile(images, columns), path)


def interleave_rows(inputs, reconstructions, columns=8):
    """Rows of `columns` inputs, each followed by the row of their reconstructions.

    Only whole rows are kept (all of them when there are fewer than `columns`).
    """
    inputs, reconstructions = np.asarray(inputs), np.asarray(reconstructions)
    columns = min(columns, len(inputs))
    n = (len(inputs) // columns) * columns
    rows = []
    for start in range(0, n, columns):
        rows += [inputs[start : start + columns], reconstructions[start : start + columns]]
    return np.concatenate(rows), columns


def save_reconstructions(inputs, reconstructions, path, columns=8) -> None:
    """Rows of inputs, each followed by a row of their reconstructions."""
    images, columns = interleave_rows(inputs, reconstructions, columns)
    save_grid(images, path, columns)


def pca_2d(points):
    """Project `[N, d]` points on their first two principal components: `[N, 2]`."""
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    if points.shape[1] <= 2:
        return np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    centred = points - points.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def save_latent_scatter(means, labels, path, title=None) -> None:
    """2-D scatter of posterior means coloured by label (PCA when latent_dim > 2)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is untouched

    means = np.asarray(means).reshape(len(means), -1)
    xy = pca_2d(means)
    projected = means.shape[1] > 2
    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.subplots()
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
    if labels is not None:
        fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel("PC 1 of E_q[z|x]" if projected else "z_1")
    ax.set_ylabel("PC 2 of E_q[z|x]" if projected else "z_2")
    ax.set_title(title or ("latent means (PCA projection)" if projected else "latent means"))
    fig.tight_layout()
    fig.savefig(path)
