"""Defect types: ground-truth rule, determinism, relative sizing, organized grids, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pcad.errors import DegenerateGeometryError, InvalidInputError
from pcad.geometry import foreground_mask
from pcad.io import read_mesh, sample_mesh
from synth import (
    apply_defect,
    apply_defect_to_mesh,
    apply_to_scan,
    create_defect,
    defect_info,
    gt_rule,
    list_defects,
    register_defect,
)
from synth.defects import Defect
from synth.defects.crack import distance_to_path
from synth.regions import falloff
from tests.conftest import shared_mesh_paths

DEFECTS = list_defects(kind="geometric")


def check_gt(result) -> None:
    """The mask is exactly the documented rule."""
    expected = gt_rule(result.offsets, result.params["threshold_abs"])
    if result.organized:
        expected = expected.reshape(result.mask.shape)
        expected.reshape(-1)[result.removed] = True
    elif result.removed.size:
        assert result.params["rim_abs"] >= 0
        # points beyond the displacement rule must be rim points of the removed region
        extra = result.mask & ~expected
        assert not (expected & ~result.mask).any()
        assert extra.sum() == result.mask.sum() - expected.sum()
        return
    np.testing.assert_array_equal(result.mask, expected)


def test_registry_lists_every_type():
    assert DEFECTS == ["bump", "crack", "dent", "hole", "perlin"]
    assert list_defects(kind="appearance") == ["blur", "colour", "contamination", "graft",
                                               "scratch", "texture"]
    assert list_defects(kind="composite") == ["combined"]
    assert list_defects() == sorted(DEFECTS + ["colour", "contamination", "texture", "combined",
                                               "graft", "scratch", "blur"])
    assert list_defects(made_by="render") == ["combined", "contamination"]
    assert list_defects("c*", kind="appearance") == ["colour", "contamination"]
    assert all(issubclass(defect_info(n).obj, Defect) for n in DEFECTS)
    assert defect_info("texture").description.startswith("DRAEM texture")


def test_one_vocabulary_in_every_generator():
    from synth.render import render_defects
    from synth.supervision import DEFECT_TYPES, GEOMETRIC_TYPES, RGB_TYPES

    assert render_defects() == [*DEFECTS, "contamination", "combined"]
    assert set(GEOMETRIC_TYPES) == set(DEFECTS)
    assert set(RGB_TYPES) == set(list_defects(kind="appearance", made_by="source"))
    assert set(DEFECT_TYPES) <= set(list_defects())


@pytest.mark.parametrize("name", ["contamination", "combined", "texture", "colour"])
def test_create_defect_refuses_appearance_names(name):
    with pytest.raises(InvalidInputError, match="not a geometric Defect"):
        create_defect(name)


def test_register_defect_clash_and_checks():
    with pytest.raises(InvalidInputError, match="already registered"):
        @register_defect("dent")
        class OtherDent(Defect):
            pass
    assert defect_info("dent").obj.__name__ != "OtherDent"
    with pytest.raises(InvalidInputError, match="Defect subclass"):
        register_defect("pcad-test-not-a-defect")(lambda: None)
    with pytest.raises(InvalidInputError, match="made_by"):
        register_defect("pcad-test-stain", kind="appearance")(lambda: None)
    with pytest.raises(InvalidInputError, match="kind"):
        register_defect("pcad-test-x", kind="audio")
    with pytest.raises(InvalidInputError, match="kind"):
        list_defects(kind="audio")
    with pytest.raises(InvalidInputError, match="unknown 'scratchy'"):
        defect_info("scratchy")
    assert "pcad-test-not-a-defect" not in list_defects()


@pytest.mark.parametrize("name", DEFECTS)
def test_ground_truth_rule_and_shapes(name, sphere_cloud):
    pts, nrm = sphere_cloud
    r = apply_defect(pts, name, normals=nrm, seed=4)
    n_out = len(pts) - r.removed.size
    assert r.points.shape == (n_out, 3) and r.points.dtype == np.float32
    assert r.mask.shape == (n_out,) and r.mask.dtype == bool
    assert r.offsets.shape == (n_out, 3) and r.normals.shape == (n_out, 3)
    assert r.removed.dtype == np.int64
    assert np.isfinite(r.points).all()
    assert r.n_anomalous > 0
    check_gt(r)
    keep = np.setdiff1d(np.arange(len(pts)), r.removed)
    np.testing.assert_array_equal(r.points, pts[keep] + r.offsets)
    assert r.params["defect"] == name and r.params["seed"] == 4


@pytest.mark.parametrize("name", DEFECTS)
def test_same_seed_same_bytes_other_seed_differs(name, sphere_cloud):
    pts, nrm = sphere_cloud
    a = apply_defect(pts, name, normals=nrm, seed=11)
    b = apply_defect(pts, name, normals=nrm, seed=11)
    c = apply_defect(pts, name, normals=nrm, seed=12)
    for x, y in ((a.points, b.points), (a.mask, b.mask), (a.offsets, b.offsets),
                 (a.removed, b.removed)):
        assert x.tobytes() == y.tobytes()
    assert a.params == b.params
    assert a.points.shape != c.points.shape or not np.array_equal(a.points, c.points)


@pytest.mark.parametrize("name", DEFECTS)
def test_relative_sizes_are_scale_invariant(name, box_mesh):
    pts, nrm, _ = sample_mesh(box_mesh, 5000, seed=0)
    small = apply_defect(pts, name, normals=nrm, seed=3)
    big = apply_defect(pts.astype(np.float64) * 1000.0, name, normals=nrm, seed=3)
    np.testing.assert_array_equal(small.removed, big.removed)
    assert abs(big.params["diag"] / small.params["diag"] - 1000.0) < 1e-3
    np.testing.assert_allclose(big.offsets, small.offsets * 1000.0, rtol=1e-4, atol=1e-6)
    # masks agree except where a displacement sits on the threshold within float32 rounding
    norm = np.linalg.norm(small.offsets.astype(np.float64), axis=1)
    borderline = np.abs(norm - small.params["threshold_abs"]) < 1e-5 * small.params["diag"]
    assert not (small.mask != big.mask)[~borderline].any()


def test_absolute_units(box_mesh):
    pts, nrm, _ = sample_mesh(box_mesh, 4000, seed=0)
    r = apply_defect(pts, "bump", normals=nrm, seed=1, strength=0.05, radius=0.5,
                     units="absolute")
    assert r.params["strength_abs"] == 0.05 and r.params["radius_abs"] == 0.5
    assert r.max_offset <= 0.05 + 1e-6
    rel = apply_defect(pts, "bump", normals=nrm, seed=1, strength=0.05, radius=0.5)
    assert rel.params["strength_abs"] == pytest.approx(0.05 * rel.params["diag"])


def test_perlin_global_is_3dpnas(sphere_cloud):
    """Global mode, global region: every point moves outward by strength * g, g in [0, 1]."""
    pts, nrm = sphere_cloud
    r = apply_defect(pts, "perlin", normals=nrm, seed=0, strength=0.02)
    mag = np.einsum("ij,ij->i", r.offsets.astype(np.float64), nrm.astype(np.float64))
    assert mag.min() >= -1e-7
    assert mag.max() == pytest.approx(0.02 * r.params["diag"], rel=1e-5)
    assert r.params["mode"] == "global" and r.params["region"] == "global"


def test_perlin_knobs_change_the_field(sphere_cloud):
    pts, nrm = sphere_cloud
    base = apply_defect(pts, "perlin", normals=nrm, seed=0).offsets
    for kw in ({"scale": 8.0}, {"octaves": 1}, {"persistence": 0.8}, {"lacunarity": 3.0},
               {"mode": "volumetric"}, {"mode": "local"}):
        other = apply_defect(pts, "perlin", normals=nrm, seed=0, **kw).offsets
        assert not np.allclose(base, other), kw


def test_signed_perlin_has_bumps_and_dents(sphere_cloud):
    pts, nrm = sphere_cloud
    r = apply_defect(pts, "perlin", normals=nrm, seed=0, signed=True)
    mag = np.einsum("ij,ij->i", r.offsets, nrm)
    assert mag.min() < 0 < mag.max()


def test_threshold_region_is_draem_like(sphere_cloud):
    pts, nrm = sphere_cloud
    r = apply_defect(pts, "perlin", normals=nrm, seed=2, region="threshold", threshold=0.7)
    moved = np.linalg.norm(r.offsets, axis=1) > 0
    assert 0 < moved.mean() < 0.6
    check_gt(r)


@pytest.mark.parametrize("name,sign", [("bump", 1), ("dent", -1), ("crack", -1)])
def test_direction_along_normals(name, sign, sphere_cloud):
    pts, nrm = sphere_cloud
    r = apply_defect(pts, name, normals=nrm, seed=6)
    along = np.einsum("ij,ij->i", r.offsets.astype(np.float64), nrm.astype(np.float64))
    assert (sign * along[r.mask] > 0).all()
    # displacement is purely normal
    tangential = r.offsets - along[:, None] * nrm
    assert np.abs(tangential).max() < 1e-6


def test_local_region_stays_on_its_side():
    """A thin plate: a bump on the top face never moves the bottom face."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(-1, 1, size=(6000, 2))
    top = rng.random(6000) < 0.5
    z = np.where(top, 0.01, -0.01)
    pts = np.column_stack([xy, z]).astype(np.float32)
    nrm = np.zeros_like(pts)
    nrm[:, 2] = np.where(top, 1.0, -1.0)
    for seed in range(4):
        r = apply_defect(pts, "bump", normals=nrm, seed=seed, radius=0.3)
        side = top[r.params["centre_index"]]
        moved = np.linalg.norm(r.offsets, axis=1) > 0
        assert moved.any() and (top[moved] == side).all()


