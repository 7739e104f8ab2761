"""Hardening of the cloud and mesh readers (issue 18): header counts against the file size,
rows a header does not describe, the ``--points`` cap, float64 centring of far-away clouds,
and a property test feeding every reader truncated, garbled and lying variants of valid files.

Every hostile file is built inside its test.
"""

from __future__ import annotations

import io
import json
import re
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcad.checks import MAX_SAMPLE_POINTS
from pcad.cli.main import main
from pcad.errors import FileFormatError, InvalidInputError, PcadError, PcadWarning
from pcad.io import read_input, read_mesh, read_points, sample_mesh, write_points
from synth import apply_defect, apply_defect_to_mesh

#: peak Python/numpy allocation a reader may make on the small files of these tests
MAX_READ_BYTES = 64 << 20

PLY_XYZ = "property float x\nproperty float y\nproperty float z\n"


def _pts(n: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3)).astype(np.float32)


def _text_rows(pts: np.ndarray) -> str:
    """``x y z`` lines holding every digit of float64 ``pts``."""
    return "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in pts)


def _ply_binary(n_header: int | str, pts: np.ndarray, extra_elements: str = "") -> bytes:
    return (f"ply\nformat binary_little_endian 1.0\nelement vertex {n_header}\n{PLY_XYZ}"
            f"{extra_elements}end_header\n").encode() + pts.astype("<f4").tobytes()


def _ply_ascii(n_header: int | str, pts: np.ndarray) -> bytes:
    rows = _text_rows(pts.astype(np.float64))
    return (f"ply\nformat ascii 1.0\nelement vertex {n_header}\n{PLY_XYZ}end_header\n"
            + rows).encode()


def _pcd(n_header: int, pts: np.ndarray, kind: str) -> bytes:
    head = (f"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n_header}\n"
            f"HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n_header}\nDATA {kind}\n").encode()
    if kind == "binary":
        return head + pts.astype("<f4").tobytes()
    return head + _text_rows(pts.astype(np.float64)).encode()


def _read_bounded(reader: Callable[[Path], object], path: Path) -> object:
    """Call ``reader(path)`` and check that it allocated less than MAX_READ_BYTES."""
    tracemalloc.start()
    try:
        return reader(path)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MAX_READ_BYTES, f"{path.name}: the reader allocated {peak} bytes"


