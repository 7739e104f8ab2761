"""PCD point clouds (PCL's format): an ASCII writer and an ASCII/binary reader.

Written as ASCII PCD v0.7 with ``FIELDS x y z [normal_x normal_y normal_z] [label] [dx dy dz]``;
``DATA ascii`` and ``DATA binary`` are read, ``binary_compressed`` is not. Points with NaN
coordinates (PCL's marker of a missing measurement in non-dense clouds) are dropped on reading.

``POINTS`` is checked against the file before anything is read or allocated: fewer rows than
it promises is an error ("truncated PCD"), and so are rows it does not describe (``POINTS 20``
over a file of 2000 rows would otherwise be cut silently). In binary data a remainder
shorter than one row is ignored with a :class:`~pcad.errors.PcadWarning`.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io.point_data import PointCloudData
    >>> from pcad.io.pcd import read_pcd, write_pcd
    >>> tmp = tempfile.TemporaryDirectory()
    >>> p = pathlib.Path(tmp.name) / "c.pcd"
    >>> write_pcd(p, PointCloudData(np.ones((2, 3)), mask=[1, 0]))
    >>> read_pcd(p).mask.tolist()
    [True, False]
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pcad.errors import FileFormatError, PcadWarning
from pcad.io.atomic import atomic_write
from pcad.io.parsing import (
    MAX_HEADER_BYTES,
    bytes_after,
    count_rows,
    parse_rows_at,
    read_bytes_at,
    require_file,
)
from pcad.io.point_data import PointCloudData, cloud_from_file

__all__ = ["read_pcd", "write_pcd"]

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8",
              ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8",
              ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8"}  # fmt: skip


def _read_pcd_header(path: Path) -> tuple[dict[str, list[str]], int]:
    """``({KEY: tokens}, data_offset)`` of a PCD file."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = head.find(b"\n", pos)
        if nl < 0:
            raise FileFormatError(f"{path}: not a PCD file (no 'DATA' line in its header)")
        raw = head[pos:nl]
        pos = nl + 1
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise FileFormatError(f"{path}: not a PCD file (binary bytes in its header)") from None
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        key = tokens[0].upper()
        if key not in {"VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT",
                       "VIEWPOINT", "POINTS", "DATA"}:  # fmt: skip
            raise FileFormatError(f"{path}: not a PCD file (unexpected header line {line!r})")
        header[key] = tokens[1:]
        if key == "DATA":
            return header, pos


def _check_binary_size(path: Path, n: int, row: int, have: int) -> None:
    """``n`` rows of ``row`` bytes against the ``have`` bytes after the header."""
    need = n * row
    if need > have:
        raise FileFormatError(
            f"{path}: truncated binary PCD: the header promises {n} points ({row} bytes each, "
            f"{need} bytes) but the file holds {have} bytes of point data "
            f"(room for {have // row} points)"
        )
    extra = have - need
    if extra >= row:
        rest = extra % row
        tail = f" and {rest} more bytes" if rest else ""
        raise FileFormatError(
            f"{path}: PCD header says POINTS {n}, file holds {n + extra // row} rows{tail}; "
            "fix the header (the extra rows are not read silently)"
        )
    if extra:
        warnings.warn(
            f"{path}: ignored {extra} trailing byte(s) after the {n} points of the PCD header",
            PcadWarning,
            stacklevel=3,
        )


