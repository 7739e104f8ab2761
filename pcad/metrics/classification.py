"""AUROC, average precision and F1-max, exact and tie-aware, at image and pixel level.

Every distinct score is a threshold (``score >= t`` is predicted anomalous); tied scores switch
together. The results equal scikit-learn's ``roc_auc_score``, ``average_precision_score`` and
the maximum F1 over ``precision_recall_curve``, without importing scikit-learn.

When a metric is undefined it raises :class:`~pcad.errors.InvalidInputError`:

- AUROC needs at least one anomalous and one normal sample.
- Average precision and F1-max need at least one anomalous sample (with no normal sample
  they are 1.0).

Labels and masks are anomalous where they are > 0 (bool, 0/1, or 0/255 masks all work).

Example:
    >>> from pcad.metrics import average_precision, f1_max, image_auroc
    >>> scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    >>> image_auroc(scores, labels)
    0.75
    >>> round(average_precision(scores, labels), 4)
    0.8333
    >>> f1_max(scores, labels)
    (0.8, 0.35)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcad.checks import check_labels, check_maps_and_masks, check_scores
from pcad.errors import InvalidInputError
from pcad.metrics.ranking import chunk_slices, ranked_counts


def require_classes(n_pos: int, n_neg: int, metric: str, need_negatives: bool = True) -> None:
    """Raise InvalidInputError when ``metric`` is undefined for these class counts."""
    if n_pos == 0:
        raise InvalidInputError(
            f"{metric} is undefined: no anomalous sample (every label / mask is 0)"
        )
    if need_negatives and n_neg == 0:
        raise InvalidInputError(f"{metric} is undefined: no normal sample (every label is > 0)")


def auroc_from_counts(tps: np.ndarray, fps: np.ndarray, n_pos: int, n_neg: int) -> float:
    """Area under the ROC curve from :func:`~pcad.metrics.ranking.ranked_counts` output.

    Exact: twice the trapezoid area, ``sum_k (FP_k - FP_{k-1}) (TP_k + TP_{k-1})``, is an
    integer accumulated without rounding and divided once. Works in chunks, so the temporary
    memory stays bounded whatever the number of thresholds.
    """
    exact = 2 * n_pos * n_neg < 2**62  # every chunk's partial sum fits in int64
    twice_area: float = 0
    prev_tp, prev_fp = 0, 0
    for part in chunk_slices(tps.shape[0]):
        tp, fp = tps[part], fps[part]
        dfp = np.diff(fp, prepend=prev_fp)
        stp = tp + np.concatenate(([prev_tp], tp[:-1]))
        if exact:
            twice_area += int(np.dot(dfp, stp))
        else:
            twice_area += float(np.dot(dfp.astype(np.float64), stp.astype(np.float64)))
        prev_tp, prev_fp = int(tp[-1]), int(fp[-1])
    return twice_area / (2 * n_pos * n_neg)


def average_precision_from_counts(tps: np.ndarray, fps: np.ndarray, n_pos: int) -> float:
    """``sum_k (R_k - R_{k-1}) * P_k`` over the distinct thresholds (no interpolation)."""
    total = 0.0
    prev_tp = 0
    for part in chunk_slices(tps.shape[0]):
        tp, fp = tps[part], fps[part]
        d_tp = np.diff(tp, prepend=prev_tp).astype(np.float64)
        total += float(np.dot(d_tp, tp / (tp + fp)))
        prev_tp = int(tp[-1])
    return total / n_pos


def f1_max_from_counts(
    thresholds: np.ndarray, tps: np.ndarray, fps: np.ndarray, n_pos: int
) -> tuple[float, float]:
    """Best F1 ``= 2 TP / (2 TP + FP + FN)`` and its threshold (the highest one on ties)."""
    best, best_index = -1.0, 0
    for part in chunk_slices(tps.shape[0]):
        tp = tps[part]
        f1 = 2.0 * tp / (tp + fps[part] + n_pos)
        i = int(np.argmax(f1))
        if f1[i] > best:
            best, best_index = float(f1[i]), part.start + i
    return best, float(thresholds[best_index])


def flatten_pixels(anomaly_maps: Any, gt_masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate all pixels: ``((P,) scores, (P,) bool labels)`` with ``P = sum(H_i * W_i)``.

    Args:
        anomaly_maps: sequence of ``(H_i, W_i)`` numeric maps (sizes may differ per image).
        gt_masks: sequence of ``(H_i, W_i)`` masks, anomalous where > 0; same shapes.
    """
    maps, masks = check_maps_and_masks(anomaly_maps, gt_masks)
    dtype = np.result_type(np.float32, *(m.dtype for m in maps))
    scores = np.concatenate([m.astype(dtype, copy=False).ravel() for m in maps])
    labels = np.concatenate([m.ravel() for m in masks])
    return scores, labels


