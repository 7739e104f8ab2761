"""Preprocessing of organized scans: plane removal, largest cluster, resizing, square padding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pcad.data.preprocess import (
    PreprocessOptions,
    background_plane_mask,
    border_mask,
    largest_cluster,
    largest_cluster_mask,
    nearest_indices,
    pad_to_square,
    preprocess_scan,
    remove_background_plane,
    resize_mask,
    resize_organized,
    resize_rgb,
)
from pcad.errors import InvalidInputError

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def plane_box_scene(
    h: int = 60, w: int = 80, step: float = 0.002, noise: float = 0.0005, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A tilted table at about 0.5 m (MVTec scale) with a 16 x 20 px box 2 cm above it, a few
    missing pixels, sensor noise; returns (xyz, box mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    x = (xx - w / 2) * step
    y = (yy - h / 2) * step
    z = 0.5 + 0.05 * x + 0.03 * y + rng.normal(0, noise, (h, w))
    box = np.zeros((h, w), bool)
    box[22:38, 30:50] = True
    z[box] -= 0.02  # towards the camera
    xyz = np.stack([x, y, z], -1).astype(np.float32)
    holes = rng.random((h, w)) < 0.03
    xyz[holes] = 0.0
    return xyz, box & ~holes


# --------------------------------------------------------------------------------------------
# plane removal
# --------------------------------------------------------------------------------------------


def test_plane_removal_keeps_the_box():
    xyz, box = plane_box_scene()
    before = xyz.copy()
    out = remove_background_plane(xyz)
    valid = np.any(out != 0, axis=-1)
    np.testing.assert_array_equal(valid, box)
    np.testing.assert_array_equal(out[box], xyz[box])  # kept points untouched
    np.testing.assert_array_equal(xyz, before)  # input not modified
    assert out.dtype == np.float32 and out.shape == xyz.shape
    np.testing.assert_array_equal(background_plane_mask(xyz), np.any(xyz != 0, -1) & ~box)


def test_plane_removal_is_deterministic_and_seeded():
    xyz, _ = plane_box_scene(noise=0.002, seed=3)
    a = remove_background_plane(xyz, PreprocessOptions(seed=5))
    b = remove_background_plane(xyz, PreprocessOptions(seed=5))
    np.testing.assert_array_equal(a, b)
    three = PreprocessOptions(ransac_n=3, seed=1)
    np.testing.assert_array_equal(
        background_plane_mask(xyz, three), background_plane_mask(xyz, three)
    )


def test_plane_matches_open3d_segment_plane():
    """Same plane as M3DM's call, Open3D segment_plane(0.004, 50, 1000) on the border."""
    import open3d as o3d

    xyz, _ = plane_box_scene(noise=0.001, seed=7)
    ring = xyz[border_mask(xyz.shape[:2], 10) & np.any(xyz != 0, -1)].astype(np.float64)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(ring))
    model, _ = cloud.segment_plane(distance_threshold=0.004, ransac_n=50, num_iterations=1000)
    model = np.asarray(model) / np.linalg.norm(model[:3])
    theirs = np.any(xyz != 0, -1) & (np.abs(xyz.astype(np.float64) @ model[:3] + model[3]) < 0.005)
    np.testing.assert_array_equal(background_plane_mask(xyz), theirs)


def test_plane_removal_all_zero_and_tiny_inputs_do_not_crash():
    zero = np.zeros((30, 40, 3), np.float32)
    out = remove_background_plane(zero)
    np.testing.assert_array_equal(out, zero)
    assert out is not zero
    two = zero.copy()
    two[0, 0] = (0.1, 0.2, 0.5)
    two[0, 1] = (0.2, 0.2, 0.5)
    np.testing.assert_array_equal(remove_background_plane(two), two)
    single = np.ones((1, 1, 3), np.float32)
    np.testing.assert_array_equal(remove_background_plane(single), single)


def test_plane_removal_with_fewer_border_points_than_ransac_n():
    """M3DM crashes with < 50 valid border points; here RANSAC uses what there is."""
    xyz, box = plane_box_scene()
    border = border_mask(xyz.shape[:2], 10)
    keep_border = np.zeros_like(border)
    ys, xs = np.nonzero(border & np.any(xyz != 0, -1))
    pick = np.random.default_rng(0).choice(len(ys), 30, replace=False)  # 30 of ~2000
    keep_border[ys[pick], xs[pick]] = True
    xyz[border & ~keep_border] = 0.0
    out = remove_background_plane(xyz, PreprocessOptions(ransac_n=50))
    np.testing.assert_array_equal(np.any(out != 0, -1), box)