def read_pcd(path: str | os.PathLike[str], *, dtype: Any = np.float32) -> PointCloudData:
    """Read a PCD file (``DATA ascii`` or ``DATA binary``).

    Args:
        path: the file.
        dtype: dtype of the points, ``np.float32`` (default) or ``np.float64`` (the file's
            full precision: ``F 8`` fields or ASCII digits).

    Returns:
        :class:`~pcad.io.point_data.PointCloudData`: ``points (N, 3) float32`` without the
        NaN points, and ``normals`` (``normal_x normal_y normal_z``), ``mask`` (``label != 0``)
        and ``offsets`` (``dx dy dz``) where the file has those fields.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: a bad header, ``binary_compressed`` data, truncated data, rows
            ``POINTS`` does not describe, no ``x y z`` fields or no valid point.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.pcd"
        >>> _ = p.write_text("FIELDS x y z\\nSIZE 4 4 4\\nTYPE F F F\\nWIDTH 2\\nPOINTS 2\\n"
        ...                  "DATA ascii\\n1 2 3\\nnan nan nan\\n")
        >>> read_pcd(p).points.tolist()
        [[1.0, 2.0, 3.0]]
        >>> tmp.cleanup()
    """
    path = Path(path)
    require_file(path)
    header, offset = _read_pcd_header(path)
    try:
        names = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = [t.upper() for t in header["TYPE"]]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        if "POINTS" in header:
            n = int(header["POINTS"][0])
        else:
            n = int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0])
        data_kind = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as exc:
        raise FileFormatError(f"{path}: incomplete or invalid PCD header ({exc!r})") from None
    if not (len(names) == len(sizes) == len(types) == len(counts)):
        raise FileFormatError(
            f"{path}: PCD header FIELDS/SIZE/TYPE/COUNT have different lengths "
            f"({len(names)}, {len(sizes)}, {len(types)}, {len(counts)})"
        )
    if n < 0 or any(c < 1 for c in counts):
        raise FileFormatError(f"{path}: PCD header has a negative POINTS or a COUNT < 1")
    dtypes: list[str] = []
    for name, size, t in zip(names, sizes, types, strict=True):
        code = _PCD_TYPES.get((t, size))
        if code is None:
            raise FileFormatError(
                f"{path}: PCD field {name!r} has unsupported TYPE {t} SIZE {size}"
            )
        dtypes.append(code)
    # PCL pads with fields named "_"; make names unique for a numpy structured dtype.
    unique: list[str] = []
    for i, name in enumerate(names):
        unique.append(name if name not in unique else f"{name}__{i}")

    columns: dict[str, np.ndarray] = {}
    if data_kind == "binary_compressed":
        raise FileFormatError(
            f"{path}: PCD 'DATA binary_compressed' is unsupported; save it as ascii or binary "
            "(e.g. pcl_convert_pcd_ascii_binary)"
        )
    if data_kind == "binary":
        have = bytes_after(path, offset)
        row = sum(np.dtype(d).itemsize * c for d, c in zip(dtypes, counts, strict=True))
        _check_binary_size(path, n, row, have)  # before the dtype: COUNT may be absurd
        if n == 0:
            raise FileFormatError(f"{path}: the PCD file holds no points (POINTS 0)")
        rec_dtype = np.dtype(
            [
                (u, "<" + d, (c,)) if c > 1 else (u, "<" + d)
                for u, d, c in zip(unique, dtypes, counts, strict=True)
            ]
        )
        need = n * rec_dtype.itemsize
        buf = read_bytes_at(path, offset, need)
        if len(buf) < need:  # the file changed since its size was read
            raise FileFormatError(
                f"{path}: truncated binary PCD: the header promises {n} points ({need} bytes) "
                f"but the file holds {len(buf)} bytes of point data"
            )
        rec = np.frombuffer(buf, dtype=rec_dtype, count=n)
        for u in unique:
            columns[u] = np.asarray(rec[u])
    elif data_kind == "ascii":
        ncols = sum(counts)
        body = read_bytes_at(path, offset)
        rows = count_rows(body)
        if rows > n:
            raise FileFormatError(
                f"{path}: PCD header says POINTS {n}, file holds {rows} rows; fix the header "
                "(the extra rows are not read silently)"
            )
        if rows < n:
            raise FileFormatError(
                f"{path}: truncated PCD: the header promises {n} points, the file holds {rows}"
            )
        if n == 0:
            raise FileFormatError(f"{path}: the PCD file holds no points (POINTS 0)")
        arr = parse_rows_at(path, offset, n, "PCD point data", data=body)
        if n and arr.size == 0:
            arr = np.empty((0, ncols))
        if arr.shape[0] < n:
            raise FileFormatError(
                f"{path}: truncated PCD: the header promises {n} points, the file holds "
                f"{arr.shape[0]}"
            )
        if n and arr.shape[1] != ncols:
            raise FileFormatError(
                f"{path}: PCD rows have {arr.shape[1]} values, the header declares {ncols}"
            )
        col = 0
        for u, c in zip(unique, counts, strict=True):
            columns[u] = arr[:, col] if c == 1 else arr[:, col : col + c]
            col += c
    else:
        raise FileFormatError(f"{path}: unknown PCD DATA kind {data_kind!r}")

    if not all(k in columns for k in ("x", "y", "z")):
        raise FileFormatError(f"{path}: PCD file has no x, y, z fields (FIELDS {' '.join(names)})")

    def stack(keys: tuple[str, str, str]) -> np.ndarray | None:
        if all(k in columns and columns[k].ndim == 1 for k in keys):
            with np.errstate(invalid="ignore"):  # signalling NaNs: dropped below
                return np.stack([columns[k].astype(np.float64) for k in keys], axis=1)
        return None

    points = stack(("x", "y", "z"))
    if points is None:
        raise FileFormatError(f"{path}: PCD x, y, z fields must have COUNT 1")
    normals = stack(("normal_x", "normal_y", "normal_z"))
    offsets = stack(("dx", "dy", "dz"))
    mask = columns["label"] != 0 if "label" in columns and columns["label"].ndim == 1 else None
    keep = np.isfinite(points).all(axis=1)
    if not keep.all():  # NaN marks a missing measurement in PCL's non-dense clouds
        points = points[keep]
        normals = None if normals is None else normals[keep]
        offsets = None if offsets is None else offsets[keep]
        mask = None if mask is None else mask[keep]
    if points.shape[0] == 0:
        raise FileFormatError(f"{path}: the PCD file holds no valid points")
    return cloud_from_file(
        path, points, normals=normals, mask=mask, offsets=offsets, dtype=dtype
    )


