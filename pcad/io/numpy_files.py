"""Point clouds as numpy files: ``.npy`` (the points only) and ``.npz`` (with attributes).

An ``.npz`` archive holds the array ``points`` and optionally ``mask``, ``normals`` and
``offsets``. Files are read with ``allow_pickle=False``.

The shape in each array's header is checked against the bytes the file (or the archive
member) holds before the array is allocated: a header that claims more is an error, and so
are whole rows beyond what it claims; a remainder shorter than one row is ignored with a
:class:`~pcad.errors.PcadWarning`, and so is a second array saved after the first in one
``.npy`` file (only the first is read, as ``numpy.load`` does).

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

import math
import os
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from pcad.errors import FileFormatError, InvalidInputError, PcadWarning
from pcad.io.atomic import atomic_write
from pcad.io.parsing import require_file
from pcad.io.point_data import PointCloudData, cloud_from_file

__all__ = ["read_npy", "read_npz", "write_npy", "write_npz"]


_NPY_MAGIC = b"\x93NUMPY"
#: deflate never expands data more than about 1032 times
_DEFLATE_MAX_RATIO = 1032


def _npy_header(path: Path, f: IO[bytes], what: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, header bytes)`` of the ``.npy`` stream ``f`` (positioned at its start);
    ``what`` names it in messages: ``".npy"`` or ``".npz array 'points'"``."""
    try:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(f)
        return tuple(int(d) for d in shape), np.dtype(dtype), f.tell()
    except Exception as exc:  # ValueError, EOFError, SyntaxError from the header's literal...
        raise FileFormatError(
            f"{path}: cannot read the {what}: {type(exc).__name__}: {exc}"
        ) from None


def _check_npy_size(path: Path, f: IO[bytes], have: int, what: str,
                    max_bytes: int | None = None) -> None:
    """Check the array the ``.npy`` header of ``f`` declares against the ``have`` bytes of
    the stream (header included) before numpy allocates it; ``max_bytes`` bounds the data
    further (what a compressed archive member can expand to)."""
    shape, dtype, header = _npy_header(path, f, what)
    if dtype.hasobject:
        return  # refused by allow_pickle=False when read
    need = math.prod(shape) * dtype.itemsize
    data = have - header
    bound = data if max_bytes is None else min(data, max_bytes)
    if need > bound:
        raise FileFormatError(
            f"{path}: the {what} header declares shape {shape} {dtype} ({need} bytes) but the "
            f"file holds at most {bound} bytes of data: truncated, or a header that lies"
        )
    extra = data - need
    if extra == 0:
        return
    row = dtype.itemsize * math.prod(shape[1:]) if shape else 0
    f.seek(header + need)
    if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
        warnings.warn(f"{path}: the file holds more arrays after the first; only the first "
                      "is read", PcadWarning, stacklevel=4)
    elif 0 < row <= extra:
        rest = f" and {extra % row} more bytes" if extra % row else ""
        raise FileFormatError(
            f"{path}: the {what} header says {shape[0]} rows (shape {shape}), the file holds "
            f"{shape[0] + extra // row} rows{rest}; the extra rows are not read silently"
        )
    else:
        warnings.warn(f"{path}: ignored {extra} trailing byte(s) after the {what} data",
                      PcadWarning, stacklevel=4)


def _check_npz_member(path: Path, archive: zipfile.ZipFile, key: str) -> None:
    """Check array ``key`` of an ``.npz`` (see :func:`_check_npy_size`) before it is read."""
    names = archive.namelist()
    member = f"{key}.npy" if f"{key}.npy" in names else key
    info = archive.getinfo(member)
    bound = None
    if info.compress_type == zipfile.ZIP_STORED:
        bound = info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        bound = info.compress_size * _DEFLATE_MAX_RATIO
    with archive.open(info) as f:
        _check_npy_size(path, f, info.file_size, f".npz array {key!r}", bound)


def _load(path: Path) -> Any:
    require_file(path)
    with open(path, "rb") as f:
        if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:  # else numpy says what the file is
            f.seek(0)
            _check_npy_size(path, f, os.path.getsize(path), ".npy")
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # ValueError, OSError, zipfile.BadZipFile, EOFError...
        raise FileFormatError(
            f"{path}: cannot read the file: {type(exc).__name__}: {exc}"
        ) from None


def read_npy(path: str | os.PathLike[str], *, dtype: Any = np.float32) -> PointCloudData:
    """Read one ``(N, 3)`` array of points from a ``.npy`` file.

    ``dtype``: dtype of the points, ``np.float32`` (default) or ``np.float64`` (a float64
    file's full precision).

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: not a ``.npy`` array (garbage, pickled data, an archive), a header
            whose shape the file cannot hold (or that leaves rows unread), or not ``(N, 3)``
            finite numbers.

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
    return cloud_from_file(path, arr, dtype=dtype)


def read_npz(path: str | os.PathLike[str], *, dtype: Any = np.float32) -> PointCloudData:
    """Read the arrays ``points`` and optional ``mask``, ``normals``, ``offsets`` of an ``.npz``.

    ``dtype``: dtype of the points, ``np.float32`` (default) or ``np.float64``.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: not an ``.npz`` archive, no ``points`` array, an array whose header
            the archive cannot hold, or arrays that do not fit together.

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
        wanted = [k for k in ("points", "mask", "normals", "offsets") if k in keys]
        try:
            for k in wanted:
                _check_npz_member(path, archive.zip, k)
            arrays = {k: archive[k] for k in wanted}
        except FileFormatError:
            raise
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
        dtype=dtype,
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
