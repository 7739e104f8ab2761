"""Organized clouds (xyz TIFF), ground-truth masks (PNG) and RGB images, as in MVTec 3D-AD.

An organized cloud is an ``(H, W, 3) float32`` image of xyz coordinates; ``(0, 0, 0)`` marks a
pixel with no measurement. Masks are ``(H, W) bool`` (True = anomalous pixel).

Every reader checks the image size in the file's header against :data:`MAX_IMAGE_PIXELS`
before decoding a pixel, so that a small compressed file claiming a huge image (a
decompression bomb) is refused instead of filling the memory.

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

from pcad.checks import check_int, check_organized
from pcad.errors import FileFormatError, InvalidInputError
from pcad.io.atomic import atomic_write
from pcad.io.parsing import require_file, unsupported_extension

__all__ = [
    "MAX_IMAGE_PIXELS",
    "SUPPORTED_ORGANIZED_EXTENSIONS",
    "XYZ_NAN_POLICIES",
    "check_pixel_count",
    "read_mask_levels",
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

MAX_IMAGE_PIXELS = 2**26
"""The most pixels (height x width) an xyz TIFF, mask or RGB image may have: 67,108,864
(8192 x 8192), about 100 times an 800 x 800 MVTec 3D-AD image; such an xyz cloud takes 0.8 GB
as float32. The readers check the size in the header before decoding; read at each call, so
a program that needs bigger images may raise it (``pcad.io.organized.MAX_IMAGE_PIXELS = ...``).
"""


def check_pixel_count(
    path: str | os.PathLike[str], height: int, width: int, max_pixels: int | None = None
) -> None:
    """Refuse an image of ``height x width`` pixels over ``max_pixels`` (default
    :data:`MAX_IMAGE_PIXELS`), before it is decoded.

    Raises:
        FileFormatError: too many pixels; the message names ``path`` and both numbers.

    Example:
        >>> check_pixel_count("a.tiff", 800, 800)
        >>> try:
        ...     check_pixel_count("a.tiff", 100_000, 100_000)
        ... except FileFormatError as exc:
        ...     print(str(exc).split(";")[0])
        a.tiff: the image is 100000 x 100000 = 10000000000 pixels, more than the cap of 67108864
    """
    cap = MAX_IMAGE_PIXELS if max_pixels is None else check_int(max_pixels, "max_pixels")
    n = int(height) * int(width)
    if n > cap:
        raise FileFormatError(
            f"{path}: the image is {height} x {width} = {n} pixels, more than the cap of "
            f"{cap}; refused before decoding (a corrupt or hostile header?), raise "
            "pcad.io.organized.MAX_IMAGE_PIXELS for a real image this large"
        )


def _tiff_series(tif: tifffile.TiffFile, path: Path) -> None:
    """Refuse, from the header alone, a TIFF whose first series (what ``asarray`` decodes) is
    not an ``(H, W, 3)`` float image or is over :data:`MAX_IMAGE_PIXELS`."""
    if not tif.pages:
        return  # asarray gives an empty array, refused by the caller's shape check
    series = tif.series[0]
    shape, dtype = tuple(series.shape), series.dtype
    if len(shape) != 3 or shape[2] != 3 or 0 in shape:
        raise FileFormatError(
            f"{path}: expected an organized xyz cloud of shape (H, W, 3), got {shape}"
        )
    if dtype is not None and np.dtype(dtype) not in (np.float32, np.float64):
        raise FileFormatError(f"{path}: expected float32 or float64 xyz values, got {dtype}")
    check_pixel_count(path, shape[0], shape[1])


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
        FileFormatError: wrong extension, not a TIFF, not an ``(H, W, 3)`` float image, more
            than :data:`MAX_IMAGE_PIXELS` pixels (checked before decoding), or NaN/inf pixels
            with ``nan="error"``.
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
        with tifffile.TiffFile(path) as tif:  # what tifffile.imread(path) does, checked first
            _tiff_series(tif, path)
            arr = tif.asarray()
    except FileFormatError:
        raise
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
    img = None
    try:
        img = Image.open(path)
        check_pixel_count(path, img.height, img.width)  # from the header, before decoding
        img.load()
    except (FileFormatError, UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        # PIL reports truncated or garbage files as OSError/SyntaxError, and a forged size in
        # the header as DecompressionBombError
        if img is not None:
            img.close()
        if isinstance(exc, (FileNotFoundError, FileFormatError)):
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
    return np.ascontiguousarray(read_mask_levels(path) > 0)


def read_mask_levels(path: str | os.PathLike[str]) -> np.ndarray:
    """The raw values of a ground-truth mask image, before :func:`read_mask_png` binarizes them
    with ``> 0`` (to tell a 0/255 mask from one with soft edges or class ids).

    Same modes as :func:`read_mask_png`; a colour pixel's value is its largest channel (alpha
    ignored), so ``read_mask_levels(p) > 0`` is ``read_mask_png(p)``.

    Returns:
        ``(H, W)`` array of the file's dtype (``uint8`` for 8-bit PNGs, ``bool`` for 1-bit).

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "m.png"
        >>> Image.fromarray(np.array([[0, 3], [128, 255]], np.uint8)).save(p)
        >>> read_mask_levels(p).tolist()
        [[0, 3], [128, 255]]
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
        return np.ascontiguousarray(arr.max(axis=2))
    if arr.ndim != 2:
        raise FileFormatError(f"{path}: expected a 2-D mask image, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


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
