"""Detectors on generated datasets: quality (I-AUROC, P-AUROC, AUPRO@0.3 per category and per
defect type), fit time, inference milliseconds per sample and peak memory at 224x224.

Two datasets, both made by the dataset generator with seed 0 (the seven default built-in
categories, 30 good training samples each, 6 good and 3 of each of the six default defect
types in the test set, 256x256):

- ``demo``: the one ``pcad demo`` makes (the generator's default defect sizes);
- ``hard``: the same objects with every defect half as strong (bumps and dents 0.006-0.015 of
  the bounding-box diagonal instead of 0.012-0.03, cracks 0.002-0.004 deep and half as wide,
  holes of half the radius).

Every detector runs with pcad's offline backbones (EfficientNet-Lite0 for RGB; FPFH or the
packaged Point-MAE for points, as each detector's defaults say), in its own child process so
that its peak resident memory (the child's own ``ru_maxrss``) is its own. ``synthsup`` trains
with cracks and holes held out (its overall numbers include those unseen types) and reports the
held-out defect types apart from the seen ones. ``PCAD_BENCH_DETECTORS=btf,cfm`` limits the
detectors (for development).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from runlog import child_env  # noqa: E402

# label -> (detector, options, datasets)
DETECTORS: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "patchcore-rgb": ("patchcore-rgb", {}, ("demo",)),
    "fpfh": ("fpfh", {}, ("demo",)),
    "btf": ("btf", {}, ("demo", "hard")),
    "cfm": ("cfm", {}, ("demo",)),
    "m3dm": ("m3dm", {}, ("demo", "hard")),
    "lsfa": ("lsfa", {}, ("demo", "hard")),
    "synthsup (crack, hole held out)": ("synthsup", {"holdout_defects": ["crack", "hole"]},
                                        ("demo",)),
}

CHILD = r"""
import json, sys, time
from pathlib import Path
from pcad.engine import train, evaluate_run
data, det, work, cats, options = (sys.argv[1], sys.argv[2], Path(sys.argv[3]),
                                  sys.argv[4].split(","), json.loads(sys.argv[5]))
out = {"categories": {}, "per_defect": {}, "holdout": {}, "seen": {}}
fit_s = 0.0
for c in cats:
    t0 = time.perf_counter()
    train(data, c, det, work / "run" / c, dict(options), progress=False)
    fit_s += time.perf_counter() - t0
    m = evaluate_run(data, c, work / "run" / c, work / "eval" / c, progress=False,
                     write_maps=False)
    out["categories"][c] = {k: m[k] for k in ("i_auroc", "p_auroc", "latency_ms_per_sample")}
    out["categories"][c]["aupro"] = m["aupro"]["0.3"]
    for d, v in m["per_defect"].items():
        out["per_defect"].setdefault(d, []).append(v["i_auroc"])
    for split in ("holdout", "seen"):
        if split in m:
            out[split][c] = {"i_auroc": m[split]["i_auroc"], "aupro": m[split]["aupro"]["0.3"],
                             "defects": m[split]["defects"]}
out["fit_s_per_category"] = fit_s / len(cats)
import resource
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _dataset(root: Path, quick: bool, hard: bool) -> tuple[str, list[str]]:
    from synth.dataset import DEFAULT_CATEGORIES, DatasetConfig, generate
    from synth.dataset.config import DEFAULT_DEFECT_RANGES

    cats = ["gear", "plate_holes"] if quick else list(DEFAULT_CATEGORIES)
    ranges = {k: dict(v) for k, v in DEFAULT_DEFECT_RANGES.items()}
    if hard:
        for kind, params in ranges.items():
            for name in ("strength", "width", "radius"):
                if name in params and not (kind in ("bump", "dent") and name == "radius"):
                    lo, hi = params[name]
                    params[name] = (lo / 2, hi / 2)
    cfg = DatasetConfig(categories=tuple(cats), train=8 if quick else 30, validation=1,
                        test_good=3 if quick else 6, test_defect=2 if quick else 3,
                        size=(128, 128) if quick else (256, 256), seed=0, defect_ranges=ranges)
    generate(cfg, root, workers=2, progress=False)
    return str(root), cats


def _selected() -> dict[str, tuple[str, dict[str, Any], tuple[str, ...]]]:
    only = os.environ.get("PCAD_BENCH_DETECTORS")
    if not only:
        return DETECTORS
    names = {n.strip() for n in only.split(",")}
    return {k: v for k, v in DETECTORS.items() if v[0] in names or k in names}


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def run(quick: bool) -> list[dict]:
    rows: list[dict] = []
    detectors = _selected()
    with tempfile.TemporaryDirectory() as tmp:
        sets = {name: _dataset(Path(tmp) / name, quick, hard=name == "hard")
                for name in ("demo", "hard")
                if any(name in d[2] for d in detectors.values())}
        for label, (det, options, datasets) in detectors.items():
            for set_name in datasets:
                data, cats = sets[set_name]
                work = Path(tmp) / "work" / f"{label}-{set_name}".replace(" ", "_")
                proc = subprocess.run([sys.executable, "-c", CHILD, data, det, str(work),
                                       ",".join(cats), json.dumps(options)],
                                      capture_output=True, text=True, cwd=ROOT,
                                      env=child_env())
                if proc.returncode != 0:
                    raise RuntimeError(f"{label} on {set_name}: {proc.stderr[-3000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                per = r["categories"]
                bench = f"detector {label} [{set_name}]"
                for key, unit in (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"),
                                  ("aupro", "AUPRO@0.3")):
                    rows.append({"benchmark": bench, "case": f"mean {unit}",
                                 "value": _mean([v[key] for v in per.values()]), "unit": "",
                                 "reference": None, "ratio": None,
                                 "per_category": {c: v[key] for c, v in per.items()}})
                if set_name == "demo":
                    ms = _mean([v["latency_ms_per_sample"] for v in per.values()])
                    rows.append({"benchmark": bench, "case": "inference", "value": ms,
                                 "unit": "ms/sample", "reference": None, "ratio": None,
                                 "fps": 1000.0 / ms})
                    rows.append({"benchmark": bench, "case": "fit (per category)",
                                 "value": r["fit_s_per_category"], "unit": "s",
                                 "reference": None, "ratio": None})
                    rows.append({"benchmark": bench, "case": "peak RSS", "value": r["peak_rss_mb"],
                                 "unit": "MB", "reference": None, "ratio": None})
                for d, vals in sorted(r["per_defect"].items()):
                    rows.append({"benchmark": f"I-AUROC by defect [{set_name}]", "case": d,
                                 "value": _mean(vals), "unit": label, "reference": None,
                                 "ratio": None})
                for split in ("holdout", "seen"):
                    if r[split]:
                        rows.append({"benchmark": bench, "case": f"{split} I-AUROC",
                                     "value": _mean([v["i_auroc"] for v in r[split].values()]),
                                     "unit": "", "reference": None, "ratio": None,
                                     "aupro": _mean([v["aupro"] for v in r[split].values()]),
                                     "per_category": r[split]})
    return rows
