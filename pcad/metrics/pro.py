"""AUPRO exactly as the official MVTec (3D-)AD evaluation computes it.

The procedure (``pro_curve_util.py`` / ``generic_util.py`` of the official evaluation code):

1. Label the 8-connected regions of every ground-truth mask; pool the regions of all test
   images, and the normal pixels of all test images, good images included.
2. Every distinct anomaly score ``t`` is a threshold; pixels with score ``>= t`` are positive.
   Tied scores switch together (one curve point per distinct score).
3. ``FPR(t)`` = positive normal pixels / all normal pixels; ``PRO(t)`` = mean over regions of
   the region's fraction of positive pixels. Values are clipped to <= 1 and the curve is framed
   by ``(0, 0)`` and ``(1, 1)``.
4. AUPRO = trapezoid area for ``FPR <= limit`` (PRO linearly interpolated at the limit when
   the limit is not a curve point), divided by the limit.

Unlike the popular 100-threshold copies (3D-ADS, M3DM, ...), no threshold grid is used.
Differences from the official script: FPRs are float64 (the official code uses float32), the
image sizes may differ, there is no ``N * H * W < 2**32`` limit, and the final value is clipped
to ``[0, 1]`` (it can exceed 1 by one rounding error otherwise).

Undefined (InvalidInputError) when no mask holds an anomalous pixel or no pixel is normal.

Example:
    >>> import numpy as np
    >>> from pcad.metrics import aupro, aupro_at
    >>> maps = [np.array([[2.0, 2.0, 1.0, 1.0]])]
    >>> masks = [np.array([[1, 0, 0, 0]])]
    >>> round(aupro(maps, masks, fpr_limit=0.3), 12)  # the tie at 2.0 makes a slope
    0.45
    >>> {k: round(v, 12) for k, v in aupro_at(maps, masks, limits=(0.3, 0.1)).items()}
    {'0.3': 0.45, '0.1': 0.15}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcad.checks import check_limit, check_limits, check_maps_and_masks
from pcad.errors import InvalidInputError
from pcad.metrics.pixel_curve import PixelCurve, pixel_curve_unchecked
from pcad.metrics.ranking import trapezoid

#: The FPR limits reported by default (DESIGN.md, Metrics).
DEFAULT_LIMITS: tuple[float, ...] = (0.3, 0.1, 0.05, 0.01)


def limit_key(limit: float) -> str:
    """The dictionary key of an FPR limit: ``0.3 -> "0.3"``, ``1 -> "1.0"``.

    Example:
        >>> limit_key(0.3), limit_key(1)
        ('0.3', '1.0')
    """
    return str(float(limit))


def _require_regions_and_normals(n_pos: int, n_pixels: int) -> None:
    if n_pos == 0:
        raise InvalidInputError(
            "gt_masks: no anomalous pixel in any mask; the PRO curve and AUPRO need at least "
            "one ground-truth region"
        )
    if n_pos == n_pixels:
        raise InvalidInputError(
            "gt_masks: every pixel is anomalous; the FPR (and so AUPRO) needs normal pixels"
        )


def _checked_curve(anomaly_maps: Any, gt_masks: Any) -> PixelCurve:
    """Check the inputs and that AUPRO is defined (before sorting anything), then sort."""
    maps, masks = check_maps_and_masks(anomaly_maps, gt_masks)
    _require_regions_and_normals(
        sum(int(np.count_nonzero(m)) for m in masks), sum(m.size for m in masks)
    )
    return pixel_curve_unchecked(maps, masks)


def pro_from_pixel_curve(
    curve: PixelCurve, max_fpr: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The framed ``(fprs, pros)`` of :func:`pro_curve` from a :class:`PixelCurve`.

    With ``max_fpr``, only the start of the curve is built: every point with FPR <= max_fpr
    and the first point beyond it, which is all :func:`~pcad.metrics.ranking.trapezoid` uses
    for a limit <= ``max_fpr`` (the result is the same, bit for bit, as on the whole curve).
    """
    _require_regions_and_normals(curve.n_pos, curve.n_pos + curve.n_neg)
    n = curve.fps.shape[0]
    if max_fpr is not None and max_fpr < 1.0:
        # Loosened bound: rounding of fps / n_neg can never drop a point with FPR <= max_fpr.
        bound = max_fpr * curve.n_neg * (1.0 + 1e-9)
        n = min(n, int(np.searchsorted(curve.fps, bound, side="right")) + 1)
    framed = n == curve.fps.shape[0]  # the whole curve: close it with (1, 1)
    fprs = np.zeros(n + 1 + framed, dtype=np.float64)
    pros = np.zeros(n + 1 + framed, dtype=np.float64)
    np.divide(curve.fps[:n], curve.n_neg, out=fprs[1 : n + 1])
    np.divide(curve.pro_sums[:n], curve.n_regions, out=pros[1 : n + 1])
    np.minimum(fprs, 1.0, out=fprs)
    np.minimum(pros, 1.0, out=pros)
    if framed:
        fprs[-1] = pros[-1] = 1.0
    return fprs, pros


