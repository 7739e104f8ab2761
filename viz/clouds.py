"""Plotly figures of point clouds coloured by a per-point value, written as offline HTML.

Example:
    >>> import numpy as np
    >>> from viz.clouds import cloud_figure
    >>> p = np.random.default_rng(0).normal(size=(100, 3))
    >>> fig = cloud_figure(p, values=p[:, 2], title="z")
    >>> len(fig.data)
    1
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import plotly.graph_objects as go

from pcad.checks import check_points
from pcad.errors import InvalidInputError
from pcad.io import atomic_write

NAN_COLOUR = "rgb(255,0,255)"


def display_subset(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` points, drawn with ``seed`` (display
    only; the data are never downsampled)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def cloud_figure(points: Any, values: Any = None, *, title: str = "", colorscale: str = "Viridis",
                 max_points: int = 60000, point_size: float = 2.0,
                 value_name: str = "value") -> go.Figure:
    """A 3D scatter of ``points (N, 3)`` coloured by ``values (N,)`` (NaN shown in magenta).

    At most ``max_points`` points are drawn (a seeded subset, for display only).
    """
    pts = check_points(points, "points", min_points=1)
    idx = display_subset(len(pts), max_points)
    p = pts[idx]
    traces = []
    if values is None:
        traces.append(go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers",
                                   marker=dict(size=point_size, color="steelblue"), name="points"))
    else:
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (len(pts),):
            raise InvalidInputError(f"values: expected shape ({len(pts)},), got {v.shape}")
        v = v[idx]
        ok = np.isfinite(v)
        traces.append(go.Scatter3d(
            x=p[ok, 0], y=p[ok, 1], z=p[ok, 2], mode="markers", name=value_name,
            marker=dict(size=point_size, color=v[ok], colorscale=colorscale, showscale=True,
                        colorbar=dict(title=value_name))))
        if not ok.all():
            traces.append(go.Scatter3d(x=p[~ok, 0], y=p[~ok, 1], z=p[~ok, 2], mode="markers",
                                       name="NaN", marker=dict(size=point_size, color=NAN_COLOUR)))
    fig = go.Figure(traces)
    fig.update_layout(title=title, scene=dict(aspectmode="data"),
                      margin=dict(l=0, r=0, t=40 if title else 0, b=0))
    return fig


def save_html(fig: go.Figure, path: str | os.PathLike[str]) -> None:
    """Write ``fig`` as self-contained HTML (plotly.js embedded: works offline), atomically."""
    html = fig.to_html(include_plotlyjs=True, full_html=True)
    with atomic_write(path, "w") as fh:
        fh.write(html)