def test_hole_removes_points_and_marks_rim(sphere_cloud):
    pts, nrm = sphere_cloud
    r = apply_defect(pts, "hole", normals=nrm, seed=1, radius=0.2)
    assert r.removed.size > 0 and len(r.points) == len(pts) - r.removed.size
    assert (np.diff(r.removed) > 0).all() and r.removed.max() < len(pts)
    assert r.n_anomalous > 0 and not r.offsets.any()
    from scipy.spatial import cKDTree

    d = cKDTree(pts[r.removed]).query(r.points)[0]
    np.testing.assert_array_equal(r.mask, d <= r.params["rim_abs"])


def test_falloff_profiles():
    t = np.array([0.0, 0.25, 1.0, 1.5])
    for kind in ("cosine", "gaussian", "linear", "poly", "hard"):
        w = falloff(t, kind)
        assert w[0] == 1.0 and w[2] == 0.0 and w[3] == 0.0 and 0 < w[1] <= 1
    with pytest.raises(InvalidInputError, match="falloff"):
        falloff(t, "square")


def test_crack_path_distance():
    path = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    d, pos = distance_to_path(np.array([[0.5, 0.3], [2.5, 0.0], [1.0, -0.1]]), path)
    np.testing.assert_allclose(d, [0.3, 0.5, 0.1])
    np.testing.assert_allclose(pos, [0.25, 1.0, 0.5])