def _refused(path: Path, reader: Callable[[Path], object] = read_points) -> str:
    """The message of the FileFormatError ``reader`` raises on ``path`` (bounded memory)."""
    with pytest.raises(FileFormatError) as info:
        _read_bounded(reader, path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


# ------------------------------------------------------------- header counts vs the file size


def test_binary_ply_claiming_a_trillion_vertices(tmp_path: Path) -> None:
    path = tmp_path / "big.ply"
    path.write_bytes(_ply_binary(10**12, _pts()))
    msg = _refused(path)
    assert "1000000000000 vertices" in msg and "24000 bytes" in msg and "room for 2000" in msg


def test_binary_pcd_claiming_a_trillion_points(tmp_path: Path) -> None:
    path = tmp_path / "big.pcd"
    path.write_bytes(_pcd(10**12, _pts(), "binary"))
    msg = _refused(path)
    assert "1000000000000 points" in msg and "room for 2000 points" in msg


def test_ascii_ply_claiming_99999999999_vertices(tmp_path: Path) -> None:
    path = tmp_path / "big.ply"
    path.write_bytes(_ply_ascii(99_999_999_999, _pts()))
    msg = _refused(path)
    assert re.search(r"promises 99999999999 vertices, the file holds 2000 rows", msg)


def test_npy_and_npz_headers_claiming_huge_shapes(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros((5, 3)))
    lying = buf.getvalue().replace(b"(5, 3), }     ", b"(100000000000, 3), }")
    npy = tmp_path / "big.npy"
    npy.write_bytes(lying)
    assert "(100000000000, 3)" in _refused(npy)
    npz = tmp_path / "big.npz"
    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("points.npy", lying)
    assert "array 'points'" in _refused(npz)


def test_mesh_ply_and_off_headers_that_lie(tmp_path: Path) -> None:
    ply = tmp_path / "mesh.ply"
    ply.write_bytes(_ply_binary(4, _pts(4), "element face 10000000000\n"
                                            "property list uchar int vertex_indices\n"))
    assert "at least" in _refused(ply, read_mesh)
    off = tmp_path / "lie.off"
    off.write_text("OFF\n3 1000000000000 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    assert "1000000000000 faces" in _refused(off, read_mesh)
    stl = tmp_path / "lie.stl"
    raw = io.BytesIO()
    trimesh.creation.box().export(raw, file_type="stl")
    data = bytearray(raw.getvalue())
    data[80:84] = (4_000_000_000).to_bytes(4, "little")
    stl.write_bytes(bytes(data))
    assert "header says 4000000000 triangles" in _refused(stl, read_mesh)


# ------------------------------------------------------------------- rows the header omits


@pytest.mark.parametrize("kind", ["binary", "ascii"])
def test_ply_header_saying_50_vertices_over_2000_rows(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "cut.ply"
    path.write_bytes((_ply_binary if kind == "binary" else _ply_ascii)(50, _pts()))
    assert "PLY header says 50 vertices, file holds 2000 rows" in _refused(path)


@pytest.mark.parametrize("kind", ["binary", "ascii"])
def test_pcd_points_20_over_2000_rows(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "cut.pcd"
    path.write_bytes(_pcd(20, _pts(), kind))
    assert "PCD header says POINTS 20, file holds 2000 rows" in _refused(path)


def test_npy_header_with_rows_it_does_not_describe(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros((5, 3)))
    path = tmp_path / "cut.npy"
    path.write_bytes(buf.getvalue().replace(b"(5, 3), }", b"(2, 3), }"))
    assert "says 2 rows (shape (2, 3)), the file holds 5 rows" in _refused(path)


def test_off_with_more_rows_than_its_header(tmp_path: Path) -> None:
    path = tmp_path / "extra.off"
    path.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n3 0 2 1\n")
    assert "OFF header says 3 vertices and 1 faces (4 rows), the file holds 5" in _refused(
        path, read_mesh)


def test_binary_ply_with_faces_after_the_vertices_is_read(tmp_path: Path) -> None:
    """Faces (list properties) after the vertices are legal: only the vertices are read."""
    box = trimesh.creation.box()
    path = tmp_path / "box.ply"
    box.export(path)  # binary, vertex then face element
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_points(path).n_points == len(box.vertices)
        assert len(read_mesh(path).faces) == 12


def test_binary_ply_fixed_size_elements_and_trailing_bytes(tmp_path: Path) -> None:
    pts = _pts(10)
    edges = np.arange(8, dtype="<i4").tobytes()  # 4 edges of two int32
    header = "element edge 4\nproperty int a\nproperty int b\n"
    path = tmp_path / "edges.ply"
    path.write_bytes(_ply_binary(10, pts, header) + edges)
    assert read_points(path).n_points == 10
    path.write_bytes(_ply_binary(10, pts, header) + edges + bytes(8))  # one more edge row
    assert "8 bytes no element accounts for" in _refused(path)
    path.write_bytes(_ply_binary(10, pts) + b"\n")  # shorter than one row: a warning
    with pytest.warns(PcadWarning, match="ignored 1 trailing byte"):
        assert read_points(path).n_points == 10


def test_binary_pcd_trailing_partial_row_warns(tmp_path: Path) -> None:
    path = tmp_path / "tail.pcd"
    path.write_bytes(_pcd(30, _pts(30), "binary") + b"\n\n")
    with pytest.warns(PcadWarning, match="ignored 2 trailing byte"):
        assert read_points(path).n_points == 30


def test_valid_files_read_without_warning(tmp_path: Path) -> None:
    pts = _pts(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ext in (".ply", ".pcd", ".txt", ".xyz", ".npy", ".npz"):
            write_points(tmp_path / f"c{ext}", pts)
            np.testing.assert_array_equal(read_points(tmp_path / f"c{ext}").points, pts)
        for name, raw in (("a.ply", _ply_ascii(100, pts)), ("b.pcd", _pcd(100, pts, "binary")),
                          ("c.pcd", _pcd(100, pts, "ascii"))):
            (tmp_path / name).write_bytes(raw)
            np.testing.assert_array_equal(read_points(tmp_path / name).points, pts)


# ------------------------------------------------------------------------------ --points cap


def test_points_cap_is_checked_before_allocating(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    box = trimesh.creation.box()
    stl = tmp_path / "box.stl"
    box.export(stl)
    too_many = MAX_SAMPLE_POINTS + 1
    tracemalloc.start()
    try:
        for call in (lambda: sample_mesh(box, too_many, seed=0),
                     lambda: apply_defect_to_mesh(box, 10**11, seed=0),
                     lambda: read_input(stl, n_points=too_many)):
            with pytest.raises(InvalidInputError, match="n_points: must be >= .* <= 50000000"):
                call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_READ_BYTES
    status = main(["synth", str(stl), "-o", str(tmp_path / "o.ply"), "--points", "100000000000"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "--points: must be >= 10 and <= 50000000, got 100000000000" in err
    assert not (tmp_path / "o.ply").exists()


# --------------------------------------------------------------------- float64 centring


def _part() -> np.ndarray:
    """A unit sphere of 3000 points on a 2**-20 grid, its bounding box centred exactly on 0
    (so that shifting it by 1e6 and back is exact in float64)."""
    p = np.random.default_rng(0).normal(size=(3000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    p = np.round(p * 2**20) / 2**20
    return p - (p.min(axis=0) + p.max(axis=0)) / 2


@pytest.mark.parametrize("defect", ["perlin", "bump", "hole", "crack"])
@pytest.mark.parametrize("shift", [1e5, 1e6])
def test_far_cloud_gets_the_defect_it_gets_at_the_origin(defect: str, shift: float) -> None:
    part = _part()
    near = apply_defect(part, defect, seed=3)
    with pytest.warns(PcadWarning, match="float32 output points are rounded"):
        far = apply_defect(part + shift, defect, seed=3)
    np.testing.assert_array_equal(far.mask, near.mask)
    assert near.n_anomalous > 0
    np.testing.assert_allclose(far.offsets, near.offsets, rtol=0, atol=1e-6 * 2)  # diag ~ 3.5
    np.testing.assert_array_equal(far.removed, near.removed)
    # points in the input's frame, to float32's resolution at the shift
    step = float(np.spacing(np.float32(shift * 1.001)))
    kept = np.delete(part, far.removed, axis=0)
    np.testing.assert_allclose(far.points.astype(np.float64),
                               kept + shift + far.offsets.astype(np.float64), rtol=0, atol=step)
    assert far.params["centred_at"] == pytest.approx([shift] * 3)
    assert np.allclose(far.params["centre"], np.asarray(near.params["centre"]) + shift)


def test_near_clouds_are_not_moved() -> None:
    part = _part()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = apply_defect(part + 10.0, "bump", seed=3)  # 3 diagonals away: used as given
    assert "centred_at" not in res.params


def test_far_mesh_gets_the_defect_it_gets_at_the_origin() -> None:
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    far_box = box.copy()
    far_box.apply_translation([1e6, -1e6, 1e6])
    near = apply_defect_to_mesh(box, 4000, "bump", seed=2)
    with pytest.warns(PcadWarning):
        far = apply_defect_to_mesh(far_box, 4000, "bump", seed=2)
    # the samples differ from the origin's only by float64 rounding at 1e6 (~1e-10)
    assert (far.mask == near.mask).mean() > 0.99
    np.testing.assert_allclose(far.offsets, near.offsets, atol=1e-4)


@pytest.mark.parametrize("ext", [".xyz", ".ply", ".pcd", ".npy"])
def test_read_points_float64_keeps_every_digit(tmp_path: Path, ext: str) -> None:
    pts = _part()[:200] + 1e6
    path = tmp_path / f"far{ext}"
    if ext == ".xyz":
        path.write_text(_text_rows(pts))
    elif ext == ".ply":
        path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 200\n"
                         b"property double x\nproperty double y\nproperty double z\n"
                         b"end_header\n" + pts.astype("<f8").tobytes())
    elif ext == ".pcd":
        path.write_bytes(_pcd(200, np.zeros((200, 3)), "ascii").split(b"DATA ascii\n")[0]
                         + b"DATA ascii\n"
                         + _text_rows(pts).encode())
    else:
        np.save(path, pts)
    full = read_points(path, dtype=np.float64).points
    assert full.dtype == np.float64
    np.testing.assert_array_equal(full, pts)
    default = read_points(path).points
    assert default.dtype == np.float32
    np.testing.assert_array_equal(default, pts.astype(np.float32))
    with pytest.raises(InvalidInputError, match="dtype"):
        read_points(path, dtype=np.int32)


def test_pcad_synth_on_a_far_text_cloud(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``pcad synth`` reads in float64: the +1e6 cloud gets the origin cloud's defect."""
    part = _part()
    records = {}
    for name, shift in (("near", 0.0), ("far", 1e6)):
        src = tmp_path / f"{name}.xyz"
        src.write_text(_text_rows(part + shift))
        out = tmp_path / f"{name}.npz"
        status = main(["synth", str(src), "-o", str(out), "--defect", "bump", "--json"])
        captured = capsys.readouterr()
        assert status == 0, captured.err
        assert ("warning" in captured.err) == (name == "far")
        records[name] = (json.loads(captured.out), np.load(out))
    (near, near_arrays), (far, far_arrays) = records["near"], records["far"]
    assert far["n_anomalous"] == near["n_anomalous"] > 0
    np.testing.assert_array_equal(far_arrays["mask"], near_arrays["mask"])
    np.testing.assert_allclose(far_arrays["offsets"], near_arrays["offsets"], atol=2e-6)
    assert np.abs(far_arrays["points"].astype(np.float64).mean(axis=0) - 1e6).max() < 0.1


# ----------------------------------------------------- property test: garbled valid files


def _valid_files(scratch: Path) -> dict[str, tuple[bytes, Callable[[Path], object]]]:
    """``{file name: (bytes of a small valid file, reader)}`` for every cloud and mesh format."""
    rng = np.random.default_rng(5)
    pts = rng.random((40, 3)).astype(np.float32)
    mask = rng.random(40) < 0.5
    normals = rng.normal(size=(40, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    out: dict[str, tuple[bytes, Callable[[Path], object]]] = {}

    def encoded(ext: str, **kw: np.ndarray) -> bytes:
        write_points(scratch / f"w{ext}", pts, **kw)
        return (scratch / f"w{ext}").read_bytes()

    out["binary.ply"] = (encoded(".ply", mask=mask, normals=normals), read_points)
    out["ascii.ply"] = (_ply_ascii(40, pts), read_points)
    out["ascii.pcd"] = (encoded(".pcd", mask=mask), read_points)
    out["binary.pcd"] = (_pcd(40, pts, "binary"), read_points)
    out["c.xyz"] = (encoded(".xyz"), read_points)
    out["c.txt"] = (encoded(".txt", mask=mask), read_points)
    out["c.npy"] = (encoded(".npy"), read_points)
    out["c.npz"] = (encoded(".npz", mask=mask, normals=normals), read_points)
    box = trimesh.creation.box()
    for name, file_type in (("binary.stl", "stl"), ("ascii.stl", "stl_ascii"),
                            ("m.obj", "obj"), ("m.off", "off"), ("mesh.ply", "ply")):
        exported = box.export(file_type=file_type)
        out[name] = (exported.encode() if isinstance(exported, str) else exported, read_mesh)
    out["ascii_mesh.ply"] = (box.export(file_type="ply", encoding="ascii"), read_points)
    return out


@st.composite
def _mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    """A truncated, overwritten, inserted-into, extended or count-changed copy of ``raw``."""
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "append", "number"]))
    pos = draw(st.integers(0, len(raw)))
    if kind == "truncate":
        return raw[:pos]
    if kind == "overwrite":
        chunk = draw(st.binary(min_size=1, max_size=8))
        return raw[:pos] + chunk + raw[pos + len(chunk):]
    if kind == "insert":
        return raw[:pos] + draw(st.binary(min_size=1, max_size=64)) + raw[pos:]
    if kind == "append":
        return raw + draw(st.sampled_from([b"\n", b"0 0 0\n", b"\x00" * 12, b"1 2 3 4 5 6 7\n"]))
    numbers = list(re.finditer(rb"\d+", raw[:400]))  # the header's counts and sizes
    if not numbers:
        return raw
    m = numbers[draw(st.integers(0, len(numbers) - 1))]
    value = draw(st.sampled_from([0, 1, 2, 39, 41, 2**31, 2**32 + 40, 10**12, 99_999_999_999,
                                  10**30]))
    return raw[:m.start()] + str(value).encode() + raw[m.end():]


def _rezip_npz(raw: bytes, mutate: Callable[[bytes], bytes]) -> bytes:
    """An .npz whose ``points.npy`` member was mutated, with valid zip checksums."""
    src = zipfile.ZipFile(io.BytesIO(raw))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, mutate(data) if name == "points.npy" else data)
    return buf.getvalue()


_FORMATS = ["binary.ply", "ascii.ply", "ascii.pcd", "binary.pcd", "c.xyz", "c.txt", "c.npy",
            "c.npz", "binary.stl", "ascii.stl", "m.obj", "m.off", "mesh.ply", "ascii_mesh.ply"]


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, tuple[bytes, Callable[[Path], object]]]:
    return _valid_files(tmp_path_factory.mktemp("valid"))


@pytest.mark.parametrize("name", _FORMATS)
def test_readers_raise_only_pcad_errors_on_garbled_files(
        name: str, valid_files: dict[str, tuple[bytes, Callable[[Path], object]]],
        tmp_path: Path) -> None:
    raw, reader = valid_files[name]
    path = tmp_path / name
    path.write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the valid file reads cleanly
        _read_bounded(reader, path)

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        if name.endswith(".npz"):
            variant = _rezip_npz(raw, lambda b: data.draw(_mutation(b)))
            if data.draw(st.booleans()):
                variant = data.draw(_mutation(variant))
        else:
            variant = data.draw(_mutation(raw))
        path.write_bytes(variant)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PcadWarning)
            try:
                _read_bounded(reader, path)
            except PcadError as exc:
                message = str(exc)
                assert message.startswith(str(path)), message
                assert "\n" not in message, message

    check()
