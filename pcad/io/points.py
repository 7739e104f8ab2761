"""Read and write unorganized point clouds with optional normals, labels and offsets.

One module per format, chosen by extension (case-insensitive) through :data:`POINT_FORMATS`:

- ``.ply``: :mod:`pcad.io.ply` (binary little-endian written; ascii and binary read; a PLY
  with faces gives its vertices).
- ``.pcd``: :mod:`pcad.io.pcd` (ASCII PCD v0.7 written; ``DATA ascii`` and ``binary`` read;
  NaN points dropped).
- ``.xyz`` / ``.txt``: :mod:`pcad.io.text` (``x y z``, ``x y z label`` or ``x y z nx ny nz``
  rows, spaces or commas).
- ``.npy``: :mod:`pcad.io.numpy_files`, one ``(N, 3)`` array of points.
- ``.npz``: :mod:`pcad.io.numpy_files`, arrays ``points`` and optional ``mask``, ``normals``,
  ``offsets``.

Every write is atomic (see :mod:`pcad.io.atomic`) and validates its arrays before anything
is written. A file that cannot be parsed raises :class:`~pcad.errors.FileFormatError`.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io.points import read_points, write_points
    >>> tmp = tempfile.TemporaryDirectory()
    >>> p = pathlib.Path(tmp.name) / "cloud.ply"
    >>> pts = np.random.default_rng(0).random((100, 3), dtype=np.float32)
    >>> write_points(p, pts, mask=pts[:, 0] > 0.5)
    >>> data = read_points(p)
    >>> bool(np.array_equal(data.points, pts)), int(data.mask.sum()) == int((pts[:, 0] > 0.5).sum())
    (True, True)
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pcad.checks import check_float_dtype
from pcad.io.numpy_files import read_npy, read_npz, write_npy, write_npz
from pcad.io.parsing import require_file, unsupported_extension
from pcad.io.pcd import read_pcd, write_pcd
from pcad.io.ply import PlyElement, PlyHeader, ply_has_faces, read_ply, read_ply_header, write_ply
from pcad.io.point_data import PointCloudData
from pcad.io.text import read_txt, write_labeled_txt, write_txt

__all__ = [
    "POINT_FORMATS",
    "SUPPORTED_POINT_EXTENSIONS",
    "PointCloudData",
    "PlyElement",
    "PlyHeader",
    "ply_has_faces",
    "read_ply_header",
    "read_points",
    "write_labeled_txt",
    "write_points",
]

PointReader = Callable[..., PointCloudData]
PointWriter = Callable[[Path, PointCloudData], None]

POINT_FORMATS: dict[str, tuple[PointReader, PointWriter]] = {
    ".ply": (read_ply, write_ply),
    ".pcd": (read_pcd, write_pcd),
    ".xyz": (read_txt, write_txt),
    ".txt": (read_txt, write_txt),
    ".npy": (read_npy, write_npy),
    ".npz": (read_npz, write_npz),
}
"""``{extension: (reader, writer)}`` of every point-cloud format, as trimesh's exchange tables.

A reader takes an existing file's path (and a keyword ``dtype``, ``np.float32`` or
``np.float64``, the dtype of the points) and returns :class:`PointCloudData`; a writer takes the
destination and a validated :class:`PointCloudData`, refuses attributes its format cannot
hold (InvalidInputError) and writes atomically."""

SUPPORTED_POINT_EXTENSIONS: tuple[str, ...] = tuple(POINT_FORMATS)


def _format(path: Path) -> tuple[PointReader, PointWriter]:
    formats = POINT_FORMATS.get(path.suffix.lower())
    if formats is None:
        raise unsupported_extension(path, SUPPORTED_POINT_EXTENSIONS, "point cloud")
    return formats


def read_points(path: str | os.PathLike[str], *, dtype: Any = np.float32) -> PointCloudData:
    """Read an unorganized point cloud (``.ply .pcd .xyz .txt .npy .npz``).

    Every reader checks the counts a header promises against the file before it allocates
    anything, and refuses rows the header does not describe (see the format modules).

    Args:
        path: the file.
        dtype: dtype of the points: ``np.float32`` (default, pcad's contract) or
            ``np.float64``, the file's full precision, for a caller that centres a cloud
            lying far from the origin before its float32 work (``pcad synth`` does).

    Returns:
        :class:`PointCloudData` with ``points (N, 3) float32`` and, where the file has them,
        ``normals (N, 3) float32``, ``mask (N,) bool`` (from a ``label`` field or a 4th text
        column) and ``offsets (N, 3) float32``. A mesh PLY gives its vertices.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: unknown extension, or a garbage, truncated or inconsistent file.
        InvalidInputError: a ``dtype`` other than float32 and float64.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.txt"
        >>> _ = p.write_text("0,0,0,0\\n1,2,3,1\\n")
        >>> d = read_points(p)
        >>> d.points.shape, d.mask.tolist()
        ((2, 3), [False, True])
        >>> tmp.cleanup()
    """
    path = Path(path)
    reader, _ = _format(path)
    check_float_dtype(dtype)
    require_file(path)
    return reader(path, dtype=dtype)


def write_points(
    path: str | os.PathLike[str],
    points: Any,
    *,
    mask: Any = None,
    offsets: Any = None,
    normals: Any = None,
) -> None:
    """Write a point cloud atomically; the format follows the extension.

    Args:
        path: destination, ``.ply .pcd .xyz .txt .npy .npz``; parent folders are created.
        points: ``(N, 3)`` finite numbers, ``N >= 1``; stored as float32.
        mask: ``(N,)`` bool or 0/1, stored as a 0/1 label.
        offsets: ``(N, 3)`` finite, stored as float32.
        normals: ``(N, 3)`` finite, stored as float32.

    What each format stores: ``.ply``, ``.pcd`` and ``.npz`` store everything; ``.txt``/``.xyz``
    store ``x y z [label]`` or ``x y z nx ny nz`` (not both, no offsets); ``.npy`` stores the
    points only. Asking a format for an attribute it cannot hold raises InvalidInputError
    rather than dropping it silently. Nothing is written when a check fails.

    Example:
        >>> import tempfile, pathlib
        >>> import numpy as np
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.npz"
        >>> write_points(p, np.ones((3, 3)), offsets=np.zeros((3, 3)))
        >>> read_points(p).offsets.shape
        (3, 3)
        >>> tmp.cleanup()
    """
    path = Path(path)
    _, writer = _format(path)
    writer(path, PointCloudData(points, normals=normals, mask=mask, offsets=offsets))
