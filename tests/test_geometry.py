"""Tests of pcad.geometry: bounding boxes, PCA frames, degeneracy checks and normals."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from pcad.errors import DegenerateGeometryError, InvalidInputError
from pcad.geometry import (
    Frame,
    bbox_diagonal,
    check_not_degenerate,
    estimate_normals,
    organized_normals,
    orient_outward,
    orient_towards,
    pca_frame,
    project_to_plane,
    to_local,
)

# ----------------------------------------------------------------------------- helpers


def unit_sphere(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def sample_surface(mesh: trimesh.Trimesh, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted deterministic surface sample: points and their face normals."""
    rng = np.random.default_rng(seed)
    area = mesh.area_faces / mesh.area_faces.sum()
    faces = rng.choice(area.shape[0], size=n, p=area)
    u, v = rng.random(n), rng.random(n)
    out = u + v > 1
    u[out], v[out] = 1 - u[out], 1 - v[out]
    tri = mesh.triangles[faces]
    pts = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    return pts, mesh.face_normals[faces]


def tilted_plane(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points on the plane through (1, 2, 3) with normal (1, 2, 2) / 3, and that normal."""
    rng = np.random.default_rng(seed)
    normal = np.array([1.0, 2.0, 2.0]) / 3.0
    a = np.cross(normal, [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(normal, a)
    uv = rng.uniform(-1, 1, size=(n, 2)) * [3.0, 1.0]
    return np.array([1.0, 2.0, 3.0]) + uv[:, :1] * a + uv[:, 1:] * b, normal


# ----------------------------------------------------------------------------- frames


def test_bbox_diagonal_of_known_box():
    pts = np.array([[0, 0, 0], [1, 2, 2], [0.5, 1, 0.3]])
    assert bbox_diagonal(pts) == pytest.approx(3.0)
    assert bbox_diagonal([[1.0, 1.0, 1.0]]) == 0.0
    corners = np.array(np.meshgrid([-1, 2], [0, 4], [5, 17])).reshape(3, -1).T
    assert bbox_diagonal(corners) == pytest.approx(13.0)
    assert isinstance(bbox_diagonal(corners), float)


def test_pca_frame_recovers_tilted_plane_normal():
    pts, normal = tilted_plane(500, seed=0)
    frame = pca_frame(pts)
    assert isinstance(frame, Frame)
    assert frame.origin.shape == (3,) and frame.origin.dtype == np.float64
    assert frame.axes.shape == (3, 3) and frame.axes.dtype == np.float64
    assert abs(float(frame.axes[2] @ normal)) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(frame.axes @ frame.axes.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(frame.axes[2], np.cross(frame.axes[0], frame.axes[1]), atol=1e-12)
    assert np.linalg.det(frame.axes) == pytest.approx(1.0)
    sv = frame.singular_values
    assert sv[0] >= sv[1] > 100 * sv[2]
    # The long side of the plane (3 vs 1) is the first axis.
    np.testing.assert_allclose(frame.origin, pts.mean(axis=0), atol=1e-12)
    # Sign convention: largest-|component| of the first two axes is positive.
    for axis in frame.axes[:2]:
        assert axis[np.argmax(np.abs(axis))] > 0


def test_pca_frame_is_deterministic_and_order_invariant():
    pts, _ = tilted_plane(300, seed=1)
    a, b = pca_frame(pts), pca_frame(pts.copy())
    assert a.axes.tobytes() == b.axes.tobytes()
    assert a.origin.tobytes() == b.origin.tobytes()
    perm = np.random.default_rng(2).permutation(pts.shape[0])
    c = pca_frame(pts[perm])
    np.testing.assert_allclose(c.axes, a.axes, atol=1e-9)
    # Flipping the cloud's orientation by a sign does not change the sign convention.
    d = pca_frame(-pts)
    for axis in d.axes[:2]:
        assert axis[np.argmax(np.abs(axis))] > 0


def test_to_local_and_project_to_plane():
    pts, _ = tilted_plane(200, seed=3)
    frame = pca_frame(pts)
    local = to_local(pts, frame)
    assert local.shape == (200, 3) and local.dtype == np.float64
    np.testing.assert_allclose(local[:, 2], 0.0, atol=1e-9)
    np.testing.assert_allclose(local.mean(axis=0), 0.0, atol=1e-9)
    uv = project_to_plane(pts, frame)
    assert uv.shape == (200, 2) and uv.dtype == np.float64
    np.testing.assert_allclose(uv, local[:, :2])
    # Distances in the plane are preserved.
    np.testing.assert_allclose(
        np.linalg.norm(uv[1:] - uv[0], axis=1), np.linalg.norm(pts[1:] - pts[0], axis=1)
    )
    with pytest.raises(InvalidInputError, match="frame"):
        to_local(pts, np.eye(3))


@pytest.mark.parametrize(
    "pts",
    [
        np.tile([1.0, 2.0, 3.0], (20, 1)),
        np.array([[0.1, 0.2, 0.3]]),
        np.tile(np.float32([0.1, 0.7, 0.3]), (50, 1)),
    ],
    ids=["duplicates", "one-point", "float32-duplicates"],
)
def test_single_point_cloud_is_degenerate(pts):
    with pytest.raises(DegenerateGeometryError, match="single point"):
        pca_frame(pts)
    with pytest.raises(DegenerateGeometryError):
        check_not_degenerate(pts)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_collinear_cloud_is_degenerate(dtype):
    t = np.linspace(-1, 1, 50)[:, None]
    pts = (np.array([0.5, -1.0, 2.0]) + t * np.array([0.3, 0.4, 1.2])).astype(dtype)
    with pytest.raises(DegenerateGeometryError, match="collinear"):
        pca_frame(pts)
    with pytest.raises(DegenerateGeometryError, match="myname: points are collinear"):
        check_not_degenerate(pts, "myname")
    with pytest.raises(DegenerateGeometryError, match="collinear"):
        check_not_degenerate(pts[:2])
    with pytest.raises(DegenerateGeometryError):
        estimate_normals(pts)


def test_planar_clouds_pass_check_not_degenerate():
    pts, _ = tilted_plane(100, seed=4)
    out = check_not_degenerate(pts)
    assert out.dtype == np.float32 and out.shape == (100, 3)
    v, u = np.mgrid[0:16, 0:20].astype(np.float32)
    scan = np.stack([u * 1e-3, v * 1e-3, np.full_like(u, 0.5)], -1).reshape(-1, 3)
    check_not_degenerate(scan)
    check_not_degenerate(np.eye(3))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((5, 2)), np.zeros((0, 3)), np.array([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]]), "abc"],
    ids=["shape", "empty", "nan", "string"],
)
def test_frames_reject_bad_inputs(bad):
    for fn in (bbox_diagonal, pca_frame, check_not_degenerate):
        with pytest.raises(InvalidInputError):
            fn(bad)


# ----------------------------------------------------------------------------- normals


def test_sphere_normals_are_radial_and_outward():
    pts = unit_sphere(2000, seed=0)
    n = estimate_normals(pts)
    assert n.shape == (2000, 3) and n.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)
    dots = np.einsum("ij,ij->i", n.astype(np.float64), pts)
    assert (np.abs(dots) > 0.95).mean() > 0.98
    assert (dots > 0).mean() > 0.99
    # A translated sphere too (outward is relative to the centroid).
    n2 = estimate_normals(pts * 0.01 + [5.0, -3.0, 100.0], k=20, orient="outward")
    assert (np.einsum("ij,ij->i", n2.astype(np.float64), pts) > 0).mean() > 0.99


def test_estimate_normals_is_deterministic():
    pts = unit_sphere(1500, seed=5)
    for orient in ("outward", "none"):
        a = estimate_normals(pts, orient=orient)
        b = estimate_normals(pts.copy(), orient=orient)
        assert a.tobytes() == b.tobytes()
    a = estimate_normals(pts, viewpoint=[0, 0, 10])
    b = estimate_normals(pts, viewpoint=[0, 0, 10])
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    "mesh",
    [trimesh.creation.box(extents=(1.0, 2.0, 3.0)), trimesh.creation.torus(1.0, 0.3)],
    ids=["box", "torus"],
)
def test_outward_normals_on_closed_meshes(mesh):
    pts, face_normals = sample_surface(mesh, 3000, seed=6)
    n = estimate_normals(pts, orient="outward")
    dots = np.einsum("ij,ij->i", n.astype(np.float64), face_normals)
    assert (dots > 0).mean() > 0.99
    assert (dots > 0.9).mean() > 0.8  # box edges blend two faces
    # The torus' inner side points towards the axis: outward is not "away from the centroid".
    radial = np.einsum("ij,ij->i", n.astype(np.float64), pts - pts.mean(axis=0))
    if mesh.euler_number == 0:
        assert (radial < 0).mean() > 0.1


def test_orient_outward_on_random_signs():
    pts = unit_sphere(1000, seed=7)
    signs = np.where(np.random.default_rng(8).random(1000) < 0.5, -1.0, 1.0)
    n = orient_outward(pts, pts * signs[:, None])
    np.testing.assert_allclose(n, pts, atol=1e-6)


def test_flat_plate_normals_are_parallel_and_consistent():
    rng = np.random.default_rng(9)
    g = rng.uniform(-1, 1, size=(1000, 2))
    plate = np.column_stack([g, np.full(1000, 0.25)])
    n = estimate_normals(plate)
    np.testing.assert_allclose(n, np.tile([0, 0, 1], (1000, 1)), atol=1e-6)
    tilted, normal = tilted_plane(1000, seed=10)
    n = estimate_normals(tilted)
    np.testing.assert_allclose(n, np.tile(normal, (1000, 1)), atol=1e-5)  # largest comp > 0
    nv = estimate_normals(tilted, orient="viewpoint", viewpoint=[1, 2, 3] - 10 * normal)
    np.testing.assert_allclose(nv, np.tile(-normal, (1000, 1)), atol=1e-5)


def test_viewpoint_orientation():
    pts = unit_sphere(1000, seed=11)
    vp = np.array([0.0, 0.0, 5.0])
    n = estimate_normals(pts, k=15, orient="viewpoint", viewpoint=vp)
    assert (np.einsum("ij,ij->i", n.astype(np.float64), vp - pts) >= 0).all()
    # "auto" with a viewpoint orients towards it.
    assert estimate_normals(pts, k=15, viewpoint=vp).tobytes() == n.tobytes()
    flipped = orient_towards(-pts, pts, [0, 0, 0])
    assert flipped.dtype == np.float32
    np.testing.assert_allclose(flipped, -pts, atol=1e-6)
    np.testing.assert_allclose(orient_towards(pts, pts, [0, 0, 0]), -pts, atol=1e-6)


def test_normals_reject_bad_inputs():
    pts = unit_sphere(50, seed=12)
    bad = pts.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        estimate_normals(bad)
    with pytest.raises(InvalidInputError, match="shape"):
        estimate_normals(pts[:, :2])
    with pytest.raises(InvalidInputError):
        estimate_normals(pts[:2])
    with pytest.raises(InvalidInputError, match="orient"):
        estimate_normals(pts, orient="inward")
    with pytest.raises(InvalidInputError, match="viewpoint"):
        estimate_normals(pts, orient="viewpoint")
    with pytest.raises(InvalidInputError, match="viewpoint"):
        estimate_normals(pts, viewpoint=[0, 0])
    with pytest.raises(InvalidInputError, match="viewpoint"):
        estimate_normals(pts, viewpoint=[0, np.inf, 0])
    with pytest.raises(InvalidInputError, match="k"):
        estimate_normals(pts, k=1)
    with pytest.raises(InvalidInputError, match="normals"):
        orient_towards(pts[:10], pts, [0, 0, 0])
    # k larger than the cloud is clipped.
    assert estimate_normals(pts[:5], k=100).shape == (5, 3)


# ----------------------------------------------------------------------------- organized


def organized_plane(h: int = 32, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Organized scan of z = 1 + 0.1 x with some missing pixels, and the expected normal."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x = (u - w / 2) * 0.01
    y = (v - h / 2) * 0.01
    xyz = np.stack([x, y, 1.0 + 0.1 * x], axis=-1).astype(np.float32)
    rng = np.random.default_rng(13)
    xyz[rng.random((h, w)) < 0.15] = 0.0
    xyz[0:3, 0:3] = 0.0  # a hole...
    xyz[1, 1] = [x[1, 1], y[1, 1], 1.0 + 0.1 * x[1, 1]]  # ...with an isolated pixel inside
    xyz[:, -1] = 0.0
    expected = np.array([0.1, 0.0, -1.0]) / np.linalg.norm([0.1, 0.0, -1.0])  # n . (0 - p) > 0
    return xyz, expected


def test_organized_normals_on_a_plane():
    xyz, expected = organized_plane()
    n = organized_normals(xyz)
    assert n.shape == xyz.shape and n.dtype == np.float32
    valid = np.any(xyz != 0, axis=-1)
    assert valid[1, 1] and not valid[0, 0]
    np.testing.assert_allclose(n[valid], np.tile(expected, (int(valid.sum()), 1)), atol=1e-4)
    assert not n[~valid].any()
    # Every valid normal faces the camera at the origin.
    assert (np.einsum("ij,ij->i", n[valid], -xyz[valid]) > 0).all()
    assert organized_normals(xyz).tobytes() == n.tobytes()
    # The valid points form a plane, not a degenerate cloud.
    check_not_degenerate(xyz[valid])


def test_organized_normals_on_a_sphere_cap_face_the_camera():
    v, u = np.mgrid[0:24, 0:24].astype(np.float64)
    x, y = (u - 11.5) / 24, (v - 11.5) / 24
    z = 2.0 - np.sqrt(1.0 - x**2 - y**2)  # front of a unit sphere centred at (0, 0, 2)
    xyz = np.stack([x, y, z], -1).astype(np.float32)
    n = organized_normals(xyz).reshape(-1, 3).astype(np.float64)
    radial = xyz.reshape(-1, 3) - [0.0, 0.0, 2.0]
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    assert (np.einsum("ij,ij->i", n, radial) > 0.99).all()


def test_organized_normals_small_and_bad_inputs():
    tiny = np.zeros((4, 4, 3), np.float32)
    tiny[0, 0] = [0.1, 0.1, 1.0]
    tiny[3, 3] = [0.2, 0.2, 1.0]
    assert not organized_normals(tiny).any()  # isolated pixels, too few points for a kNN fallback
    assert not organized_normals(np.zeros((3, 3, 3))).any()
    with pytest.raises(InvalidInputError, match="NaN"):
        organized_normals(np.full((4, 4, 3), np.nan))
    with pytest.raises(InvalidInputError, match="shape"):
        organized_normals(np.zeros((4, 4)))
    with pytest.raises(InvalidInputError):
        organized_normals(np.zeros((0, 4, 3)))