# --- organized grids -------------------------------------------------------------------------

@pytest.mark.parametrize("name", DEFECTS)
def test_organized_stays_organized(name, organized_scan):
    valid = np.any(organized_scan != 0, axis=-1)
    r = apply_defect(organized_scan, name, seed=3)
    assert r.points.shape == organized_scan.shape and r.mask.shape == valid.shape
    assert r.organized
    assert not r.mask[~valid].any()
    assert (r.points[~valid] == 0).all()
    assert np.isfinite(r.points).all()
    check_gt(r)
    if name == "hole":
        holes = np.zeros(valid.size, bool)
        holes[r.removed] = True
        holes = holes.reshape(valid.shape)
        assert holes.any() and valid[holes].all()
        assert (r.points[holes] == 0).all() and r.mask[holes].all()
    else:
        assert r.removed.size == 0
        still = valid & ~r.mask
        np.testing.assert_allclose(r.points[still], organized_scan[still],
                                   atol=float(r.params["threshold_abs"]) + 1e-7)


def test_organized_dent_moves_away_from_sensor(organized_scan):
    r = apply_defect(organized_scan, "dent", seed=0, strength=0.05)
    moved = r.mask
    # the camera sits at the origin looking along +z: a dent increases the distance
    before = np.linalg.norm(organized_scan[moved], axis=1)
    after = np.linalg.norm(r.points[moved], axis=1)
    assert (after > before).all()


