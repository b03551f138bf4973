"""The synthetic dSprites: the factor grid, the drawing (against closed-form areas,
moments and symmetries), the seeded splits and the registered tf.data pipeline."""

import numpy as np
import pytest

from vae_zoo import data
from vae_zoo.data import dsprites

SIZES = dsprites.FACTOR_SIZES
# Drawn large so that pixel counts and moments approach their closed forms.
BIG = 256


def one(shape=0, scale=5, orientation=0, pos_x=16, pos_y=16):
    return np.array([[shape, scale, orientation, pos_x, pos_y]])


def moments(image):
    """Pixel count, centroid (x right, y up, in pixels from the top-left corner's
    x and the top edge) and second central moments of a binary image."""
    rows, cols = np.nonzero(image)
    x, y = cols + 0.5, -(rows + 0.5)
    dx, dy = x - x.mean(), y - y.mean()
    return len(x), (x.mean(), y.mean()), np.array([[dx @ dx, dx @ dy], [dx @ dy, dy @ dy]]) / len(x)


def expected_centre(pos_x, pos_y, size=BIG):
    c = dsprites.MARGIN + (1 - 2 * dsprites.MARGIN) * dsprites.POSITIONS
    return c[pos_x] * size, -c[pos_y] * size


def test_grid_enumerates_every_factor_combination_once():
    assert SIZES == (3, 6, 40, 32, 32) and dsprites.NUM_IMAGES == 737_280
    corners = np.array([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31], [1, 0, 0, 0, 1]])
    assert dsprites.factors_to_index(corners).tolist() == [0, 737_279, 6 * 40 * 32 * 32 + 1]
    index = np.random.default_rng(0).integers(0, dsprites.NUM_IMAGES, 1000)
    assert (dsprites.factors_to_index(dsprites.index_to_factors(index)) == index).all()
    values = dsprites.factor_values(corners[:2])
    np.testing.assert_allclose(values, [[0, 0.5, 0, 0, 0], [2, 1, 2 * np.pi * 39 / 40, 1, 1]])


def test_sampled_factors_are_uniform_and_seeded():
    ds = dsprites.DSprites()
    f = ds.sample_factors(6000, random_state=3)
    assert f.shape == (6000, 5) and f.dtype == np.int64
    assert (f.min(axis=0) == 0).all() and (f.max(axis=0) == np.array(SIZES) - 1).all()
    assert np.bincount(f[:, 0]).min() > 1800  # ~2000 each of 3 shapes
    np.testing.assert_array_equal(ds.sample_factors(50, 7), ds.sample_factors(50, 7))
    assert (ds.sample_factors(50, 7) != ds.sample_factors(50, 8)).any()


@pytest.mark.parametrize("shape, area", [
    (0, 2.0),                  # square of half-side 1/sqrt(2)
    (1, np.pi * 1.0 * 0.5),    # ellipse with semi-axes 1 and 0.5
])
def test_areas_follow_the_closed_forms_at_every_scale(shape, area):
    f = np.concatenate([one(shape, scale, 7) for scale in range(6)])
    counts = dsprites.rasterize(f, BIG).sum(axis=(1, 2))
    radius = dsprites.RADIUS * dsprites.SCALES * BIG
    np.testing.assert_allclose(counts, area * radius**2, rtol=0.02)


def test_heart_area_matches_its_curve_integrated_independently():
    # Area of (x² + y² − 1)³ ≤ x² y³ by integrating, for each y, the x-intervals inside
    # on a fine grid; divided by the zoom² into the unit frame.
    grid = np.linspace(-1.3, 1.3, 1301)
    x, y = np.meshgrid(grid, grid)
    curve_area = ((x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0).sum() * (grid[1] - grid[0]) ** 2
    count = dsprites.rasterize(one(2, 5, 0), BIG).sum()
    radius = dsprites.RADIUS * BIG
    np.testing.assert_allclose(count, curve_area / dsprites.HEART_ZOOM**2 * radius**2, rtol=0.02)


@pytest.mark.parametrize("pos_x, pos_y", [(0, 0), (31, 5), (12, 31)])
def test_position_moves_the_centre_right_and_down(pos_x, pos_y):
    for shape in (0, 1):  # symmetric shapes: centroid = centre
        _, centroid, _ = moments(dsprites.rasterize(one(shape, 3, 5, pos_x, pos_y), BIG)[0])
        np.testing.assert_allclose(centroid, expected_centre(pos_x, pos_y), atol=0.5)  # a pixel step is 5


@pytest.mark.parametrize("k", [0, 3, 10, 17, 25, 36])
def test_orientation_turns_the_ellipse_counter_clockwise(k):
    _, _, cov = moments(dsprites.rasterize(one(1, 5, k), BIG)[0])
    angle = 0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1])  # long axis, y up
    theta = dsprites.ORIENTATIONS[k]
    difference = (angle - theta + np.pi / 2) % np.pi - np.pi / 2
    assert abs(difference) < 0.01
    # second moments of the ellipse: R²a²/4 along the axis, R²b²/4 across
    radius = dsprites.RADIUS * BIG
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(cov)),
                               [radius**2 * 0.25**2, radius**2 / 4], rtol=0.03)


