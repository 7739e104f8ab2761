"""Read and write unorganized point clouds with optional normals, labels and offsets.

Formats (chosen by extension, case-insensitive):

- ``.ply``: written as binary little-endian PLY with vertex properties ``x y z`` (float),
  optional ``nx ny nz`` (float), ``label`` (uchar 0/1) and ``dx dy dz`` (float). Read with
  pcad's own parser for ``ascii`` and ``binary_little_endian`` files whose first element is a
  fixed-size ``vertex`` element, and with trimesh for any other PLY. A PLY with faces is a
  mesh: :func:`read_points` returns its vertices.
- ``.pcd``: written as ASCII PCD v0.7 (``FIELDS x y z [normal_x normal_y normal_z] [label]
  [dx dy dz]``); ``DATA ascii`` and ``DATA binary`` are read, ``binary_compressed`` is not.
  Points with NaN coordinates (PCL's marker of a missing measurement in non-dense clouds)
  are dropped on reading.
- ``.xyz`` / ``.txt``: whitespace- or comma-separated numbers, ``#`` comments allowed.
  3 columns: ``x y z``; 4 columns: ``x y z label`` with 0/1 labels (Real3D-AD with spaces,
  Anomaly-ShapeNet with commas); 6 columns: ``x y z nx ny nz``.
- ``.npy``: one ``(N, 3)`` array of points.
- ``.npz``: arrays ``points`` and optional ``mask``, ``normals``, ``offsets``.

Every write is atomic (see :mod:`pcad.io.atomic`) and validates its arrays before anything
is written. A file that cannot be parsed raises :class:`~pcad.errors.FileFormatError`.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io.points import read_points, write_points
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "cloud.ply"
    >>> pts = np.random.default_rng(0).random((100, 3), dtype=np.float32)
    >>> write_points(p, pts, mask=pts[:, 0] > 0.5)
    >>> data = read_points(p)
    >>> bool(np.array_equal(data.points, pts)), int(data.mask.sum()) == int((pts[:, 0] > 0.5).sum())
    (True, True)
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcad.checks import check_points
from pcad.errors import FileFormatError, InvalidInputError
from pcad.io.atomic import atomic_write

__all__ = [
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

SUPPORTED_POINT_EXTENSIONS: tuple[str, ...] = (".ply", ".pcd", ".xyz", ".txt", ".npy", ".npz")

_MAX_HEADER_BYTES = 1 << 20
_TEXT_SEPARATORS = (" ", ",", "\t")


# --------------------------------------------------------------------------------------------
# The data type
# --------------------------------------------------------------------------------------------


def _check_mask_values(mask: Any, n: int, name: str = "mask") -> np.ndarray:
    """``(n,) bool`` from a bool array or a numeric array holding only 0 and 1."""
    arr = np.asarray(mask)
    if arr.shape != (n,):
        raise InvalidInputError(
            f"{name}: expected shape ({n},) to match the points, got {arr.shape}"
        )
    if arr.dtype == bool:
        return np.ascontiguousarray(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidInputError(f"{name}: expected a bool or 0/1 array, got dtype {arr.dtype}")
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        raise InvalidInputError(
            f"{name}: expected only 0 and 1 values, got {arr[bad][0]!r} "
            f"({int(bad.sum())} values are neither)"
        )
    return arr.astype(bool)


def _check_vectors(values: Any, n: int, name: str) -> np.ndarray:
    """``(n, 3) float32`` finite array (normals or offsets)."""
    arr = check_points(values, name, min_points=1)
    if arr.shape[0] != n:
        raise InvalidInputError(
            f"{name}: expected shape ({n}, 3) to match the points, got {arr.shape}"
        )
    return arr


@dataclass(eq=False)
class PointCloudData:
    """An unorganized point cloud with its optional per-point attributes.

    Attributes:
        points: ``(N, 3) float32``, finite, ``N >= 1``.
        normals: ``(N, 3) float32`` or None.
        mask: ``(N,) bool`` or None; True marks an anomalous point (the file's labels).
        offsets: ``(N, 3) float32`` or None; per-point displacement (e.g. of a synthetic defect).

    The constructor validates and converts the arrays (InvalidInputError on a mismatch).

    Example:
        >>> import numpy as np
        >>> d = PointCloudData(np.zeros((4, 3)), mask=[0, 1, 1, 0])
        >>> d.points.dtype, d.mask.tolist(), d.n_points
        (dtype('float32'), [False, True, True, False], 4)
    """

    points: np.ndarray
    normals: np.ndarray | None = field(default=None)
    mask: np.ndarray | None = field(default=None)
    offsets: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.points = check_points(self.points, "points", min_points=1)
        n = self.points.shape[0]
        if self.normals is not None:
            self.normals = _check_vectors(self.normals, n, "normals")
        if self.mask is not None:
            self.mask = _check_mask_values(self.mask, n, "mask")
        if self.offsets is not None:
            self.offsets = _check_vectors(self.offsets, n, "offsets")

    @property
    def n_points(self) -> int:
        """Number of points N."""
        return int(self.points.shape[0])


def _make_data(
    path: Path,
    points: Any,
    normals: Any = None,
    mask: Any = None,
    offsets: Any = None,
) -> PointCloudData:
    """Build the result of a reader; bad content is the file's fault, so FileFormatError."""
    try:
        return PointCloudData(points, normals=normals, mask=mask, offsets=offsets)
    except InvalidInputError as exc:
        raise FileFormatError(f"{path}: {exc}") from None


def _extension(path: Path) -> str:
    return path.suffix.lower()


def _unknown_extension(path: Path, supported: tuple[str, ...], what: str) -> FileFormatError:
    ext = _extension(path) or "(no extension)"
    return FileFormatError(
        f"{path}: unsupported {what} extension {ext!r}; supported: {', '.join(supported)}"
    )


def _require_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise FileFormatError(f"{path}: is a directory, expected a file")


# --------------------------------------------------------------------------------------------
# Text parsing shared by .txt/.xyz, ascii PLY and ascii PCD
# --------------------------------------------------------------------------------------------


def _read_text(path: Path, data: bytes | None = None) -> str:
    raw = path.read_bytes() if data is None else data
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileFormatError(
            f"{path}: not a text file (undecodable byte at offset {exc.start})"
        ) from None


def _line_number_at(path: Path, offset: int) -> int:
    """1-based line number of the line starting at byte ``offset`` (just after a header)."""
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


def _first_bad_line(text: str, first_line: int) -> str:
    """Describe the first unparsable line of ``text`` (1-based line numbers of the file)."""
    ncols: int | None = None
    for i, line in enumerate(text.splitlines()):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        where = f"line {first_line + i}"
        for tok in tokens:
            try:
                float(tok)
            except ValueError:
                return f"{where}: non-numeric token {tok[:40]!r}"
        if ncols is None:
            ncols = len(tokens)
        elif len(tokens) != ncols:
            return f"{where}: {len(tokens)} values, earlier rows have {ncols}"
    return "unparsable content"


def _parse_numbers(
    path: Path,
    text: str,
    max_rows: int | None = None,
    what: str = "data",
    first_line: int = 1,
) -> np.ndarray:
    """Parse whitespace/comma separated numbers into a ``(rows, cols) float64`` array.

    ``first_line`` is the file line number of the first line of ``text`` (for messages).
    """
    if "," in text:
        text = text.replace(",", " ")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            arr = np.loadtxt(
                io.StringIO(text), dtype=np.float64, comments="#", ndmin=2, max_rows=max_rows
            )
    except ValueError:
        if max_rows is not None:  # only the first max_rows rows were parsed
            lines = text.splitlines()
            kept, count = [], 0
            for line in lines:
                kept.append(line)
                if line.split("#", 1)[0].strip():
                    count += 1
                    if count >= max_rows:
                        break
            text = "\n".join(kept)
        detail = _first_bad_line(text, first_line)
        raise FileFormatError(f"{path}: cannot parse the {what}: {detail}") from None
    return arr


# --------------------------------------------------------------------------------------------
# PLY
# --------------------------------------------------------------------------------------------

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
        >>> import numpy as np
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.ply"
        >>> write_points(p, np.zeros((2, 3)))
        >>> h = read_ply_header(p)
        >>> h.format, [(e.name, e.count) for e in h.elements]
        ('binary_little_endian', [('vertex', 2)])
    """
    path = Path(path)
    _require_file(path)
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER_BYTES)
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
        >>> import numpy as np
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.ply"
        >>> write_points(p, np.zeros((2, 3)))
        >>> ply_has_faces(p)
        False
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
        with open(path, "rb") as f:
            f.seek(header.data_offset)
            buf = f.read(need)
        if len(buf) < need:
            raise FileFormatError(
                f"{path}: truncated PLY: the header promises {n} vertices ({need} bytes) but "
                f"the file holds {len(buf)} bytes of vertex data "
                f"({len(buf) // max(dtype.itemsize, 1)} complete vertices)"
            )
        return np.frombuffer(buf, dtype=dtype, count=n)
    # ascii
    with open(path, "rb") as f:
        f.seek(header.data_offset)
        body = f.read()
    text = _read_text(path, body)
    first_line = _line_number_at(path, header.data_offset)
    arr = (
        _parse_numbers(path, text, max_rows=n, what="PLY vertex data", first_line=first_line)
        if n
        else np.empty((0, 0))
    )
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


def _read_ply(path: Path) -> PointCloudData:
    header = read_ply_header(path)
    arr = _read_ply_vertices_fast(path, header)
    if arr is None:
        vertices = _load_with_trimesh(path)
        if vertices.shape[0] == 0:
            raise FileFormatError(f"{path}: the PLY file holds no vertices")
        return _make_data(path, vertices)
    if arr.shape[0] == 0:
        raise FileFormatError(f"{path}: the PLY file holds no vertices")
    points = _fields3(arr, ("x", "y", "z"))
    if points is None:
        raise FileFormatError(f"{path}: PLY vertex element has no x, y, z properties")
    normals = _fields3(arr, ("nx", "ny", "nz"))
    offsets = _fields3(arr, ("dx", "dy", "dz"))
    names = arr.dtype.names or ()
    mask = np.asarray(arr["label"]) != 0 if "label" in names else None
    return _make_data(path, points, normals=normals, mask=mask, offsets=offsets)


def _write_ply(
    f: Any,
    points: np.ndarray,
    normals: np.ndarray | None,
    mask: np.ndarray | None,
    offsets: np.ndarray | None,
) -> None:
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
    f.write(("\n".join(lines) + "\n").encode("ascii"))
    f.write(arr.tobytes())


# --------------------------------------------------------------------------------------------
# PCD
# --------------------------------------------------------------------------------------------

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8",
              ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8",
              ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8"}  # fmt: skip


def _read_pcd_header(path: Path) -> tuple[dict[str, list[str]], int]:
    """``({KEY: tokens}, data_offset)`` of a PCD file."""
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER_BYTES)
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


def _read_pcd(path: Path) -> PointCloudData:
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
        dtype = np.dtype(
            [
                (u, "<" + d, (c,)) if c > 1 else (u, "<" + d)
                for u, d, c in zip(unique, dtypes, counts, strict=True)
            ]
        )
        need = n * dtype.itemsize
        with open(path, "rb") as f:
            f.seek(offset)
            buf = f.read(need)
        if len(buf) < need:
            raise FileFormatError(
                f"{path}: truncated binary PCD: the header promises {n} points ({need} bytes) "
                f"but the file holds {len(buf)} bytes of point data"
            )
        rec = np.frombuffer(buf, dtype=dtype, count=n)
        for u in unique:
            columns[u] = np.asarray(rec[u])
    elif data_kind == "ascii":
        with open(path, "rb") as f:
            f.seek(offset)
            body = f.read()
        ncols = sum(counts)
        arr = _parse_numbers(
            path,
            _read_text(path, body),
            max_rows=n,
            what="PCD point data",
            first_line=_line_number_at(path, offset),
        )
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
    return _make_data(path, points, normals=normals, mask=mask, offsets=offsets)


def _write_pcd(
    f: Any,
    points: np.ndarray,
    normals: np.ndarray | None,
    mask: np.ndarray | None,
    offsets: np.ndarray | None,
) -> None:
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
    f.write(header + "\n")
    np.savetxt(f, np.hstack(cols), fmt=fmt, delimiter=" ")


# --------------------------------------------------------------------------------------------
# Text, npy, npz
# --------------------------------------------------------------------------------------------


def _read_txt(path: Path) -> PointCloudData:
    arr = _parse_numbers(path, _read_text(path), what="point text")
    if arr.size == 0:
        raise FileFormatError(f"{path}: the file holds no points")
    ncols = arr.shape[1]
    if ncols == 3:
        return _make_data(path, arr)
    if ncols == 4:
        labels = arr[:, 3]
        bad = ~((labels == 0) | (labels == 1))
        if bad.any():
            raise FileFormatError(
                f"{path}: 4-column text is read as 'x y z label' with 0/1 labels, but column 4 "
                f"holds {labels[bad][0]!r} ({int(bad.sum())} values are neither 0 nor 1)"
            )
        return _make_data(path, arr[:, :3], mask=labels == 1)
    if ncols == 6:
        return _make_data(path, arr[:, :3], normals=arr[:, 3:6])
    raise FileFormatError(
        f"{path}: {ncols} columns per row; expected 3 (x y z), 4 (x y z label) or "
        "6 (x y z nx ny nz)"
    )


def _write_txt(
    f: Any, points: np.ndarray, mask: np.ndarray | None, normals: np.ndarray | None, sep: str
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


def _load_npy_like(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # ValueError, OSError, zipfile.BadZipFile, EOFError...
        raise FileFormatError(
            f"{path}: cannot read the file: {type(exc).__name__}: {exc}"
        ) from None


def _read_npy(path: Path) -> PointCloudData:
    arr = _load_npy_like(path)
    if not isinstance(arr, np.ndarray):
        raise FileFormatError(f"{path}: expected a single .npy array, got an archive")
    return _make_data(path, arr)


def _read_npz(path: Path) -> PointCloudData:
    archive = _load_npy_like(path)
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
    return _make_data(
        path,
        arrays["points"],
        normals=arrays.get("normals"),
        mask=arrays.get("mask"),
        offsets=arrays.get("offsets"),
    )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def read_points(path: str | os.PathLike[str]) -> PointCloudData:
    """Read an unorganized point cloud (``.ply .pcd .xyz .txt .npy .npz``).

    Returns:
        :class:`PointCloudData` with ``points (N, 3) float32`` and, where the file has them,
        ``normals (N, 3) float32``, ``mask (N,) bool`` (from a ``label`` field or a 4th text
        column) and ``offsets (N, 3) float32``. A mesh PLY gives its vertices.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: unknown extension, or a garbage, truncated or inconsistent file.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.txt"
        >>> _ = p.write_text("0,0,0,0\\n1,2,3,1\\n")
        >>> d = read_points(p)
        >>> d.points.shape, d.mask.tolist()
        ((2, 3), [False, True])
    """
    path = Path(path)
    ext = _extension(path)
    if ext not in SUPPORTED_POINT_EXTENSIONS:
        raise _unknown_extension(path, SUPPORTED_POINT_EXTENSIONS, "point cloud")
    _require_file(path)
    if ext == ".ply":
        return _read_ply(path)
    if ext == ".pcd":
        return _read_pcd(path)
    if ext in (".xyz", ".txt"):
        return _read_txt(path)
    if ext == ".npy":
        return _read_npy(path)
    return _read_npz(path)


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
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.npz"
        >>> write_points(p, np.ones((3, 3)), offsets=np.zeros((3, 3)))
        >>> read_points(p).offsets.shape
        (3, 3)
    """
    path = Path(path)
    ext = _extension(path)
    if ext not in SUPPORTED_POINT_EXTENSIONS:
        raise _unknown_extension(path, SUPPORTED_POINT_EXTENSIONS, "point cloud")
    data = PointCloudData(points, normals=normals, mask=mask, offsets=offsets)
    pts, nrm, msk, off = data.points, data.normals, data.mask, data.offsets
    if ext in (".txt", ".xyz"):
        if off is not None:
            raise InvalidInputError(f"{path}: {ext} cannot store offsets; use .ply, .pcd or .npz")
        if nrm is not None and msk is not None:
            raise InvalidInputError(
                f"{path}: {ext} stores either labels (x y z label) or normals (x y z nx ny nz), "
                "not both; use .ply, .pcd or .npz"
            )
    if ext == ".npy" and (nrm is not None or msk is not None or off is not None):
        raise InvalidInputError(
            f"{path}: .npy stores the points only; use .npz, .ply or .pcd for mask/normals/offsets"
        )
    if ext == ".ply":
        with atomic_write(path, "wb") as f:
            _write_ply(f, pts, nrm, msk, off)
    elif ext == ".pcd":
        with atomic_write(path, "w") as f:
            _write_pcd(f, pts, nrm, msk, off)
    elif ext in (".txt", ".xyz"):
        with atomic_write(path, "w") as f:
            _write_txt(f, pts, msk, nrm, " ")
    elif ext == ".npy":
        with atomic_write(path, "wb") as f:
            np.save(f, pts, allow_pickle=False)
    else:
        arrays = {"points": pts}
        for key, value in (("mask", msk), ("normals", nrm), ("offsets", off)):
            if value is not None:
                arrays[key] = value
        with atomic_write(path, "wb") as f:
            np.savez(f, **arrays)


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
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.txt"
        >>> write_labeled_txt(p, [[0.5, 1, 2]], [True], sep=",")
        >>> p.read_text()
        '0.5,1,2,1\\n'
    """
    if sep not in _TEXT_SEPARATORS:
        raise InvalidInputError(f"sep: expected one of {_TEXT_SEPARATORS}, got {sep!r}")
    pts = check_points(points, "points", min_points=1)
    msk = _check_mask_values(mask, pts.shape[0], "mask")
    with atomic_write(path, "w") as f:
        _write_txt(f, pts, msk, None, sep)
