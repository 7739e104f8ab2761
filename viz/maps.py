"""Anomaly maps: on organized and unorganized clouds (3D), and as image overlays with the gt.

Example:
    >>> import numpy as np
    >>> from viz.maps import overlay_image
    >>> rgb = np.zeros((8, 8, 3), np.uint8); amap = np.random.default_rng(0).random((4, 4))
    >>> gt = np.zeros((8, 8), bool); gt[2:6, 2:6] = True
    >>> overlay_image(rgb, amap, gt).shape
    (8, 8, 3)
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import ndimage

from pcad.checks import check_image, check_organized, check_points, check_values, valid_pixels
from pcad.errors import InvalidInputError
from viz.clouds import display_subset
from viz.colors import GT_RGB, MAP_CMAP, colorize, finite_range


def anomaly_map_figure(points: Any, scores: Any, gt: Any = None, *, title: str = "",
                       max_points: int = 60000, colorscale: str = "Inferno",
                       vmin: float | None = None, vmax: float | None = None,
                       point_size: float = 2.5, seed: int = 0,
                       value_name: str = "anomaly score", normals: Any = None) -> go.Figure:
    """A part coloured by its anomaly scores and lit, the ground truth in cyan, the camera
    fitted to the part.

    An organized cloud is drawn as a shaded surface (:func:`viz.view3d.grid_surface`: at most
    ``max_points`` vertices, each the maximum of its block, seen from the sensor); an
    unorganized one as shaded points (:func:`viz.view3d.shaded_point_traces`, ``normals``
    estimated when not given; a seeded subset of ``max_points``). The colour range is that of
    all values unless ``vmin``/``vmax`` are given.

    Args:
        points: ``(N, 3)`` cloud with ``scores (N,)`` and ``gt (N,)``, or an organized
            ``(H, W, 3)`` cloud with ``scores (H, W)`` and ``gt (H, W)`` (only measured pixels
            are drawn; ``(0, 0, 0)`` pixels are not).
        scores: anomaly scores; NaN is drawn in magenta.
        gt: optional ground truth, anomalous where > 0.
        normals: optional ``(N, 3)`` normals of an unorganized cloud (shading only).

    Raises:
        InvalidInputError: shapes that do not match, NaN coordinates, an empty cloud.
    """
    from viz.view3d import (
        SENSOR_VIEW,
        fitted_scene,
        grid_surface,
        gt_traces,
        nan_markers,
        shaded_point_traces,
    )

    arr = np.asarray(points)
    s = np.asarray(scores)
    if arr.ndim == 3:
        xyz = check_organized(arr, "points")
        if s.shape != xyz.shape[:2]:
            raise InvalidInputError(f"scores: an organized cloud of shape {xyz.shape} needs a map "
                                    f"of shape {xyz.shape[:2]}, got {s.shape}")
        valid = valid_pixels(xyz)
        if not valid.any():
            raise InvalidInputError("points: the organized cloud has no valid pixel")
        pts = xyz[valid]
        v = check_values(s[valid], len(pts), "scores")
        g = None
        if gt is not None:
            gm = np.asarray(gt)
            if gm.shape != xyz.shape[:2]:
                raise InvalidInputError(f"gt: expected shape {xyz.shape[:2]}, got {gm.shape}")
            g = gm[valid] > 0
        lo, hi = finite_range(v, vmin, vmax)
        try:
            traces: list[Any] = [grid_surface(xyz, s, colorscale=colorscale, cmin=lo, cmax=hi,
                                              max_vertices=max_points, name=value_name)]
        except InvalidInputError:  # isolated pixels only: shaded points instead
            traces = shaded_point_traces(pts, v, colorscale=colorscale, cmin=lo, cmax=hi,
                                         point_size=point_size, name=value_name,
                                         light=SENSOR_VIEW["view"])
        traces += nan_markers(pts, v, size=point_size + 1)
        scene = fitted_scene(pts, **SENSOR_VIEW)
        idx = np.arange(len(pts))
    else:
        pts = check_points(arr, "points", min_points=1)
        v = check_values(s, len(pts), "scores")
        g = None
        if gt is not None:
            g = check_values(gt, len(pts), "gt") > 0
        nrm = None
        if normals is not None:
            nrm = np.asarray(normals, dtype=np.float64)
            if nrm.shape != pts.shape:
                raise InvalidInputError(f"normals: expected {pts.shape}, got {nrm.shape}")
        idx = display_subset(len(pts), max_points, seed)
        lo, hi = finite_range(v, vmin, vmax)  # range of all points, not only the shown ones
        scene = fitted_scene(pts)
        view = scene["camera"]["eye"]
        traces = shaded_point_traces(pts[idx], v[idx], normals=None if nrm is None else nrm[idx],
                                     colorscale=colorscale, cmin=lo, cmax=hi,
                                     point_size=point_size, name=value_name,
                                     light=(view["x"], view["y"], view["z"]))
        traces += nan_markers(pts[idx], v[idx], size=point_size + 1)
    fig = go.Figure(traces)
    if g is not None:
        for tr in gt_traces(pts[idx][g[idx]], total=int(g.sum()), size=point_size + 1.5):
            fig.add_trace(tr)
    fig.update_layout(title=title, scene=scene, legend=dict(x=0, y=1),
                      margin=dict(l=0, r=0, t=40 if title else 0, b=0))
    return fig


def resize_map(amap: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """``amap (h, w)`` resized to ``shape (H, W)`` (bilinear, or nearest), float32."""
    from PIL import Image

    a = np.asarray(amap, dtype=np.float32)
    if a.shape == tuple(shape):
        return a
    out = Image.fromarray(a).resize((shape[1], shape[0]),
                    Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def gt_contour(mask: Any, thickness: int = 1) -> np.ndarray:
    """``(H, W) bool``: the border pixels of a mask (anomalous where > 0), ``thickness``
    pixels wide, on the inside of the regions."""
    m = np.asarray(mask) > 0
    if not m.any():
        return m
    inner = ndimage.binary_erosion(m, iterations=max(1, thickness), border_value=0)
    return m & ~inner


def overlay_image(rgb: Any = None, anomaly_map: Any = None, gt: Any = None, *,
                  alpha: float = 0.75, cmap: str = MAP_CMAP, vmin: float | None = None,
                  vmax: float | None = None, contour_rgb: tuple[int, int, int] = GT_RGB,
                  thickness: int | None = None) -> np.ndarray:
    """``(H, W, 3) uint8``: the RGB image, the anomaly map blended over it in ``cmap``
    colours, and the ground-truth contour on top.

    Over an RGB image the map's weight grows with its value (``alpha * sqrt(t)`` for ``t`` the
    value scaled to [0, 1] by ``vmin``/``vmax``): low scores leave the image visible, high
    scores cover it. Without an RGB image the map is drawn opaque.

    Any of the three may be None (at least one must be given). The output has the RGB's size
    (else the gt's, else the map's); the map is resized bilinearly and the gt by nearest
    neighbour when their sizes differ. NaN in the map is drawn in magenta.
    """
    if rgb is None and anomaly_map is None and gt is None:
        raise InvalidInputError("overlay_image: give at least one of rgb, anomaly_map, gt")
    img = None
    if rgb is not None:
        img = check_image(rgb, "rgb", ndim=(2, 3))
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.shape[2] == 4:
            img = img[..., :3]
        if img.shape[2] != 3:
            raise InvalidInputError(f"rgb: expected (H, W, 3), got {img.shape}")
        if img.dtype != np.uint8:
            f = img.astype(np.float64)
            img = np.clip(f * (255.0 if f.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    g = None if gt is None else check_image(gt, "gt") > 0
    a = None if anomaly_map is None else check_image(anomaly_map, "anomaly_map").astype(
        np.float64)
    shape = (img.shape[:2] if img is not None else g.shape if g is not None else a.shape)
    out = img.astype(np.float64) if img is not None else np.full((*shape, 3), 255.0)
    if a is not None:
        if a.shape != shape:
            nan = ~np.isfinite(a)
            a = resize_map(np.where(nan, 0.0, a), shape).astype(np.float64)
            if nan.any():
                a[resize_map(nan.astype(np.float32), shape, nearest=True) > 0] = np.nan
        heat = colorize(a, cmap, vmin, vmax).astype(np.float64)
        if img is not None:
            lo, hi = finite_range(a, vmin, vmax)
            t = np.clip((np.nan_to_num(a, nan=hi) - lo) / (hi - lo), 0.0, 1.0)
            w = (alpha * np.sqrt(t))[..., None]
        else:
            w = 1.0
        out = (1.0 - w) * out + w * heat
    if g is not None:
        if g.shape != shape:
            g = resize_map(g.astype(np.float32), shape, nearest=True) > 0
        t = thickness or max(1, round(max(shape) / 256))
        out[gt_contour(g, t)] = contour_rgb
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an ``(H, W, 3) uint8`` image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_data_uri(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an ``(H, W, 3) uint8`` image (for ``<img>`` and
    plotly's ``go.Image(source=...)``: compact, and offline)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def overlay_figure(rgb: Any = None, anomaly_map: Any = None, gt: Any = None, *,
                   title: str = "", cmap: str = MAP_CMAP, vmin: float | None = None,
                   vmax: float | None = None, alpha: float = 0.75) -> go.Figure:
    """Side by side: the RGB with the gt contour, and the anomaly map over the RGB with the
    gt contour (see :func:`overlay_image`). Images are embedded as PNG."""
    left = overlay_image(rgb, None, gt) if (rgb is not None or gt is not None) else None
    right = overlay_image(rgb, anomaly_map, gt, alpha=alpha, cmap=cmap, vmin=vmin,
                          vmax=vmax) if anomaly_map is not None else None
    panels = [(n, im) for n, im in (("RGB + gt contour", left),
                                    ("anomaly map + gt contour", right)) if im is not None]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[n for n, _ in panels],
                        horizontal_spacing=0.03)
    for k, (_, im) in enumerate(panels):
        fig.add_trace(go.Image(source=png_data_uri(im), hoverinfo="x+y"), row=1, col=k + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    h, w = panels[0][1].shape[:2]
    fig.update_layout(title=title, margin=dict(l=0, r=0, t=60 if title else 30, b=0),
                      height=int(min(700, max(260, 420 * h / max(w, 1)))) + 60)
    return fig
