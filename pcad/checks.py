"""Argument checks shared by every public function.

Each check returns the argument in its canonical form (for arrays: C-contiguous with the
documented dtype) or raises :class:`~pcad.errors.InvalidInputError` naming the argument.

Example:
    >>> import numpy as np
    >>> from pcad.checks import check_points
    >>> check_points(np.zeros((20, 3)) + np.arange(20)[:, None] * [1, 2, 0.5], "points").dtype
    dtype('float32')
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pcad.errors import InvalidInputError

MIN_POINTS = 10


def check_points(points: Any, name: str = "points", min_points: int = MIN_POINTS) -> np.ndarray:
    """Return ``points`` as a C-contiguous ``(N, 3) float32`` array of finite values.

    Raises InvalidInputError for a wrong shape, fewer than ``min_points`` rows, or NaN/inf.
    """
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InvalidInputError(f"{name}: expected shape (N, 3), got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise InvalidInputError(f"{name}: the cloud is empty (0 points)")
    if arr.shape[0] < min_points:
        raise InvalidInputError(
            f"{name}: {arr.shape[0]} points, at least {min_points} are needed"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InvalidInputError(f"{name}: {bad} points have NaN or infinite coordinates")
    return arr


def check_organized(xyz: Any, name: str = "xyz") -> np.ndarray:
    """Return an organized cloud as a C-contiguous ``(H, W, 3) float32`` array.

    ``(0, 0, 0)`` marks a pixel with no measurement (MVTec 3D-AD convention). NaN or inf
    coordinates are an error (convert them to zeros first if they mean "missing").
    """
    arr = np.asarray(xyz)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidInputError(
            f"{name}: expected an organized cloud of shape (H, W, 3), got {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"{name}: the organized cloud is empty, shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InvalidInputError(
            f"{name}: NaN or infinite coordinates; use (0, 0, 0) for pixels with no measurement"
        )
    return arr


def valid_pixels(xyz: np.ndarray) -> np.ndarray:
    """``(H, W) bool``: True where an organized cloud holds a measurement (not all zeros)."""
    return np.any(xyz != 0, axis=-1)


def check_positive(value: Any, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as a float that is finite and > 0 (>= 0 with ``allow_zero``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a number, got {value!r}") from None
    if math.isnan(v) or math.isinf(v):
        raise InvalidInputError(f"{name}: must be finite, got {value!r}")
    if v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInputError(f"{name}: must be {bound}, got {value!r}")
    return v


def check_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]``; bools and fractions are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidInputError(f"{name}: expected an integer, got {value!r}")
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        hi = f" and <= {maximum}" if maximum is not None else ""
        raise InvalidInputError(f"{name}: must be >= {minimum}{hi}, got {v}")
    return v


def check_fraction(value: Any, name: str, inclusive_zero: bool = True) -> float:
    """Return ``value`` as a float in ``[0, 1]`` (``(0, 1]`` without ``inclusive_zero``)."""
    v = check_positive(value, name, allow_zero=inclusive_zero)
    if v > 1:
        raise InvalidInputError(f"{name}: must be <= 1, got {value!r}")
    return v


def check_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a bool array of exactly ``shape``."""
    arr = np.asarray(mask)
    if arr.shape != tuple(shape):
        raise InvalidInputError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    return arr.astype(bool, copy=False)