def _auroc(scores: np.ndarray, labels: np.ndarray, metric: str) -> float:
    n_pos = int(labels.sum())
    n_neg = labels.shape[0] - n_pos
    require_classes(n_pos, n_neg, metric)
    _, tps, fps = ranked_counts(scores, labels)
    return auroc_from_counts(tps, fps, n_pos, n_neg)


def _ap(scores: np.ndarray, labels: np.ndarray, metric: str) -> float:
    n_pos = int(labels.sum())
    require_classes(n_pos, labels.shape[0] - n_pos, metric, need_negatives=False)
    _, tps, fps = ranked_counts(scores, labels)
    return average_precision_from_counts(tps, fps, n_pos)


def _f1(scores: np.ndarray, labels: np.ndarray, metric: str) -> tuple[float, float]:
    n_pos = int(labels.sum())
    require_classes(n_pos, labels.shape[0] - n_pos, metric, need_negatives=False)
    thresholds, tps, fps = ranked_counts(scores, labels)
    return f1_max_from_counts(thresholds, tps, fps, n_pos)


def _checked(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = check_scores(scores, "scores")
    return s, check_labels(labels, s.shape[0], "labels")


def image_auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of per-image scores (tie-aware; equals sklearn's).

    Args:
        scores: ``(N,)`` anomaly scores, higher = more anomalous; no NaN (``±inf`` allowed).
        labels: ``(N,)`` labels, anomalous where > 0. Needs both classes.

    Example:
        >>> image_auroc([1, 1, 2, 3], [0, 1, 0, 1])  # the tie at 1 counts one half
        0.625
    """
    return _auroc(*_checked(scores, labels), "AUROC")


def auroc(scores: Any, labels: Any) -> float:
    """Alias of :func:`image_auroc` for any ``(N,)`` scores and labels."""
    return image_auroc(scores, labels)


def pixel_auroc(anomaly_maps: Any, gt_masks: Any) -> float:
    """AUROC over all pixels of all images pooled (P-AUROC), at the masks' resolution.

    Args:
        anomaly_maps: sequence of ``(H_i, W_i)`` maps; map ``i`` must have mask ``i``'s shape.
        gt_masks: sequence of ``(H_i, W_i)`` masks, anomalous where > 0.

    Example:
        >>> import numpy as np
        >>> pixel_auroc([np.array([[0.9, 0.1]]), np.array([[0.2]])], [[[1, 0]], [[0]]])
        1.0
    """
    return _auroc(*flatten_pixels(anomaly_maps, gt_masks), "pixel AUROC")


def average_precision(scores: Any, labels: Any) -> float:
    """Average precision ``sum_k (R_k - R_{k-1}) P_k`` (sklearn's definition, tie-aware).

    Args:
        scores: ``(N,)`` scores, no NaN.
        labels: ``(N,)`` labels, anomalous where > 0; at least one anomalous.

    Example:
        >>> average_precision([0.9, 0.8, 0.1], [1, 0, 1])
        0.8333333333333333
    """
    return _ap(*_checked(scores, labels), "average precision")


def pixel_average_precision(anomaly_maps: Any, gt_masks: Any) -> float:
    """:func:`average_precision` over all pixels pooled (maps and masks as :func:`pixel_auroc`)."""
    return _ap(*flatten_pixels(anomaly_maps, gt_masks), "pixel average precision")


def f1_max(scores: Any, labels: Any) -> tuple[float, float]:
    """Best F1 over every distinct threshold, and that threshold (``score >= t`` is anomalous).

    When several thresholds reach the best F1, the highest one is returned.

    Args:
        scores: ``(N,)`` scores, no NaN.
        labels: ``(N,)`` labels, anomalous where > 0; at least one anomalous.

    Returns:
        ``(f1, threshold)``.

    Example:
        >>> f1_max([0.9, 0.8, 0.1], [1, 0, 1])
        (0.8, 0.1)
    """
    return _f1(*_checked(scores, labels), "F1-max")


def pixel_f1_max(anomaly_maps: Any, gt_masks: Any) -> tuple[float, float]:
    """:func:`f1_max` over all pixels pooled (maps and masks as :func:`pixel_auroc`)."""
    return _f1(*flatten_pixels(anomaly_maps, gt_masks), "pixel F1-max")
