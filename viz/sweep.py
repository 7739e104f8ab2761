"""Parameter sweeps of a defect: precomputed frames, one figure with sliders, offline HTML.

:func:`compute_sweep` applies a defect (the 3D-PNAS ``perlin`` by default) for every
combination of the swept parameters (``scale x strength x octaves``, optionally
``persistence``, ``lacunarity`` or any other parameter of the defect) and keeps every full
result. :func:`sweep_figure` draws them: the same seeded display subset of the input's points in
every frame (display only: the frames hold all points), coloured by the displacement over the
bbox diagonal on one colour range shared by all frames, with fixed axes.

Slider design: ``sliders="parameters"`` (default) gives one slider per swept parameter. Plotly
sliders are independent, so their steps do nothing themselves (``method="skip"``); a few lines
of inline JavaScript (:mod:`viz._sweep_js`, added by :func:`viz.save_html` and
:func:`viz.html.figure_div`) read every slider and animate to the frame named after the
combination (``"i-j-k"``). In a notebook use ``fig.show(post_script=SWEEP_SCRIPT)``.
``sliders="combined"`` gives one plain plotly slider over all frames, labelled with their
parameters, which needs no script at all.

Size: plotly 7 writes numpy arrays as base64 typed arrays, so each frame costs about
``16 * 4 / 3`` bytes per displayed point (x, y, z and colour as float32); 27 frames of 10,000
points are about 5.8 MB plus 4.8 MB of plotly.js.

Example:
    >>> import numpy as np
    >>> from viz.sweep import compute_sweep, sweep_figure
    >>> p = np.random.default_rng(0).normal(size=(400, 3)).astype(np.float32)
    >>> s = compute_sweep(p, {"scale": [2, 4], "octaves": [1, 4]}, seed=0)
    >>> len(s.frames), s.names, s.key(1, 0)
    (4, ('scale', 'octaves'), '1-0')
    >>> fig = sweep_figure(s)
    >>> len(fig.frames), len(fig.layout.sliders)
    (4, 2)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go

from pcad.errors import InvalidInputError
from viz._sweep_js import SWEEP_SCRIPT
from viz.clouds import as_f32, display_subset
from viz.defects import flatten_cloud, result_cloud

__all__ = ["MAX_FRAMES", "SWEEP_PARAMETERS", "SWEEP_SCRIPT", "Sweep", "SweepFrame",
           "compute_sweep", "default_grid", "sweep_figure"]

#: The parameters ``pcad viz sweep`` offers as options, in slider order.
SWEEP_PARAMETERS: tuple[str, ...] = ("scale", "strength", "octaves", "persistence", "lacunarity")
#: Largest number of frames of one sweep (each frame holds a full result in memory).
MAX_FRAMES = 512


@dataclass(eq=False)
class SweepFrame:
    """One combination's full result (never downsampled).

    Attributes:
        index: the combination's index per swept parameter.
        params: the swept parameters' values.
        points: ``(M, 3) float32`` defective points (valid pixels for an organized input).
        ids: ``(M,) int64`` identity of each point: its row in the input cloud, or its flat
            pixel index for an organized input (removed points are missing).
        offsets: ``(M, 3) float32``; mask: ``(M,) bool`` ground truth.
        summary: :meth:`synth.DefectResult.summary` of the result.
    """

    index: tuple[int, ...]
    params: dict[str, Any]
    points: np.ndarray
    ids: np.ndarray
    offsets: np.ndarray
    mask: np.ndarray
    summary: dict[str, Any]


@dataclass(eq=False)
class Sweep:
    """Every frame of a sweep, in ``itertools.product`` order of ``values``."""

    defect: str
    names: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    base_points: np.ndarray
    base_ids: np.ndarray
    diag: float
    seed: int
    organized: bool = False
    fixed: dict[str, Any] = field(default_factory=dict)
    frames: list[SweepFrame] = field(default_factory=list)

    @staticmethod
    def key(*index: int) -> str:
        """Frame name of a combination: ``"i-j-k"``."""
        return "-".join(str(int(i)) for i in index)

    def frame(self, *index: int) -> SweepFrame:
        """The frame of the combination ``index`` (one index per swept parameter)."""
        if len(index) != len(self.names) or any(
                not 0 <= i < len(v) for i, v in zip(index, self.values, strict=True)):
            raise InvalidInputError(f"index: expected {len(self.names)} indices within "
                                    f"{[len(v) for v in self.values]}, got {index}")
        flat = int(np.ravel_multi_index(index, [len(v) for v in self.values]))
        return self.frames[flat]


def _param_fields(defect: str) -> dict[str, dataclasses.Field]:
    from synth.defects import create_defect

    return {f.name: f for f in dataclasses.fields(create_defect(defect))}


def default_grid(defect: str = "perlin") -> dict[str, list[Any]]:
    """Three values of each of ``scale``, ``strength`` and ``octaves`` around the defect's
    defaults (half, default, double; octaves 1, default, double), for those it has."""
    fields = _param_fields(defect)
    grid: dict[str, list[Any]] = {}
    for name in ("scale", "strength", "octaves"):
        if name not in fields:
            continue
        d = fields[name].default
        if name == "octaves":
            grid[name] = sorted({1, int(d), min(2 * int(d), 16)})
        else:
            grid[name] = [round(d / 2, 6), d, round(2 * d, 6)]
    return grid


def _check_grid(defect: str, grid: Mapping[str, Sequence[Any]]) -> tuple[tuple[str, ...],
                                                                         tuple[tuple, ...]]:
    fields = _param_fields(defect)
    names, values = [], []
    for name, vals in grid.items():
        if name not in fields:
            raise InvalidInputError(f"grid: defect {defect!r} has no parameter {name!r}; "
                                    f"accepted: {sorted(fields)}")
        vals = list(np.atleast_1d(np.asarray(vals, dtype=object)).tolist())
        if not vals:
            raise InvalidInputError(f"grid: no value for {name!r}")
        if len(set(vals)) != len(vals):
            raise InvalidInputError(f"grid: {name!r} has repeated values {vals}")
        names.append(name)
        values.append(tuple(vals))
    if not names:
        raise InvalidInputError("grid: nothing to sweep (give at least one parameter)")
    n = math.prod(len(v) for v in values)
    if n > MAX_FRAMES:
        raise InvalidInputError(f"grid: {n} combinations; at most {MAX_FRAMES} frames")
    return tuple(names), tuple(values)


def compute_sweep(points: Any, grid: Mapping[str, Sequence[Any]] | None = None, *,
                  normals: Any = None, defect: str = "perlin", seed: int = 0,
                  **params: Any) -> Sweep:
    """Apply ``defect`` for every combination of ``grid``.

    Args:
        points: ``(N, 3)`` cloud, or an organized ``(H, W, 3)`` scan (the defect is applied on
            the grid with sensor-facing normals; frames hold its valid pixels).
        grid: ``{parameter: values}``, e.g. ``{"scale": [2, 4, 8], "strength": [0.01, 0.02],
            "octaves": [1, 4]}``; None: :func:`default_grid`. Order = slider order.
        normals: ``(N, 3)`` normals of an unorganized cloud (estimated when None).
        defect: a registered geometric defect type
            (``synth.list_defects(kind="geometric")``).
        seed: the same seed for every frame, so only the parameters change the picture.
        params: fixed parameters of the defect (e.g. ``mode="local"``).

    Raises:
        InvalidInputError: unknown defect or parameter, a bad value (checked before any frame
            is computed), an empty grid, more than :data:`MAX_FRAMES` frames, bad points.
    """
    from synth import apply_defect, create_defect

    grid = default_grid(defect) if grid is None else grid
    names, values = _check_grid(defect, grid)
    overlap = sorted(set(names) & set(params))
    if overlap:
        raise InvalidInputError(f"params: {overlap} are both swept and fixed")
    combos = list(itertools.product(*[range(len(v)) for v in values]))
    defects = [create_defect(defect, **params, **{n: values[k][i] for k, (n, i) in
                                                  enumerate(zip(names, c, strict=True))})
               for c in combos]  # every value is checked before any work
    base_pts, base_ids = flatten_cloud(points, "points")
    arr = np.asarray(points)
    organized = arr.ndim == 3
    sweep = Sweep(defect=defect, names=names, values=values, base_points=base_pts,
                  base_ids=base_ids, diag=0.0, seed=seed, organized=organized,
                  fixed=dict(params))
    for combo, d in zip(combos, defects, strict=True):
        if organized:
            r = apply_defect(arr, d, seed=seed)
        else:
            r = apply_defect(arr, d, normals=normals, seed=seed)
        pts, ids, off, mask = result_cloud(r, None if organized else len(base_pts))
        sweep.diag = float(r.params.get("diag", 0.0))
        sweep.frames.append(SweepFrame(
            index=tuple(combo), params={n: values[k][i] for k, (n, i) in
                                        enumerate(zip(names, combo, strict=True))},
            points=pts, ids=ids, offsets=off, mask=mask, summary=r.summary()))
    return sweep


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _frame_title(sweep: Sweep, fr: SweepFrame) -> str:
    s = fr.summary
    what = "pixels" if sweep.organized else "points"
    rel = s["max_offset"] / sweep.diag if sweep.diag > 0 else s["max_offset"]
    return (f"{sweep.defect}: " + ", ".join(f"{n}={_fmt(v)}" for n, v in fr.params.items())
            + f"<br><sup>{s['n_anomalous']} of {s['n_points']} {what} anomalous, "
            f"{s['n_removed']} removed, max displacement {rel:.4g}"
            f"{' x diag' if sweep.diag > 0 else ''}</sup>")


def sweep_figure(sweep: Sweep, *, max_points: int = 10000, sliders: str = "parameters",
                 colorscale: str = "Inferno", point_size: float = 2.0, seed: int = 0,
                 height: int | None = None) -> go.Figure:
    """The sweep as one animated 3D scatter with sliders (module docstring: slider design).

    Args:
        sweep: from :func:`compute_sweep`.
        max_points: displayed points per frame (the same input points in every frame).
        sliders: ``"parameters"`` (one per swept parameter with more than one value, driven
            by the inline script) or ``"combined"`` (one plain slider over all frames).
        height: page height in pixels (default: 540 + 85 per slider).
    """
    if sliders not in ("parameters", "combined"):
        raise InvalidInputError(f"sliders: expected 'parameters' or 'combined', got {sliders!r}")
    if not sweep.frames:
        raise InvalidInputError("sweep: no frames")
    shown = sweep.base_ids[display_subset(len(sweep.base_ids), max_points, seed)]
    scale = sweep.diag if sweep.diag > 0 else 1.0
    label = "|offset| / diagonal" if sweep.diag > 0 else "|offset|"
    data, lo, hi, cmax = [], None, None, 0.0
    for fr in sweep.frames:
        sel = np.isin(fr.ids, shown, assume_unique=True)
        p = fr.points[sel]
        c = np.linalg.norm(fr.offsets[sel].astype(np.float64), axis=1) / scale
        data.append((p, c))
        if len(p):
            lo = p.min(0) if lo is None else np.minimum(lo, p.min(0))
            hi = p.max(0) if hi is None else np.maximum(hi, p.max(0))
            cmax = max(cmax, float(c.max()))
    if lo is None:
        raise InvalidInputError("sweep: every point was removed in every frame")
    cmax = cmax or 1.0
    pad = 0.02 * float(np.max(hi - lo))
    lo, hi = lo - pad, hi + pad
    ext = np.maximum(hi - lo, 1e-12)
    ratio = ext / ext.max()

    def trace(p: np.ndarray, c: np.ndarray) -> go.Scatter3d:
        return go.Scatter3d(x=as_f32(p[:, 0]), y=as_f32(p[:, 1]), z=as_f32(p[:, 2]), mode="markers",
                            name=label, hoverinfo="skip", showlegend=False,
                            marker=dict(size=point_size, color=as_f32(c), colorscale=colorscale,
                                        cmin=0.0, cmax=cmax, showscale=True,
                                        colorbar=dict(title=dict(text=label), len=0.6)))

    frames = [go.Frame(name=Sweep.key(*fr.index), data=[trace(*data[k])], traces=[0],
                       layout=dict(title=dict(text=_frame_title(sweep, fr))))
              for k, fr in enumerate(sweep.frames)]
    varying = [k for k, v in enumerate(sweep.values) if len(v) > 1]
    # start in the middle of every slider (the defaults, for a default grid)
    start = tuple(len(v) // 2 for v in sweep.values) if sliders == "parameters" else \
        (0,) * len(sweep.values)
    first = int(np.ravel_multi_index(start, [len(v) for v in sweep.values]))
    fig = go.Figure(data=[trace(*data[first])], frames=frames)
    anim = {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
            "transition": {"duration": 0}}
    slider_list: list[dict] = []
    slider_of = [-1] * len(sweep.names)
    n_sl = 1 if sliders == "combined" else len(varying)
    height = height or 540 + 85 * n_sl
    row = 85 / (height - 80)  # one slider's height in paper coordinates (margins: 80 px)
    if sliders == "combined":
        slider_list.append(dict(
            active=first, len=0.9, x=0.05, y=0.0, yanchor="bottom", pad=dict(t=0, b=0),
            currentvalue=dict(prefix=" / ".join(sweep.names) + ": ", font=dict(size=13)),
            steps=[dict(method="animate", label=" / ".join(_fmt(v) for v in fr.params.values()),
                        args=[[Sweep.key(*fr.index)], anim]) for fr in sweep.frames]))
    else:
        for s, k in enumerate(varying):
            slider_of[k] = s
            slider_list.append(dict(
                active=start[k], len=0.9, x=0.05, y=row * (n_sl - 1 - s), yanchor="bottom",
                pad=dict(t=0, b=0), name=sweep.names[k],
                currentvalue=dict(prefix=f"{sweep.names[k]}: ", font=dict(size=13)),
                steps=[dict(method="skip", label=_fmt(v), args=[]) for v in sweep.values[k]]))
    meta = {"pcad_sweep": {"names": list(sweep.names), "slider_of": slider_of,
                           "sizes": [len(v) for v in sweep.values], "defect": sweep.defect}} \
        if sliders == "parameters" else None
    fig.update_layout(
        title=dict(text=_frame_title(sweep, sweep.frames[first])), height=height,
        sliders=slider_list, uirevision="sweep", margin=dict(l=0, r=0, t=70, b=10),
        meta=meta,
        scene=dict(domain=dict(x=[0, 1], y=[min(row * n_sl + 0.02, 0.6), 1]),
                   aspectmode="manual", aspectratio=dict(x=ratio[0], y=ratio[1], z=ratio[2]),
                   camera=dict(eye=dict(x=1.05, y=-1.05, z=0.85)),
                   xaxis=dict(range=[lo[0], hi[0]], autorange=False),
                   yaxis=dict(range=[lo[1], hi[1]], autorange=False),
                   zaxis=dict(range=[lo[2], hi[2]], autorange=False)))
    return fig