def test_organized_determinism(organized_scan):
    a = apply_defect(organized_scan, "perlin", seed=9, region="ball")
    b = apply_defect(organized_scan, "perlin", seed=9, region="ball")
    assert a.points.tobytes() == b.points.tobytes() and a.mask.tobytes() == b.mask.tobytes()


# --- a defect on a scan's foreground -----------------------------------------------------------


@pytest.fixture()
def part_on_plane() -> np.ndarray:
    """A (48, 64, 3) float32 scan: a raised block on a background plane, a few holes."""
    yy, xx = np.mgrid[:48, :64].astype(np.float32)
    block = (np.abs(xx - 32) < 14) & (np.abs(yy - 24) < 10)
    z = np.where(block, 0.9 + 0.01 * np.sin(xx / 3), 1.0)
    xyz = np.stack([(xx - 32) * 0.01 * z, (yy - 24) * 0.01 * z, z], axis=-1).astype(np.float32)
    xyz[20:22, 5:9] = 0.0
    return xyz


@pytest.mark.parametrize("name", DEFECTS)
def test_apply_to_scan_is_apply_defect_on_the_foreground(name, part_on_plane):
    fg = foreground_mask(part_on_plane)
    obj = np.where(fg[..., None], part_on_plane, 0.0).astype(np.float32)
    ref = apply_defect(obj, name, seed=5)
    r = apply_to_scan(part_on_plane, name, seed=5)
    want = part_on_plane.copy()
    want[fg] = ref.points[fg]
    assert r.points.tobytes() == want.tobytes()
    assert r.mask.tobytes() == (ref.mask & fg).tobytes() and r.params == ref.params
    assert not (r.mask & ~fg).any()
    np.testing.assert_array_equal(r.points[~fg], part_on_plane[~fg])
    again = apply_to_scan(part_on_plane, name, seed=5, foreground=fg)
    assert again.points.tobytes() == r.points.tobytes()
    # the centre drawn among the foreground pixels gives the same draw (synthsup's call)
    cand = apply_defect(obj, name, seed=5, centre_candidates=fg)
    assert cand.points.tobytes() == ref.points.tobytes()


def test_apply_to_scan_bad_input(part_on_plane):
    with pytest.raises(InvalidInputError, match="fewer than 10 foreground"):
        apply_to_scan(part_on_plane, "dent", foreground=np.zeros((48, 64), bool))
    with pytest.raises(InvalidInputError, match="foreground"):
        apply_to_scan(part_on_plane, "dent", foreground=np.ones((4, 4), bool))
    with pytest.raises(InvalidInputError, match="not a geometric"):
        apply_to_scan(part_on_plane, "contamination")


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [-1.0, 0.0, float("nan"), float("inf")])
@pytest.mark.parametrize("param", ["strength", "radius", "scale", "persistence", "lacunarity"])
def test_bad_numeric_parameters(param, value, sphere_cloud):
    pts, nrm = sphere_cloud
    with pytest.raises(InvalidInputError, match=param):
        apply_defect(pts, "bump", normals=nrm, seed=0, **{param: value})


