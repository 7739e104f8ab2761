"""Exact ranking primitives: counts at every distinct threshold, and the official trapezoid.

A *threshold* is every distinct score. At threshold ``t`` a sample is predicted anomalous iff
its score is ``>= t``; samples with equal scores therefore always switch together (ties are
merged into one point of the curve, never broken by sort order).

Example:
    >>> import numpy as np
    >>> from pcad.metrics.ranking import ranked_counts, trapezoid
    >>> thr, tps, fps = ranked_counts(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0]) > 0)
    >>> thr.tolist(), tps.tolist(), fps.tolist()
    ([0.9, 0.5, 0.1], [1, 2, 2], [0, 1, 2])
    >>> trapezoid([0.0, 0.5, 1.0], [0.0, 1.0, 1.0], x_max=0.25)
    0.0625
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcad.errors import InvalidInputError

#: Elements per chunk of the reductions over curves (bounds their temporary memory).
CHUNK = 1 << 20


def chunk_slices(n: int, size: int | None = None) -> list[slice]:
    """Consecutive slices of at most ``size`` (default :data:`CHUNK`) elements covering
    ``range(n)``."""
    step = CHUNK if size is None else size
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def descending_order(scores: np.ndarray) -> np.ndarray:
    """``(N,) int64`` indices that sort ``scores`` in descending order (order within ties is
    unspecified; it never matters because ties are merged)."""
    return np.argsort(scores)[::-1]


def run_ends(sorted_scores: np.ndarray) -> np.ndarray:
    """``(N,) bool``: True at the last element of every run of equal values.

    Uses ``!=`` rather than ``np.diff`` so that runs of ``inf`` stay one run.
    """
    keep = np.empty(sorted_scores.shape[0], dtype=bool)
    np.not_equal(sorted_scores[1:], sorted_scores[:-1], out=keep[:-1])
    keep[-1] = True
    return keep


def ranked_counts(
    scores: np.ndarray, positive: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confusion counts at every distinct threshold, highest threshold first.

    Args:
        scores: ``(N,)`` numeric scores without NaN (checked by the caller).
        positive: ``(N,) bool`` ground truth.

    Returns:
        ``(thresholds, tps, fps)``, each ``(K,)`` with ``K`` the number of distinct scores:
        the distinct scores in descending order, and the ``int64`` numbers of positives and
        negatives whose score is ``>= threshold``.
    """
    order = descending_order(scores)
    sorted_scores = scores[order]
    keep = run_ends(sorted_scores)
    thresholds = sorted_scores[keep]
    del sorted_scores
    pos_index = np.flatnonzero(positive[order])  # sorted positions of the positives
    ends = np.flatnonzero(keep).astype(np.int64, copy=False)
    ends += 1  # samples with score >= each threshold
    tps = np.searchsorted(pos_index, ends).astype(np.int64, copy=False)
    ends -= tps
    return thresholds, tps, ends


def trapezoid(x: Any, y: Any, x_max: float | None = None) -> float:
    """Area under the polyline ``(x, y)`` for ``x <= x_max``, exactly as MVTec's evaluation code.

    When ``x_max`` is not one of the ``x`` values, ``y`` is linearly interpolated at ``x_max``
    between its two neighbouring points and the partial trapezoid is added. The area is *not*
    divided by ``x_max``.

    Args:
        x: ``(K,)`` non-decreasing abscissae (repeated values make vertical steps).
        y: ``(K,)`` ordinates.
        x_max: upper integration limit, inside ``[x[0], x[-1]]``; ``None`` integrates all.

    Example:
        >>> trapezoid([0.0, 1.0], [0.0, 1.0], x_max=0.5)
        0.125
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise InvalidInputError(
            f"x and y: expected two 1-D arrays of equal length, got {xs.shape} and {ys.shape}"
        )
    correction = 0.0
    if x_max is not None:
        if not np.any(xs == x_max):
            ins = int(np.searchsorted(xs, x_max, side="right"))
            if ins == 0 or ins == xs.shape[0]:
                raise InvalidInputError(
                    f"x_max: {x_max} lies outside the curve's range [{xs[0]}, {xs[-1]}]"
                )
            x0, x1, y0, y1 = xs[ins - 1], xs[ins], ys[ins - 1], ys[ins]
            y_interp = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
            correction = 0.5 * (y_interp + y0) * (x_max - x0)
        inside = xs <= x_max
        xs, ys = xs[inside], ys[inside]
    return float(np.sum(0.5 * (ys[1:] + ys[:-1]) * (xs[1:] - xs[:-1])) + correction)