def write_pcd(path: str | os.PathLike[str], data: PointCloudData) -> None:
    """Write ``data`` atomically as ASCII PCD v0.7 (every attribute it holds).

    Coordinates, normals and offsets are written with ``%.9g`` (float32 values read back
    exactly), the label as ``0``/``1``.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.pcd"
        >>> write_pcd(p, PointCloudData(np.ones((1, 3))))
        >>> p.read_text().splitlines()[-2:]
        ['DATA ascii', '1 1 1']
        >>> tmp.cleanup()
    """
    points, normals, mask, offsets = data.points, data.normals, data.mask, data.offsets
    n = points.shape[0]
    cols: list[np.ndarray] = [points.astype(np.float64)]
    fields = ["x", "y", "z"]
    types = ["F", "F", "F"]
    fmt = ["%.9g"] * 3
    if normals is not None:
        cols.append(normals.astype(np.float64))
        fields += ["normal_x", "normal_y", "normal_z"]
        types += ["F"] * 3
        fmt += ["%.9g"] * 3
    if mask is not None:
        cols.append(mask.astype(np.float64)[:, None])
        fields.append("label")
        types.append("U")
        fmt.append("%d")
    if offsets is not None:
        cols.append(offsets.astype(np.float64))
        fields += ["dx", "dy", "dz"]
        types += ["F"] * 3
        fmt += ["%.9g"] * 3
    k = len(fields)
    header = "\n".join(
        [
            "# .PCD v0.7 - Point Cloud Data file format",
            "VERSION 0.7",
            "FIELDS " + " ".join(fields),
            "SIZE " + " ".join(["4"] * k),
            "TYPE " + " ".join(types),
            "COUNT " + " ".join(["1"] * k),
            f"WIDTH {n}",
            "HEIGHT 1",
            "VIEWPOINT 0 0 0 1 0 0 0",
            f"POINTS {n}",
            "DATA ascii",
        ]
    )
    with atomic_write(path, "w") as f:
        f.write(header + "\n")
        np.savetxt(f, np.hstack(cols), fmt=fmt, delimiter=" ")
