"""Argument checks shared by the viz modules (thin wrappers over :mod:`pcad.checks`).

Example:
    >>> import numpy as np
    >>> from viz._checks import check_values
    >>> check_values([1.0, float("nan")], 2).tolist()
    [1.0, nan]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcad.errors import InvalidInputError


def check_values(values: Any, n: int, name: str = "values", what: str = "points") -> np.ndarray:
    """``values`` as a ``(n,) float64`` array; NaN and inf are allowed (drawn in a distinct
    colour), a length that differs from the cloud's is an error naming both lengths."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidInputError(
            f"{name}: {arr.shape[0] if arr.ndim == 1 else arr.shape} values for {n} {what}; "
            f"expected one value per {what.rstrip('s')} (shape ({n},))")
    return arr


def check_image(arr: Any, name: str, ndim: int | tuple[int, ...] = 2) -> np.ndarray:
    """A non-empty 2D (or ``(H, W, C)``) array; ``(H, W, 1)`` is squeezed to ``(H, W)``."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims:
        raise InvalidInputError(f"{name}: expected a {' or '.join(f'{d}D' for d in dims)} "
                                f"image, got shape {a.shape}")
    if a.size == 0:
        raise InvalidInputError(f"{name}: the image is empty, shape {a.shape}")
    return a


def finite_range(values: np.ndarray, vmin: float | None = None,
                 vmax: float | None = None) -> tuple[float, float]:
    """``(lo, hi)`` of the finite values (``(0, 1)`` when there are none), with the given
    bounds taking precedence; ``hi > lo`` always."""
    v = np.asarray(values, dtype=np.float64)
    fin = v[np.isfinite(v)]
    lo = float(fin.min()) if vmin is None and fin.size else (0.0 if vmin is None else vmin)
    hi = float(fin.max()) if vmax is None and fin.size else (1.0 if vmax is None else vmax)
    if not hi > lo:
        hi = lo + (abs(lo) * 1e-6 or 1e-6)
    return float(lo), float(hi)
