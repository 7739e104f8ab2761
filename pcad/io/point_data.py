"""The in-memory point cloud that every point-cloud reader returns and every writer stores.

Example:
    >>> import numpy as np
    >>> from pcad.io.point_data import PointCloudData
    >>> d = PointCloudData(np.ones((2, 3)), offsets=np.zeros((2, 3)))
    >>> d.offsets.shape, d.normals is None
    ((2, 3), True)
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcad.checks import check_float_dtype, check_points
from pcad.errors import FileFormatError, InvalidInputError

__all__ = ["PointCloudData", "check_mask_values", "cloud_from_file"]


def check_mask_values(mask: Any, n: int, name: str = "mask") -> np.ndarray:
    """``(n,) bool`` from a bool array or a numeric array holding only 0 and 1.

    Raises:
        InvalidInputError: another shape, a non-numeric dtype, or a value other than 0 and 1.

    Example:
        >>> check_mask_values([0, 1.0, 1], 3).tolist()
        [False, True, True]
    """
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
        points: ``(N, 3) float32``, finite, ``N >= 1``; ``float64`` when built with
            ``dtype=np.float64`` (a reader's full precision, for clouds far from the origin).
        normals: ``(N, 3) float32`` or None.
        mask: ``(N,) bool`` or None; True marks an anomalous point (the file's labels).
        offsets: ``(N, 3) float32`` or None; per-point displacement (e.g. of a synthetic defect).

    The constructor validates and converts the arrays (InvalidInputError on a mismatch);
    ``dtype`` (not stored) is the dtype of ``points``: ``np.float32`` (default) or
    ``np.float64``.

    Example:
        >>> import numpy as np
        >>> d = PointCloudData(np.zeros((4, 3)), mask=[0, 1, 1, 0])
        >>> d.points.dtype, d.mask.tolist(), d.n_points
        (dtype('float32'), [False, True, True, False], 4)
        >>> PointCloudData([[1e6 + 0.1, 0, 0]], dtype=np.float64).points.dtype
        dtype('float64')
    """

    points: np.ndarray
    normals: np.ndarray | None = field(default=None)
    mask: np.ndarray | None = field(default=None)
    offsets: np.ndarray | None = field(default=None)
    dtype: InitVar[Any] = np.float32

    def __post_init__(self, dtype: Any) -> None:
        self.points = check_points(self.points, "points", min_points=1, dtype=dtype)
        n = self.points.shape[0]
        if self.normals is not None:
            self.normals = _check_vectors(self.normals, n, "normals")
        if self.mask is not None:
            self.mask = check_mask_values(self.mask, n, "mask")
        if self.offsets is not None:
            self.offsets = _check_vectors(self.offsets, n, "offsets")

    @property
    def n_points(self) -> int:
        """Number of points N."""
        return int(self.points.shape[0])


def cloud_from_file(
    path: Path,
    points: Any,
    normals: Any = None,
    mask: Any = None,
    offsets: Any = None,
    dtype: Any = np.float32,
) -> PointCloudData:
    """Build the result of a reader; bad content is the file's fault, so FileFormatError.

    ``dtype`` is the dtype of the points (``np.float32`` or ``np.float64``, see
    :class:`PointCloudData`); a bad ``dtype`` is the caller's fault (InvalidInputError).

    Example:
        >>> from pathlib import Path
        >>> cloud_from_file(Path("a.npy"), [[0, 0, float("nan")]])
        Traceback (most recent call last):
        ...
        pcad.errors.FileFormatError: a.npy: points: 1 points have NaN or infinite coordinates
    """
    check_float_dtype(dtype)  # a bad dtype is the caller's fault, not the file's
    try:
        return PointCloudData(points, normals=normals, mask=mask, offsets=offsets, dtype=dtype)
    except InvalidInputError as exc:
        raise FileFormatError(f"{path}: {exc}") from None
