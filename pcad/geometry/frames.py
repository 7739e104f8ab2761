"""Bounding boxes, principal (PCA) frames and degeneracy checks of point clouds.

All math is float64. Inputs are validated with :func:`pcad.checks.check_points` (any numeric
``(N, 3)`` array of finite values); a cloud with no 2D extent raises
:class:`~pcad.errors.DegenerateGeometryError`.

Example:
    >>> import numpy as np
    >>> from pcad.geometry.frames import bbox_diagonal, pca_frame
    >>> pts = np.array([[0, 0, 0], [2, 0, 0], [0, 1, 0], [2, 1, 0.0]])
    >>> round(bbox_diagonal(pts), 4)
    2.2361
    >>> frame = pca_frame(pts)
    >>> np.abs(frame.axes[2]).round(6).tolist()
    [0.0, 0.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pcad.checks import check_points
from pcad.errors import DegenerateGeometryError, InvalidInputError

__all__ = [
    "Frame",
    "bbox_diagonal",
    "check_not_degenerate",
    "pca_frame",
    "project_to_plane",
    "to_local",
]

# Second singular value below this fraction of the first: the cloud is collinear.
COLLINEAR_RTOL = 1e-6
# Spreads below this many float32 epsilons of the coordinate magnitude are rounding noise.
_F32_NOISE = 8.0 * float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Frame:
    """A right-handed orthonormal frame fitted to a point cloud.

    Attributes:
        origin: ``(3,) float64``, the centroid of the cloud.
        axes: ``(3, 3) float64``; rows are unit principal axes by decreasing variance,
            ``axes[2] == cross(axes[0], axes[1])`` (the normal of the best-fit plane).
        singular_values: ``(3,) float64``, singular values of the centred ``(N, 3)`` cloud
            (decreasing; ``singular_values / sqrt(N)`` are the standard deviations along axes).
    """

    origin: np.ndarray
    axes: np.ndarray
    singular_values: np.ndarray


def _as_float64(points: Any, name: str) -> np.ndarray:
    """Validate ``points`` (shape, finiteness) and return them as ``(N, 3) float64``.

    The original values are kept in float64 (no float32 round trip) for precise math.
    """
    check_points(points, name, min_points=1)
    return np.ascontiguousarray(points, dtype=np.float64)


def _principal(pts: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, ``(3, 3)`` right-handed axes and singular values; raises when degenerate."""
    n = pts.shape[0]
    if n == 1 or not np.any(np.ptp(pts, axis=0) > 0):
        raise DegenerateGeometryError(
            f"{name}: all {n} points are equal: the cloud is a single point with no extent"
        )
    origin = pts.mean(axis=0)
    centred = pts - origin
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    std = s / np.sqrt(n)
    noise = _F32_NOISE * float(np.abs(pts).max())
    if std[0] <= noise:
        raise DegenerateGeometryError(
            f"{name}: the {n} points are (numerically) a single point: spread {std[0]:.3g}"
        )
    if n < 3 or std[1] <= max(COLLINEAR_RTOL * std[0], noise):
        raise DegenerateGeometryError(
            f"{name}: points are collinear: the cloud has no 2D extent "
            f"(singular values {s[0]:.3g}, {s[1]:.3g})"
        )
    axes = np.array(vt[:2], dtype=np.float64)
    # Deterministic signs: the largest-magnitude component of axes 0 and 1 is positive.
    big = np.argmax(np.abs(axes), axis=1)
    signs = np.where(axes[np.arange(2), big] < 0, -1.0, 1.0)
    axes *= signs[:, None]
    third = np.cross(axes[0], axes[1])
    third /= np.linalg.norm(third)
    axes = np.vstack([axes, third])
    sv = np.zeros(3)
    sv[: s.shape[0]] = s
    return origin, axes, sv


