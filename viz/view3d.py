"""3D views an inspector can read: shaded surfaces and shaded points, fitted cameras, one large
view with a selector.

- :func:`grid_surface`: an organized ``(H, W, 3)`` scan as a lit ``Mesh3d`` surface (neighbouring
  measured pixels joined, depth jumps left open) coloured by a per-pixel value.
- :func:`shaded_point_traces`: an unorganized cloud as points coloured by a value and darkened
  by a headlight on their normals (estimated when not given), with a colour bar.
- :func:`gt_traces`: the ground truth as markers in :data:`viz.colors.GT_COLOUR`, a colour in
  none of the perceptual maps used (inferno, viridis).
- :func:`fitted_scene`: axis ranges, aspect ratio and a camera that frame the whole part.
- :func:`selector_figure`: several views in one large scene, a dropdown picks the one shown.

Example:
    >>> import numpy as np
    >>> from viz.view3d import fitted_scene, grid_surface
    >>> yy, xx = np.mgrid[:6, :8].astype(np.float32)
    >>> xyz = np.stack([xx, yy, np.ones_like(xx)], -1)
    >>> mesh = grid_surface(xyz, xx)
    >>> mesh.type, len(mesh.i)  # 5 x 7 quads, 2 triangles each
    ('mesh3d', 70)
    >>> sorted(fitted_scene(xyz.reshape(-1, 3))["camera"])
    ['center', 'eye', 'up']
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

from pcad.checks import valid_pixels
from pcad.errors import InvalidInputError
from viz.clouds import as_f32
from viz.colors import GT_COLOUR, NAN_COLOUR, colorize, finite_range, plotly_colorscale

#: Lighting of shaded surfaces: enough ambient light that the colours stay readable.
LIGHTING = dict(ambient=0.55, diffuse=0.6, specular=0.12, roughness=0.7, fresnel=0.1)
#: Plotly's perspective camera opens about 45 degrees vertically.
FOV_DEG = 45.0


def _block_reduce(a: np.ndarray, stride: int, how: str) -> np.ndarray:
    """``a (H, W, ...)`` reduced over ``stride x stride`` blocks (``max`` or ``any``)."""
    if stride == 1:
        return a
    h, w = a.shape[:2]
    hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
    fill = -np.inf if how == "max" else False
    pad = np.full((hp, wp), fill, dtype=np.float64 if how == "max" else bool)
    pad[:h, :w] = a
    blocks = pad.reshape(hp // stride, stride, wp // stride, stride)
    if how == "any":
        return blocks.any(axis=(1, 3))
    out = blocks.max(axis=(1, 3))
    out[~np.isfinite(out)] = np.nan
    return out


def grid_surface(xyz: np.ndarray, values: np.ndarray, *, colorscale: str = "Inferno",
                 cmin: float | None = None, cmax: float | None = None,
                 max_vertices: int = 60000, name: str = "anomaly score",
                 showscale: bool = True, jump: float = 4.0) -> go.Mesh3d:
    """A lit ``Mesh3d`` of the organized cloud ``xyz (H, W, 3)`` coloured by ``values (H, W)``.

    The grid is taken every ``stride`` pixels so that at most ``max_vertices`` vertices are
    drawn; each vertex gets the *maximum* value of its block (a small defect stays visible).
    Triangles join measured pixels (not ``(0, 0, 0)``) whose edges are at most ``jump`` times
    the median neighbour spacing, so depth discontinuities stay open. NaN values are drawn at
    the low end of the scale (list them with :func:`nan_markers`).

    Raises:
        InvalidInputError: shapes that differ, or no triangle to draw.
    """
    xyz = np.asarray(xyz, dtype=np.float32)
    v = np.asarray(values, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[2] != 3 or v.shape != xyz.shape[:2]:
        raise InvalidInputError(f"grid_surface: expected xyz (H, W, 3) and values (H, W), got "
                                f"{xyz.shape} and {v.shape}")
    valid = valid_pixels(xyz)
    stride = max(1, math.ceil(math.sqrt(int(valid.sum()) / max(max_vertices, 1))))
    vals = _block_reduce(np.where(valid, v, np.nan), stride, "max")
    pts = xyz[::stride, ::stride]
    ok = valid[::stride, ::stride]
    vals = vals[:pts.shape[0], :pts.shape[1]]
    h, w = ok.shape
    ids = np.full((h, w), -1, np.int64)
    ids[ok] = np.arange(int(ok.sum()))
    a, b = ids[:-1, :-1], ids[:-1, 1:]
    c, d = ids[1:, :-1], ids[1:, 1:]
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                           np.stack([b, d, c], -1).reshape(-1, 3)])
    tris = tris[(tris >= 0).all(axis=1)]
    verts = pts[ok]
    if len(tris):
        e = np.stack([np.linalg.norm(verts[tris[:, i]] - verts[tris[:, (i + 1) % 3]], axis=1)
                      for i in range(3)], 1)
        med = float(np.median(e)) or 1.0
        tris = tris[e.max(axis=1) <= jump * med * math.sqrt(2)]
    if not len(tris):
        raise InvalidInputError("grid_surface: the organized cloud has no two neighbouring "
                                "measured pixels to join")
    iv = vals[ok]
    lo, hi = finite_range(iv, cmin, cmax)
    return go.Mesh3d(x=as_f32(verts[:, 0]), y=as_f32(verts[:, 1]), z=as_f32(verts[:, 2]),
                     i=tris[:, 0].astype(np.int32), j=tris[:, 1].astype(np.int32),
                     k=tris[:, 2].astype(np.int32),
                     intensity=as_f32(np.where(np.isfinite(iv), iv, lo)), cmin=lo, cmax=hi,
                     colorscale=plotly_colorscale(colorscale), showscale=showscale,
                     colorbar=dict(title=dict(text=name)), lighting=LIGHTING,
                     lightposition=dict(x=0, y=0, z=-1e5), flatshading=False, name=name,
                     hoverinfo="skip")


def _headlight(scene: dict[str, Any]) -> np.ndarray:
    eye = scene["camera"]["eye"]
    d = np.array([eye["x"], eye["y"], eye["z"]], np.float64)
    return d / (np.linalg.norm(d) or 1.0)


def shaded_point_traces(points: np.ndarray, values: np.ndarray, *, normals: Any = None,
                        colorscale: str = "Inferno", cmin: float | None = None,
                        cmax: float | None = None, light: Any = (1.0, 1.0, 0.8),
                        point_size: float = 2.5, name: str = "value",
                        showscale: bool = True) -> list[go.Scatter3d]:
    """Points ``(n, 3)`` coloured by ``values (n,)`` through ``colorscale`` and shaded
    (``0.45 + 0.55 |n . l|``, ``l`` the light direction) by their ``normals (n, 3)`` (estimated
    from 16 neighbours when None). The first trace is an invisible one-point trace carrying
    the colour bar of the unshaded scale; NaN values are magenta, unshaded.

    Example:
        >>> p = np.random.default_rng(0).normal(size=(50, 3))
        >>> [t.name for t in shaded_point_traces(p, p[:, 0], normals=p)]
        ['value (colour bar)', 'value']
    """
    pts = np.asarray(points, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or v.shape != (len(pts),) or not len(pts):
        raise InvalidInputError(f"shaded_point_traces: expected points (n, 3), n >= 1, and "
                                f"values (n,), got {pts.shape} and {v.shape}")
    if normals is None:
        from pcad.geometry import estimate_normals

        n = estimate_normals(pts, k=min(16, len(pts) - 1), orient="none") if len(pts) > 3 \
            else np.tile([0.0, 0.0, 1.0], (len(pts), 1))
    else:
        n = np.asarray(normals, dtype=np.float64)
        if n.shape != pts.shape:
            raise InvalidInputError(f"normals: expected {pts.shape}, got {n.shape}")
    lvec = np.asarray(light, np.float64)
    lvec = lvec / (np.linalg.norm(lvec) or 1.0)
    nn = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    shade = 0.45 + 0.55 * np.abs(nn @ lvec)
    lo, hi = finite_range(v, cmin, cmax)
    rgb = colorize(v, colorscale, lo, hi).astype(np.float64)
    ok = np.isfinite(v)
    rgb[ok] *= shade[ok, None]
    cols = [f"rgb({r},{g},{b})" for r, g, b in np.clip(rgb + 0.5, 0, 255).astype(int)]
    c = pts.mean(axis=0)
    bar = go.Scatter3d(x=[c[0]], y=[c[1]], z=[c[2]], mode="markers", name=f"{name} (colour bar)",
                       showlegend=False, hoverinfo="skip",
                       marker=dict(size=0.1, opacity=0, color=[lo], cmin=lo, cmax=hi,
                                   colorscale=plotly_colorscale(colorscale),
                                   showscale=showscale,
                                   colorbar=dict(title=dict(text=name))))
    pts_tr = go.Scatter3d(x=as_f32(pts[:, 0]), y=as_f32(pts[:, 1]), z=as_f32(pts[:, 2]),
                          mode="markers", name=name, text=[f"{x:.4g}" for x in v],
                          hoverinfo="x+y+z+text", marker=dict(size=point_size, color=cols))
    return [bar, pts_tr]


def gt_traces(points: np.ndarray, *, total: int | None = None, size: float = 3.5,
              name: str = "ground truth") -> list[go.Scatter3d]:
    """The ground-truth points ``(k, 3)`` as filled markers in :data:`GT_COLOUR` (none when
    ``k == 0``); ``total`` (default ``k``) is the count named in the legend."""
    q = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if not len(q):
        return []
    return [go.Scatter3d(x=as_f32(q[:, 0]), y=as_f32(q[:, 1]), z=as_f32(q[:, 2]),
                         mode="markers", name=f"{name} ({len(q) if total is None else total})",
                         hoverinfo="skip", marker=dict(size=size, color=GT_COLOUR,
                                                       line=dict(width=0)))]


def nan_markers(points: np.ndarray, values: np.ndarray, size: float = 3.0) -> list[go.Scatter3d]:
    """Magenta markers at the points whose value is NaN or inf (none when all are finite)."""
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64))
    if not bad.any():
        return []
    q = np.asarray(points)[bad]
    return [go.Scatter3d(x=as_f32(q[:, 0]), y=as_f32(q[:, 1]), z=as_f32(q[:, 2]),
                         mode="markers", name=f"NaN ({int(bad.sum())})", hoverinfo="skip",
                         marker=dict(size=size, color=NAN_COLOUR))]


def fitted_scene(points: np.ndarray, *, view: Any = (1.0, 1.0, 0.8),
                 up: Any = (0.0, 0.0, 1.0), margin: float = 0.04,
                 zoom: float = 0.8) -> dict[str, Any]:
    """A plotly ``scene`` that frames the finite ``points (n, 3)``: axis ranges with a small
    ``margin``, the aspect ratio of the part (longest side 1) and a camera looking from the
    direction ``view`` at the distance where the part's bounding sphere fits the field of view
    (``zoom`` < 1 moves closer: the bounding sphere of the box is a loose bound of a part).

    Example:
        >>> s = fitted_scene(np.array([[0, 0, 0], [4, 2, 1.0]]), margin=0.0)
        >>> s["aspectratio"], round(s["camera"]["eye"]["x"], 2)
        ({'x': 1.0, 'y': 0.5, 'z': 0.25}, 0.74)
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(axis=1)]
    if not len(p):
        raise InvalidInputError("fitted_scene: no finite point")
    lo, hi = p.min(axis=0), p.max(axis=0)
    ext = np.maximum(hi - lo, 1e-9)
    pad = margin * float(ext.max())
    lo, hi = lo - pad, hi + pad
    ext = hi - lo
    ratio = ext / ext.max()
    radius = 0.5 * float(np.linalg.norm(ratio))  # the box spans +-ratio/2 in scene units
    dist = zoom * radius / math.sin(math.radians(FOV_DEG / 2))
    d = np.asarray(view, np.float64)
    d = d / (np.linalg.norm(d) or 1.0) * dist
    u = np.asarray(up, np.float64)
    axis = dict(showbackground=False, title=dict(text=""), showspikes=False)
    return {"xaxis": {**axis, "range": [float(lo[0]), float(hi[0])]},
            "yaxis": {**axis, "range": [float(lo[1]), float(hi[1])]},
            "zaxis": {**axis, "range": [float(lo[2]), float(hi[2])]},
            "aspectmode": "manual",
            "aspectratio": {k: round(float(r), 6) for k, r in zip("xyz", ratio, strict=True)},
            "camera": {"eye": {k: float(x) for k, x in zip("xyz", d, strict=True)},
                       "up": {k: float(x) for k, x in zip("xyz", u, strict=True)},
                       "center": {"x": 0.0, "y": 0.0, "z": 0.0}}}


