"""Helpers shared by the dataset readers: folder listing, natural sort, guarded file reading.

Every reader of :mod:`pcad.data` goes through :func:`guarded` so that whatever a parsing
library raises on a broken file (PIL's ``DecompressionBombError``, ``struct.error``, a
``MemoryError`` on a forged header...) reaches the caller as a
:class:`~pcad.errors.FileFormatError` that names the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tifffile

from pcad.errors import FileFormatError, InvalidInputError
from pcad.io import read_mask_png, read_rgb, read_xyz_tiff

__all__ = [
    "files_by_stem",
    "guarded",
    "natural_key",
    "read_gt",
    "read_rgb_file",
    "read_xyz_file",
    "visible_dirs",
]

T = TypeVar("T")

XYZ_EXTENSIONS = (".tiff", ".tif")
NAN_POLICIES = ("error", "zero")

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders ``"2_a" < "10_a"`` (digit runs compare as numbers)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in _DIGITS.split(name) if t)


def visible_dirs(path: Path) -> list[str]:
    """Names of the sub-folders of ``path`` that do not start with ``.``, sorted naturally."""
    if not path.is_dir():
        return []
    names = [p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(names, key=natural_key)


def files_by_stem(folder: Path, extensions: Iterable[str]) -> dict[str, Path]:
    """``{stem: path}`` of the visible regular files of ``folder`` with one of ``extensions``.

    Matching is case-insensitive. Hidden files (such as the ``.NNN.png.xxxx.tmp.png``
    temporaries of an interrupted atomic write) are skipped.

    Raises:
        FileFormatError: two files share a stem (``000.tif`` and ``000.tiff``).
    """
    exts = tuple(e.lower() for e in extensions)
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in folder.iterdir():
        if p.name.startswith(".") or p.suffix.lower() not in exts or not p.is_file():
            continue
        if p.stem in out:
            a, b = sorted([out[p.stem].name, p.name])
            raise FileFormatError(f"{folder}: two files for sample {p.stem!r}: {a} and {b}")
        out[p.stem] = p
    return out


def guarded(reader: Callable[[Path], T], path: Path) -> T:
    """Call ``reader(path)``; any error other than ours becomes a FileFormatError naming ``path``.

    ``FileNotFoundError``, :class:`FileFormatError` and :class:`InvalidInputError` pass through
    (the latter two get the path prepended when their message lacks it).
    """
    try:
        return reader(path)
    except FileNotFoundError:
        raise
    except (FileFormatError, InvalidInputError) as exc:
        if str(path) in str(exc):
            raise
        raise FileFormatError(f"{path}: {exc}") from None
    except Exception as exc:  # DecompressionBombError, struct.error, MemoryError, ...
        raise FileFormatError(
            f"{path}: cannot read the file: {type(exc).__name__}: {exc}"
        ) from None


def _read_xyz_strict(path: Path) -> np.ndarray:
    """Like :func:`pcad.io.read_xyz_tiff` but a NaN or infinite coordinate is an error."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() not in XYZ_EXTENSIONS:
        raise FileFormatError(
            f"{path}: unsupported organized-cloud extension {path.suffix!r}; supported: "
            f"{', '.join(XYZ_EXTENSIONS)}"
        )
    try:
        arr = tifffile.imread(path)
    except Exception as exc:
        raise FileFormatError(
            f"{path}: cannot read the TIFF: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        shape = getattr(arr, "shape", None)
        raise FileFormatError(
            f"{path}: expected an organized xyz cloud of shape (H, W, 3), got {shape}"
        )
    if arr.dtype not in (np.float32, np.float64):
        raise FileFormatError(f"{path}: expected float32 or float64 xyz values, got {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(out).all(axis=2)
    if bad.any():
        raise FileFormatError(
            f"{path}: {int(bad.sum())} pixels have NaN or infinite coordinates; MVTec 3D-AD "
            "marks a missing measurement with (0, 0, 0) (read with nan='zero' to convert them)"
        )
    return out


def read_xyz_file(path: Path, nan: str = "error") -> np.ndarray:
    """``(H, W, 3) float32`` organized cloud; ``nan="error"`` refuses NaN/inf pixels,
    ``nan="zero"`` turns them into ``(0, 0, 0)`` (:func:`pcad.io.read_xyz_tiff`)."""
    if nan == "zero":
        return guarded(read_xyz_tiff, path)
    return guarded(_read_xyz_strict, path)


def read_rgb_file(path: Path) -> np.ndarray:
    """``(H, W, 3) uint8`` image (:func:`pcad.io.read_rgb`), errors naming the file."""
    return guarded(read_rgb, path)


def read_gt(path: Path) -> np.ndarray:
    """``(H, W) bool`` mask, any value > 0 anomalous (:func:`pcad.io.read_mask_png`)."""
    return guarded(read_mask_png, path)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise InvalidInputError."""
    options = tuple(choices)
    if value not in options:
        raise InvalidInputError(f"{name}: expected one of {options}, got {value!r}")
    return str(value)
