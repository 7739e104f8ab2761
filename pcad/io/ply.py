"""PLY point clouds: header parsing, a fast vertex reader, and a binary writer.

Written as binary little-endian PLY with vertex properties ``x y z`` (float), optional
``nx ny nz`` (float), ``label`` (uchar 0/1) and ``dx dy dz`` (float). Read with pcad's own
parser for ``ascii`` and ``binary_little_endian`` files whose first element is a fixed-size
``vertex`` element, and with trimesh for any other PLY. A PLY with faces is a mesh:
:func:`read_ply` returns its vertices.

Sizes are checked against the file before anything is read or allocated
(:func:`check_ply_data_size`): the rows every element of the header promises must be in the
file (else FileFormatError, "truncated PLY"), and rows the header does not describe are an
error too (a header that says 50 vertices over a file that holds 2000 would otherwise be
cut silently). Binary files: whole rows beyond the described data are an error, a remainder
shorter than one row is ignored with a :class:`~pcad.errors.PcadWarning`; the exact length
is known only when no element has a ``property list`` (faces), otherwise only the minimum is
checked. ASCII files: one row per line, and the count of non-blank lines must equal the
header's total.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io.point_data import PointCloudData
    >>> from pcad.io.ply import read_ply, write_ply
    >>> tmp = tempfile.TemporaryDirectory()
    >>> p = pathlib.Path(tmp.name) / "c.ply"
    >>> write_ply(p, PointCloudData(np.ones((3, 3)), mask=[0, 1, 0]))
    >>> read_ply(p).mask.tolist()
    [False, True, False]
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
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
    quiet_trimesh,
    read_bytes_at,
    require_file,
)
from pcad.io.point_data import PointCloudData, cloud_from_file

__all__ = [
    "PlyElement",
    "PlyHeader",
    "check_ply_data_size",
    "ply_has_faces",
    "read_ply",
    "read_ply_header",
    "write_ply",
]

_PLY_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip

_PLY_FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")


@dataclass
class PlyElement:
    """One ``element`` of a PLY header.

    Attributes:
        name: element name (``vertex``, ``face``...).
        count: number of rows the header promises.
        properties: ``(name, type, list_count_type)``; ``list_count_type`` is None for a scalar.
    """

    name: str
    count: int
    properties: list[tuple[str, str, str | None]]

    @property
    def has_lists(self) -> bool:
        """True if a row has a variable size (a ``property list``)."""
        return any(p[2] is not None for p in self.properties)

    @property
    def row_bytes(self) -> int:
        """Bytes of one binary row; for a row with lists, the least it can take (empty lists)."""
        return sum(np.dtype(_PLY_TYPES[count or ptype]).itemsize
                   for _, ptype, count in self.properties)

    def describe(self, count: int | None = None) -> str:
        """``"50 vertices"``, ``"96 faces"``, ``"3 'edge' rows"`` (``count`` default: ours)."""
        count = self.count if count is None else count
        noun = {"vertex": "vertices", "face": "faces"}.get(self.name, f"{self.name!r} rows")
        return f"{count} {noun}"


@dataclass
class PlyHeader:
    """A parsed PLY header.

    Attributes:
        format: ``ascii``, ``binary_little_endian`` or ``binary_big_endian``.
        elements: the elements in file order.
        data_offset: byte offset of the first data byte (just after ``end_header\\n``).
    """

    format: str
    elements: list[PlyElement]
    data_offset: int

    def element(self, name: str) -> PlyElement | None:
        """The element called ``name``, or None."""
        for el in self.elements:
            if el.name == name:
                return el
        return None


def read_ply_header(path: str | os.PathLike[str]) -> PlyHeader:
    """Parse the header of a PLY file.

    Raises FileFormatError if the file does not start with a valid PLY header.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.ply"
        >>> write_ply(p, PointCloudData(np.zeros((2, 3))))
        >>> h = read_ply_header(p)
        >>> h.format, [(e.name, e.count) for e in h.elements]
        ('binary_little_endian', [('vertex', 2)])
        >>> tmp.cleanup()
    """
    path = Path(path)
    require_file(path)
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    magic = head[:4]
    if magic not in (b"ply\n", b"ply\r"):
        raise FileFormatError(f"{path}: not a PLY file (it does not start with 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise FileFormatError(f"{path}: PLY header has no 'end_header' line")
    newline = head.find(b"\n", end)
    if newline < 0:
        raise FileFormatError(f"{path}: PLY header is truncated after 'end_header'")
    try:
        text = head[:end].decode("ascii")
    except UnicodeDecodeError:
        raise FileFormatError(f"{path}: PLY header contains non-ASCII bytes") from None
    fmt: str | None = None
    elements: list[PlyElement] = []
    for lineno, raw_line in enumerate(text.splitlines()[1:], start=2):
        tokens = raw_line.split()
        if not tokens or tokens[0] in ("comment", "obj_info"):
            continue
        key = tokens[0]
        try:
            if key == "format":
                fmt = tokens[1]
                if fmt not in _PLY_FORMATS:
                    raise FileFormatError(f"{path}: unknown PLY format {fmt!r}")
            elif key == "element":
                count = int(tokens[2])
                if count < 0:
                    raise ValueError("negative count")
                elements.append(PlyElement(tokens[1], count, []))
            elif key == "property":
                if not elements:
                    raise ValueError("property before any element")
                if tokens[1] == "list":
                    count_type, item_type, name = tokens[2], tokens[3], tokens[4]
                    if count_type not in _PLY_TYPES or item_type not in _PLY_TYPES:
                        raise ValueError(f"unknown type in {raw_line!r}")
                    elements[-1].properties.append((name, item_type, count_type))
                else:
                    ptype, name = tokens[1], tokens[2]
                    if ptype not in _PLY_TYPES:
                        raise ValueError(f"unknown property type {ptype!r}")
                    elements[-1].properties.append((name, ptype, None))
            else:
                raise ValueError(f"unknown keyword {key!r}")
        except (IndexError, ValueError) as exc:
            raise FileFormatError(
                f"{path}: bad PLY header line {lineno} {raw_line!r}: {exc}"
            ) from None
    if fmt is None:
        raise FileFormatError(f"{path}: PLY header has no 'format' line")
    return PlyHeader(fmt, elements, newline + 1)


def ply_has_faces(path: str | os.PathLike[str]) -> bool:
    """True if the PLY file at ``path`` declares at least one face (it is a mesh).

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.ply"
        >>> write_ply(p, PointCloudData(np.zeros((2, 3))))
        >>> ply_has_faces(p)
        False
        >>> tmp.cleanup()
    """
    header = read_ply_header(path)
    face = header.element("face")
    return face is not None and face.count > 0


def check_ply_data_size(path: str | os.PathLike[str], header: PlyHeader | None = None) -> None:
    """Check the data after a PLY header against the rows the header promises.

    Run before anything is read or allocated, so a header claiming 10**12 vertices costs
    nothing. Binary: ``count * row bytes`` of every element must fit in the bytes after the
    header; when no element has list properties the length is exact, and whole rows beyond it
    are an error while a shorter remainder is ignored with a warning. ASCII: the number of
    non-blank lines must equal the sum of the element counts (the file is read, not parsed).

    Args:
        path: the PLY file.
        header: its parsed header (default: parsed here).

    Raises:
        FileFormatError: too few rows ("truncated PLY: the header promises ..."), or rows the
            header does not describe ("PLY header says 50 vertices, file holds 2000 rows").

    Warns:
        PcadWarning: a binary file ends with fewer bytes than one row after its data.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.ply"
        >>> _ = p.write_text("ply\\nformat ascii 1.0\\nelement vertex 99999999999\\n"
        ...                  "property float x\\nend_header\\n1\\n2\\n")
        >>> check_ply_data_size(p)
        Traceback (most recent call last):
        ...
        pcad.errors.FileFormatError: ...promises 99999999999 vertices, the file holds 2 rows
        >>> tmp.cleanup()
    """
    path = Path(path)
    header = read_ply_header(path) if header is None else header
    elements = header.elements
    desc = " and ".join(e.describe() for e in elements) or "no rows"
    if header.format == "ascii":
        rows = count_rows(read_bytes_at(path, header.data_offset))
        expected = sum(e.count for e in elements)
        if rows < expected:
            raise FileFormatError(
                f"{path}: truncated PLY: the header promises {desc}, the file holds {rows} rows"
            )
        if rows > expected:
            raise FileFormatError(
                f"{path}: PLY header says {desc}, file holds {rows} rows; fix the header "
                "(the extra rows are not read silently)"
            )
        return
    have = bytes_after(path, header.data_offset)
    exact = not any(e.has_lists for e in elements)
    need = sum(e.count * e.row_bytes for e in elements)
    single = elements[0] if len(elements) == 1 and elements[0].row_bytes > 0 else None
    if need > have:
        room = f" (room for {have // single.row_bytes})" if single is not None and exact else ""
        least = "" if exact else "at least "
        raise FileFormatError(
            f"{path}: truncated PLY: the header promises {desc} ({least}{need} bytes), "
            f"the file holds {have} bytes after the header{room}"
        )
    extra = have - need
    if not exact or extra == 0:
        return
    sized = [e for e in elements if e.row_bytes > 0]
    last_row = sized[-1].row_bytes if sized else extra + 1
    if extra < last_row:
        warnings.warn(
            f"{path}: ignored {extra} trailing byte(s) that the PLY header does not describe",
            PcadWarning,
            stacklevel=3,
        )
    elif single is not None:
        rows = single.count + extra // single.row_bytes
        rest = extra % single.row_bytes
        tail = f" and {rest} more bytes" if rest else ""
        raise FileFormatError(
            f"{path}: PLY header says {desc}, file holds {rows} rows{tail}; fix the header "
            "(the extra rows are not read silently)"
        )
    else:
        raise FileFormatError(
            f"{path}: PLY header describes {need} bytes of data ({desc}), the file holds "
            f"{have} bytes after the header: {extra} bytes no element accounts for"
        )


def _read_ply_vertices_fast(path: Path, header: PlyHeader) -> np.ndarray | None:
    """Structured array of the vertex element, or None when the layout needs trimesh."""
    vertex = header.element("vertex")
    if vertex is None:
        raise FileFormatError(f"{path}: PLY file has no 'vertex' element")
    if header.format == "binary_big_endian" or header.elements[0] is not vertex:
        return None
    if vertex.has_lists:
        return None
    names = [p[0] for p in vertex.properties]
    if len(set(names)) != len(names):
        raise FileFormatError(f"{path}: PLY vertex element repeats a property name: {names}")
    n = vertex.count
    if header.format == "binary_little_endian":
        dtype = np.dtype([(p[0], "<" + _PLY_TYPES[p[1]]) for p in vertex.properties])
        need = n * dtype.itemsize
        buf = read_bytes_at(path, header.data_offset, need)
        if len(buf) < need:
            raise FileFormatError(
                f"{path}: truncated PLY: the header promises {n} vertices ({need} bytes) but "
                f"the file holds {len(buf)} bytes of vertex data "
                f"({len(buf) // max(dtype.itemsize, 1)} complete vertices)"
            )
        return np.frombuffer(buf, dtype=dtype, count=n)
    # ascii
    arr = parse_rows_at(path, header.data_offset, n, "PLY vertex data") if n else np.empty((0, 0))
    if arr.shape[0] < n:
        raise FileFormatError(
            f"{path}: truncated PLY: the header promises {n} vertices, "
            f"the file holds {arr.shape[0]}"
        )
    if n and arr.shape[1] != len(names):
        raise FileFormatError(
            f"{path}: PLY vertex rows have {arr.shape[1]} values, the header declares "
            f"{len(names)} properties"
        )
    out = np.empty(n, dtype=[(name, np.float64) for name in names])
    for i, name in enumerate(names):
        out[name] = arr[:, i] if n else 0
    return out


def _fields3(arr: np.ndarray, names: tuple[str, str, str]) -> np.ndarray | None:
    if arr.dtype.names is None or not all(n in arr.dtype.names for n in names):
        return None
    with np.errstate(invalid="ignore"):  # signalling NaNs of a garbled file: refused later
        return np.stack([np.asarray(arr[n], dtype=np.float64) for n in names], axis=1)


def _load_with_trimesh(path: Path) -> np.ndarray:
    import trimesh

    try:
        with quiet_trimesh():
            loaded = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many types on bad files
        raise FileFormatError(
            f"{path}: cannot read the file: {type(exc).__name__}: {exc}"
        ) from None
    if isinstance(loaded, trimesh.Scene):
        geoms = list(loaded.geometry.values())
        vertices = [np.asarray(g.vertices) for g in geoms if hasattr(g, "vertices")]
        return np.concatenate(vertices) if vertices else np.empty((0, 3))
    return np.asarray(getattr(loaded, "vertices", np.empty((0, 3))))


def read_ply(path: str | os.PathLike[str], *, dtype: Any = np.float32) -> PointCloudData:
    """Read the vertices of a PLY file with their ``nx ny nz``, ``label`` and ``dx dy dz``.

    Args:
        path: the file.
        dtype: dtype of the points, ``np.float32`` (default) or ``np.float64`` (the file's
            full precision, e.g. ``double`` properties or ASCII digits).

    Returns:
        :class:`~pcad.io.point_data.PointCloudData`: ``points (N, 3) float32`` and, where the
        vertex element has them, ``normals``, ``mask`` (``label != 0``) and ``offsets``.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: a bad header, truncated data, rows the header does not describe
            (see :func:`check_ply_data_size`), no vertices or no ``x y z``.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.ply"
        >>> write_ply(p, PointCloudData(np.eye(3), normals=np.eye(3)))
        >>> read_ply(p).normals.tolist()[0]
        [1.0, 0.0, 0.0]
        >>> tmp.cleanup()
    """
    path = Path(path)
    header = read_ply_header(path)
    check_ply_data_size(path, header)
    arr = _read_ply_vertices_fast(path, header)
    if arr is None:
        vertices = _load_with_trimesh(path)
        if vertices.shape[0] == 0:
            raise FileFormatError(f"{path}: the PLY file holds no vertices")
        return cloud_from_file(path, vertices, dtype=dtype)
    if arr.shape[0] == 0:
        raise FileFormatError(f"{path}: the PLY file holds no vertices")
    points = _fields3(arr, ("x", "y", "z"))
    if points is None:
        raise FileFormatError(f"{path}: PLY vertex element has no x, y, z properties")
    normals = _fields3(arr, ("nx", "ny", "nz"))
    offsets = _fields3(arr, ("dx", "dy", "dz"))
    names = arr.dtype.names or ()
    mask = np.asarray(arr["label"]) != 0 if "label" in names else None
    return cloud_from_file(
        path, points, normals=normals, mask=mask, offsets=offsets, dtype=dtype
    )


def write_ply(path: str | os.PathLike[str], data: PointCloudData) -> None:
    """Write ``data`` atomically as binary little-endian PLY (every attribute it holds).

    Vertex properties: ``x y z`` float, then ``nx ny nz`` float, ``label`` uchar and
    ``dx dy dz`` float where ``data`` has normals, a mask and offsets.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.ply"
        >>> write_ply(p, PointCloudData(np.zeros((1, 3))))
        >>> p.read_bytes().split(b"end_header")[0].decode().splitlines()[3:]
        ['element vertex 1', 'property float x', 'property float y', 'property float z']
        >>> tmp.cleanup()
    """
    points, normals, mask, offsets = data.points, data.normals, data.mask, data.offsets
    fields: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if mask is not None:
        fields += [("label", "u1")]
    if offsets is not None:
        fields += [("dx", "<f4"), ("dy", "<f4"), ("dz", "<f4")]
    arr = np.empty(points.shape[0], dtype=fields)
    for i, c in enumerate("xyz"):
        arr[c] = points[:, i]
        if normals is not None:
            arr["n" + c] = normals[:, i]
        if offsets is not None:
            arr["d" + c] = offsets[:, i]
    if mask is not None:
        arr["label"] = mask.astype(np.uint8)
    type_names = {"<f4": "float", "u1": "uchar"}
    lines = [
        "ply",
        "format binary_little_endian 1.0",
        "comment written by pcad",
        f"element vertex {points.shape[0]}",
        *(f"property {type_names[t]} {name}" for name, t in fields),
        "end_header",
    ]
    with atomic_write(path, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("ascii"))
        f.write(arr.tobytes())