#: View direction and up vector of an organized scan: from the sensor (origin, looking
#: along +z, image rows along +y), slightly tilted so that relief is visible.
SENSOR_VIEW = {"view": (0.35, 0.55, -1.0), "up": (0.0, -1.0, 0.0)}


def selector_figure(views: list[tuple[str, list[Any]]], scene: dict[str, Any], *,
                    title: str = "", height: int = 720) -> go.Figure:
    """One large 3D view holding every ``(label, traces)`` view; a dropdown shows one at a
    time (the first at start). ``scene`` is shared (e.g. :func:`fitted_scene`).

    Example:
        >>> tr = lambda z: [go.Scatter3d(x=[0, 1], y=[0, 1], z=[z, z], mode="markers")]
        >>> fig = selector_figure([("a", tr(0)), ("b", tr(1))], fitted_scene(np.eye(3)))
        >>> [t.visible for t in fig.data], len(fig.layout.updatemenus[0].buttons)
        ([True, False], 2)
    """
    if not views:
        raise InvalidInputError("selector_figure: no view")
    fig = go.Figure()
    owner = []
    for k, (_, traces) in enumerate(views):
        for tr in traces:
            tr.visible = k == 0
            fig.add_trace(tr)
            owner.append(k)
    buttons = [dict(label=label, method="update",
                    args=[{"visible": [o == k for o in owner]},
                          {"title.text": f"{title}{': ' if title else ''}{label}"}])
               for k, (label, _) in enumerate(views)]
    menus = [dict(type="dropdown", buttons=buttons, active=0, x=0.0, y=1.0, xanchor="left",
                  yanchor="top", showactive=True, bgcolor="#f4f4f4")] if len(views) > 1 else []
    fig.update_layout(title=dict(text=f"{title}{': ' if title else ''}{views[0][0]}", x=0.5),
                      scene=scene, updatemenus=menus, height=height,
                      legend=dict(x=0.0, y=0.9, bgcolor="rgba(255,255,255,0.7)"),
                      margin=dict(l=0, r=0, t=50, b=0), uirevision="view3d")
    return fig
