"""Before/after figure of one synthesized defect: displacement colours and the gt mask.

Example:
    >>> import numpy as np
    >>> from synth import apply_defect
    >>> from viz.defects import defect_figure
    >>> p = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    >>> r = apply_defect(p, "bump", seed=0)
    >>> fig = defect_figure(p, r)
    >>> [t.name.split(" (")[0] for t in fig.data]
    ['before', '|offset| / diagonal', 'ground truth']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pcad.checks import check_organized, check_points, valid_pixels
from pcad.errors import InvalidInputError
from viz.clouds import as_f32, cloud_traces, display_subset
from viz.colors import GT_COLOUR

REMOVED_COLOUR = "rgb(230,30,30)"


def flatten_cloud(points: Any, name: str = "points") -> tuple[np.ndarray, np.ndarray]:
    """``(points (M, 3) float32, ids (M,) int64)`` of a cloud ``(N, 3)`` (ids ``0..N-1``) or
    of the valid pixels of an organized ``(H, W, 3)`` cloud (ids: flat pixel indices)."""
    arr = np.asarray(points)
    if arr.ndim == 3:
        xyz = check_organized(arr, name)
        ids = np.flatnonzero(valid_pixels(xyz))
        if ids.size == 0:
            raise InvalidInputError(f"{name}: the organized cloud has no valid pixel")
        return xyz.reshape(-1, 3)[ids], ids
    pts = check_points(arr, name, min_points=1)
    return pts, np.arange(len(pts))


def result_cloud(result: Any, n_input: int | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray, np.ndarray]:
    """``(points, ids, offsets, mask)`` of a :class:`synth.DefectResult`, flattened like
    :func:`flatten_cloud`; ids of an unorganized result index the *input* cloud (removed
    points skipped), so the same input point has the same id before and after."""
    if result.organized:
        valid = valid_pixels(result.points)  # removed pixels are zeros: not drawn
        ids = np.flatnonzero(valid)
        return (result.points.reshape(-1, 3)[ids], ids, result.offsets.reshape(-1, 3)[ids],
                result.mask.reshape(-1)[ids])
    m = len(result.points)
    n = m + len(result.removed) if n_input is None else n_input
    if n - len(result.removed) != m:
        raise InvalidInputError(f"result: {m} points after removing {len(result.removed)} do not "
                                f"come from an input of {n} points")
    keep = np.ones(n, bool)
    keep[result.removed] = False
    return result.points, np.flatnonzero(keep), result.offsets, result.mask


def defect_figure(before: Any, result: Any, *, title: str | None = None,
                  max_points: int = 20000, colorscale: str = "Inferno",
                  point_size: float = 2.0, seed: int = 0) -> go.Figure:
    """Two linked 3D panes: the input cloud, and the defective cloud coloured by its
    displacement (``|offset|`` over the bbox diagonal) with the ground truth as outlined
    markers (toggle it in the legend). Removed points (holes) are red in the left pane.

    Args:
        before: the cloud given to :func:`synth.apply_defect`: ``(N, 3)`` or ``(H, W, 3)``.
        result: its :class:`synth.DefectResult`.
        max_points: display subset size; the same input points are drawn in both panes.
    """
    b_pts, b_ids = flatten_cloud(before, "before")
    organized_in = np.asarray(before).ndim == 3
    if organized_in != result.organized:
        raise InvalidInputError("result: an organized result needs the organized input (and "
                                "an unorganized one the (N, 3) input)")
    a_pts, a_ids, off, mask = result_cloud(result, None if organized_in else len(b_pts))
    if organized_in and result.points.shape != np.asarray(before).shape:
        raise InvalidInputError(f"result: grid {result.points.shape} differs from the input's "
                                f"{np.asarray(before).shape}")
    diag = float(result.params.get("diag") or 0.0)
    disp = np.linalg.norm(off.astype(np.float64), axis=1)
    label = "|offset| / diagonal" if diag > 0 else "|offset|"
    if diag > 0:
        disp = disp / diag
    shown = b_ids[display_subset(len(b_ids), max_points, seed)]
    sel_b = np.isin(b_ids, shown)
    sel_a = np.isin(a_ids, shown)
    removed = sel_b & ~np.isin(b_ids, a_ids)

    name = result.params.get("defect", "defect")
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "scene"}, {"type": "scene"}]],
                        horizontal_spacing=0.02,
                        subplot_titles=("before", f"after: {name} (colour = displacement)"))
    for tr in cloud_traces(b_pts[sel_b & ~removed], None, name="before", colour="#7f9fbf",
                           point_size=point_size, scene="scene"):
        fig.add_trace(tr)
    if removed.any():
        q = b_pts[removed]
        n_removed = int(np.isin(b_ids, a_ids, invert=True).sum())
        fig.add_trace(go.Scatter3d(x=as_f32(q[:, 0]), y=as_f32(q[:, 1]), z=as_f32(q[:, 2]),
                                   mode="markers", scene="scene", name=f"removed ({n_removed})",
                                   marker=dict(size=point_size + 1, color=REMOVED_COLOUR)))
    hi = float(disp.max()) if disp.size and disp.max() > 0 else 1.0
    for tr in cloud_traces(a_pts[sel_a], disp[sel_a], name=label, colorscale=colorscale,
                           point_size=point_size, cmin=0.0, cmax=hi, scene="scene2"):
        fig.add_trace(tr)
    g = a_pts[sel_a & mask]
    fig.add_trace(go.Scatter3d(
        x=as_f32(g[:, 0]), y=as_f32(g[:, 1]), z=as_f32(g[:, 2]), mode="markers", scene="scene2",
        name=f"ground truth ({int(mask.sum())} of {len(mask)})", opacity=0.35,
        marker=dict(size=point_size + 2, color=GT_COLOUR, symbol="circle-open")))
    n_anom = int(mask.sum())
    fig.update_layout(
        title=title if title is not None else
        f"{name}: {n_anom} of {len(mask)} {'pixels' if result.organized else 'points'} "
        f"anomalous, max displacement {hi:.4g}{' x diag' if diag > 0 else ''}",
        legend=dict(x=0, y=0, orientation="h"), margin=dict(l=0, r=0, t=60, b=0),
        height=560, uirevision="defect")
    from viz.view3d import SENSOR_VIEW, fitted_scene

    scene = fitted_scene(np.concatenate([b_pts, a_pts]), **(SENSOR_VIEW if organized_in else {}))
    fig.update_layout(scene=scene, scene2=scene)
    return fig


def defect_selector_figure(results: dict[str, Any], *, title: str = "",
                           max_points: int = 20000, colorscale: str = "YlOrRd",
                           point_size: float = 3.0, seed: int = 0) -> go.Figure:
    """One large view of several defects of the same unorganized part (``{name:
    DefectResult}``), a dropdown picks the defect: shaded points coloured by the displacement
    (``|offset|`` over the bbox diagonal; the default sequential scale starts light, so the
    shading of the undisplaced part shows), the ground truth in cyan, the camera fitted to the
    part (all defects share it).

    Example:
        >>> from synth import apply_defect
        >>> p = np.random.default_rng(0).normal(size=(400, 3)).astype(np.float32)
        >>> res = {d: apply_defect(p, d, normals=p, seed=0) for d in ("bump", "dent")}
        >>> fig = defect_selector_figure(res, title="ball")
        >>> [b.label for b in fig.layout.updatemenus[0].buttons]
        ['bump', 'dent']
    """
    from viz.view3d import fitted_scene, gt_traces, selector_figure, shaded_point_traces

    if not results:
        raise InvalidInputError("defect_selector_figure: no defect result")
    if any(r.organized for r in results.values()):
        raise InvalidInputError("defect_selector_figure: unorganized results only (use "
                                "defect_figure for a scan)")
    scene = fitted_scene(np.concatenate([r.points for r in results.values()]))
    eye = scene["camera"]["eye"]
    views = []
    for name, r in results.items():
        diag = float(r.params.get("diag") or 0.0)
        disp = np.linalg.norm(r.offsets.astype(np.float64), axis=1) / (diag if diag > 0 else 1)
        idx = display_subset(len(r.points), max_points, seed)
        hi = float(disp.max()) if disp.size and disp.max() > 0 else 1.0
        label = "|offset| / diagonal" if diag > 0 else "|offset|"
        traces = shaded_point_traces(r.points[idx], disp[idx], normals=r.normals[idx],
                                     colorscale=colorscale, cmin=0.0, cmax=hi,
                                     point_size=point_size, name=label,
                                     light=(eye["x"], eye["y"], eye["z"]))
        traces += gt_traces(r.points[r.mask], size=point_size + 1.5)  # every gt point
        n = len(r.removed)
        views.append((f"{name}: {int(r.mask.sum())} of {len(r.mask)} points anomalous"
                      + (f", {n} removed" if n else ""), traces))
    fig = selector_figure(views, scene, title=title)
    for b, name in zip(fig.layout.updatemenus[0].buttons if len(views) > 1 else [],
                       results, strict=False):
        b.label = name
    return fig