def test_plane_removal_degenerate_border_returns_input():
    xyz = np.zeros((40, 40, 3), np.float32)
    xyz[0, :] = np.stack([np.linspace(0, 1, 40), np.zeros(40), np.ones(40)], -1)  # a line
    xyz[15:25, 15:25] = (0.5, 0.5, 0.9)
    np.testing.assert_array_equal(remove_background_plane(xyz), xyz)
    xyz[0, :] = (0.3, 0.3, 1.0)  # one repeated point
    np.testing.assert_array_equal(remove_background_plane(xyz), xyz)


def test_plane_removal_relative_units():
    xyz, box = plane_box_scene()
    big = xyz * 1000.0  # millimetres: absolute 0.005 would keep the whole table
    absolute = np.any(remove_background_plane(big) != 0, -1)
    assert absolute.sum() > 2 * box.sum()
    diag = float(np.linalg.norm(np.ptp(big[np.any(big != 0, -1)], axis=0)))
    rel = remove_background_plane(
        big, PreprocessOptions(plane_distance=5.0 / diag, fit_distance=4.0 / diag, relative=True)
    )
    np.testing.assert_array_equal(np.any(rel != 0, -1), box)


def test_plane_removal_whole_cloud_fit_and_bad_arguments():
    xyz, box = plane_box_scene()
    whole = remove_background_plane(xyz, PreprocessOptions(border=None))
    np.testing.assert_array_equal(np.any(whole != 0, -1), box)
    bad = xyz.copy()
    bad[1, 1, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        remove_background_plane(bad)
    with pytest.raises(InvalidInputError, match="plane_distance"):
        PreprocessOptions(plane_distance=-1.0)
    with pytest.raises(InvalidInputError, match="ransac_n"):
        PreprocessOptions(ransac_n=2)
    with pytest.raises(InvalidInputError, match="border"):
        PreprocessOptions(border=0)
    with pytest.raises(InvalidInputError, match="options"):
        remove_background_plane(xyz, 0.005)
    with pytest.raises(InvalidInputError):
        remove_background_plane(xyz[..., :2])


# --------------------------------------------------------------------------------------------
# largest cluster
# --------------------------------------------------------------------------------------------


def _two_blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xyz = np.zeros((40, 40, 3), np.float32)
    yy, xx = np.mgrid[:40, :40].astype(np.float32)
    grid = np.stack([xx * 0.002, yy * 0.002, np.full_like(xx, 0.5)], -1)
    big = np.zeros((40, 40), bool)
    big[5:25, 5:25] = True
    small = np.zeros((40, 40), bool)
    small[30:36, 30:36] = True
    xyz[big | small] = grid[big | small]
    xyz[small, 2] -= 0.05  # far from the big blob in 3D
    return xyz, big, small


def test_largest_cluster_keeps_the_biggest_blob():
    xyz, big, small = _two_blobs()
    opts = PreprocessOptions(eps=0.005, min_points=5)
    keep = largest_cluster_mask(xyz, opts)
    np.testing.assert_array_equal(keep, big)
    out = largest_cluster(xyz, opts)
    np.testing.assert_array_equal(np.any(out != 0, -1), big)
    np.testing.assert_array_equal(out[big], xyz[big])
    # unorganized input gives a per-point mask
    pts = xyz[big | small]
    m = largest_cluster_mask(pts, opts)
    assert m.shape == (len(pts),) and m.sum() == big.sum()
    # relative eps
    relative = PreprocessOptions(eps=0.005 / 0.07, min_points=5, relative=True)
    rel = largest_cluster_mask(xyz, relative)
    np.testing.assert_array_equal(rel, big)


def test_largest_cluster_edge_cases():
    zero = np.zeros((10, 10, 3), np.float32)
    np.testing.assert_array_equal(largest_cluster(zero), zero)
    sparse = zero.copy()
    sparse[0, 0], sparse[9, 9] = (0, 0, 1), (1, 1, 1)  # no cluster: noise only, kept
    noise_only = largest_cluster(sparse, PreprocessOptions(eps=0.01, min_points=2))
    np.testing.assert_array_equal(noise_only, sparse)
    with pytest.raises(InvalidInputError):
        largest_cluster_mask(np.zeros((4, 2)))
    with pytest.raises(InvalidInputError, match="eps"):
        PreprocessOptions(eps=0)


# --------------------------------------------------------------------------------------------
# resizing
# --------------------------------------------------------------------------------------------


def _scan(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.random((h, w, 3), dtype=np.float32) + 0.5
    xyz[rng.random((h, w)) < 0.3] = 0.0
    return xyz


@PROPS
@given(h=st.integers(1, 12), w=st.integers(1, 12), oh=st.integers(1, 20), ow=st.integers(1, 20),
       seed=st.integers(0, 1000))
def test_resize_organized_is_nearest_only(h, w, oh, ow, seed):
    xyz = _scan(h, w, seed)
    out = resize_organized(xyz, (oh, ow))
    assert out.shape == (oh, ow, 3) and out.dtype == np.float32
    rows, cols = nearest_indices(h, oh), nearest_indices(w, ow)
    np.testing.assert_array_equal(out, xyz[rows[:, None], cols[None, :]])
    # every output pixel is a source pixel: no new values, invalid stays invalid
    src = {tuple(p) for p in xyz.reshape(-1, 3)}
    assert all(tuple(p) in src for p in out.reshape(-1, 3))
    src_valid = np.any(xyz != 0, -1)
    np.testing.assert_array_equal(np.any(out != 0, -1), src_valid[rows[:, None], cols[None, :]])
    mask = resize_mask(src_valid, (oh, ow))
    np.testing.assert_array_equal(mask, np.any(out != 0, -1))  # gt follows xyz exactly
    np.testing.assert_array_equal(resize_rgb((xyz * 100).astype(np.uint8), (oh, ow), "nearest"),
                                  (out * 100).astype(np.uint8))


def test_resize_alignment_and_rgb():
    assert nearest_indices(4, 2).tolist() == [1, 3]
    assert nearest_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert nearest_indices(5, 5).tolist() == [0, 1, 2, 3, 4]
    xyz = _scan(9, 7, 0)
    np.testing.assert_array_equal(resize_organized(xyz, (9, 7)), xyz)
    assert resize_organized(xyz, 4).shape == (4, 4, 3)
    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    for method in ("bilinear", "bicubic"):
        out = resize_rgb(rgb, (18, 14), method)
        assert out.shape == (18, 14, 3) and out.dtype == np.uint8
    flat = np.full((9, 7, 3), 77, np.uint8)
    assert np.all(resize_rgb(flat, (4, 5)) == 77)
    with pytest.raises(InvalidInputError, match="method"):
        resize_rgb(rgb, 4, "area")
    with pytest.raises(InvalidInputError, match="uint8"):
        resize_rgb(rgb.astype(np.float32), 4)
    with pytest.raises(InvalidInputError, match="size"):
        resize_organized(xyz, (0, 3))
    with pytest.raises(InvalidInputError, match="size"):
        resize_organized(xyz, "big")
    with pytest.raises(InvalidInputError, match="mask"):
        resize_mask(np.zeros(4), 2)


# --------------------------------------------------------------------------------------------
# padding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "multiple", "side"),
                         [(6, 10, 1, 10), (10, 6, 1, 10), (130, 250, 100, 300), (7, 7, 1, 7)])
def test_pad_to_square_keeps_alignment(h, w, multiple, side):
    rng = np.random.default_rng(h * w)
    rgb = rng.integers(1, 256, (h, w, 3), dtype=np.uint8)
    xyz = _scan(h, w, 1)
    gt = rng.random((h, w)) < 0.2
    out = pad_to_square(rgb, xyz, gt, multiple=multiple, rgb_fill=9)
    top, left = out.offset
    assert out.rgb.shape == (side, side, 3) and out.xyz.shape == (side, side, 3)
    assert out.gt.shape == (side, side) and out.gt.dtype == bool
    assert (top, left) == ((side - h) // 2, (side - w) // 2)
    inner = (slice(top, top + h), slice(left, left + w))
    np.testing.assert_array_equal(out.rgb[inner], rgb)
    np.testing.assert_array_equal(out.xyz[inner], xyz)
    np.testing.assert_array_equal(out.gt[inner], gt)
    outside = np.ones((side, side), bool)
    outside[inner] = False
    assert np.all(out.xyz[outside] == 0) and not out.gt[outside].any()
    assert np.all(out.rgb[outside] == 9)
    # a pixel's rgb, xyz and gt stay together
    ys, xs = np.nonzero(out.gt)
    np.testing.assert_array_equal(out.xyz[ys, xs], xyz[ys - top, xs - left])
    np.testing.assert_array_equal(out.rgb[ys, xs], rgb[ys - top, xs - left])


def test_pad_to_square_partial_and_bad_input():
    r = pad_to_square(gt=np.ones((2, 5), bool))
    assert r.rgb is None and r.xyz is None and r.gt.shape == (5, 5) and r.offset == (1, 0)
    rgb, _, _, offset = pad_to_square(np.zeros((3, 1, 3), np.uint8))
    assert rgb.shape == (3, 3, 3) and offset == (0, 1)
    with pytest.raises(InvalidInputError, match="sizes differ"):
        pad_to_square(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 6, 3)))
    with pytest.raises(InvalidInputError, match="at least one"):
        pad_to_square()
    with pytest.raises(InvalidInputError, match="gt"):
        pad_to_square(gt=np.zeros((2, 2, 2)))
    with pytest.raises(InvalidInputError, match="rgb_fill"):
        pad_to_square(gt=np.zeros((2, 2)), rgb_fill=300)


