"""Sweep page cost: 3 x 3 x 3 perlin frames on a 20,000-point cloud (targets: < 10 s, < 20 MB).

Rows:
- ``sweep precompute``: :func:`viz.compute_sweep` of the default grid (scale 2/4/8, strength
  0.01/0.02/0.04, octaves 1/4/8) on the built-in ``gear`` sampled to 20,000 points, after one
  untimed warm-up defect (numba compilation or cache load). Best of 3.
- ``sweep figure + HTML``: :func:`viz.sweep_figure` (10,000 displayed points per frame, the
  same subset in every frame; display only) and :func:`viz.save_html`. Best of 3.
- ``sweep in-process total``: the sum, against the 10 s target.
- ``pcad viz sweep (cold)``: the command line in a fresh process on the cloud saved as
  ``.npz``: interpreter start, imports, numba cache load, precompute and writing, once.
- ``sweep HTML size``: the page's size in MB against the 20 MB target (plotly.js, about
  4.8 MB, included).
``--quick``: 2 x 2 x 2 frames on 5,000 points.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _best(fn, repeat: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def run(quick: bool) -> list[dict]:
    from pcad.io import sample_mesh
    from synth import apply_defect
    from synth.objects import make_object
    from viz import compute_sweep, save_html, sweep_figure

    n = 5000 if quick else 20000
    grid = ({"scale": [2, 8], "strength": [0.01, 0.04], "octaves": [1, 8]} if quick else
            {"scale": [2, 4, 8], "strength": [0.01, 0.02, 0.04], "octaves": [1, 4, 8]})
    frames = int(np.prod([len(v) for v in grid.values()]))
    shape = " x ".join(str(len(v)) for v in grid.values())
    points, normals, _ = sample_mesh(make_object("gear", seed=0), n, 0)
    apply_defect(points, "perlin", normals=normals, seed=0)  # warm-up: numba
    repeat = 1 if quick else 3
    t_pre, pre_times, sweep = _best(
        lambda: compute_sweep(points, grid, normals=normals, seed=0), repeat)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep.html"
        t_fig, fig_times, _ = _best(lambda: save_html(sweep_figure(sweep), out), repeat)
        size_mb = out.stat().st_size / 1e6
        cloud = Path(tmp) / "cloud.npz"
        np.savez(cloud, points=points, normals=normals)
        cmd = [sys.executable, "-m", "pcad", "viz", "sweep", str(cloud), "-o",
               str(Path(tmp) / "cli.html"), "--json"]
        for k, v in grid.items():
            cmd += [f"--{k}", *map(str, v)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        t_cli = time.perf_counter() - t0
    case = f"{shape} frames, {n} points"
    rows.append({"benchmark": "viz sweep", "case": f"precompute ({case})", "value": t_pre,
                 "unit": "s", "reference": None, "ratio": None, "times": pre_times,
                 "frames": frames})
    rows.append({"benchmark": "viz sweep", "case": "figure + HTML write (10k shown)",
                 "value": t_fig, "unit": "s", "reference": None, "ratio": None,
                 "times": fig_times})
    total = t_pre + t_fig
    rows.append({"benchmark": "viz sweep", "case": "in-process total", "value": total,
                 "unit": "s", "reference": "target 10 s", "ratio": total / 10.0})
    rows.append({"benchmark": "viz sweep", "case": "pcad viz sweep (cold process)",
                 "value": t_cli, "unit": "s", "reference": "target 10 s",
                 "ratio": t_cli / 10.0})
    rows.append({"benchmark": "viz sweep", "case": "HTML size", "value": size_mb, "unit": "MB",
                 "reference": "target 20 MB", "ratio": size_mb / 20.0})
    return rows


if __name__ == "__main__":  # pragma: no cover
    for row in run(quick="--quick" in sys.argv):
        print(row)
