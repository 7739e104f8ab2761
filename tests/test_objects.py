"""Tests of synth.objects: the procedural part families and their seeded variation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from pcad.errors import InvalidInputError
from synth.objects import (
    OBJECT_TEXTURES,
    TEXTURE_KINDS,
    list_objects,
    make_object,
    object_texture,
)

PARTS = list_objects()
REQUIRED = {"plate_holes", "bracket", "gear", "hex_nut", "shaft", "cookie", "potato"}


def _key(mesh: trimesh.Trimesh) -> tuple[bytes, bytes]:
    return mesh.vertices.tobytes(), mesh.faces.tobytes()


def _inside(mesh: trimesh.Trimesh, point: np.ndarray) -> bool:
    """Whether ``point`` is inside the closed ``mesh``: its winding number (solid angles)."""
    a, b, c = (mesh.vertices[mesh.faces[:, i]] - point for i in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    num = np.einsum("ij,ij->i", a, np.cross(b, c))
    den = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la
           + np.einsum("ij,ij->i", c, a) * lb)
    winding = 2.0 * np.arctan2(num, den).sum() / (4.0 * np.pi)
    return bool(round(winding) == 1)


def test_registry_sorted_and_complete() -> None:
    assert PARTS == sorted(PARTS)
    assert REQUIRED <= set(PARTS)


@pytest.mark.parametrize("name", PARTS)
@pytest.mark.parametrize("variation", [0.0, 0.1, 0.5])
def test_part_is_a_closed_outward_volume(name: str, variation: float) -> None:
    for seed in (0, 1):
        mesh = make_object(name, seed=seed, variation=variation)
        assert isinstance(mesh, trimesh.Trimesh)
        assert np.isfinite(mesh.vertices).all()
        assert mesh.is_watertight
        assert mesh.is_winding_consistent
        assert mesh.is_volume
        assert mesh.volume > 0
        assert 0 < len(mesh.faces) < 20_000


@pytest.mark.parametrize("name", PARTS)
def test_deterministic_and_seeded(name: str) -> None:
    a = make_object(name, seed=7, variation=0.05)
    b = make_object(name, seed=7, variation=0.05)
    assert _key(a) == _key(b)
    c = make_object(name, seed=8, variation=0.05)
    assert _key(a) != _key(c)
    # a Generator is accepted and gives the same part as its int seed
    g = make_object(name, seed=np.random.default_rng(7), variation=0.05)
    assert _key(g) == _key(a)


@pytest.mark.parametrize("name", PARTS)
def test_nominal_part_ignores_seed(name: str) -> None:
    ref = make_object(name)
    for seed in (1, 12345):
        assert _key(make_object(name, seed=seed, variation=0.0)) == _key(ref)


@pytest.mark.parametrize("name", PARTS)
def test_extents_stay_near_nominal(name: str) -> None:
    nominal = make_object(name).extents
    for seed in range(4):
        ext = make_object(name, seed=seed, variation=0.1).extents
        assert np.all(ext >= 0.4 * nominal) and np.all(ext <= 1.6 * nominal), (seed, ext)


@pytest.mark.parametrize("name", PARTS)
def test_centred_on_bounding_box(name: str) -> None:
    mesh = make_object(name, seed=3, variation=0.1)
    np.testing.assert_allclose(mesh.bounds.mean(axis=0), 0.0, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plate_holes_has_through_holes(seed: int) -> None:
    mesh = make_object("plate_holes", seed=seed, variation=0.2)
    assert mesh.euler_number != 2
    assert mesh.euler_number == 2 - 2 * 4  # genus 4: four through holes
    box_volume = np.prod(mesh.extents)
    assert mesh.volume < box_volume


@pytest.mark.parametrize("seed", [0, 5])
def test_bracket_has_holes(seed: int) -> None:
    mesh = make_object("bracket", seed=seed, variation=0.1)
    assert mesh.euler_number == 2 - 2 * 3


@pytest.mark.parametrize("name", ["gear", "hex_nut", "washer", "flange", "pipe"])
def test_bored_parts_have_a_hole_on_the_axis(name: str) -> None:
    mesh = make_object(name, seed=2, variation=0.1)
    assert mesh.euler_number == 0  # genus 1
    assert not _inside(mesh, np.zeros(3))
    # but the material around it is there: a point in the wall is inside
    r = np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1])
    wall = np.array([0.5 * (r.min() + np.percentile(r, 5)) + 0.5, 0.0, 0.0])
    assert _inside(mesh, wall) or _inside(mesh, -wall)


def test_gear_bore_and_teeth() -> None:
    mesh = make_object("gear", seed=4, variation=0.05)
    r = np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1])
    nominal = make_object("gear")
    r0 = np.hypot(nominal.vertices[:, 0], nominal.vertices[:, 1])
    assert r.min() > 5.0  # a bore, no material on the axis
    assert math.isclose(r0.min(), 8.0, rel_tol=0.01)  # nominal bore radius 8 mm
    assert math.isclose(r0.max(), 30.0, rel_tol=1e-9)  # tip radius m * (z + 2) / 2
    # 18 teeth: the outermost vertices cluster in 18 angular groups
    tips = np.arctan2(nominal.vertices[:, 1], nominal.vertices[:, 0])[r0 > 29.9]
    assert len(np.unique(np.round(np.degrees(tips) / 20.0) % 18)) == 18


def test_shaft_lies_along_z() -> None:
    ext = make_object("shaft").extents
    assert ext[2] > 3 * max(ext[0], ext[1])
    assert _inside(make_object("shaft"), np.zeros(3))  # solid


def test_organic_parts_vary_surface() -> None:
    for name in ("cookie", "potato"):
        a = make_object(name, seed=1, variation=0.1)
        b = make_object(name, seed=2, variation=0.1)
        assert np.array_equal(a.faces, b.faces)  # same topology
        assert not np.allclose(a.vertices, b.vertices)
        assert a.euler_number == 2
    cookie = make_object("cookie").extents
    assert cookie[2] < 0.4 * min(cookie[0], cookie[1])  # flattened
    potato = make_object("potato").extents
    assert potato[2] > 0.4 * min(potato[0], potato[1])


def test_textures() -> None:
    assert set(OBJECT_TEXTURES) == set(PARTS)
    for name in PARTS:
        tex = object_texture(name)
        assert tex["kind"] in TEXTURE_KINDS
        albedo = np.asarray(tex["albedo"], dtype=float)
        assert albedo.shape == (3,) and np.all((albedo >= 0) & (albedo <= 1))
        assert 0.0 <= tex["roughness"] <= 1.0
    assert object_texture("cookie")["kind"] == "organic"
    assert object_texture("gear")["kind"] == "metal"
    object_texture("gear")["kind"] = "changed"  # a copy: the table is not modified
    assert object_texture("gear")["kind"] == "metal"


@pytest.mark.parametrize("variation", [-0.1, float("nan"), float("inf"), 0.51, 2.0, "x"])
def test_bad_variation(variation: object) -> None:
    with pytest.raises(InvalidInputError, match="variation"):
        make_object("gear", seed=0, variation=variation)


def test_unknown_name_lists_the_parts() -> None:
    with pytest.raises(InvalidInputError, match="plate_holes") as info:
        make_object("sprocket")
    assert all(name in str(info.value) for name in PARTS)
    with pytest.raises(InvalidInputError):
        object_texture("sprocket")


@pytest.mark.parametrize("seed", [-1, 1.5, "a", None])
def test_bad_seed(seed: object) -> None:
    with pytest.raises(InvalidInputError, match="seed"):
        make_object("plate", seed=seed)


def test_variation_limit_is_accepted() -> None:
    assert make_object("potato", seed=3, variation=0.5).is_volume
