"""Tests of pcad.io: round trips, mesh sampling, atomic writes and bad input."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
import trimesh
from PIL import Image

from pcad.errors import DegenerateGeometryError, FileFormatError, InvalidInputError
from pcad.io import (
    SUPPORTED_MESH_EXTENSIONS,
    SUPPORTED_ORGANIZED_EXTENSIONS,
    SUPPORTED_POINT_EXTENSIONS,
    InputData,
    PointCloudData,
    atomic_save,
    atomic_write,
    ply_has_faces,
    read_input,
    read_mask_png,
    read_mesh,
    read_points,
    read_rgb,
    read_xyz_tiff,
    sample_mesh,
    write_labeled_txt,
    write_mask_png,
    write_points,
    write_rgb,
    write_xyz_tiff,
)

MESH_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes"


@pytest.fixture
def cloud() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    points = (rng.normal(size=(200, 3)) * [1e-3, 10.0, 1e4]).astype(np.float32)
    normals = rng.normal(size=(200, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    mask = rng.random(200) < 0.3
    offsets = (rng.normal(size=(200, 3)) * 1e-2).astype(np.float32)
    return {"points": points, "normals": normals, "mask": mask, "offsets": offsets}


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------ atomic writes


def test_atomic_write_replaces_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    with atomic_write(target) as f:
        f.write(b"first")
    with atomic_write(target, "w") as f:
        f.write("second")
    assert target.read_bytes() == b"second"
    assert _leftovers(target.parent) == []


def test_atomic_write_keeps_old_file_on_exception(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old content")
    seen_tmp: list[str] = []
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target, "w") as f:
            seen_tmp.append(os.path.basename(f.name))
            f.write("half-written new content")
            raise RuntimeError("boom")
    assert target.read_text() == "old content"
    assert seen_tmp[0].startswith(".keep.txt.") and seen_tmp[0].endswith(".tmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_atomic_write_no_file_on_exception(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    with pytest.raises(KeyError):
        with atomic_write(target) as f:
            f.write(b"x")
            raise KeyError("stop")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_rejects_append_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "ab"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_gives_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "perm.txt"
    with atomic_write(target, "w") as f:
        f.write("x")
    mode = target.stat().st_mode & 0o777
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's private 0o600


def test_atomic_save_uses_same_extension(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "cloud.npy"
    seen: list[Path] = []

    def writer(tmp: Path) -> None:
        seen.append(tmp)
        np.save(tmp, np.arange(4))  # np.save appends .npy unless the name already ends with it

    atomic_save(target, writer)
    assert seen[0].suffix == ".npy" and seen[0].name.startswith(".cloud.npy.")
    assert ".tmp" in seen[0].name
    assert np.load(target).tolist() == [0, 1, 2, 3]
    assert _leftovers(target.parent) == []


def test_atomic_save_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "img.png"
    target.write_bytes(b"old")

    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(target, writer)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png"]


def test_atomic_save_refuses_writer_that_wrote_nothing(tmp_path: Path) -> None:
    target = tmp_path / "x.ply"
    with pytest.raises(OSError, match="no data"):
        atomic_save(target, lambda tmp: None)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ point clouds


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".npz", ".PLY", ".Pcd"])
def test_points_round_trip_with_all_attributes(tmp_path: Path, cloud, ext: str) -> None:
    path = tmp_path / f"c{ext}"
    write_points(path, cloud["points"], mask=cloud["mask"], normals=cloud["normals"],
                 offsets=cloud["offsets"])  # fmt: skip
    data = read_points(path)
    assert isinstance(data, PointCloudData)
    assert data.points.dtype == np.float32 and data.points.shape == (200, 3)
    # binary (ply/npz) and %.9g text (pcd) are both exact for float32
    np.testing.assert_array_equal(data.points, cloud["points"])
    np.testing.assert_array_equal(data.normals, cloud["normals"])
    np.testing.assert_array_equal(data.offsets, cloud["offsets"])
    assert data.mask.dtype == bool
    np.testing.assert_array_equal(data.mask, cloud["mask"])


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".npz", ".npy", ".txt", ".xyz"])
def test_points_round_trip_points_only(tmp_path: Path, cloud, ext: str) -> None:
    path = tmp_path / f"c{ext}"
    write_points(path, cloud["points"])
    data = read_points(path)
    np.testing.assert_array_equal(data.points, cloud["points"])
    assert data.mask is None and data.normals is None and data.offsets is None


def test_ply_header_is_binary_little_endian_with_label(tmp_path: Path, cloud) -> None:
    path = tmp_path / "c.ply"
    write_points(path, cloud["points"], mask=cloud["mask"])
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n") + len(b"end_header\n")].decode()
    assert "format binary_little_endian 1.0" in header
    assert "property uchar label" in header and "element vertex 200" in header
    assert len(raw) == len(header) + 200 * 13  # 3 floats + 1 uchar per vertex
    assert not ply_has_faces(path)


def test_read_ascii_ply_and_trimesh_fallback(tmp_path: Path) -> None:
    ascii_ply = tmp_path / "a.ply"
    ascii_ply.write_text(
        "ply\nformat ascii 1.0\ncomment hi\nelement vertex 3\nproperty float x\n"
        "property float y\nproperty float z\nproperty int label\nend_header\n"
        "0 0 0 0\n1 2 3 1\n4.5 5 6 0\n"
    )
    data = read_points(ascii_ply)
    np.testing.assert_array_equal(data.points, [[0, 0, 0], [1, 2, 3], [4.5, 5, 6]])
    assert data.mask.tolist() == [False, True, False]

    big_endian = tmp_path / "be.ply"
    pts = np.arange(12, dtype=">f4").reshape(4, 3)
    big_endian.write_bytes(
        b"ply\nformat binary_big_endian 1.0\nelement vertex 4\nproperty float x\n"
        b"property float y\nproperty float z\nend_header\n" + pts.tobytes()
    )
    np.testing.assert_array_equal(read_points(big_endian).points, pts.astype(np.float32))


def test_read_points_of_mesh_ply_gives_vertices(tmp_path: Path) -> None:
    box = trimesh.creation.box(extents=(1, 2, 3))
    path = tmp_path / "box.ply"
    box.export(path)
    assert ply_has_faces(path)
    data = read_points(path)
    np.testing.assert_allclose(np.sort(data.points, axis=0), np.sort(box.vertices, axis=0))


def test_binary_pcd_with_padding_and_nan(tmp_path: Path) -> None:
    pts = np.array([[1, 2, 3], [np.nan, np.nan, np.nan], [4, 5, 6]], dtype=np.float32)
    labels = np.array([0, 1, 2], dtype=np.uint32)
    rows = b"".join(
        struct.pack("<fff", *p) + struct.pack("<I", lab) + b"\0\0\0\0"
        for p, lab in zip(pts, labels, strict=True)
    )
    path = tmp_path / "b.pcd"
    path.write_bytes(
        b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z label _\nSIZE 4 4 4 4 4\nTYPE F F F U U\n"
        b"COUNT 1 1 1 1 1\nWIDTH 3\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\nDATA binary\n"
        + rows
    )
    data = read_points(path)
    np.testing.assert_array_equal(data.points, [[1, 2, 3], [4, 5, 6]])  # NaN row dropped
    assert data.mask.tolist() == [False, True]  # label != 0 is anomalous


def test_pcd_written_is_ascii_v07(tmp_path: Path, cloud) -> None:
    path = tmp_path / "c.pcd"
    write_points(path, cloud["points"], mask=cloud["mask"], normals=cloud["normals"])
    lines = path.read_text().splitlines()
    assert lines[1] == "VERSION 0.7"
    assert lines[2] == "FIELDS x y z normal_x normal_y normal_z label"
    assert "DATA ascii" in lines and f"POINTS {len(cloud['points'])}" in lines
    assert len(lines) == 11 + len(cloud["points"])


@pytest.mark.parametrize("sep", [" ", ","])
def test_labeled_txt_round_trip(tmp_path: Path, cloud, sep: str) -> None:
    path = tmp_path / "gt.txt"
    write_labeled_txt(path, cloud["points"], cloud["mask"], sep=sep)
    first = path.read_text().splitlines()[0].split(sep)
    assert len(first) == 4 and first[3] in ("0", "1")
    data = read_points(path)
    np.testing.assert_array_equal(data.points, cloud["points"])
    np.testing.assert_array_equal(data.mask, cloud["mask"])


def test_txt_formats_from_datasets(tmp_path: Path) -> None:
    real3d = tmp_path / "real3d.txt"
    real3d.write_text("0.1 0.2 0.3 0\n1.5 -2 3e-3 1\n")
    shapenet = tmp_path / "shapenet.txt"
    shapenet.write_text("0.1,0.2,0.3,0\n1.5,-2,3e-3,1\n")
    for path in (real3d, shapenet):
        data = read_points(path)
        np.testing.assert_array_equal(
            data.points, np.array([[0.1, 0.2, 0.3], [1.5, -2, 3e-3]], dtype=np.float32)
        )
        assert data.mask.tolist() == [False, True]
    six = tmp_path / "n.xyz"
    six.write_text("# x y z nx ny nz\n0 0 0 0 0 1\n1 1 1 1 0 0\n")
    data = read_points(six)
    assert data.normals.tolist() == [[0, 0, 1], [1, 0, 0]] and data.mask is None


def test_txt_with_bom_crlf_and_header_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "win.txt", b"\xef\xbb\xbf1,2,3,0\r\n4,5,6,1\r\n")
    data = read_points(path)
    assert data.points.tolist() == [[1, 2, 3], [4, 5, 6]] and data.mask.tolist() == [False, True]
    with pytest.raises(FileFormatError, match="line 1: non-numeric token 'x'"):
        read_points(_write(tmp_path / "hdr.txt", "x y z label\n1 2 3 0\n"))
    ply = _write(
        tmp_path / "bad.ply",
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n0 0 0\n1 oops 1\n",
    )
    with pytest.raises(FileFormatError, match="line 9: non-numeric token 'oops'"):
        read_points(ply)


def test_write_points_txt_with_mask_and_normals_formats(tmp_path: Path, cloud) -> None:
    write_points(tmp_path / "m.txt", cloud["points"], mask=cloud["mask"])
    np.testing.assert_array_equal(read_points(tmp_path / "m.txt").mask, cloud["mask"])
    write_points(tmp_path / "n.xyz", cloud["points"], normals=cloud["normals"])
    np.testing.assert_array_equal(read_points(tmp_path / "n.xyz").normals, cloud["normals"])


def test_write_points_refuses_attributes_a_format_cannot_hold(tmp_path: Path, cloud) -> None:
    with pytest.raises(InvalidInputError, match="offsets"):
        write_points(tmp_path / "a.txt", cloud["points"], offsets=cloud["offsets"])
    with pytest.raises(InvalidInputError, match="not both"):
        write_points(tmp_path / "a.xyz", cloud["points"], mask=cloud["mask"],
                     normals=cloud["normals"])  # fmt: skip
    with pytest.raises(InvalidInputError, match=".npy stores the points only"):
        write_points(tmp_path / "a.npy", cloud["points"], mask=cloud["mask"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"points": np.zeros((5, 2))}, r"expected shape \(N, 3\)"),
        ({"points": np.zeros((0, 3))}, "empty"),
        ({"points": np.array([[0, 0, np.nan]])}, "NaN"),
        ({"points": np.zeros((4, 3)), "mask": np.zeros(3, bool)}, r"mask: expected shape \(4,\)"),
        ({"points": np.zeros((4, 3)), "mask": [0, 1, 2, 0]}, "0 and 1"),
        ({"points": np.zeros((4, 3)), "normals": np.zeros((5, 3))}, "normals"),
        ({"points": np.zeros((4, 3)), "offsets": np.full((4, 3), np.inf)}, "offsets"),
    ],
)
def test_write_points_validates_before_writing(tmp_path: Path, kwargs, match: str) -> None:
    target = tmp_path / "bad.ply"
    with pytest.raises(InvalidInputError, match=match):
        write_points(target, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_write_labeled_txt_validates(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="sep"):
        write_labeled_txt(tmp_path / "a.txt", np.zeros((2, 3)), [0, 1], sep=";")
    with pytest.raises(InvalidInputError, match="mask"):
        write_labeled_txt(tmp_path / "a.txt", np.zeros((2, 3)), [0, 1, 1])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ bad point files


def _write(path: Path, content: bytes | str) -> Path:
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


def test_truncated_binary_ply(tmp_path: Path) -> None:
    header = (
        b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\nproperty float x\n"
        b"property float y\nproperty float z\nend_header\n"
    )
    path = _write(tmp_path / "short.ply", header + np.zeros((10, 3), np.float32).tobytes())
    with pytest.raises(FileFormatError, match=r"truncated PLY.*1000 vertices") as info:
        read_points(path)
    assert str(path) in str(info.value)


def test_truncated_ascii_ply(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "short.ply",
        "ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n0 0 0\n1 1 1\n",
    )
    with pytest.raises(FileFormatError, match="promises 5 vertices, the file holds 2"):
        read_points(path)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("garbage.ply", b"\x00\x01binary garbage", "not a PLY file"),
        ("noend.ply", b"ply\nformat ascii 1.0\nelement vertex 1\n", "end_header"),
        ("badtype.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quux x\nend_header\n",
         "bad PLY header line"),
        ("garbage.pcd", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "not a PCD file"),
        ("comp.pcd", b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\n"
         b"HEIGHT 1\nPOINTS 1\nDATA binary_compressed\n\x00\x00",
         "binary_compressed' is unsupported"),
        ("nan.txt", "1 2 3\n4 five 6\n", "line 2: non-numeric token 'five'"),
        ("ragged.txt", "1 2 3\n4 5\n", "line 2: 2 values, earlier rows have 3"),
        ("five.xyz", "1 2 3 4 5\n", "5 columns"),
        ("intensity.txt", "1 2 3 0.25\n", "0/1 labels"),
        ("empty.txt", "", "no points"),
        ("binary.txt", b"\xff\xfe\x00\x81garbage", "not a text file"),
        ("garbage.npy", b"not numpy at all", "cannot read"),
        ("garbage.npz", b"PK\x03\x04 truncated zip", "cannot read"),
    ],
)  # fmt: skip
def test_bad_point_files(tmp_path: Path, name: str, content: bytes | str, match: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(FileFormatError, match=match) as info:
        read_points(path)
    assert str(path) in str(info.value)


def test_truncated_binary_pcd(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcd"
    rows = np.arange(30, dtype="<f4").tobytes()
    path.write_bytes(
        b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 10\nHEIGHT 1\n"
        b"POINTS 10\nDATA binary\n" + rows[: len(rows) // 2]
    )
    with pytest.raises(FileFormatError, match="truncated binary PCD.*10 points"):
        read_points(path)


def test_npy_and_npz_with_wrong_content(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.zeros(6))
    with pytest.raises(FileFormatError, match=r"expected shape \(N, 3\)"):
        read_points(tmp_path / "flat.npy")
    np.savez(tmp_path / "nopoints.npz", xyz=np.zeros((3, 3)))
    with pytest.raises(FileFormatError, match="no 'points' array"):
        read_points(tmp_path / "nopoints.npz")
    np.savez(tmp_path / "badmask.npz", points=np.zeros((3, 3)), mask=np.zeros(2, bool))
    with pytest.raises(FileFormatError, match="mask"):
        read_points(tmp_path / "badmask.npz")


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match=r"'\.las'.*\.ply, \.pcd") as info:
        read_points(tmp_path / "cloud.las")
    for ext in SUPPORTED_POINT_EXTENSIONS:
        assert ext in str(info.value)
    with pytest.raises(FileFormatError, match="'.las'"):
        write_points(tmp_path / "cloud.las", np.zeros((2, 3)))
    with pytest.raises(FileFormatError, match=r"\.stl.*\.tiff"):
        read_input(tmp_path / "thing.vtk")
    with pytest.raises(FileFormatError, match="mesh extension"):
        read_mesh(tmp_path / "cloud.pcd")
    with pytest.raises(FileNotFoundError):
        read_points(tmp_path / "missing.ply")
    with pytest.raises(FileNotFoundError):
        read_input(tmp_path / "missing.stl")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ meshes


@pytest.mark.parametrize("ext", [".stl", ".STL", ".obj", ".ply", ".off"])
def test_read_mesh_formats(tmp_path: Path, ext: str) -> None:
    box = trimesh.creation.box(extents=(1, 2, 3))
    path = tmp_path / f"box{ext}"
    box.export(path, file_type=ext[1:].lower())
    mesh = read_mesh(path)
    assert isinstance(mesh, trimesh.Trimesh)
    assert len(mesh.faces) == 12 and len(mesh.vertices) == 8  # STL vertices are merged
    assert mesh.area == pytest.approx(22.0)


def test_read_mesh_concatenates_scene(tmp_path: Path) -> None:
    scene = trimesh.Scene(
        [
            trimesh.creation.box(),
            trimesh.creation.icosphere(subdivisions=1).apply_translation([5, 0, 0]),
        ]
    )
    path = tmp_path / "scene.obj"
    scene.export(path)
    mesh = read_mesh(path)
    assert len(mesh.faces) == 12 + 80


def test_sample_mesh_is_deterministic(tmp_path: Path) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=2)
    a = sample_mesh(mesh, 1000, seed=5)
    b = sample_mesh(mesh, 1000, seed=5)
    c = sample_mesh(mesh, 1000, seed=6)
    for x, y in zip(a, b, strict=True):
        assert x.tobytes() == y.tobytes()
    assert a[0].tobytes() != c[0].tobytes()
    assert a[0].dtype == np.float32 and a[1].dtype == np.float32 and a[2].dtype == np.int64
    assert a[0].shape == (1000, 3) and a[1].shape == (1000, 3) and a[2].shape == (1000,)
    gen = sample_mesh(mesh, 1000, seed=np.random.default_rng(5))
    assert gen[0].tobytes() == a[0].tobytes()


def test_sample_mesh_points_on_surface_with_unit_normals() -> None:
    box = trimesh.creation.box(extents=(2, 4, 6))
    points, normals, faces = sample_mesh(box, 3000, seed=0)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    # on a box's surface: inside the box and on one of its face planes
    half = np.array([1, 2, 3], dtype=np.float32)
    assert (np.abs(points) <= half + 1e-5).all()
    on_plane = np.isclose(np.abs(points), half, atol=1e-5).any(axis=1)
    assert on_plane.all()
    # each normal is the sampled face's normal and points outwards along that plane
    np.testing.assert_allclose(normals, box.face_normals[faces], atol=1e-6)
    assert (np.einsum("ij,ij->i", normals, points) > 0).all()


def test_sample_mesh_points_lie_in_their_triangles() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=3.0)
    points, normals, faces = sample_mesh(sphere, 2000, seed=4)
    triangles = sphere.triangles[faces]
    bary = trimesh.triangles.points_to_barycentric(triangles, points.astype(np.float64))
    assert (bary > -1e-5).all() and np.allclose(bary.sum(axis=1), 1.0)
    off_plane = np.einsum("ij,ij->i", points - triangles[:, 0], normals)
    assert np.abs(off_plane).max() < 1e-5
    radius = np.linalg.norm(points, axis=1)
    assert radius.max() <= 3.0 + 1e-5 and radius.min() > 2.8
    assert len(np.unique(faces)) > 0.9 * len(sphere.faces)  # spread over the surface


def test_sample_mesh_is_area_weighted() -> None:
    box = trimesh.creation.box(extents=(1, 1, 10))  # the 4 long sides hold 40 of 42 area units
    points, _, _ = sample_mesh(box, 20000, seed=1)
    on_caps = np.isclose(np.abs(points[:, 2]), 5.0, atol=1e-5).mean()
    assert on_caps == pytest.approx(2 / 42, abs=0.01)


def test_sample_mesh_never_picks_zero_area_faces() -> None:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0]], float)
    faces = np.array([[0, 1, 3], [0, 1, 2], [0, 3, 1]])  # faces 0 and 2 are collinear
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    _, normals, index = sample_mesh(mesh, 500, seed=0)
    assert set(index.tolist()) == {1}
    assert np.isfinite(normals).all()


def test_sample_mesh_errors() -> None:
    flat = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]], process=False)
    with pytest.raises(DegenerateGeometryError, match="zero-area mesh"):
        sample_mesh(flat, 10, seed=0)
    empty = trimesh.Trimesh(np.zeros((3, 3)), np.zeros((0, 3), int), process=False)
    with pytest.raises(DegenerateGeometryError, match="zero-area mesh"):
        sample_mesh(empty, 10, seed=0)
    nan = trimesh.Trimesh([[0, 0, 0], [np.nan, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False)
    with pytest.raises(InvalidInputError, match="NaN"):
        sample_mesh(nan, 10, seed=0)
    box = trimesh.creation.box()
    for bad in (0, -3, 2.5):
        with pytest.raises(InvalidInputError, match="n_points"):
            sample_mesh(box, bad, seed=0)
    with pytest.raises(InvalidInputError, match="seed"):
        sample_mesh(box, 10, seed=-1)
    with pytest.raises(InvalidInputError, match="mesh"):
        sample_mesh(np.zeros((3, 3)), 10, seed=0)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("garbage.stl", b"garbage" * 20, "no faces"),
        ("empty.obj", b"", "no faces"),
        ("nan.obj", "v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n", "NaN"),
        ("short.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n", "truncated OFF.*3 vertices and 1 faces"),
    ],
)
def test_bad_mesh_files(tmp_path: Path, name: str, content: bytes | str, match: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(FileFormatError, match=match) as info:
        read_mesh(path)
    assert str(path) in str(info.value)


def test_real_meshes() -> None:
    if not MESH_DIR.is_dir():
        pytest.skip(f"real meshes not found at {MESH_DIR}")
    files = sorted(p for p in MESH_DIR.iterdir() if p.suffix.lower() in SUPPORTED_MESH_EXTENSIONS)
    assert len(files) >= 3
    for path in files:
        mesh = read_mesh(path)
        assert len(mesh.faces) > 0, path.name
        points, normals, _ = sample_mesh(mesh, 500, seed=0)
        assert np.isfinite(points).all() and np.isfinite(normals).all(), path.name
        lo, hi = mesh.bounds
        assert (points >= lo - 1e-3 * (hi - lo).max()).all(), path.name
        assert (points <= hi + 1e-3 * (hi - lo).max()).all(), path.name
        if path.suffix.lower() == ".ply":
            assert read_input(path, n_points=50).kind == "mesh", path.name


# ------------------------------------------------------------------------------ organized


def test_xyz_tiff_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(7, 11, 3)).astype(np.float32)
    xyz[2:4, 3:5] = 0.0  # missing pixels
    path = tmp_path / "xyz" / "000.tiff"
    write_xyz_tiff(path, xyz)
    raw = tifffile.imread(path)
    assert raw.shape == (7, 11, 3) and raw.dtype == np.float32
    np.testing.assert_array_equal(raw, xyz)
    np.testing.assert_array_equal(read_xyz_tiff(path), xyz)


def test_read_xyz_tiff_accepts_float64_and_cleans_nan(tmp_path: Path) -> None:
    xyz = np.ones((3, 4, 3))
    xyz[0, 0, 1] = np.nan
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, xyz, photometric="rgb")
    out = read_xyz_tiff(path)
    assert out.dtype == np.float32 and out.shape == (3, 4, 3)
    assert out[0, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [1, 1, 1]


def test_bad_tiffs(tmp_path: Path) -> None:
    garbage = _write(tmp_path / "g.tiff", b"garbage bytes, not a tiff" * 10)
    with pytest.raises(FileFormatError, match="cannot read the TIFF") as info:
        read_xyz_tiff(garbage)
    assert str(garbage) in str(info.value)
    gray = tmp_path / "gray.tiff"
    tifffile.imwrite(gray, np.zeros((4, 5), np.float32))
    with pytest.raises(FileFormatError, match=r"\(H, W, 3\)"):
        read_xyz_tiff(gray)
    ints = tmp_path / "rgb8.tiff"
    tifffile.imwrite(ints, np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    with pytest.raises(FileFormatError, match="float32 or float64"):
        read_xyz_tiff(ints)
    with pytest.raises(FileFormatError, match="organized-cloud extension"):
        read_xyz_tiff(tmp_path / "x.png")


def test_write_xyz_tiff_validates(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="NaN"):
        write_xyz_tiff(tmp_path / "a.tiff", np.full((2, 2, 3), np.nan))
    with pytest.raises(InvalidInputError, match=r"\(H, W, 3\)"):
        write_xyz_tiff(tmp_path / "a.tiff", np.zeros((4, 3)))
    assert list(tmp_path.iterdir()) == []


def test_mask_png_round_trip_and_values(tmp_path: Path) -> None:
    mask = np.zeros((5, 8), bool)
    mask[1:3, 2:6] = True
    path = tmp_path / "gt" / "000.png"
    write_mask_png(path, mask)
    with Image.open(path) as img:
        assert img.mode == "L" and img.format == "PNG"
        raw = np.asarray(img)
    assert set(np.unique(raw).tolist()) == {0, 255}
    np.testing.assert_array_equal(read_mask_png(path), mask)


def test_mask_png_binarizes_mvtec_values(tmp_path: Path) -> None:
    raw = np.array([[0, 253, 254], [255, 0, 1]], np.uint8)
    Image.fromarray(raw).save(tmp_path / "l.png")
    assert read_mask_png(tmp_path / "l.png").tolist() == [[False, True, True], [True, False, True]]
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1] = [253, 253, 253]
    rgb[1, 0] = [0, 0, 7]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = read_mask_png(tmp_path / "rgb.png")
    assert out.dtype == bool and out.tolist() == [[False, True], [True, False]]


def test_mask_png_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="0 and 1"):
        write_mask_png(tmp_path / "m.png", np.array([[0, 2]]))
    with pytest.raises(InvalidInputError, match=r"\(H, W\)"):
        write_mask_png(tmp_path / "m.png", np.zeros(4, bool))
    assert list(tmp_path.iterdir()) == []
    bad = _write(tmp_path / "bad.png", b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(FileFormatError, match="cannot read the image"):
        read_mask_png(bad)


def test_rgb_round_trip(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, size=(6, 9, 3), dtype=np.uint8)
    path = tmp_path / "rgb" / "000.png"
    write_rgb(path, rgb)
    out = read_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (6, 9, 3)
    np.testing.assert_array_equal(out, rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "gray.png")[..., 2], rgb[..., 0])


def test_rgb_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="uint8"):
        write_rgb(tmp_path / "a.png", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(InvalidInputError, match=r"\(H, W, 3\)"):
        write_rgb(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(FileFormatError, match="image extension"):
        write_rgb(tmp_path / "a.unknownext", np.zeros((2, 2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileFormatError, match="cannot read the image"):
        read_rgb(_write(tmp_path / "g.png", b"garbage"))


# ------------------------------------------------------------------------------ read_input


def test_read_input_kinds(tmp_path: Path, cloud) -> None:
    xyz = np.zeros((4, 5, 3), np.float32)
    xyz[1, 2] = [1, 2, 3]
    write_xyz_tiff(tmp_path / "o.tiff", xyz)
    org = read_input(tmp_path / "o.tiff")
    assert isinstance(org, InputData) and org.kind == "organized"
    np.testing.assert_array_equal(org.organized, xyz)
    assert org.points.tolist() == [[1, 2, 3]] and org.mesh is None

    trimesh.creation.box().export(tmp_path / "box.stl")
    mesh_data = read_input(tmp_path / "box.stl", n_points=300, seed=2)
    assert mesh_data.kind == "mesh" and mesh_data.points.shape == (300, 3)
    assert isinstance(mesh_data.mesh, trimesh.Trimesh) and mesh_data.organized is None
    np.testing.assert_allclose(np.linalg.norm(mesh_data.normals, axis=1), 1.0, atol=1e-6)
    again = read_input(tmp_path / "box.stl", n_points=300, seed=2)
    assert again.points.tobytes() == mesh_data.points.tobytes()

    trimesh.creation.box().export(tmp_path / "box.ply")
    assert read_input(tmp_path / "box.ply", n_points=10).kind == "mesh"

    write_points(tmp_path / "c.ply", cloud["points"], mask=cloud["mask"])
    pts = read_input(tmp_path / "c.ply")
    assert pts.kind == "points" and pts.mesh is None and pts.normals is None
    np.testing.assert_array_equal(pts.points, cloud["points"])
    np.testing.assert_array_equal(pts.mask, cloud["mask"])
    assert pts.path == tmp_path / "c.ply"


def test_supported_extension_tuples() -> None:
    assert ".pcd" in SUPPORTED_POINT_EXTENSIONS and ".npz" in SUPPORTED_POINT_EXTENSIONS
    assert set(SUPPORTED_MESH_EXTENSIONS) == {".stl", ".obj", ".ply", ".off"}
    assert set(SUPPORTED_ORGANIZED_EXTENSIONS) == {".tiff", ".tif"}
    assert all(e == e.lower() and e.startswith(".") for e in SUPPORTED_POINT_EXTENSIONS)