def pro_curve(anomaly_maps: Any, gt_masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """The exact per-region-overlap curve: one point per distinct score, ties merged.

    Args:
        anomaly_maps: sequence of ``(H_i, W_i)`` numeric maps (no NaN; sizes may differ per
            image) or one ``(N, H, W)`` array.
        gt_masks: sequence of ``(H_i, W_i)`` masks, anomalous where > 0, each with its map's
            shape (the metric is computed at the ground truth's resolution: resize the maps
            yourself). Good images (all-zero masks) count: their pixels are normal pixels.

    Returns:
        ``(fprs, pros)``, two ``(K + 2,) float64`` arrays with ``K`` the number of distinct
        scores, ordered by decreasing threshold, framed by ``(0, 0)`` and ``(1, 1)`` as in the
        official code (so the last point appears twice). ``fprs`` is non-decreasing.

    Example:
        >>> import numpy as np
        >>> f, p = pro_curve([np.array([[4.0, 3.0, 2.0, 1.0]])], [np.array([[1, 0, 1, 0]])])
        >>> f.tolist(), p.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0, 1.0])
    """
    return pro_from_pixel_curve(_checked_curve(anomaly_maps, gt_masks))


def aupro_from_curve(fprs: np.ndarray, pros: np.ndarray, fpr_limit: float) -> float:
    """Normalized area under a framed PRO curve up to ``fpr_limit`` (official trapezoid rule)."""
    area = trapezoid(fprs, pros, x_max=fpr_limit) / fpr_limit
    return float(min(max(area, 0.0), 1.0))


def aupro(anomaly_maps: Any, gt_masks: Any, fpr_limit: float = 0.3) -> float:
    """Normalized area under the PRO curve for FPR in ``[0, fpr_limit]``, in ``[0, 1]``.

    Args:
        anomaly_maps: sequence of ``(H_i, W_i)`` maps (see :func:`pro_curve`).
        gt_masks: sequence of ``(H_i, W_i)`` masks, anomalous where > 0, one per map.
        fpr_limit: integration limit in ``(0, 1]``; 0.3 is the MVTec default.

    Example:
        >>> import numpy as np
        >>> aupro([np.array([[4.0, 3.0, 2.0, 1.0]])], [np.array([[1, 0, 1, 0]])], 1.0)
        0.75
    """
    limit = check_limit(fpr_limit, "fpr_limit")
    return aupro_at(anomaly_maps, gt_masks, (limit,))[limit_key(limit)]


def aupro_at(
    anomaly_maps: Any, gt_masks: Any, limits: Any = DEFAULT_LIMITS
) -> dict[str, float]:
    """AUPRO at several FPR limits from a single curve (one sort of all pixels).

    Args:
        anomaly_maps: sequence of ``(H_i, W_i)`` maps (see :func:`pro_curve`).
        gt_masks: sequence of ``(H_i, W_i)`` masks, anomalous where > 0, one per map.
        limits: FPR limits, each in ``(0, 1]`` (a single number is accepted).

    Returns:
        ``{str(float(limit)): aupro}``, e.g. ``{"0.3": ..., "0.1": ..., "0.05": ..., "0.01": ...}``
        in the order of ``limits``.

    Example:
        >>> import numpy as np
        >>> aupro_at([np.array([[4.0, 3.0, 2.0, 1.0]])], [np.array([[1, 0, 1, 0]])], (1, 0.5))
        {'1.0': 0.75, '0.5': 0.5}
    """
    checked = check_limits(limits, "limits")
    curve = _checked_curve(anomaly_maps, gt_masks)
    fprs, pros = pro_from_pixel_curve(curve, max_fpr=max(checked))
    del curve
    return {limit_key(lim): aupro_from_curve(fprs, pros, lim) for lim in checked}
