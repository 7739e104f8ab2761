"""Plotly figures of point clouds coloured by a per-point value, written as offline HTML.

Example:
    >>> import numpy as np
    >>> from viz.clouds import cloud_figure
    >>> p = np.random.default_rng(0).normal(size=(100, 3))
    >>> fig = cloud_figure(p, values=p[:, 2], title="z")
    >>> len(fig.data)
    1
    >>> v = p[:, 0].copy(); v[:3] = np.nan
    >>> [t.name for t in cloud_figure(p, v).data]
    ['value', 'NaN (3)']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from pcad.checks import check_points, check_values
from pcad.errors import InvalidInputError
from viz.colors import NAN_COLOUR, finite_range
from viz.html import save_html

__all__ = ["NAN_COLOUR", "cloud_figure", "cloud_traces", "display_subset", "save_html"]

AXES = {"x": 0, "y": 1, "z": 2}


def display_subset(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` points, drawn with ``seed`` (display
    only; the data are never downsampled)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def as_f32(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous float32 array (a copy unless it already is one): plotly 7 writes
    numpy arrays as base64 typed arrays, 4 bytes a value."""
    return np.ascontiguousarray(a, dtype=np.float32)


def cloud_traces(points: np.ndarray, values: np.ndarray | None, *, name: str = "value",
                 colorscale: str = "Viridis", point_size: float = 2.0,
                 cmin: float | None = None, cmax: float | None = None,
                 showscale: bool = True, colour: str = "steelblue",
                 scene: str | None = None) -> list[go.Scatter3d]:
    """Scatter3d traces of already checked, already subsampled ``points (n, 3)``.

    Finite values go through ``colorscale``; NaN/inf values get their own magenta trace named
    ``NaN (k)`` (so they are visible and listed in the legend instead of breaking the colours).
    """
    common = {"mode": "markers", "hoverinfo": "x+y+z+text" if values is not None else "x+y+z"}
    if scene:
        common["scene"] = scene
    if values is None:
        return [go.Scatter3d(x=as_f32(points[:, 0]), y=as_f32(points[:, 1]), z=as_f32(points[:, 2]),
                             name=name, marker=dict(size=point_size, color=colour), **common)]
    ok = np.isfinite(values)
    lo, hi = finite_range(values, cmin, cmax)
    p = points[ok]
    traces = [go.Scatter3d(
        x=as_f32(p[:, 0]), y=as_f32(p[:, 1]), z=as_f32(p[:, 2]), name=name, **common,
        marker=dict(size=point_size, color=as_f32(values[ok]), colorscale=colorscale, cmin=lo,
                    cmax=hi, showscale=showscale, colorbar=dict(title=dict(text=name))))]
    if not ok.all():
        q = points[~ok]
        traces.append(go.Scatter3d(
            x=as_f32(q[:, 0]), y=as_f32(q[:, 1]), z=as_f32(q[:, 2]),
            name=f"NaN ({int((~ok).sum())})",
            marker=dict(size=point_size + 1, color=NAN_COLOUR), **common))
    return traces


def cloud_figure(points: Any, values: Any = None, *, title: str = "", colorscale: str = "Viridis",
                 max_points: int = 60000, point_size: float = 2.0, value_name: str = "value",
                 cmin: float | None = None, cmax: float | None = None,
                 seed: int = 0) -> go.Figure:
    """A 3D scatter of ``points (N, 3)`` coloured by ``values``.

    Args:
        points: ``(N, 3)`` finite coordinates, ``N >= 1`` (an empty cloud is an error).
        values: ``(N,)`` numbers (NaN and inf are drawn in magenta as a separate trace),
            ``"x"``, ``"y"`` or ``"z"`` for a coordinate, or None for one colour.
        max_points: at most this many points are drawn (a seeded subset, display only).
        cmin, cmax: colour range (default: the finite range of the values).

    Raises:
        InvalidInputError: a wrong shape, NaN coordinates, an empty cloud, or a number of
            values that differs from the number of points.
    """
    pts = check_points(points, "points", min_points=1)
    if isinstance(values, str):
        if values not in AXES:
            raise InvalidInputError(
                f"values: expected an array or one of 'x', 'y', 'z', got {values!r}")
        value_name = values if value_name == "value" else value_name
        values = pts[:, AXES[values]]
    v = None if values is None else check_values(values, len(pts))
    idx = display_subset(len(pts), max_points, seed)
    traces = cloud_traces(pts[idx], None if v is None else v[idx], name=value_name,
                          colorscale=colorscale, point_size=point_size,
                          cmin=cmin if v is None else finite_range(v, cmin, cmax)[0],
                          cmax=cmax if v is None else finite_range(v, cmin, cmax)[1])
    if v is None:
        traces[0].name = "points"
    fig = go.Figure(traces)
    fig.update_layout(title=title, scene=dict(aspectmode="data"), legend=dict(x=0, y=1),
                      margin=dict(l=0, r=0, t=40 if title else 0, b=0))
    return fig