@pytest.mark.parametrize("octaves", [0, -1, 2.5, True])
def test_bad_octaves(octaves):
    with pytest.raises(InvalidInputError, match="octaves"):
        create_defect("perlin", octaves=octaves)


def test_unknown_defect_and_parameter():
    with pytest.raises(InvalidInputError, match="unknown type"):
        create_defect("scratchy")
    with pytest.raises(InvalidInputError, match="strength"):
        create_defect("hole", strength=0.1)
    with pytest.raises(InvalidInputError, match="mode"):
        create_defect("crack", mode="global")
    with pytest.raises(InvalidInputError, match="units"):
        create_defect("bump", units="mm")


@pytest.mark.parametrize("bad,error,match", [
    (np.zeros((0, 3)), InvalidInputError, "empty"),
    (np.zeros((5, 3)), InvalidInputError, "at least"),
    (np.full((50, 3), np.nan), InvalidInputError, "NaN"),
    (np.ones((50, 3)), DegenerateGeometryError, "single point"),
    (np.outer(np.arange(50.0), [1.0, 2.0, 3.0]), DegenerateGeometryError, "collinear"),
    (np.zeros((50, 2)), InvalidInputError, "shape"),
])
def test_bad_clouds(bad, error, match):
    with pytest.raises(error, match=match):
        apply_defect(bad, "bump", seed=0)


def test_bad_seed_normals_and_grid(sphere_cloud, organized_scan):
    pts, nrm = sphere_cloud
    with pytest.raises(InvalidInputError, match="seed"):
        apply_defect(pts, "bump", normals=nrm, seed=-1)
    with pytest.raises(InvalidInputError, match="normals"):
        apply_defect(pts, "bump", normals=nrm[:10], seed=0)
    with pytest.raises(InvalidInputError, match="normals"):
        apply_defect(pts, "bump", normals=np.zeros_like(nrm), seed=0)
    with pytest.raises(InvalidInputError, match="valid pixels"):
        apply_defect(np.zeros((20, 20, 3), np.float32), "bump", seed=0)
    nan_grid = organized_scan.copy()
    nan_grid[10, 10] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        apply_defect(nan_grid, "bump", seed=0)
    flat = np.column_stack([np.random.default_rng(0).uniform(size=(200, 2)), np.zeros(200)])
    up = np.tile([0.0, 0.0, 1.0], (200, 1))
    with pytest.raises(InvalidInputError, match="smaller"):
        apply_defect(flat, "hole", normals=up, seed=0, radius=5.0, irregularity=0.0)


# --- the real CAD meshes ---------------------------------------------------------------------

REAL = shared_mesh_paths()


@pytest.mark.skipif(not REAL, reason="../shared/data/meshes is absent")
@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_meshes(path):
    mesh = read_mesh(path)
    for name in DEFECTS:
        r = apply_defect_to_mesh(mesh, 6000, name, seed=2)
        assert np.isfinite(r.points).all() and np.isfinite(r.offsets).all()
        check_gt(r)
        assert r.n_anomalous > 0, (path.name, name)
        peak = r.params["peak_abs"]
        assert r.max_offset <= peak * (1 + 1e-5) + 1e-12
        if name == "perlin":  # relative sizing: the peak is 2% of the diagonal
            assert r.max_offset == pytest.approx(0.02 * r.params["diag"], rel=1e-4)
    a = apply_defect_to_mesh(mesh, 6000, "crack", seed=2)
    b = apply_defect_to_mesh(mesh, 6000, "crack", seed=2)
    assert a.points.tobytes() == b.points.tobytes()
