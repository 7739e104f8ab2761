"""Organized clouds (xyz TIFF), ground-truth masks (PNG) and RGB images, as in MVTec 3D-AD.

An organized cloud is an ``(H, W, 3) float32`` image of xyz coordinates; ``(0, 0, 0)`` marks a
pixel with no measurement. Masks are ``(H, W) bool`` (True = anomalous pixel).

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io.organized import read_xyz_tiff, write_xyz_tiff
    >>> tmp = tempfile.TemporaryDirectory()
    >>> p = pathlib.Path(tmp.name) / "xyz.tiff"
    >>> xyz = np.random.default_rng(0).random((4, 5, 3), dtype=np.float32)
    >>> write_xyz_tiff(p, xyz)
    >>> bool(np.array_equal(read_xyz_tiff(p), xyz))
    True
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from pcad.checks import check_organized
from pcad.errors import FileFormatError, InvalidInputError
from pcad.io.atomic import atomic_write
from pcad.io.parsing import require_file, unsupported_extension

__all__ = [
    "SUPPORTED_ORGANIZED_EXTENSIONS",
    "XYZ_NAN_POLICIES",
    "read_mask_png",
    "read_rgb",
    "read_xyz_tiff",
    "write_mask_png",
    "write_rgb",
    "write_xyz_tiff",
]

SUPPORTED_ORGANIZED_EXTENSIONS: tuple[str, ...] = (".tiff", ".tif")

XYZ_NAN_POLICIES: tuple[str, ...] = ("error", "zero")
"""Values of :func:`read_xyz_tiff`'s ``nan``: refuse NaN/inf pixels, or make them (0, 0, 0)."""


