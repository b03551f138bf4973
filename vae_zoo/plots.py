"""Pictures written as PNG with matplotlib: image grids and training curves.

Grids are scaled up (nearest neighbour) so that each image is at least `MIN_CELL`
pixels a side; rows can be labelled on the left (inputs and reconstructions, the class
of a conditional model's samples) and a grid can have a title. Each grid PNG says its
layout in its "Description" text field ("R rows x C columns of HxW images").
"""

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


RECONSTRUCTED = 32  # test inputs in a run's reconstruction grids (4 rows of 8, each with its own)
MIN_CELL = 56  # pixels: the shortest side of one image of a grid, at least
_DPI = 100
_FONT_PX = 14  # label and title text height, pixels


def scale_factor(height, width) -> int:
    """The integer factor that brings an image of `height` x `width` to `MIN_CELL`."""
    return max(1, math.ceil(MIN_CELL / min(height, width)))


def upscale(grid, factor) -> np.ndarray:
    """`[H, W, C]` → `[H*factor, W*factor, C]`, each pixel repeated (nearest neighbour)."""
    return np.repeat(np.repeat(np.asarray(grid), factor, axis=0), factor, axis=1)


def class_labels(num_rows):
    """Row labels of a class-conditional model's samples, one row per class."""
    return [f"class {k}" for k in range(num_rows)]


def sample_rows(model, n, label=None, seed=0):
    """Prior samples of a model to draw as a grid, and how: `(images, columns, row_labels)`.

    n prior samples (columns None: a square grid); n samples of class `label`; or,
    for a class-conditional model without `label`, `n // num_classes` samples (at
    least 1) per class, one row per class, labelled with its class.
    """
    if not model.conditional:
        if label is not None:
            raise ValueError(f"a label needs a conditional model, not a {type(model).__name__}")
        return np.asarray(model.sample(n, seed=seed)), None, None
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError(
            f"{type(model).__name__} is conditioned on vectors, not class labels; draw "
            "from it with model.sample(n, y=...)"
        )
    if label is not None:
        return np.asarray(model.sample(n, y=label, seed=seed)), None, None
    per_class = max(1, n // num_classes)
    labels = np.repeat(np.arange(num_classes), per_class)  # [num_classes * per_class]
    images = np.asarray(model.sample(len(labels), y=labels, seed=seed))
    return images, per_class, class_labels(num_classes)


def save_array(grid, path, description=None) -> None:
    """Write one `[H, W, C]` image in [0, 1] (C = 1 or 3) as a PNG, pixel for pixel
    (`description`: the PNG's "Description" text).

    Uses no pyplot and leaves matplotlib's backend alone (notebooks keep theirs).
    """
    from matplotlib import image

    metadata = {"Description": description} if description else None
    if grid.shape[-1] == 1:
        image.imsave(path, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0, metadata=metadata)
    else:
        image.imsave(path, np.clip(grid, 0.0, 1.0), metadata=metadata)


def save_grid(images, path, columns=None, row_labels=None, title=None) -> None:
    """Write `[N, H, W, C]` images in [0, 1] to `path` as one PNG grid.

    Each image is scaled up to at least `MIN_CELL` pixels a side. `row_labels` (one
    string per row) are written left of the rows, `title` above the grid. Uses no
    pyplot and leaves matplotlib's backend alone.
    """
    from matplotlib.figure import Figure

    images = np.asarray(images)
    n, h, w, _ = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
    factor = scale_factor(h, w)
    grid = upscale(tile(images, columns), factor)
    description = f"{rows} rows x {columns} columns of {h}x{w} images"
    if not row_labels and not title:  # the pixels alone
        save_array(grid, path, description)
        return
    grey = grid.shape[-1] == 1
    height, width = grid.shape[:2]
    left = (int(max(map(len, row_labels)) * 0.6 * _FONT_PX) + 12) if row_labels else 0
    top = 2 * _FONT_PX if title else 0
    fig = Figure(figsize=((width + left) / _DPI, (height + top) / _DPI), dpi=_DPI)
    ax = fig.add_axes([left / (width + left), 0, width / (width + left), height / (height + top)])
    ax.imshow(grid[..., 0] if grey else grid, cmap="gray" if grey else None, vmin=0.0, vmax=1.0,
              interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    points = _FONT_PX * 72 / _DPI
    for r, text in enumerate(row_labels or ()):  # in data units, which are pixels here
        ax.text(-8, (r * (h + 1) + h / 2) * factor, text, ha="right", va="center",
                fontsize=points, clip_on=False)
    if title:
        fig.text(0.5, 1 - _FONT_PX / (height + top), title, ha="center", va="center",
                 fontsize=points)
    fig.savefig(path, dpi=_DPI, metadata={"Description": description})


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


def save_reconstructions(inputs, reconstructions, path, columns=8, title=None) -> None:
    """Rows of inputs, each followed by a row of their reconstructions, labelled so."""
    images, columns = interleave_rows(inputs, reconstructions, columns)
    rows = len(images) // columns
    save_grid(images, path, columns, row_labels=["input", "reconstruction"] * (rows // 2),
              title=title)


def number(text) -> float:
    """A CSV cell as a float; NaN for an empty or non-numeric one (Keras writes "NA")."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def save_training_curves(history, path) -> None:
    """ELBO, reconstruction term and KL per epoch, train and test, as one PNG.

    `history`: a dict of equally long lists, as read from a run's history.csv (an
    "epoch" column, 1-based, and the metrics with their `val_` twins); a metric
    missing from it is left out.
    """
    from matplotlib.figure import Figure

    panels = [(key, title) for key, title in (("elbo", "ELBO (nats, higher is better)"),
                                              ("reconstruction", "reconstruction E_q log p(x|z)"),
                                              ("kl", "KL(q(z|x) || p(z))"))
              if key in history or f"val_{key}" in history]
    fig = Figure(figsize=(4 * max(len(panels), 1), 3.2), dpi=_DPI)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels):
        for name, label, style in ((key, "train", "-"), (f"val_{key}", "test", "--")):
            values = history.get(name)
            if values is not None:
                epochs = history.get("epoch") or list(range(1, len(values) + 1))
                ax.plot(epochs, values, style, marker="o", markersize=3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(path)


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
