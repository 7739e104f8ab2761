"""ROC and PRO curves as plotly figures (exact curves from :mod:`pcad.metrics`).

Example:
    >>> from viz.curves import roc_curve
    >>> fpr, tpr = roc_curve([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from pcad.errors import InvalidInputError

#: Curves are thinned to about this many points for display (the metrics use all of them).
MAX_CURVE_POINTS = 2000


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Exact ROC ``(fpr, tpr)`` framed by ``(0, 0)``: one point per distinct score, ties
    merged (``score >= t`` is anomalous; labels anomalous where > 0).

    Raises:
        InvalidInputError: NaN scores, mismatched lengths, or only one class.
    """
    from pcad.checks import check_labels, check_scores
    from pcad.metrics.classification import require_classes
    from pcad.metrics.ranking import ranked_counts

    s = check_scores(scores, "scores")
    y = check_labels(labels, len(s), "labels")
    n_pos = int(y.sum())
    require_classes(n_pos, len(y) - n_pos, "ROC")
    _, tps, fps = ranked_counts(s, y)
    return (np.concatenate(([0.0], fps / (len(y) - n_pos))),
            np.concatenate(([0.0], tps / n_pos)))


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int = MAX_CURVE_POINTS
               ) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``max_points`` points of a monotone curve: the first and last points and
    the ends of its runs through a grid of ``max_points / 4`` cells per axis (the drawn shape
    does not change visibly)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) <= max_points:
        return x, y
    cells = max(1, max_points // 4)  # a monotone curve crosses at most 2 * cells cells
    keep = np.zeros(len(x), bool)
    keep[[0, -1]] = True
    q = np.floor(x * cells) * (cells + 2) + np.floor(y * cells)
    keep[1:] |= q[1:] != q[:-1]
    keep[:-1] |= q[1:] != q[:-1]
    return x[keep], y[keep]


def _as_groups(scores: Any, labels: Any) -> dict[str, tuple[Any, Any]]:
    if isinstance(scores, Mapping):
        if labels is not None:
            raise InvalidInputError("labels: give labels inside the mapping "
                                    "({name: (scores, labels)}) or not at all")
        return dict(scores)
    return {"all": (scores, labels)}


def roc_figure(scores: Any, labels: Any = None, *, title: str = "Image-level ROC") -> go.Figure:
    """ROC curves with their AUROC in the legend.

    Args:
        scores: ``(N,)`` scores with ``labels (N,)``, or ``{name: (scores, labels)}`` for one
            curve per group (e.g. per category). Groups with one class only are listed in the
            legend as undefined instead of failing the figure.
    """
    from pcad.metrics import auroc

    fig = go.Figure()
    for name, (s, y) in _as_groups(scores, labels).items():
        try:
            fpr, tpr = roc_curve(s, y)
        except InvalidInputError as exc:
            if len(_as_groups(scores, labels)) == 1:
                raise
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines",
                                     name=f"{name}: undefined ({str(exc).split(';')[0]})"))
            continue
        fx, fy = thin_curve(fpr, tpr)
        fig.add_trace(go.Scatter(x=fx, y=fy, mode="lines", line=dict(shape="linear"),
                                 name=f"{name}: AUROC {auroc(s, y):.3f}"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line=dict(dash="dot", color="#999"), hoverinfo="skip"))
    fig.update_layout(title=title, xaxis=dict(title="false positive rate", range=[0, 1]),
                      yaxis=dict(title="true positive rate", range=[0, 1.02]),
                      height=420, margin=dict(l=60, r=10, t=50, b=50),
                      legend=dict(x=0.98, y=0.02, xanchor="right", yanchor="bottom"))
    return fig


def pro_figure(anomaly_maps: Any, gt_masks: Any = None, *, fpr_limit: float = 0.3,
               title: str | None = None) -> go.Figure:
    """PRO curves (per-region overlap against FPR, exact: :func:`pcad.metrics.pro_curve`)
    drawn up to ``min(1, 3 * fpr_limit)``, the integration limit marked, AUPRO in the legend.

    Args:
        anomaly_maps: sequence of ``(H, W)`` maps with ``gt_masks``, or
            ``{name: (maps, masks)}`` for one curve per group.
    """
    from pcad.checks import check_limit
    from pcad.metrics import aupro, pro_curve

    limit = check_limit(fpr_limit)
    if isinstance(anomaly_maps, Mapping):
        groups = dict(anomaly_maps)
        if gt_masks is not None:
            raise InvalidInputError("gt_masks: give masks inside the mapping or not at all")
    else:
        groups = {"all": (anomaly_maps, gt_masks)}
    fig = go.Figure()
    for name, (maps, masks) in groups.items():
        maps = list(maps) if isinstance(maps, Sequence) else maps
        try:
            fprs, pros = pro_curve(maps, masks)
        except InvalidInputError as exc:
            if len(groups) == 1:
                raise
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines",
                                     name=f"{name}: undefined ({str(exc).split(';')[0]})"))
            continue
        fx, fy = thin_curve(fprs, pros)
        fig.add_trace(go.Scatter(x=fx, y=fy, mode="lines",
                                 name=f"{name}: AUPRO@{limit:g} {aupro(maps, masks, limit):.3f}"))
    fig.add_vline(x=limit, line=dict(dash="dash", color="#888"),
                  annotation_text=f"FPR limit {limit:g}", annotation_position="top left")
    fig.update_layout(title=title or "Per-region overlap (PRO)",
                      xaxis=dict(title="false positive rate", range=[0, min(1.0, 3 * limit)]),
                      yaxis=dict(title="per-region overlap", range=[0, 1.02]), height=420,
                      margin=dict(l=60, r=10, t=50, b=50),
                      legend=dict(x=0.98, y=0.02, xanchor="right", yanchor="bottom"))
    return fig
