"""ViTAD's benchmark metric set for (multi-class) anomaly detection, and means over categories.

ViTAD (and the unified-model papers after it) report seven metrics per category: I-AUROC,
I-AP, I-F1-max, P-AUROC, P-AP, P-F1-max and AUPRO@0.3, and their mean **mAD**. Here they are
read from :func:`pcad.metrics.evaluate`'s output (which holds them under these keys too), and
:func:`mean_metrics` averages per-category blocks into the top level of a multi-category
``metrics.json``.

Example:
    >>> from pcad.metrics.vitad import mad, mean_metrics
    >>> block = {"i_auroc": 1.0, "i_ap": 1.0, "i_f1_max": 1.0, "p_auroc": 0.9, "p_ap": 0.5,
    ...          "p_f1_max": 0.6, "aupro_0.3": 0.8}
    >>> round(mad(block), 4)
    0.8286
    >>> other = {**block, "i_auroc": 0.5}
    >>> mean_metrics({"a": block, "b": other})["i_auroc"]
    0.75
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pcad.errors import InvalidInputError

#: ViTAD's seven metrics: ``(key in metrics.json, label)``, in the paper's order
VITAD_METRICS: tuple[tuple[str, str], ...] = (
    ("i_auroc", "I-AUROC"), ("i_ap", "I-AP"), ("i_f1_max", "I-F1-max"),
    ("p_auroc", "P-AUROC"), ("p_ap", "P-AP"), ("p_f1_max", "P-F1-max"),
    ("aupro_0.3", "AUPRO@0.3"))
#: the FPR limit of ViTAD's AUPRO
VITAD_AUPRO_LIMIT = 0.3
#: the scalar metrics averaged by :func:`mean_metrics` (beside ``aupro``, a dict per limit)
MEAN_KEYS: tuple[str, ...] = (*(k for k, _ in VITAD_METRICS), "mad", "ap_image",
                              "f1_max_image", "ap_pixel", "f1_max_pixel")


def mad(metrics: Mapping[str, Any]) -> float:
    """mAD: the mean of the seven :data:`VITAD_METRICS` values of ``metrics``.

    Raises:
        InvalidInputError: one of the seven keys is missing or not a number.

    Example:
        >>> mad({k: 0.5 for k, _ in VITAD_METRICS})
        0.5
    """
    vals = []
    for key, _ in VITAD_METRICS:
        v = metrics.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidInputError(f"mAD: metric {key!r} is missing or not a number ({v!r})")
        vals.append(float(v))
    return float(np.mean(vals))


def vitad_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """ViTAD's seven metrics and mAD from :func:`pcad.metrics.evaluate`'s keys (``i_auroc``,
    ``ap_image``, ``f1_max_image``, ``p_auroc``, ``ap_pixel``, ``f1_max_pixel`` and
    ``aupro["0.3"]``).

    Example:
        >>> m = {"i_auroc": 1.0, "ap_image": 1.0, "f1_max_image": 1.0, "p_auroc": 1.0,
        ...      "ap_pixel": 0.5, "f1_max_pixel": 0.5, "aupro": {"0.3": 1.0}}
        >>> vitad_metrics(m)["mad"]
        0.8571428571428571
    """
    try:
        out = {"i_auroc": float(metrics["i_auroc"]), "i_ap": float(metrics["ap_image"]),
               "i_f1_max": float(metrics["f1_max_image"]),
               "p_auroc": float(metrics["p_auroc"]), "p_ap": float(metrics["ap_pixel"]),
               "p_f1_max": float(metrics["f1_max_pixel"]),
               "aupro_0.3": float(metrics["aupro"][str(VITAD_AUPRO_LIMIT)])}
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"ViTAD metrics: the evaluation lacks {exc}") from None
    out["mad"] = mad(out)
    return out


def mean_metrics(blocks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The mean over categories of every :data:`MEAN_KEYS` metric the blocks all hold, and
    ``aupro`` averaged per FPR limit they all hold; ``n_test`` and ``n_anomalous`` summed.

    Args:
        blocks: ``{category: metrics}``, e.g. :func:`pcad.metrics.evaluate` outputs; at least
            one.

    Example:
        >>> mean_metrics({"a": {"i_auroc": 1.0, "aupro": {"0.3": 1.0}, "n_test": 4},
        ...               "b": {"i_auroc": 0.5, "aupro": {"0.3": 0.5}, "n_test": 6}})
        {'i_auroc': 0.75, 'aupro': {'0.3': 0.75}, 'n_test': 10}
    """
    if not blocks:
        raise InvalidInputError("mean_metrics: no category to average")
    ms = list(blocks.values())
    out: dict[str, Any] = {}
    for key in MEAN_KEYS:
        vals = [m.get(key) for m in ms]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[key] = float(np.mean(vals))
    aupros = [m.get("aupro") if isinstance(m.get("aupro"), Mapping) else {} for m in ms]
    limits = [k for k in aupros[0] if all(isinstance(a.get(k), (int, float)) for a in aupros)]
    if limits:
        out["aupro"] = {k: float(np.mean([a[k] for a in aupros])) for k in limits}
    for key in ("n_test", "n_anomalous"):
        if all(isinstance(m.get(key), int) for m in ms):
            out[key] = int(sum(m[key] for m in ms))
    return out