def bbox_diagonal(points: Any, name: str = "points") -> float:
    """Length of the diagonal of the axis-aligned bounding box of ``points``.

    The one bounding-box diagonal of pcad, synth and viz (relative defect sizes, relative
    distances, camera framing). An organized cloud's caller passes its valid pixels,
    ``xyz[valid_pixels(xyz)]``.

    Args:
        points: ``(N, 3)`` numeric array, N >= 1, finite (as :func:`pcad.checks.check_points`
            accepts it; checked on the box corners, without copying the cloud).
        name: names the argument in error messages.

    Returns:
        The diagonal length as a Python float (float64 math on the original values); 0.0 for
        a single point.

    Raises:
        InvalidInputError: wrong shape or dtype, empty, NaN or infinite coordinates.

    Example:
        >>> bbox_diagonal([[0, 0, 0], [3, 4, 12]])
        13.0
    """
    arr = np.asarray(points)
    ok = arr.ndim == 2 and arr.shape[1] == 3 and arr.shape[0] > 0 and arr.dtype.kind in "iuf"
    if ok:
        lo, hi = arr.min(axis=0), arr.max(axis=0)
        # NaN propagates to the corners, and a coordinate beyond float32 sets one of them
        ok = bool(np.isfinite(np.concatenate([lo, hi]).astype(np.float32)).all())
    if not ok:
        check_points(arr, name, min_points=1)  # raises, naming the reason
        raise InvalidInputError(f"{name}: expected finite (N, 3) coordinates")
    return float(np.linalg.norm(hi.astype(np.float64) - lo.astype(np.float64)))


def pca_frame(points: Any) -> Frame:
    """Principal frame of a cloud: centroid and principal axes by decreasing variance.

    Signs are deterministic: the largest-magnitude component of ``axes[0]`` and ``axes[1]`` is
    positive (the first one on ties), and ``axes[2] = cross(axes[0], axes[1])``.

    Args:
        points: ``(N, 3)`` numeric array, finite.

    Returns:
        A :class:`Frame` (float64 arrays).

    Raises:
        DegenerateGeometryError: all points are equal, or they are collinear (the second
            singular value is <= 1e-6 times the first, or at the float32 rounding level).
        InvalidInputError: wrong shape or non-finite values.

    Example:
        >>> import numpy as np
        >>> pts = np.array([[0, 0, 0], [4, 0, 0], [0, 1, 0], [4, 1, 0], [2, 0.5, 0]])
        >>> pca_frame(pts).axes.round(6).tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    pts = _as_float64(points, "points")
    origin, axes, sv = _principal(pts, "points")
    return Frame(origin=origin, axes=axes, singular_values=sv)


def check_not_degenerate(points: Any, name: str = "points") -> np.ndarray:
    """Raise DegenerateGeometryError when ``points`` have no 2D extent.

    A cloud of one point (or only duplicates of one point) and a collinear cloud are refused;
    planar clouds (a flat plate, an organized scan of a plane) pass.

    Args:
        points: ``(N, 3)`` numeric array, finite.
        name: argument name used in the error message.

    Returns:
        The points as a C-contiguous ``(N, 3) float32`` array (as :func:`check_points`).

    Example:
        >>> import numpy as np
        >>> check_not_degenerate(np.eye(3)).shape
        (3, 3)
    """
    pts32 = check_points(points, name, min_points=1)
    _principal(np.ascontiguousarray(points, dtype=np.float64), name)
    return pts32


def _check_frame(frame: Any) -> Frame:
    if not isinstance(frame, Frame):
        raise InvalidInputError(
            f"frame: expected a pcad.geometry.Frame, got {type(frame).__name__}"
        )
    return frame


def to_local(points: Any, frame: Frame) -> np.ndarray:
    """Coordinates of ``points`` in ``frame``: ``(points - origin) @ axes.T``.

    Args:
        points: ``(N, 3)`` numeric array, finite.
        frame: a :class:`Frame` (e.g. from :func:`pca_frame`).

    Returns:
        ``(N, 3) float64`` coordinates along ``axes[0], axes[1], axes[2]``.

    Example:
        >>> import numpy as np
        >>> pts = np.array([[0, 0, 0], [4, 0, 0], [0, 1, 0], [4, 1, 0.0]])
        >>> to_local(pts, pca_frame(pts))[0].round(6).tolist()
        [-2.0, -0.5, 0.0]
    """
    pts = _as_float64(points, "points")
    frame = _check_frame(frame)
    return (pts - frame.origin) @ frame.axes.T


def project_to_plane(points: Any, frame: Frame) -> np.ndarray:
    """2D coordinates of ``points`` in the plane spanned by ``frame.axes[0]`` and ``axes[1]``.

    Args:
        points: ``(N, 3)`` numeric array, finite.
        frame: a :class:`Frame` (e.g. from :func:`pca_frame`).

    Returns:
        ``(N, 2) float64``: ``(points - origin) @ axes[:2].T``.

    Example:
        >>> import numpy as np
        >>> pts = np.array([[0, 0, 0], [4, 0, 0], [0, 1, 0], [4, 1, 0.0]])
        >>> project_to_plane(pts, pca_frame(pts)).shape
        (4, 2)
    """
    pts = _as_float64(points, "points")
    frame = _check_frame(frame)
    return (pts - frame.origin) @ frame.axes[:2].T
