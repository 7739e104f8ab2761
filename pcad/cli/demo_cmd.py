"""``pcad demo``: the main job on the built-in parts.

1. Generates a small multimodal dataset (RGB + xyz + gt, MVTec 3D-AD layout) from the built-in
   parts in ``<out>/dataset`` and a preview image of its test samples
   (``<out>/dataset_preview.png``).
2. Samples each part as a point cloud, applies every geometric defect type with a fixed seed,
   and writes the defective clouds (``.ply`` with labels and offsets), a summary table
   (``summary.json``) and an interactive before/after page per part (``<part>.html``).

Detectors and evaluation join this pipeline as they land.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from pcad.cli.outputs import replacing

    # a non-empty --out only with --overwrite; the old one comes back if the demo fails
    with replacing(args.out, args.overwrite, "demo folder", in_place=True):
        return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    from pcad.checks import MIN_POINTS, check_int
    from pcad.errors import InvalidInputError
    from pcad.io import atomic_write, sample_mesh
    from synth import apply_defect, list_defects
    from synth.dataset import DEFAULT_CATEGORIES, DatasetConfig, generate
    from synth.objects import list_objects, make_object
    from synth.writers import write_result

    # check every argument before writing anything
    check_int(args.points, "--points", minimum=MIN_POINTS)
    check_int(args.seed, "--seed", minimum=0)
    parts = args.objects or list(DEFAULT_CATEGORIES)
    unknown = [p for p in parts if p not in list_objects()]
    if unknown:
        raise InvalidInputError(f"--objects: unknown built-in part(s) {unknown}; expected "
                                f"one of {list_objects()}")
    out = Path(args.out)
    t0 = time.perf_counter()
    if not args.no_dataset:
        cfg = DatasetConfig(categories=tuple(parts), train=args.train, validation=1,
                            test_good=6, test_defect=3, size=tuple(args.size), seed=args.seed)
        print(f"1/3 generating a demo dataset: {len(cfg.plan())} samples of {len(parts)} parts "
              f"at {args.size[0]}x{args.size[1]} -> {out / 'dataset'}")
        report = generate(cfg, out / "dataset", workers=args.workers, progress=True)
        print(f"    {report['written']} written, {report['skipped']} already there, "
              f"{report['samples_per_second']:.1f} samples/s")
        _write_preview(out / "dataset", cfg, out / "dataset_preview.png")
        if not args.no_detector:
            _train_and_evaluate(out, parts, args.detector, args.device)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for part in parts:
        mesh = make_object(part, seed=args.seed)
        pts, nrm, _ = sample_mesh(mesh, args.points, args.seed)
        results = {}
        for name in list_defects(kind="geometric"):
            r = apply_defect(pts, name, normals=nrm, seed=args.seed)
            path = out / part / f"{name}.ply"
            write_result(path, r)
            results[name] = r
            s = r.summary()
            rows.append({"object": part, "defect": name, "n_points": s["n_points"],
                         "n_anomalous": s["n_anomalous"], "n_removed": s["n_removed"],
                         "max_offset_rel": s["max_offset"] / r.params["diag"],
                         "file": str(path)})
            print(f"{part:<8} {name:<7} anomalous {s['n_anomalous']:>6} / {s['n_points']:<6} "
                  f"removed {s['n_removed']:>5}  max offset {rows[-1]['max_offset_rel']:.4f} "
                  "x diag")
        if not args.no_html:
            _write_page(out / f"{part}.html", part, results)
    with atomic_write(out / "summary.json", "w") as fh:
        json.dump({"seed": args.seed, "points": args.points, "rows": rows}, fh, indent=2)
    report = out / "report.html"
    shown = report if report.is_file() and not (args.no_dataset or args.no_detector) else \
        None if args.no_html else out / (parts[0] + ".html")
    print(f"wrote {len(rows)} samples to {out} in {time.perf_counter() - t0:.1f} s"
          + ("" if shown is None else f"; open {shown}"))
    return 0


def _train_and_evaluate(out: Path, parts: list[str], detector: str,
                        device: str | None = None) -> None:
    """Fit ``detector`` per category, evaluate it, print the table, write the report
    (``device``: where it computes, None: the detector's default, auto)."""
    import csv

    import numpy as np

    from pcad.engine import evaluate_run, train
    from pcad.io import atomic_write
    from viz import write_report

    data, runs, ev = out / "dataset", out / "runs", out / "eval"
    print(f"2/3 training and evaluating {detector} on {len(parts)} categories")
    table, rows = {}, []
    for cat in parts:
        train(data, cat, detector, runs / cat, {} if device is None else {"device": device},
              progress=False)
        m = evaluate_run(data, cat, runs / cat, ev / cat, progress=False,
                         maps_root=ev / "maps", device=device)
        table[cat] = m
        with open(ev / cat / "scores.csv", newline="") as fh:
            rows += list(csv.reader(fh))[1:]
        print(f"    {cat:<12} I-AUROC {m['i_auroc']:.3f}  P-AUROC {m['p_auroc']:.3f}  "
              f"AUPRO@0.3 {m['aupro']['0.3']:.3f}  ({m['latency_ms_per_sample']:.0f} ms/sample)")
    keys = ("i_auroc", "p_auroc")
    mean = {k: float(np.mean([table[c][k] for c in parts])) for k in keys}
    mean["aupro"] = {lim: float(np.mean([table[c]["aupro"][lim] for c in parts]))
                     for lim in table[parts[0]]["aupro"]}
    print(f"    {'mean':<12} I-AUROC {mean['i_auroc']:.3f}  P-AUROC {mean['p_auroc']:.3f}  "
          f"AUPRO@0.3 {mean['aupro']['0.3']:.3f}")
    with atomic_write(ev / "metrics.json", "w") as fh:
        json.dump({"detector": detector, "data_root": str(data.resolve()), **table,
                   "mean": mean}, fh, indent=2)
    with atomic_write(ev / "scores.csv", "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "category", "defect", "label", "score"])
        writer.writerows(rows)
    page = write_report(ev, out / "report.html", data_root=data)
    print(f"3/3 report: {page}")


def _write_preview(root: Path, cfg, path: Path) -> None:
    """One row per category: RGB, gt and depth of its first test sample of each defect."""
    import numpy as np
    from PIL import Image

    from pcad.io import atomic_save, read_mask_png, read_rgb, read_xyz_tiff

    rows = []
    for cat in cfg.categories:
        tiles = []
        for d in cfg.defects[:3]:
            base = root / cat.name / "test" / d
            rgb = read_rgb(base / "rgb" / "000.png")
            gt = read_mask_png(base / "gt" / "000.png")
            z = read_xyz_tiff(base / "xyz" / "000.tiff")[..., 2]
            valid = z > 0
            depth = np.zeros_like(z)
            if valid.any():
                lo, hi = np.percentile(z[valid], [1, 99])
                depth[valid] = 1.0 - np.clip((z[valid] - lo) / max(hi - lo, 1e-9), 0, 1)
            overlay = rgb.copy()
            overlay[gt] = (0.5 * overlay[gt] + [127, 0, 0]).astype(np.uint8)
            tiles += [overlay, np.repeat((depth[..., None] * 255).astype(np.uint8), 3, 2)]
        rows.append(np.concatenate(tiles, axis=1))
    image = np.concatenate(rows, axis=0)
    atomic_save(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def _write_page(path: Path, part: str, results: dict) -> None:
    """One large shaded view of the part, a dropdown picks the defect (cyan: ground truth)."""
    from viz import defect_selector_figure, save_html

    save_html(defect_selector_figure(results, title=part, max_points=15000), path)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the built-in parts")
    from pcad.cli.outputs import add_overwrite_flag

    p.add_argument("--out", default="pcad-demo", help="output folder (new or empty)")
    add_overwrite_flag(p)
    p.add_argument("--points", type=int, default=20000, help="points sampled per part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--objects", nargs="*", help="built-in parts to use (default: all)")
    p.add_argument("--no-html", action="store_true", help="skip the HTML pages")
    p.add_argument("--no-dataset", action="store_true", help="skip the demo dataset")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"),
                   help="image size of the demo dataset")
    p.add_argument("--workers", type=int, default=2, help="processes for the demo dataset")
    p.add_argument("--train", type=int, default=30, help="good training samples per part")
    p.add_argument("--detector", default="btf", help="detector trained and evaluated")
    p.add_argument("--no-detector", action="store_true", help="skip training and evaluation")
    from pcad.cli.device_arg import add_device_argument

    add_device_argument(p)
    p.set_defaults(func=run)
