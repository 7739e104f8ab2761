"""File I/O of pcad: point clouds, meshes, organized clouds, masks and images.

Every reader raises :class:`~pcad.errors.FileFormatError` (never a library's own exception
type) on an unknown extension or a file it cannot parse, and ``FileNotFoundError`` on a
missing file. Every writer validates its arrays first and writes atomically.

One module per point-cloud format (:mod:`pcad.io.ply`, :mod:`pcad.io.pcd`, :mod:`pcad.io.text`,
:mod:`pcad.io.numpy_files`), each with ``read_*``/``write_*``, dispatched by extension through
the table :data:`pcad.io.points.POINT_FORMATS`; helpers they share are in :mod:`pcad.io.parsing`.

Example:
    >>> import tempfile, pathlib
    >>> import trimesh
    >>> from pcad.io import read_input
    >>> tmp = tempfile.TemporaryDirectory()
    >>> p = pathlib.Path(tmp.name) / "box.stl"
    >>> _ = trimesh.creation.box().export(p)
    >>> data = read_input(p, n_points=256, seed=0)
    >>> data.kind, data.points.shape, data.normals.dtype
    ('mesh', (256, 3), dtype('float32'))
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pcad.checks import MAX_SAMPLE_POINTS, check_float_dtype, check_int, valid_pixels
from pcad.io.atomic import atomic_group, atomic_save, atomic_write
from pcad.io.meshes import SUPPORTED_MESH_EXTENSIONS, read_mesh, sample_mesh
from pcad.io.organized import (
    SUPPORTED_ORGANIZED_EXTENSIONS,
    read_mask_png,
    read_rgb,
    read_xyz_tiff,
    write_mask_png,
    write_rgb,
    write_xyz_tiff,
)
from pcad.io.parsing import unsupported_extension
from pcad.io.points import (
    SUPPORTED_POINT_EXTENSIONS,
    PointCloudData,
    ply_has_faces,
    read_ply_header,
    read_points,
    write_labeled_txt,
    write_points,
)

if TYPE_CHECKING:  # only an annotation here: pcad.io imports without trimesh
    import trimesh

__all__ = [
    "DEFAULT_MESH_POINTS",
    "SUPPORTED_EXTENSIONS",
    "SUPPORTED_MESH_EXTENSIONS",
    "SUPPORTED_ORGANIZED_EXTENSIONS",
    "SUPPORTED_POINT_EXTENSIONS",
    "InputData",
    "InputKind",
    "PointCloudData",
    "atomic_group",
    "atomic_save",
    "atomic_write",
    "ply_has_faces",
    "read_input",
    "read_mask_png",
    "read_mesh",
    "read_ply_header",
    "read_points",
    "read_rgb",
    "read_xyz_tiff",
    "sample_mesh",
    "write_labeled_txt",
    "write_mask_png",
    "write_points",
    "write_rgb",
    "write_xyz_tiff",
]

InputKind = Literal["points", "mesh", "organized"]

DEFAULT_MESH_POINTS = 16384

SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(
    dict.fromkeys(
        SUPPORTED_POINT_EXTENSIONS + SUPPORTED_MESH_EXTENSIONS + SUPPORTED_ORGANIZED_EXTENSIONS
    )
)


@dataclass(eq=False)
class InputData:
    """What :func:`read_input` found in a file.

    Attributes:
        kind: ``"points"`` (a point cloud file), ``"mesh"`` (a mesh, sampled) or
            ``"organized"`` (an xyz TIFF).
        points: ``(N, 3) float32`` (``float64`` for a cloud or mesh read with
            ``dtype=np.float64``): the cloud's points, the mesh samples, or, for an
            organized cloud, its valid pixels (not ``(0, 0, 0)``) in row-major order
            (possibly 0 rows).
        normals: ``(N, 3) float32`` unit face normals for a mesh, the file's normals for a
            point cloud that has them, else None.
        organized: ``(H, W, 3) float32`` for ``kind == "organized"``, else None.
        mesh: the ``trimesh.Trimesh`` for ``kind == "mesh"``, else None.
        path: the file read.
        mask: ``(N,) bool`` labels of a point cloud file that has them, else None.
        offsets: ``(N, 3) float32`` offsets of a point cloud file that has them, else None.
        face_index: ``(N,) int64`` sampled face of each point for a mesh, else None.
    """

    kind: InputKind
    points: np.ndarray | None
    normals: np.ndarray | None
    organized: np.ndarray | None
    mesh: trimesh.Trimesh | None
    path: Path
    mask: np.ndarray | None = None
    offsets: np.ndarray | None = None
    face_index: np.ndarray | None = None


def read_input(
    path: str | os.PathLike[str],
    n_points: int = DEFAULT_MESH_POINTS,
    seed: int | None = 0,
    *,
    dtype: Any = np.float32,
) -> InputData:
    """Read any supported input file and say what it was.

    - ``.tiff``/``.tif``: an organized cloud (:func:`read_xyz_tiff`).
    - ``.stl .obj .off``, and ``.ply`` files that declare faces: a mesh (:func:`read_mesh`)
      sampled with :func:`sample_mesh` to ``n_points`` points with face normals.
    - ``.ply`` without faces, ``.pcd .xyz .txt .npy .npz``: a point cloud (:func:`read_points`).

    Args:
        path: the file.
        n_points: samples drawn on a mesh (ignored for other kinds), ``1 <= n_points <=``
            :data:`~pcad.checks.MAX_SAMPLE_POINTS`.
        seed: seed of the mesh sampling.
        dtype: dtype of ``points`` for a cloud or a mesh: ``np.float32`` (default) or
            ``np.float64`` (the file's full precision, for a caller that centres far-away
            clouds before its float32 work); an organized cloud stays float32 (its file's
            precision).

    Raises:
        FileFormatError: unknown extension (the message lists the supported ones) or a bad file.
        InvalidInputError: ``n_points`` out of range or a ``dtype`` other than float32/float64.
        FileNotFoundError: the file does not exist.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.npy"
        >>> np.save(p, np.zeros((5, 3), dtype=np.float32))
        >>> d = read_input(p)
        >>> d.kind, d.points.shape, d.mesh is None
        ('points', (5, 3), True)
        >>> tmp.cleanup()
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise unsupported_extension(path, SUPPORTED_EXTENSIONS, "")
    n = check_int(n_points, "n_points", minimum=1, maximum=MAX_SAMPLE_POINTS)
    check_float_dtype(dtype)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if ext in SUPPORTED_ORGANIZED_EXTENSIONS:
        xyz = read_xyz_tiff(path)
        return InputData(
            kind="organized",
            points=np.ascontiguousarray(xyz[valid_pixels(xyz)]),
            normals=None,
            organized=xyz,
            mesh=None,
            path=path,
        )
    is_mesh = ext in SUPPORTED_MESH_EXTENSIONS and (ext != ".ply" or ply_has_faces(path))
    if is_mesh:
        mesh = read_mesh(path)
        points, normals, face_index = sample_mesh(mesh, n, seed, dtype=dtype)
        return InputData(
            kind="mesh",
            points=points,
            normals=normals,
            organized=None,
            mesh=mesh,
            path=path,
            face_index=face_index,
        )
    data = read_points(path, dtype=dtype)
    return InputData(
        kind="points",
        points=data.points,
        normals=data.normals,
        organized=None,
        mesh=None,
        path=path,
        mask=data.mask,
        offsets=data.offsets,
    )
