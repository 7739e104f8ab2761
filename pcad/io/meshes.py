"""Read triangle meshes and sample points on their surface deterministically.

Example:
    >>> import trimesh
    >>> from pcad.io.meshes import sample_mesh
    >>> pts, nrm, face = sample_mesh(trimesh.creation.box(), 500, seed=0)
    >>> pts.shape, nrm.dtype, face.dtype
    ((500, 3), dtype('float32'), dtype('int64'))
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pcad.checks import MAX_SAMPLE_POINTS, check_float_dtype, check_int
from pcad.errors import DegenerateGeometryError, FileFormatError, InvalidInputError
from pcad.io.parsing import (
    bytes_after,
    decode_text,
    quiet_trimesh,
    require_file,
    unsupported_extension,
)
from pcad.io.ply import check_ply_data_size, read_ply_header

if TYPE_CHECKING:  # trimesh is imported where a mesh is read, so pcad.io loads without it
    import trimesh

__all__ = ["SUPPORTED_MESH_EXTENSIONS", "read_mesh", "sample_mesh"]

SUPPORTED_MESH_EXTENSIONS: tuple[str, ...] = (".stl", ".obj", ".ply", ".off")


def read_mesh(path: str | os.PathLike[str]) -> trimesh.Trimesh:
    """Read a triangle mesh from ``.stl .obj .ply .off`` (extension case-insensitive).

    A file holding several meshes (a scene) is concatenated into one. Duplicate vertices are
    merged (STL stores three per triangle), so the mesh is connected. The counts in a PLY or
    OFF header are checked against the file before it is parsed: fewer rows than promised,
    or rows the header does not describe, are an error (see
    :func:`pcad.io.ply.check_ply_data_size`).

    Returns:
        ``trimesh.Trimesh`` with ``vertices (V, 3) float64`` and ``faces (F, 3) int64``,
        ``F >= 1``.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: unknown extension, a file trimesh cannot parse, a header whose
            counts do not match the file, a file without faces (trimesh silently returns an
            empty mesh for garbage), NaN/inf vertices, or face indices out of range.

    Example:
        >>> import tempfile, pathlib
        >>> import trimesh
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "box.STL"
        >>> _ = trimesh.creation.box().export(p)
        >>> read_mesh(p).faces.shape
        (12, 3)
        >>> tmp.cleanup()
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SUPPORTED_MESH_EXTENSIONS:
        raise unsupported_extension(path, SUPPORTED_MESH_EXTENSIONS, "mesh")
    require_file(path)
    if ext == ".ply":
        check_ply_data_size(path, read_ply_header(path))
    elif ext == ".off":
        _check_off_counts(path)
    import trimesh

    try:
        # process=False so NaN vertices are seen here instead of silently dropped by trimesh
        with quiet_trimesh():
            loaded = trimesh.load(path, file_type=ext[1:], force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types (ValueError, KeyError, struct.error...)
        raise FileFormatError(
            f"{path}: cannot read the mesh: {type(exc).__name__}: {exc}"
        ) from None
    if isinstance(loaded, trimesh.Scene):
        parts = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        loaded = trimesh.util.concatenate(parts) if parts else trimesh.Trimesh()
    if not isinstance(loaded, trimesh.Trimesh):
        raise FileFormatError(f"{path}: expected a triangle mesh, got {type(loaded).__name__}")
    mesh = loaded
    if len(mesh.faces) == 0:
        raise FileFormatError(
            f"{path}: no faces could be read (an empty, garbage or point-only file"
            f"{_binary_stl_hint(path) if ext == '.stl' else ''}); use read_points for point "
            "clouds"
        )
    vertices = np.asarray(mesh.vertices)
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise FileFormatError(f"{path}: {bad} vertices have NaN or infinite coordinates")
    faces = np.asarray(mesh.faces)
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise FileFormatError(f"{path}: face indices out of range for {len(vertices)} vertices")
    with quiet_trimesh():  # huge garbled coordinates overflow its integer keys
        mesh.merge_vertices()
    return mesh


def _binary_stl_hint(path: Path) -> str:
    """Why a file is no binary STL: its triangle count against its length (or "")."""
    size = bytes_after(path, 0)
    if size < 84:
        return ""
    with open(path, "rb") as f:
        f.seek(80)
        count = int(np.frombuffer(f.read(4), "<u4")[0])
    return (f"; read as binary STL its header says {count} triangles ({84 + 50 * count} "
            f"bytes), the file holds {size} bytes")


_OFF_MAGIC = re.compile(r"(COFF|OFF)")


def _check_off_counts(path: Path) -> None:
    """Compare the vertex and face counts of an OFF header with the rows of the file.

    Lines are counted as trimesh reads them (``#`` comments and blank lines dropped); a
    header that trimesh cannot read is left to trimesh's own error.
    """
    text = decode_text(path)
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    body = "\n".join(ln for ln in lines if ln)
    parts = _OFF_MAGIC.split(body, maxsplit=1)
    if len(parts) < 3:
        return
    rows = [ln for ln in parts[2].splitlines() if ln.strip()]
    try:
        n_vertices, n_faces = (int(v) for v in rows[0].split()[:2])
    except (IndexError, ValueError):
        return
    have = len(rows) - 1
    if n_vertices < 0 or n_faces < 0 or have == n_vertices + n_faces:
        return
    what = "truncated OFF: the header promises" if have < n_vertices + n_faces else \
        "OFF header says"
    raise FileFormatError(
        f"{path}: {what} {n_vertices} vertices and {n_faces} faces "
        f"({n_vertices + n_faces} rows), the file holds {have} rows"
    )


def _face_geometry(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(a, edge1, edge2, cross)`` per face, float64."""
    tri = vertices[faces]
    a = tri[:, 0]
    e1 = tri[:, 1] - a
    e2 = tri[:, 2] - a
    return a, e1, e2, np.cross(e1, e2)


def _seed(seed: Any) -> int | None:
    if seed is None:
        return None
    return check_int(seed, "seed", minimum=0)


def sample_mesh(
    mesh: Any,
    n_points: int,
    seed: int | np.random.Generator | None,
    *,
    dtype: Any = np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample points uniformly by area on a triangle mesh, deterministically for a seed.

    Faces are drawn with ``numpy.random.default_rng(seed)`` over the cumulative face areas,
    then a uniform point inside each triangle from two barycentric coordinates. trimesh's own
    sampler (global RNG) is not used, so the result depends on ``seed`` only.

    Args:
        mesh: a ``trimesh.Trimesh`` (or any object with ``vertices (V, 3)`` and
            ``faces (F, 3)`` integer indices).
        n_points: number of samples N, ``1 <= N <=``
            :data:`~pcad.checks.MAX_SAMPLE_POINTS` (50 million; checked before anything is
            allocated).
        seed: integer seed (the same seed gives byte-identical results), a
            ``numpy.random.Generator`` (advanced by the call), or None for fresh entropy.
        dtype: dtype of the points, ``np.float32`` (default) or ``np.float64`` (the same
            samples before their float32 rounding, for a mesh far from the origin).

    Returns:
        ``points (N, 3) float32`` on the surface, ``normals (N, 3) float32`` unit face normals
        of the sampled faces (orientation from the face winding), ``face_index (N,) int64``.

    Raises:
        InvalidInputError: ``n_points`` outside ``[1, MAX_SAMPLE_POINTS]``, NaN/inf vertices,
            malformed faces, a ``dtype`` other than float32 and float64.
        DegenerateGeometryError: no faces, or all faces of zero area.

    Example:
        >>> import trimesh
        >>> pts, nrm, idx = sample_mesh(trimesh.creation.icosphere(), 100, seed=3)
        >>> r = np.linalg.norm(pts, axis=1)  # flat triangles lie inside the unit sphere
        >>> bool(r.max() <= 1 + 1e-6 and r.min() > 0.9)
        True
        >>> bool(np.allclose(np.linalg.norm(nrm, axis=1), 1))
        True
    """
    n = check_int(n_points, "n_points", minimum=1, maximum=MAX_SAMPLE_POINTS)
    out_dtype = check_float_dtype(dtype)
    if not (hasattr(mesh, "vertices") and hasattr(mesh, "faces")):
        raise InvalidInputError(
            f"mesh: expected a trimesh.Trimesh with vertices and faces, got {type(mesh).__name__}"
        )
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise InvalidInputError(f"mesh.vertices: expected shape (V, 3), got {vertices.shape}")
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise InvalidInputError(f"mesh.vertices: {bad} vertices have NaN or infinite coordinates")
    if faces.size == 0:
        raise DegenerateGeometryError("mesh: zero-area mesh (it has no faces)")
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise InvalidInputError(
            "mesh.faces: expected integer triangles of shape (F, 3), "
            f"got {faces.shape} {faces.dtype}"
        )
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise InvalidInputError(f"mesh.faces: indices out of range for {len(vertices)} vertices")

    a, e1, e2, cross = _face_geometry(vertices, faces)
    double_area = np.linalg.norm(cross, axis=1)
    cumulative = np.cumsum(double_area)
    total = float(cumulative[-1])
    if not total > 0 or not np.isfinite(total):
        raise DegenerateGeometryError(
            f"mesh: zero-area mesh ({len(faces)} faces, total area {total / 2:g})"
        )

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(_seed(seed))
    draw = rng.random(n) * total
    face_index = np.searchsorted(cumulative, draw, side="right")
    # side="right" never selects a zero-area face (its cumulative value equals its
    # predecessor's); the clip handles draw == total after rounding
    last_positive = int(np.flatnonzero(double_area > 0)[-1])
    face_index = np.minimum(face_index, last_positive).astype(np.int64)
    uv = rng.random((n, 2))
    flip = uv.sum(axis=1) > 1.0
    uv[flip] = 1.0 - uv[flip]
    points = a[face_index] + uv[:, :1] * e1[face_index] + uv[:, 1:] * e2[face_index]
    normals = cross[face_index] / double_area[face_index, None]
    return (
        np.ascontiguousarray(points, dtype=out_dtype),
        np.ascontiguousarray(normals, dtype=np.float32),
        face_index,
    )
