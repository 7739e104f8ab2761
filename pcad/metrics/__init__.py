"""Evaluation metrics: I-AUROC, P-AUROC, exact AUPRO (official MVTec procedure), F1-max, AP,
and ViTAD's set with its mean mAD (:mod:`pcad.metrics.vitad`).

All metrics are exact and tie-aware: every distinct score is a threshold (``score >= t`` is
anomalous) and tied scores switch together. Pixel metrics pool all pixels of all test images
(good ones included) at the ground truth's resolution; maps of another size are refused, resize
them first. Masks and labels are anomalous where > 0. Bad input raises
:class:`~pcad.errors.InvalidInputError`.

Undefined metrics raise too: AUROC needs both classes; AP and F1-max need an anomalous sample;
AUPRO needs at least one ground-truth region and one normal pixel.

Example:
    >>> import numpy as np
    >>> from pcad.metrics import aupro, image_auroc
    >>> image_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> aupro([np.array([[4.0, 3.0, 2.0, 1.0]])], [np.array([[1, 0, 1, 0]])], fpr_limit=1.0)
    0.75
"""

from pcad.metrics.classification import (
    auroc,
    average_precision,
    f1_max,
    flatten_pixels,
    image_auroc,
    pixel_auroc,
    pixel_average_precision,
    pixel_f1_max,
)
from pcad.metrics.evaluate import evaluate
from pcad.metrics.pixel_curve import EIGHT_CONNECTED, PixelCurve, PixelRanking, pixel_curve
from pcad.metrics.pro import DEFAULT_LIMITS, aupro, aupro_at, pro_curve
from pcad.metrics.ranking import ranked_counts, trapezoid
from pcad.metrics.vitad import VITAD_METRICS, mad, mean_metrics, vitad_metrics

__all__ = [
    "DEFAULT_LIMITS",
    "VITAD_METRICS",
    "EIGHT_CONNECTED",
    "PixelCurve",
    "PixelRanking",
    "aupro",
    "aupro_at",
    "auroc",
    "average_precision",
    "evaluate",
    "f1_max",
    "flatten_pixels",
    "image_auroc",
    "mad",
    "mean_metrics",
    "pixel_auroc",
    "pixel_average_precision",
    "pixel_curve",
    "pixel_f1_max",
    "pro_curve",
    "ranked_counts",
    "trapezoid",
    "vitad_metrics",
]
