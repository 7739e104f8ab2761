"""All test-set metrics of one category in one call: image and pixel level, AUPRO limits.

Example:
    >>> import numpy as np
    >>> from pcad.metrics import evaluate
    >>> maps = [np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.3, 0.2]])]
    >>> masks = [np.array([[1, 0], [0, 1]]), np.zeros((1, 2), int)]
    >>> m = evaluate([0.9, 0.3], [1, 0], maps, masks, limits=(0.3,))
    >>> m["i_auroc"], m["p_auroc"], m["aupro"], m["n_test"], m["n_anomalous"], m["n_regions"]
    (1.0, 1.0, {'0.3': 1.0}, 2, 1, 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcad.checks import check_labels, check_limits, check_maps_and_masks, check_scores
from pcad.errors import InvalidInputError
from pcad.metrics.classification import (
    auroc_from_counts,
    average_precision_from_counts,
    f1_max_from_counts,
    require_classes,
)
from pcad.metrics.pixel_curve import PixelRanking, pixel_curve_unchecked
from pcad.metrics.pro import DEFAULT_LIMITS, aupro_from_curve, limit_key, pro_from_pixel_curve
from pcad.metrics.ranking import ranked_counts
from pcad.metrics.vitad import VITAD_AUPRO_LIMIT, vitad_metrics


def evaluate(
    image_scores: Any,
    image_labels: Any,
    anomaly_maps: Any,
    gt_masks: Any,
    limits: Any = DEFAULT_LIMITS,
    ranking: PixelRanking | None = None,
) -> dict[str, Any]:
    """I-AUROC, P-AUROC, AUPRO at every limit, F1-max and AP (image and pixel level).

    Pixel metrics pool every pixel of every test image (good images included) and use a single
    sort shared by P-AUROC, pixel AP, pixel F1-max and AUPRO. They are computed at the ground
    truth's resolution: map ``i`` must have exactly mask ``i``'s shape, else InvalidInputError
    names the index and both shapes (resize the maps first; the official evaluation uses the
    original image size).

    Args:
        image_scores: ``(N,)`` per-image scores, or ``None`` to use each map's maximum (the
            official MVTec script's image score).
        image_labels: ``(N,)`` labels, anomalous where > 0, or ``None`` to derive them from the
            masks (an image is anomalous iff its mask has an anomalous pixel).
        anomaly_maps: sequence of ``N`` ``(H_i, W_i)`` maps (no NaN; sizes may differ).
        gt_masks: sequence of ``N`` ``(H_i, W_i)`` masks, anomalous where > 0.
        limits: AUPRO FPR limits, each in ``(0, 1]``.
        ranking: a :class:`~pcad.metrics.pixel_curve.PixelRanking` of these maps and masks
            (made once to share the sort of all pixels with other calls, e.g. per-defect
            metrics of the same test set), or None to sort here. The results are the same.

    Returns:
        A JSON-serializable dict: ``i_auroc``, ``p_auroc`` (floats), ``aupro``
        (``{"0.3": ..., ...}``), ``f1_max_image``, ``f1_threshold_image``, ``f1_max_pixel``,
        ``f1_threshold_pixel``, ``ap_image``, ``ap_pixel`` (floats), ``n_test``,
        ``n_anomalous`` (images), ``n_regions``, ``n_anomalous_pixels``, ``n_normal_pixels``;
        and ViTAD's set (:mod:`pcad.metrics.vitad`): ``i_ap``, ``i_f1_max``, ``p_ap``,
        ``p_f1_max``, ``aupro_0.3`` (AUPRO at FPR 0.3 whatever ``limits`` holds) and ``mad``
        (their mean with ``i_auroc`` and ``p_auroc``).

    Raises:
        InvalidInputError: bad shapes or lengths, NaN, empty inputs, a limit outside (0, 1],
            or an undefined metric: the image labels need both classes (I-AUROC) and the masks
            need both anomalous and normal pixels (P-AUROC, AUPRO).
    """
    maps, masks = check_maps_and_masks(anomaly_maps, gt_masks)
    n_test = len(maps)
    if image_scores is None:
        scores = np.array([float(np.max(m)) for m in maps])
    else:
        scores = check_scores(image_scores, "image_scores")
        if scores.shape[0] != n_test:
            raise InvalidInputError(
                f"image_scores: expected {n_test} scores (one per map), got {scores.shape[0]}"
            )
    if image_labels is None:
        labels = np.array([bool(m.any()) for m in masks])
    else:
        labels = check_labels(image_labels, n_test, "image_labels")
    checked_limits = check_limits(limits, "limits")
    n_anomalous = int(labels.sum())
    require_classes(n_anomalous, n_test - n_anomalous, "image AUROC")
    n_pos_pixels = int(sum(int(m.sum()) for m in masks))
    n_pixels = int(sum(m.size for m in masks))
    require_classes(n_pos_pixels, n_pixels - n_pos_pixels, "pixel AUROC and AUPRO")

    thr, tps, fps = ranked_counts(scores, labels)
    f1_image, f1_thr_image = f1_max_from_counts(thr, tps, fps, n_anomalous)
    out: dict[str, Any] = {
        "i_auroc": auroc_from_counts(tps, fps, n_anomalous, n_test - n_anomalous),
        "ap_image": average_precision_from_counts(tps, fps, n_anomalous),
        "f1_max_image": f1_image,
        "f1_threshold_image": f1_thr_image,
    }
    del thr, tps, fps

    if ranking is None:
        curve = pixel_curve_unchecked(maps, masks)
    elif ranking.n_images != n_test or ranking.n_pixels != n_pixels:
        raise InvalidInputError(
            f"ranking: made for {ranking.n_images} maps of {ranking.n_pixels} pixels, not for "
            f"these {n_test} maps of {n_pixels} pixels"
        )
    else:
        curve = ranking.curve()
    fprs, pros = pro_from_pixel_curve(curve, max_fpr=max(*checked_limits, VITAD_AUPRO_LIMIT))
    f1_pixel, f1_thr_pixel = f1_max_from_counts(
        curve.thresholds, curve.tps, curve.fps, curve.n_pos
    )
    out.update(
        {
            "p_auroc": auroc_from_counts(curve.tps, curve.fps, curve.n_pos, curve.n_neg),
            "ap_pixel": average_precision_from_counts(curve.tps, curve.fps, curve.n_pos),
            "f1_max_pixel": f1_pixel,
            "f1_threshold_pixel": f1_thr_pixel,
            "aupro": {limit_key(lim): aupro_from_curve(fprs, pros, lim) for lim in checked_limits},
            "n_test": n_test,
            "n_anomalous": n_anomalous,
            "n_regions": curve.n_regions,
            "n_anomalous_pixels": curve.n_pos,
            "n_normal_pixels": curve.n_neg,
        }
    )
    aupro_vitad = aupro_from_curve(fprs, pros, VITAD_AUPRO_LIMIT)  # ViTAD's set, and mAD
    out.update(vitad_metrics({**out, "aupro": {limit_key(VITAD_AUPRO_LIMIT): aupro_vitad}}))
    return out
