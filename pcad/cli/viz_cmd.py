"""``pcad viz report|sweep|sample``: self-contained HTML pages (plotly.js embedded, offline).

- ``pcad viz report RESULTS_DIR [-o report.html] [--data ROOT] [--worst N]``: the report of an
  evaluation run folder (metrics.json, scores.csv, maps/) or of a folder of them (one per
  category); written to ``RESULTS_DIR/report.html`` by default.
- ``pcad viz sweep INPUT -o sweep.html [--scale ...] [--strength ...] [--octaves ...]
  [--persistence ...] [--lacunarity ...] [--defect perlin]``: a defect's parameter sweep on a
  mesh (sampled to ``--points``), a cloud, or an MVTec xyz TIFF, one slider per parameter.
- ``pcad viz sample PATH -o out.html``: one dataset sample (any of its files).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pcad.errors import InvalidInputError

HTML_SUFFIXES = (".html", ".htm")


def _check_out(out: Path, *inputs: Path) -> None:
    if out.suffix.lower() not in HTML_SUFFIXES:
        raise InvalidInputError(f"{out}: the output is an HTML page; use a .html file name")
    for inp in inputs:
        if inp.exists() and out.exists() and out.resolve() == inp.resolve():
            raise InvalidInputError(f"{out}: the output would overwrite the input")


def _done(args: argparse.Namespace, out: Path, t0: float, **info) -> int:
    size = out.stat().st_size
    record = {"output": str(out), "bytes": size, "seconds": round(time.perf_counter() - t0, 3),
              **info}
    if args.json:
        print(json.dumps(record))
    else:
        extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in info.items())
        print(f"wrote {out} ({size / 1e6:.1f} MB{extra}) in {record['seconds']:.1f} s")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from viz.report import write_report

    t0 = time.perf_counter()
    out = Path(args.output) if args.output else Path(args.run) / "report.html"
    _check_out(out, Path(args.run))
    write_report(args.run, out, data_root=args.data, n_worst=args.worst,
                 fpr_limit=args.fpr_limit)
    return _done(args, out, t0)


def run_sweep(args: argparse.Namespace) -> int:
    from pcad.checks import MIN_POINTS, check_int
    from pcad.errors import PcadError
    from pcad.io import read_input
    from viz.html import save_html
    from viz.sweep import SWEEP_PARAMETERS, compute_sweep, default_grid, sweep_figure

    t0 = time.perf_counter()
    inp, out = Path(args.input), Path(args.output)
    _check_out(out, inp)
    check_int(args.points, "--points", minimum=MIN_POINTS)
    check_int(args.display_points, "--display-points", minimum=1)
    check_int(args.seed, "--seed", minimum=0)
    grid = {k: getattr(args, k) for k in SWEEP_PARAMETERS if getattr(args, k)}
    if not grid:
        grid = default_grid(args.defect)
    fixed = {"mode": args.mode} if args.mode else {}
    try:
        data = read_input(inp, n_points=args.points, seed=args.seed)
        source = data.organized if data.kind == "organized" else data.points
        sweep = compute_sweep(source, grid, normals=data.normals, defect=args.defect,
                              seed=args.seed, **fixed)
    except PcadError as exc:
        msg = str(exc)
        if msg.startswith(str(inp)) or msg.startswith(("grid", "params", "defect")):
            raise
        raise type(exc)(f"{inp}: {msg}") from None
    fig = sweep_figure(sweep, max_points=args.display_points, sliders=args.sliders)
    save_html(fig, out)
    return _done(args, out, t0, frames=len(sweep.frames),
                 points=int(len(sweep.base_points)),
                 parameters=" x ".join(f"{n}[{len(v)}]" for n, v in
                                       zip(sweep.names, sweep.values, strict=True)))


def run_sample(args: argparse.Namespace) -> int:
    from viz.sample import write_sample_page

    t0 = time.perf_counter()
    out = Path(args.output)
    _check_out(out, Path(args.path))
    write_sample_page(args.path, out, max_points=args.display_points)
    return _done(args, out, t0)


def register(sub: argparse._SubParsersAction) -> None:
    from pcad.cli.names import GEOMETRIC_DEFECTS

    p = sub.add_parser("viz", help="HTML pages: evaluation reports, parameter sweeps, samples",
                       description="Write self-contained HTML pages (plotly.js embedded: they "
                       "work offline).")
    vsub = p.add_subparsers(dest="viz_command", required=True, metavar="PAGE")

    r = vsub.add_parser("report", help="report of evaluation results (one or several "
                        "categories)",
                        description="Header (detector, data, image size, training samples, "
                        "threshold, accepted/rejected counts), metrics table, score histograms "
                        "with the threshold, ROC and PRO curves, and the worst false positives "
                        "and false negatives at the threshold (the run's calibrated one, else "
                        "the F1-optimal one, labelled so). RESULTS_DIR is one `pcad eval` "
                        "output folder, or a folder of them (one per category: a "
                        "multi-category report).")
    r.add_argument("run", metavar="RESULTS_DIR", help="eval output folder (metrics.json, "
                   "scores.csv, maps/) or a folder of such folders")
    r.add_argument("-o", "--output", help="output .html (default: RESULTS_DIR/report.html)")
    r.add_argument("--data", help="dataset root the paths in scores.csv are relative to")
    r.add_argument("--worst", type=int, default=4,
                   help="false positives and false negatives shown (each)")
    r.add_argument("--fpr-limit", type=float, default=0.3, help="FPR limit of the PRO plot")
    r.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    r.set_defaults(func=run_report)

    s = vsub.add_parser("sweep", help="parameter sweep of a defect, one slider per parameter",
                        description="Precompute a defect for every combination of the given "
                        "values and write one page with a slider per parameter. Without "
                        "values: half, default and double of scale, strength and octaves.")
    s.add_argument("input", help="mesh (sampled to --points), cloud, or MVTec xyz .tiff")
    s.add_argument("-o", "--output", required=True, help="output .html")
    s.add_argument("--defect", default="perlin", choices=GEOMETRIC_DEFECTS)
    s.add_argument("--scale", type=float, nargs="+", help="noise scale values")
    s.add_argument("--strength", type=float, nargs="+", help="strength values (fractions of "
                   "the bbox diagonal)")
    s.add_argument("--octaves", type=int, nargs="+", help="octave counts")
    s.add_argument("--persistence", type=float, nargs="+", help="persistence values")
    s.add_argument("--lacunarity", type=float, nargs="+", help="lacunarity values")
    s.add_argument("--mode", choices=("global", "local", "volumetric"),
                   help="surface parameterization (fixed for all frames)")
    s.add_argument("--points", type=int, default=20000, help="points sampled on a mesh")
    s.add_argument("--display-points", type=int, default=10000,
                   help="points drawn per frame (display only; frames keep all points)")
    s.add_argument("--sliders", choices=("parameters", "combined"), default="parameters",
                   help="one slider per parameter (inline script) or one over all frames")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    s.set_defaults(func=run_sweep)

    m = vsub.add_parser("sample", help="one dataset sample: cloud, RGB, depth, gt, meta")
    m.add_argument("path", help="one of the sample's files (rgb/xyz/gt/meta), a cloud file, "
                   "or an xyz TIFF as pcad synth writes it (with its <stem>_gt.png)")
    m.add_argument("-o", "--output", required=True, help="output .html")
    m.add_argument("--display-points", type=int, default=40000, help="points drawn")
    m.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    m.set_defaults(func=run_sample)
