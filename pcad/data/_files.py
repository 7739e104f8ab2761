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

from pcad.errors import FileFormatError, InvalidInputError
from pcad.io import read_mask_png, read_rgb, read_xyz_tiff
from pcad.io.organized import (
    SUPPORTED_ORGANIZED_EXTENSIONS,
    XYZ_NAN_POLICIES,
    read_mask_levels,
)

__all__ = [
    "MOSTLY_ANOMALOUS",
    "MVTEC_GT_LEVELS",
    "files_by_stem",
    "gt_levels_note",
    "guarded",
    "natural_key",
    "read_gt",
    "read_gt_levels",
    "read_rgb_file",
    "read_xyz_file",
    "visible_dirs",
]

T = TypeVar("T")

XYZ_EXTENSIONS = SUPPORTED_ORGANIZED_EXTENSIONS
NAN_POLICIES = XYZ_NAN_POLICIES

_DIGITS = re.compile(r"(\d+)")

#: the foreground values of real MVTec 3D-AD masks (class ids): a mask whose non-zero values
#: all lie here is read without a warning, like a mask with a single non-zero value
MVTEC_GT_LEVELS: tuple[int, ...] = (253, 254, 255)
#: a gt mask marking more than this fraction of its pixels anomalous is probably inverted
MOSTLY_ANOMALOUS = 0.5


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


def read_xyz_file(path: Path, nan: str = "error") -> np.ndarray:
    """``(H, W, 3) float32`` organized cloud (:func:`pcad.io.read_xyz_tiff`), errors naming the
    file; ``nan="error"`` refuses NaN/inf pixels, ``nan="zero"`` turns them into ``(0, 0, 0)``."""
    return guarded(lambda p: read_xyz_tiff(p, nan=nan), path)


def read_rgb_file(path: Path) -> np.ndarray:
    """``(H, W, 3) uint8`` image (:func:`pcad.io.read_rgb`), errors naming the file."""
    return guarded(read_rgb, path)


def read_gt(path: Path) -> np.ndarray:
    """``(H, W) bool`` mask, any value > 0 anomalous (:func:`pcad.io.read_mask_png`)."""
    return guarded(read_mask_png, path)


def read_gt_levels(path: Path) -> np.ndarray:
    """``(H, W)`` raw values of a gt mask (:func:`pcad.io.organized.read_mask_levels`), errors
    naming the file; ``> 0`` gives the mask :func:`read_gt` reads."""
    return guarded(read_mask_levels, path)


def gt_levels_note(levels: np.ndarray) -> str | None:
    """Why a gt mask's values need a warning, or None when it is a clean binary mask.

    Every value > 0 is anomalous (real MVTec masks hold class ids, so readers binarize with
    ``> 0``). A mask is clean when its non-zero pixels hold one value (0/1, 0/255, 0/65535
    masks) or values among :data:`MVTEC_GT_LEVELS` (253-255); several other values (soft
    edges of a resized mask, a class map: e.g. 3, 128 and 255) make every non-zero pixel count
    as anomalous, which is rarely what was meant.

    Example:
        >>> import numpy as np
        >>> gt_levels_note(np.array([[0, 255], [253, 254]], np.uint8)) is None
        True
        >>> gt_levels_note(np.array([[0, 3], [128, 255]], np.uint8))
        'values 3, 128, 255 (besides 0)'
    """
    values = np.unique(levels[levels != 0])
    if values.size <= 1:
        return None
    if np.issubdtype(values.dtype, np.integer) and np.isin(values, MVTEC_GT_LEVELS).all():
        return None
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:8].tolist())
    more = f" and {values.size - 8} more" if values.size > 8 else ""
    return f"values {shown}{more} (besides 0)"
