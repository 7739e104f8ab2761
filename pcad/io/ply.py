"""PLY point clouds: header parsing, a fast vertex reader, and a binary writer.

Written as binary little-endian PLY with vertex properties ``x y z`` (float), optional
``nx ny nz`` (float), ``label`` (uchar 0/1) and ``dx dy dz`` (float). Read with pcad's own
parser for ``ascii`` and ``binary_little_endian`` files whose first element is a fixed-size
``vertex`` element, and with trimesh for any other PLY. A PLY with faces is a mesh:
:func:`read_ply` returns its vertices.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcad.errors import FileFormatError
from pcad.io.atomic import atomic_write
from pcad.io.parsing import MAX_HEADER_BYTES, parse_rows_at, read_bytes_at, require_file
from pcad.io.point_data import PointCloudData, cloud_from_file

__all__ = ["PlyElement", "PlyHeader", "ply_has_faces", "read_ply", "read_ply_header", "write_ply"]

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
    return np.stack([np.asarray(arr[n], dtype=np.float64) for n in names], axis=1)


def _load_with_trimesh(path: Path) -> np.ndarray:
    import trimesh

    try:
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


def read_ply(path: str | os.PathLike[str]) -> PointCloudData:
    """Read the vertices of a PLY file with their ``nx ny nz``, ``label`` and ``dx dy dz``.

    Returns:
        :class:`~pcad.io.point_data.PointCloudData`: ``points (N, 3) float32`` and, where the
        vertex element has them, ``normals``, ``mask`` (``label != 0``) and ``offsets``.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: a bad header, truncated data, no vertices or no ``x y z``.

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
    arr = _read_ply_vertices_fast(path, header)
    if arr is None:
        vertices = _load_with_trimesh(path)
        if vertices.shape[0] == 0:
            raise FileFormatError(f"{path}: the PLY file holds no vertices")
        return cloud_from_file(path, vertices)
    if arr.shape[0] == 0:
        raise FileFormatError(f"{path}: the PLY file holds no vertices")
    points = _fields3(arr, ("x", "y", "z"))
    if points is None:
        raise FileFormatError(f"{path}: PLY vertex element has no x, y, z properties")
    normals = _fields3(arr, ("nx", "ny", "nz"))
    offsets = _fields3(arr, ("dx", "dy", "dz"))
    names = arr.dtype.names or ()
    mask = np.asarray(arr["label"]) != 0 if "label" in names else None
    return cloud_from_file(path, points, normals=normals, mask=mask, offsets=offsets)


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
