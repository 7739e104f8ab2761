"""Point clouds as text rows (``.xyz``/``.txt``): Real3D-AD and Anomaly-ShapeNet ground truth.

Whitespace- or comma-separated numbers, ``#`` comments allowed. 3 columns: ``x y z``;
4 columns: ``x y z label`` with 0/1 labels (Real3D-AD with spaces, Anomaly-ShapeNet with
commas); 6 columns: ``x y z nx ny nz``.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io.text import read_txt, write_labeled_txt
    >>> tmp = tempfile.TemporaryDirectory()
    >>> p = pathlib.Path(tmp.name) / "gt.txt"
    >>> write_labeled_txt(p, np.ones((2, 3)), [0, 1])
    >>> read_txt(p).mask.tolist()
    [False, True]
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import numpy as np

from pcad.checks import check_points
from pcad.errors import FileFormatError, InvalidInputError
from pcad.io.atomic import atomic_write
from pcad.io.parsing import decode_text, parse_numbers, require_file
from pcad.io.point_data import PointCloudData, check_mask_values, cloud_from_file

__all__ = ["TEXT_SEPARATORS", "read_txt", "write_labeled_txt", "write_txt"]

TEXT_SEPARATORS = (" ", ",", "\t")
"""Column separators :func:`write_labeled_txt` accepts."""


def read_txt(path: str | os.PathLike[str], *, dtype: Any = np.float32) -> PointCloudData:
    """Read ``x y z``, ``x y z label`` or ``x y z nx ny nz`` text rows.

    ``dtype``: dtype of the points, ``np.float32`` (default) or ``np.float64`` (every digit
    of the text, for clouds far from the origin).

    Returns:
        :class:`~pcad.io.point_data.PointCloudData` with ``points (N, 3) float32``, and
        ``mask (N,) bool`` for 4 columns or ``normals (N, 3) float32`` for 6.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: not text, a non-numeric token, ragged rows, no rows, another column
            count, or a 4th column that is not 0/1.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.txt"
        >>> _ = p.write_text("0,0,0,0\\n1,2,3,1\\n")
        >>> d = read_txt(p)
        >>> d.points.shape, d.mask.tolist()
        ((2, 3), [False, True])
        >>> tmp.cleanup()
    """
    path = Path(path)
    require_file(path)
    arr = parse_numbers(path, decode_text(path), what="point text")
    if arr.size == 0:
        raise FileFormatError(f"{path}: the file holds no points")
    ncols = arr.shape[1]
    if ncols == 3:
        return cloud_from_file(path, arr, dtype=dtype)
    if ncols == 4:
        labels = arr[:, 3]
        bad = ~((labels == 0) | (labels == 1))
        if bad.any():
            raise FileFormatError(
                f"{path}: 4-column text is read as 'x y z label' with 0/1 labels, but column 4 "
                f"holds {labels[bad][0]!r} ({int(bad.sum())} values are neither 0 nor 1)"
            )
        return cloud_from_file(path, arr[:, :3], mask=labels == 1, dtype=dtype)
    if ncols == 6:
        return cloud_from_file(path, arr[:, :3], normals=arr[:, 3:6], dtype=dtype)
    raise FileFormatError(
        f"{path}: {ncols} columns per row; expected 3 (x y z), 4 (x y z label) or "
        "6 (x y z nx ny nz)"
    )


def _write_rows(
    f: IO[str], points: np.ndarray, mask: np.ndarray | None, normals: np.ndarray | None, sep: str
) -> None:
    cols = [points.astype(np.float64)]
    fmt = ["%.9g"] * 3
    if normals is not None:
        cols.append(normals.astype(np.float64))
        fmt += ["%.9g"] * 3
    if mask is not None:
        cols.append(mask.astype(np.float64)[:, None])
        fmt.append("%d")
    np.savetxt(f, np.hstack(cols), fmt=fmt, delimiter=sep)


def write_txt(path: str | os.PathLike[str], data: PointCloudData) -> None:
    """Write ``data`` atomically as space-separated ``x y z [label]`` or ``x y z nx ny nz`` rows.

    Raises:
        InvalidInputError: ``data`` has offsets, or both normals and a mask (text holds one).

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.xyz"
        >>> write_txt(p, PointCloudData([[0.5, 1, 2]], normals=[[0, 0, 1]]))
        >>> p.read_text()
        '0.5 1 2 0 0 1\\n'
        >>> tmp.cleanup()
    """
    path = Path(path)
    ext = path.suffix.lower()
    if data.offsets is not None:
        raise InvalidInputError(f"{path}: {ext} cannot store offsets; use .ply, .pcd or .npz")
    if data.normals is not None and data.mask is not None:
        raise InvalidInputError(
            f"{path}: {ext} stores either labels (x y z label) or normals (x y z nx ny nz), "
            "not both; use .ply, .pcd or .npz"
        )
    with atomic_write(path, "w") as f:
        _write_rows(f, data.points, data.mask, data.normals, " ")


def write_labeled_txt(path: str | os.PathLike[str], points: Any, mask: Any, sep: str = " ") -> None:
    """Write ``x y z label`` text rows (Real3D-AD with ``sep=" "``, Anomaly-ShapeNet with ",").

    Args:
        path: destination file (any extension); parent folders are created.
        points: ``(N, 3)`` finite numbers, ``N >= 1``; written as float32 with ``%.9g`` so
            that reading the text back gives the same float32 values.
        mask: ``(N,)`` bool or 0/1; written as the integer 0 or 1.
        sep: ``" "``, ``","`` or ``"\\t"``.

    Example:
        >>> import tempfile, pathlib
        >>> import numpy as np
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "s.txt"
        >>> write_labeled_txt(p, [[0.5, 1, 2]], [True], sep=",")
        >>> p.read_text()
        '0.5,1,2,1\\n'
        >>> tmp.cleanup()
    """
    if sep not in TEXT_SEPARATORS:
        raise InvalidInputError(f"sep: expected one of {TEXT_SEPARATORS}, got {sep!r}")
    pts = check_points(points, "points", min_points=1)
    msk = check_mask_values(mask, pts.shape[0], "mask")
    with atomic_write(path, "w") as f:
        _write_rows(f, pts, msk, None, sep)
