"""Helpers shared by the file-format modules of :mod:`pcad.io`: file checks and number parsing.

The format modules (:mod:`pcad.io.ply`, :mod:`pcad.io.pcd`, :mod:`pcad.io.text`,
:mod:`pcad.io.numpy_files`, :mod:`pcad.io.meshes`, :mod:`pcad.io.organized`) use these so
that every reader words the same failure the same way.

Example:
    >>> import pathlib
    >>> from pcad.io.parsing import parse_numbers
    >>> p = pathlib.Path("a.txt")  # only names the text in error messages; nothing is read
    >>> parse_numbers(p, "1,2,3\\n4 5 6  # comment\\n").tolist()
    [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pcad.errors import FileFormatError

__all__ = [
    "MAX_HEADER_BYTES",
    "bytes_after",
    "count_rows",
    "decode_text",
    "line_number_at",
    "parse_numbers",
    "parse_rows_at",
    "quiet_trimesh",
    "read_bytes_at",
    "require_file",
    "unsupported_extension",
]

MAX_HEADER_BYTES = 1 << 20
"""Bytes read to find the end of a PLY or PCD header."""


@contextmanager
def quiet_trimesh() -> Iterator[None]:
    """Silence trimesh's log and numpy's floating-point warnings while trimesh parses a file:
    on a bad file it logs warnings with a traceback (``failed to extract face_normals``) that
    Python would print on stderr, before the reader raises its own one-line FileFormatError.

    Example:
        >>> with quiet_trimesh():
        ...     logging.getLogger("trimesh").warning("not shown")
    """
    log = logging.getLogger("trimesh")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        with np.errstate(all="ignore"):
            yield
    finally:
        log.setLevel(level)


def require_file(path: Path) -> None:
    """Raise ``FileNotFoundError`` if ``path`` does not exist, FileFormatError if a directory.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> require_file(pathlib.Path(tmp.name) / "none.ply")
        Traceback (most recent call last):
        ...
        FileNotFoundError: ...none.ply: no such file
        >>> tmp.cleanup()
    """
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise FileFormatError(f"{path}: is a directory, expected a file")


def unsupported_extension(path: Path, supported: tuple[str, ...], what: str) -> FileFormatError:
    """The error for a file whose extension is not one of ``supported`` (to raise).

    ``what`` names the kind of file (``"point cloud"``, ``"mesh"``...); ``""`` for none.

    Example:
        >>> from pathlib import Path
        >>> print(unsupported_extension(Path("a.foo"), (".ply", ".pcd"), "point cloud"))
        a.foo: unsupported point cloud extension '.foo'; supported: .ply, .pcd
    """
    ext = path.suffix.lower() or "(no extension)"
    kind = f"{what} extension" if what else "extension"
    return FileFormatError(f"{path}: unsupported {kind} {ext!r}; supported: {', '.join(supported)}")


def read_bytes_at(path: Path, offset: int, size: int = -1) -> bytes:
    """``size`` bytes of the file from byte ``offset`` (``-1``: to the end; fewer at the end).

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "a.bin"
        >>> _ = p.write_bytes(b"header\\ndata")
        >>> read_bytes_at(p, 7)
        b'data'
        >>> tmp.cleanup()
    """
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def decode_text(path: Path, data: bytes | None = None) -> str:
    """The text of ``data`` (default: the whole file), UTF-8 with an optional BOM.

    Raises:
        FileFormatError: the bytes are not UTF-8 (the message gives the offset).

    Example:
        >>> from pathlib import Path
        >>> decode_text(Path("a.txt"), b"\\xef\\xbb\\xbf1 2 3")
        '1 2 3'
    """
    raw = path.read_bytes() if data is None else data
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileFormatError(
            f"{path}: not a text file (undecodable byte at offset {exc.start})"
        ) from None


def line_number_at(path: Path, offset: int) -> int:
    """1-based line number of the line starting at byte ``offset`` (just after a header).

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "a.txt"
        >>> _ = p.write_bytes(b"a\\nb\\nc\\n")
        >>> line_number_at(p, 4)
        3
        >>> tmp.cleanup()
    """
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


def parse_numbers(
    path: Path,
    text: str,
    max_rows: int | None = None,
    what: str = "data",
    first_line: int = 1,
) -> np.ndarray:
    """Parse whitespace/comma separated numbers into a ``(rows, cols) float64`` array.

    ``#`` starts a comment; ``max_rows`` stops after that many rows; ``first_line`` is the file
    line number of the first line of ``text`` and ``what`` names the content (for messages).

    Raises:
        FileFormatError: a non-numeric token or rows of different lengths; the message gives
            the file line.

    Example:
        >>> from pathlib import Path
        >>> parse_numbers(Path("a.txt"), "1 2\\n3 x\\n")
        Traceback (most recent call last):
        ...
        pcad.errors.FileFormatError: a.txt: cannot parse the data: line 2: non-numeric token 'x'
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


def bytes_after(path: Path, offset: int) -> int:
    """Bytes of the file from byte ``offset`` to its end (0 if it is shorter): what the data
    after a header can hold, known before anything is read or allocated.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "a.bin"
        >>> _ = p.write_bytes(b"header\\ndata")
        >>> bytes_after(p, 7)
        4
        >>> tmp.cleanup()
    """
    return max(os.path.getsize(path) - offset, 0)


_BLANK_LINE = re.compile(rb"^[ \t\r\f\v,]*(?:#[^\n]*)?\n", re.MULTILINE)


def count_rows(data: bytes) -> int:
    """Number of rows of a text body: its lines that hold more than whitespace, commas and a
    ``#`` comment (the rows :func:`parse_numbers` reads), counted without parsing them.

    Example:
        >>> count_rows(b"1 2 3\\n\\n# note\\n4 5 6\\n7 8 9")
        3
    """
    rows = data.count(b"\n") - len(_BLANK_LINE.findall(data))
    tail = data[data.rfind(b"\n") + 1 :]
    if tail.split(b"#", 1)[0].strip(b" \t\r\f\v,"):
        rows += 1
    return rows


def parse_rows_at(
    path: Path, offset: int, rows: int, what: str, data: bytes | None = None
) -> np.ndarray:
    """Parse the first ``rows`` rows of numbers of the text body starting at byte ``offset``
    (the ASCII data after a PLY or PCD header) into a ``(rows', cols) float64`` array.

    Messages name the file's own line numbers. Fewer rows than ``rows`` is not an error here
    (the caller says what it expected). ``data``: the body's bytes when the caller has
    already read them (they are not read again).

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "a.pcd"
        >>> _ = p.write_bytes(b"DATA ascii\\n1 2 3\\n4 5 6\\n7 8 9\\n")
        >>> parse_rows_at(p, 11, 2, "PCD point data").tolist()
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
        >>> tmp.cleanup()
    """
    text = decode_text(path, read_bytes_at(path, offset) if data is None else data)
    return parse_numbers(
        path, text, max_rows=rows, what=what, first_line=line_number_at(path, offset)
    )