# --------------------------------------------------------------------------------------------
# the whole M3DM chain
# --------------------------------------------------------------------------------------------


def test_preprocess_scan_like_m3dm():
    xyz, box = plane_box_scene(h=60, w=80)
    outlier = np.zeros_like(box)
    outlier[45:49, 10:14] = True  # a floating speck far above the table
    xyz[outlier] = xyz[outlier] - np.float32([0, 0, 0.2])
    rgb = np.full((60, 80, 3), 200, np.uint8)
    gt = np.zeros((60, 80), bool)
    gt[25:27, 33:36] = True
    out = preprocess_scan(xyz, rgb, gt, PreprocessOptions(min_points=5))
    assert out.xyz.shape == (100, 100, 3) and out.offset == (20, 10)
    top, left = out.offset
    valid = np.any(out.xyz != 0, -1)
    expected = np.zeros((100, 100), bool)
    expected[top : top + 60, left : left + 80] = box
    np.testing.assert_array_equal(valid, expected)  # table and speck gone, box kept
    removed = np.zeros((100, 100), bool)
    removed[top : top + 60, left : left + 80] = np.any(xyz != 0, -1)
    removed &= ~valid
    np.testing.assert_array_equal(np.all(out.rgb == 0, -1)[top : top + 60, left : left + 80],
                                  removed[top : top + 60, left : left + 80])  # rgb follows xyz
    assert out.gt.sum() == gt.sum() and out.gt[top + 25, left + 33]
    same = preprocess_scan(xyz, rgb, gt, PreprocessOptions(min_points=5))
    np.testing.assert_array_equal(same.xyz, out.xyz)
    only_xyz = preprocess_scan(np.zeros((5, 7, 3)), options=PreprocessOptions(multiple=1))
    assert only_xyz.rgb is None and only_xyz.xyz.shape == (7, 7, 3) and not only_xyz.xyz.any()
    with pytest.raises(InvalidInputError, match="rgb"):
        preprocess_scan(xyz, rgb[:10])


# --------------------------------------------------------------------------------------------
# property-based: random arrays give a result or a documented error
# --------------------------------------------------------------------------------------------

_any_arrays = hnp.arrays(
    st.sampled_from([np.float32, np.float64, np.uint8, np.int16, bool]),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6),
)


@PROPS
@given(arr=_any_arrays, size=st.one_of(st.integers(-2, 8), st.tuples(st.integers(-1, 8),
                                                                     st.integers(-1, 8))))
def test_random_shapes_only_documented_errors(arr, size):
    calls = [
        lambda: remove_background_plane(arr, PreprocessOptions(ransac_n=3, iterations=20)),
        lambda: largest_cluster(arr, PreprocessOptions(eps=0.5, min_points=2)),
        lambda: resize_organized(arr, size),
        lambda: resize_mask(arr, size),
        lambda: resize_rgb(arr, size),
        lambda: pad_to_square(xyz=arr),
        lambda: pad_to_square(rgb=arr),
        lambda: pad_to_square(gt=arr),
    ]
    for call in calls:
        try:
            out = call()
        except InvalidInputError:
            continue
        # a call that accepts the input returns arrays (one or a tuple), never None
        assert out is not None