@pytest.mark.parametrize("k", [0, 7, 15, 22, 31])
def test_heart_lobes_turn_with_the_orientation(k):
    # The heart's centroid lies above its centre (the lobes) by a fixed distance, in
    # the direction "up" turned counter-clockwise by the orientation.
    count, centroid, _ = moments(dsprites.rasterize(one(2, 5, k), BIG)[0])
    offset = np.subtract(centroid, expected_centre(16, 16))
    theta = dsprites.ORIENTATIONS[k]
    direction = np.arctan2(offset[1], offset[0])
    assert abs((direction - (theta + np.pi / 2) + np.pi) % (2 * np.pi) - np.pi) < 0.05
    assert 1.0 < np.hypot(*offset) < 2.5


def test_square_quarter_turns_and_mirror_images():
    f = np.concatenate([one(0, 4, k) for k in range(10)] + [one(0, 4, k + 10) for k in range(10)])
    images = dsprites.rasterize(f, 64)
    assert (images[:10] != images[10:]).sum(axis=(1, 2)).max() <= 2  # 90° symmetry
    for shape in range(3):  # orientation 0 is left-right symmetric: mirror pos_x
        left = dsprites.rasterize(one(shape, 5, 0, 3, 9), 64)[0]
        right = dsprites.rasterize(one(shape, 5, 0, 28, 9), 64)[0]
        assert (left[:, ::-1] != right).sum() <= 2


def test_every_image_lies_inside_the_canvas():
    f = np.array([[s, 5, k, x, y] for s in range(3) for k in range(0, 40, 5)
                  for x in (0, 31) for y in (0, 31)])
    images = dsprites.rasterize(f, 64)
    border = images[:, 0].any() or images[:, -1].any() or images[:, :, 0].any() or images[:, :, -1].any()
    assert images.sum(axis=(1, 2)).min() > 50 and not border


def test_splits_are_disjoint_seeded_and_sliced():
    ds = dsprites.DSprites(seed=0)
    train, test = ds.split_indices("train"), ds.split_indices("test")
    assert len(train) == dsprites.NUM_IMAGES - 10_000 and len(test) == 10_000
    assert (np.bincount(np.concatenate([train, test]), minlength=dsprites.NUM_IMAGES) == 1).all()
    np.testing.assert_array_equal(ds.split_indices("train[:500]"), train[:500])
    np.testing.assert_array_equal(ds.split_indices("test[10%:20%]"), test[1000:2000])
    assert ds.split_size("train[:500]") == 500 and ds.split_size("test") == 10_000
    np.testing.assert_array_equal(dsprites.DSprites(seed=0).split_indices("test"), test)
    assert (dsprites.DSprites(seed=1).split_indices("test[:100]") != test[:100]).any()
    x, y = ds.arrays("test[:20]", image_size=16)
    assert x.shape == (20, 16, 16, 1) and x.dtype == np.uint8 and set(np.unique(x)) <= {0, 255}
    np.testing.assert_array_equal(y, ds.split_factors("test[:20]")[:, 0])


def test_registered_pipeline_draws_the_numpy_images_bit_for_bit():
    entry = data.entry("dsprites_synthetic")
    assert entry.kind == "generated" and entry.num_classes == 3 and entry.has_labels
    assert data.input_shape_of("dsprites_synthetic") == (64, 64, 1)
    ds = data.load("dsprites_synthetic", "test[:300]", batch_size=128, with_labels=True)
    x, y = (np.concatenate(part) for part in zip(*((a.numpy(), b.numpy()) for a, b in ds)))
    factors = dsprites.DSPRITES.split_factors("test[:300]")
    np.testing.assert_array_equal(x, dsprites.DSPRITES.render(factors))
    np.testing.assert_array_equal(y, factors[:, 0])
    arrays_x, arrays_y = data.load_arrays("dsprites_synthetic", "test[:300]")
    np.testing.assert_array_equal(arrays_x, x)


def test_streamed_training_split_reshuffles_every_pass():
    ds = data.load("dsprites_synthetic", "train[:200]", batch_size=200, image_size=8, seed=1,
                   cache_budget_mb=0)
    first, second = (next(iter(ds)).numpy() for _ in range(2))
    assert first.shape == (200, 8, 8, 1) and (first != second).any()
    key = lambda x: sorted(map(bytes, x.astype(np.uint8)))  # noqa: E731
    assert key(first) == key(second)  # the same 200 images, in another order
    expected = dsprites.DSPRITES.render(dsprites.DSPRITES.split_factors("train[:200]"), 8)
    assert key(first) == key(expected)


@pytest.mark.parametrize("call, message", [
    (lambda: dsprites.rasterize([[3, 0, 0, 0, 0]]), "factor 'shape' indices must lie in"),
    (lambda: dsprites.rasterize(np.zeros((2, 4), int)), r"factors must have shape \[N, 5\]"),
    (lambda: dsprites.index_to_factors([737_280]), "grid indices must lie in"),
    (lambda: dsprites.DSprites(test_size=0), "test_size must be"),
    (lambda: dsprites.DSprites(seed=-1), "seed must be"),
    (lambda: dsprites.DSPRITES.split_indices("valid"), "unknown split 'valid'"),
])
def test_bad_arguments_are_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
