"""Detectors on the demo dataset: quality (I-AUROC, P-AUROC, AUPRO@0.3 per category and per
defect type), fit time, inference milliseconds per sample and peak memory at 224x224.

The dataset is the one ``pcad demo`` makes (the seven default built-in categories, 30 good
training samples each, 6 good and 3 of each of the six default defect types in the test set,
256x256, seed 0). Each detector runs in its own child process so that its peak resident memory
(``getrusage(RUSAGE_CHILDREN)``) is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DETECTORS = ("patchcore-rgb", "fpfh", "btf")

CHILD = r"""
import csv, json, sys, time
from pathlib import Path
import numpy as np
from pcad.engine import train, evaluate_run
from pcad.metrics import image_auroc
data, det, work, cats = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4].split(",")
out = {"categories": {}, "per_defect": {}}
fit_s, scores = 0.0, []
for c in cats:
    t0 = time.perf_counter()
    train(data, c, det, work / "run" / c, progress=False)
    fit_s += time.perf_counter() - t0
    m = evaluate_run(data, c, work / "run" / c, work / "eval" / c, progress=False,
                     write_maps=False)
    out["categories"][c] = {k: m[k] for k in ("i_auroc", "p_auroc", "latency_ms_per_sample")}
    out["categories"][c]["aupro"] = m["aupro"]["0.3"]
    with open(work / "eval" / c / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    goods = [float(r["score"]) for r in rows if r["defect"] == "good"]
    for d in sorted({r["defect"] for r in rows} - {"good"}):
        bad = [float(r["score"]) for r in rows if r["defect"] == d]
        out["per_defect"].setdefault(d, []).append(
            image_auroc(goods + bad, [0] * len(goods) + [1] * len(bad)))
out["fit_s_per_category"] = fit_s / len(cats)
print(json.dumps(out))
"""


def _dataset(root: Path, quick: bool) -> tuple[str, list[str]]:
    from synth.dataset import DEFAULT_CATEGORIES, DatasetConfig, generate

    cats = ["gear", "plate_holes"] if quick else list(DEFAULT_CATEGORIES)
    cfg = DatasetConfig(categories=tuple(cats), train=8 if quick else 30, validation=1,
                        test_good=3 if quick else 6, test_defect=2 if quick else 3,
                        size=(128, 128) if quick else (256, 256), seed=0)
    generate(cfg, root, workers=2, progress=False)
    return str(root), cats


def run(quick: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data, cats = _dataset(Path(tmp) / "data", quick)
        results = {}
        for det in DETECTORS:
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            proc = subprocess.run([sys.executable, "-c", CHILD, data, det,
                                   str(Path(tmp) / det), ",".join(cats)],
                                  capture_output=True, text=True, cwd=ROOT, check=True)
            peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[det] = r
            per = r["categories"]
            mean = {k: sum(v[k] for v in per.values()) / len(per)
                    for k in ("i_auroc", "p_auroc", "aupro", "latency_ms_per_sample")}
            for key, unit in (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"),
                              ("aupro", "AUPRO@0.3")):
                rows.append({"benchmark": f"detector {det}", "case": f"mean {unit}",
                             "value": mean[key], "unit": "", "reference": None, "ratio": None,
                             "per_category": {c: v[key] for c, v in per.items()}})
            rows.append({"benchmark": f"detector {det}", "case": "inference",
                         "value": mean["latency_ms_per_sample"], "unit": "ms/sample",
                         "reference": None, "ratio": None})
            rows.append({"benchmark": f"detector {det}", "case": "fit (per category)",
                         "value": r["fit_s_per_category"], "unit": "s", "reference": None,
                         "ratio": None})
            rows.append({"benchmark": f"detector {det}", "case": "peak RSS", "value": peak,
                         "unit": "MB", "reference": None, "ratio": None})
        for d in sorted(results["btf"]["per_defect"]):
            vals = {det: sum(results[det]["per_defect"][d]) / len(cats) for det in DETECTORS}
            rows.append({"benchmark": "I-AUROC by defect", "case": d, "value": vals["btf"],
                         "unit": "btf", "reference": f"patchcore-rgb {vals['patchcore-rgb']:.3f}",
                         "ratio": vals["btf"] / max(vals["patchcore-rgb"], 1e-9),
                         "fpfh": vals["fpfh"], "patchcore-rgb": vals["patchcore-rgb"]})
    return rows