def read_xyz_tiff(path: str | os.PathLike[str], nan: str = "zero") -> np.ndarray:
    """Read an organized xyz cloud from a ``.tiff``/``.tif`` file.

    Args:
        path: the TIFF file.
        nan: what a pixel with a NaN or infinite coordinate (some datasets mark missing
            pixels that way) becomes: ``"zero"`` sets it to ``(0, 0, 0)``, pcad's "no
            measurement"; ``"error"`` refuses the file (FileFormatError).

    Returns:
        ``(H, W, 3) float32``.

    Raises:
        FileNotFoundError: the file does not exist.
        FileFormatError: wrong extension, not a TIFF, not an ``(H, W, 3)`` float image, or
            NaN/inf pixels with ``nan="error"``.
        InvalidInputError: ``nan`` is not one of :data:`XYZ_NAN_POLICIES`.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "a.tif"
        >>> write_xyz_tiff(p, np.ones((2, 2, 3)))
        >>> read_xyz_tiff(p).shape
        (2, 2, 3)
        >>> tmp.cleanup()
    """
    if nan not in XYZ_NAN_POLICIES:
        raise InvalidInputError(f"nan: expected one of {XYZ_NAN_POLICIES}, got {nan!r}")
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_ORGANIZED_EXTENSIONS:
        raise unsupported_extension(path, SUPPORTED_ORGANIZED_EXTENSIONS, "organized-cloud")
    require_file(path)
    try:
        arr = tifffile.imread(path)
    except Exception as exc:  # TiffFileError, struct.error, ValueError, OSError...
        raise FileFormatError(
            f"{path}: cannot read the TIFF: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise FileFormatError(
            f"{path}: expected an organized xyz cloud of shape (H, W, 3), "
            f"got {getattr(arr, 'shape', None)}"
        )
    if arr.dtype not in (np.float32, np.float64):
        raise FileFormatError(f"{path}: expected float32 or float64 xyz values, got {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(out).all(axis=2)
    if bad.any():
        if nan == "error":
            raise FileFormatError(
                f"{path}: {int(bad.sum())} pixels have NaN or infinite coordinates; MVTec 3D-AD "
                "marks a missing measurement with (0, 0, 0) (read with nan='zero' to convert "
                "them)"
            )
        out[bad] = 0.0
    return out


def write_xyz_tiff(path: str | os.PathLike[str], xyz: Any) -> None:
    """Write an organized cloud as a 3-channel float32 TIFF (the MVTec 3D-AD layout).

    Args:
        path: destination (any extension; ``.tiff`` is conventional); parent folders created.
        xyz: ``(H, W, 3)`` finite numbers, stored as float32; ``tifffile.imread`` gives them
            back exactly.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "a.tiff"
        >>> write_xyz_tiff(p, np.zeros((3, 4, 3)))
        >>> tifffile.imread(p).dtype
        dtype('float32')
        >>> tmp.cleanup()
    """
    arr = check_organized(xyz, "xyz")
    with atomic_write(path, "wb") as f:
        tifffile.imwrite(f, arr, photometric="rgb", planarconfig="contig")


def _open_image(path: Path) -> Image.Image:
    require_file(path)
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        # PIL reports truncated or garbage files as OSError/SyntaxError, and a forged size in
        # the header as DecompressionBombError
        if isinstance(exc, FileNotFoundError):
            raise
        raise FileFormatError(
            f"{path}: cannot read the image: {type(exc).__name__}: {exc}"
        ) from None
    return img


def read_mask_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a ground-truth mask image; any pixel value > 0 is anomalous.

    Accepts 8-bit grayscale (``L``), ``1``-bit, palette, 16-bit grayscale and RGB(A) images
    (a colour pixel is anomalous if any channel is > 0; alpha is ignored). Real MVTec 3D-AD
    masks hold values like 253-255 rather than exactly 255.

    Returns:
        ``(H, W) bool``.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "m.png"
        >>> write_mask_png(p, np.eye(2, dtype=bool))
        >>> read_mask_png(p).tolist()
        [[True, False], [False, True]]
        >>> tmp.cleanup()
    """
    path = Path(path)
    with _open_image(path) as img:
        if img.mode == "P":
            img = img.convert("RGB")
        elif img.mode in ("LA", "RGBA", "PA"):
            img = img.convert("RGB" if img.mode != "LA" else "L")
        if img.mode not in ("1", "L", "RGB", "I", "I;16", "I;16B", "I;16L", "F"):
            raise FileFormatError(f"{path}: unsupported mask image mode {img.mode!r}")
        arr = np.asarray(img)
    if arr.ndim == 3:
        return np.ascontiguousarray((arr > 0).any(axis=2))
    if arr.ndim != 2:
        raise FileFormatError(f"{path}: expected a 2-D mask image, got shape {arr.shape}")
    return np.ascontiguousarray(arr > 0)


def write_mask_png(path: str | os.PathLike[str], mask: Any) -> None:
    """Write a mask as an 8-bit grayscale PNG with values 0 and 255.

    Args:
        path: destination (written as PNG whatever the extension); parent folders created.
        mask: ``(H, W)`` bool or 0/1 numbers.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "m.png"
        >>> write_mask_png(p, [[0, 1]])
        >>> np.asarray(Image.open(p)).tolist()
        [[0, 255]]
        >>> tmp.cleanup()
    """
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"mask: expected a non-empty (H, W) array, got shape {arr.shape}")
    if arr.dtype != bool:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise InvalidInputError(f"mask: expected bool or 0/1 values, got dtype {arr.dtype}")
        bad = ~((arr == 0) | (arr == 1))
        if bad.any():
            raise InvalidInputError(f"mask: expected only 0 and 1 values, got {arr[bad][0]!r}")
    img = Image.fromarray(np.where(arr.astype(bool), 255, 0).astype(np.uint8))
    with atomic_write(path, "wb") as f:
        img.save(f, format="PNG")


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a colour image as ``(H, W, 3) uint8`` (grayscale is replicated, alpha dropped).

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.png"
        >>> write_rgb(p, np.full((2, 3, 3), 7, dtype=np.uint8))
        >>> read_rgb(p).shape
        (2, 3, 3)
        >>> tmp.cleanup()
    """
    path = Path(path)
    with _open_image(path) as img:
        try:
            rgb = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise FileFormatError(
                f"{path}: cannot convert image mode {img.mode!r} to RGB: {exc}"
            ) from None
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def write_rgb(path: str | os.PathLike[str], rgb: Any) -> None:
    """Write an ``(H, W, 3)`` uint8 image; the format follows the extension (``.png``...).

    Args:
        path: destination with an extension PIL knows (``.png``, ``.jpg``, ``.bmp``...).
        rgb: ``(H, W, 3)`` integers in ``[0, 255]``; floats are refused (0-1 or 0-255 would
            be a guess).

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "c.png"
        >>> write_rgb(p, np.zeros((1, 1, 3), dtype=np.uint8))
        >>> p.stat().st_size > 0
        True
        >>> tmp.cleanup()
    """
    path = Path(path)
    ext = path.suffix.lower()
    known = Image.registered_extensions()
    if ext not in known:
        raise FileFormatError(
            f"{path}: unsupported image extension {ext or '(no extension)'!r}; use e.g. .png"
        )
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"rgb: expected shape (H, W, 3), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(
            f"rgb: expected integers in [0, 255] (uint8), got dtype {arr.dtype}"
        )
    if arr.dtype != np.uint8 and (arr.min() < 0 or arr.max() > 255):
        raise InvalidInputError(f"rgb: values must be in [0, 255], got [{arr.min()}, {arr.max()}]")
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    fmt = known[ext]
    with atomic_write(path, "wb") as f:
        img.save(f, format=fmt)
