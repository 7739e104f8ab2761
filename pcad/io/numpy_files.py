"""Point clouds as numpy files: ``.npy`` (the points only) and ``.npz`` (with attributes).

An ``.npz`` archive holds the array ``points`` and optionally ``mask``, ``normals`` and
``offsets``. Files are read with ``allow_pickle=False``.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io.point_data import PointCloudData
    >>> from pcad.io.numpy_files import read_npz, write_npz
    >>> tmp = tempfile.TemporaryDirectory()
    >>> p = pathlib.Path(tmp.name) / "c.npz"
    >>> write_npz(p, PointCloudData(np.ones((3, 3)), offsets=np.zeros((3, 3))))
    >>> read_npz(p).offsets.shape
    (3, 3)
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pcad.errors import FileFormatError, InvalidInputError
from pcad.io.atomic import atomic_write
from pcad.io.parsing import require_file
from pcad.io.point_data import PointCloudData, cloud_from_file

__all__ = ["read_npy", "read_npz", "write_npy", "write_npz"]


def _load(path: Path) -> Any:
    require_file(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # ValueError, OSError, zipfile.BadZipFile, EOFError...
        raise FileFormatError(
            f"{path}: cannot read the file: {type(exc).__name__}: {exc}"
        ) from None


def read_npy(path: str | os.PathLike[str]) -> PointCloudData:
    """Read one ``(N, 3)`` array of points from a ``.npy`` file.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: not a ``.npy`` array (garbage, pickled data, an archive), or not
            ``(N, 3)`` finite numbers.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.npy"
        >>> np.save(p, np.zeros((4, 3)))
        >>> read_npy(p).points.dtype
        dtype('float32')
        >>> tmp.cleanup()
    """
    path = Path(path)
    arr = _load(path)
    if not isinstance(arr, np.ndarray):
        raise FileFormatError(f"{path}: expected a single .npy array, got an archive")
    return cloud_from_file(path, arr)


def read_npz(path: str | os.PathLike[str]) -> PointCloudData:
    """Read the arrays ``points`` and optional ``mask``, ``normals``, ``offsets`` of an ``.npz``.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: not an ``.npz`` archive, no ``points`` array, or arrays that do not
            fit together.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.npz"
        >>> np.savez(p, points=np.zeros((2, 3)), mask=[0, 1])
        >>> read_npz(p).mask.tolist()
        [False, True]
        >>> tmp.cleanup()
    """
    path = Path(path)
    archive = _load(path)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise FileFormatError(f"{path}: expected an .npz archive")
    with archive:
        keys = set(archive.files)
        if "points" not in keys:
            raise FileFormatError(
                f"{path}: .npz archive has no 'points' array (arrays: {sorted(keys)})"
            )
        try:
            arrays = {k: archive[k] for k in ("points", "mask", "normals", "offsets") if k in keys}
        except Exception as exc:
            raise FileFormatError(
                f"{path}: cannot read the archive: {type(exc).__name__}: {exc}"
            ) from None
    return cloud_from_file(
        path,
        arrays["points"],
        normals=arrays.get("normals"),
        mask=arrays.get("mask"),
        offsets=arrays.get("offsets"),
    )


def write_npy(path: str | os.PathLike[str], data: PointCloudData) -> None:
    """Write the points of ``data`` atomically as one ``(N, 3) float32`` ``.npy`` array.

    Raises:
        InvalidInputError: ``data`` has a mask, normals or offsets (``.npy`` holds one array).

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.npy"
        >>> write_npy(p, PointCloudData(np.ones((2, 3))))
        >>> np.load(p).shape
        (2, 3)
        >>> tmp.cleanup()
    """
    path = Path(path)
    if data.normals is not None or data.mask is not None or data.offsets is not None:
        raise InvalidInputError(
            f"{path}: .npy stores the points only; use .npz, .ply or .pcd for mask/normals/offsets"
        )
    with atomic_write(path, "wb") as f:
        np.save(f, data.points, allow_pickle=False)


def write_npz(path: str | os.PathLike[str], data: PointCloudData) -> None:
    """Write ``data`` atomically as an ``.npz`` archive (``points`` and the attributes it has).

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.npz"
        >>> write_npz(p, PointCloudData(np.ones((2, 3)), mask=[1, 0]))
        >>> sorted(np.load(p).files)
        ['mask', 'points']
        >>> tmp.cleanup()
    """
    arrays = {"points": data.points}
    for key, value in (("mask", data.mask), ("normals", data.normals), ("offsets", data.offsets)):
        if value is not None:
            arrays[key] = value
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
