"""What costs ``patchcore-rgb`` against a plain nearest neighbour of its own features?

On real RGB images (a held-out MVTec 3D-AD category) ``patchcore-rgb``'s defaults scored
I-AUROC 0.613 where a plain kNN of the same EfficientNet-Lite0 features (full bank, image
score = max of the upsampled map blurred with sigma 4) scored 0.701. This ablation varies one
knob of ``patchcore-rgb`` at a time on **RGB-only renders of the built-in procedural parts**
(the only data defaults may be chosen on):

- data: :func:`synth.dataset.generate` per seed (0, 1), parts :data:`PARTS` (quick: 2 parts,
  seed 0), 128 x 128, 10 good training samples, 6 good and 2 of each default defect type
  (bump, dent, crack, hole, contamination, combined) in the test set, read with
  ``MVTec3DDataset(..., modality="rgb")`` (no xyz: nothing but the image);
- configurations (:data:`CONFIGS`, options of ``patchcore-rgb``): the defaults, the coreset
  (``coreset_ratio``), the image-score rule (``image_score``: PatchCore's ``reweighted``
  maximum, ``map-max`` of the upsampled and blurred map, ``patch-max`` of the patch grid),
  the blur (``sigma``), the local 3x3 aggregation (``aggregate_kernel`` 1 = off), the feature
  blocks (``layers``) and the input size (``image_size``); ``knn`` is the plain nearest
  neighbour of the issue (full bank, map maximum, sigma 4);
- rows: per configuration, I-AUROC, P-AUROC and AUPRO@0.3, mean over the (part, seed)
  datasets with the standard deviation over them (``spread``), and the mean paired
  difference to :data:`BASELINE` (PatchCore's re-weighted score, coreset 0.1: the previous
  default) with its standard error (``delta``, ``delta_se``); the per-dataset values are in
  the JSON file.

Each detector is used directly (``fit`` / ``predict``); torch runs on one thread.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from runlog import mean_sd  # noqa: E402

PARTS = ("gear", "cookie", "hex_nut")
SEEDS = (0, 1)
SIZE = 128
FULL = {"coreset_ratio": 1.0}
REW = {"image_score": "reweighted"}
#: the reference row of the ``delta`` columns: PatchCore's re-weighted image score with the
#: 0.1 coreset (``patchcore-rgb``'s default before this ablation)
BASELINE = "reweighted"
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "reweighted": {**REW},
    "reweighted coreset 1.0": {**REW, **FULL},
    "reweighted 256 px": {**REW, "image_size": 256},
    "map-max": {"image_score": "map-max"},
    "patch-max": {"image_score": "patch-max"},
    "knn (coreset 1.0 + map-max)": {**FULL, "image_score": "map-max"},
    "knn sigma 0": {**FULL, "image_score": "map-max", "sigma": 0.0},
    "knn sigma 8": {**FULL, "image_score": "map-max", "sigma": 8.0},
    "knn no 3x3 aggregation": {**FULL, "image_score": "map-max", "aggregate_kernel": 1},
    "knn block 4 only": {**FULL, "image_score": "map-max", "layers": [4]},
    "knn blocks 4+10+12": {**FULL, "image_score": "map-max", "layers": [4, 10, 12]},
    "knn 256 px": {**FULL, "image_score": "map-max", "image_size": 256},
}
QUICK = ("defaults", "reweighted", "reweighted coreset 1.0", "knn (coreset 1.0 + map-max)",
         "knn no 3x3 aggregation")
METRICS = (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"), ("aupro", "AUPRO@0.3"))


def _datasets(root: Path, quick: bool) -> list[tuple[str, Path, str]]:
    """``(label, root, part)`` of every RGB-only dataset to score."""
    from synth.dataset import DatasetConfig, generate

    parts = PARTS[:2] if quick else PARTS
    out = []
    for seed in SEEDS[:1] if quick else SEEDS:
        cfg = DatasetConfig(categories=parts, train=10, validation=0, test_good=6,
                            test_defect=2, size=(SIZE, SIZE), seed=seed)
        where = root / f"seed{seed}"
        generate(cfg, where, workers=1, progress=False)
        out += [(f"{part}/seed{seed}", where, part) for part in parts]
    return out


def evaluate(options: dict[str, Any], train: list, test: list) -> dict[str, float]:
    """I-AUROC, P-AUROC and AUPRO@0.3 of ``patchcore-rgb`` with ``options``."""
    import numpy as np

    from pcad.detectors import create_detector
    from pcad.metrics import aupro, image_auroc, pixel_auroc

    det = create_detector("patchcore-rgb", **options).fit(train)
    out = [det.predict(s) for s in test]
    scores = np.array([score for score, _ in out])
    maps = np.stack([amap for _, amap in out])
    labels = np.array([s.label for s in test])
    masks = np.stack([s.mask for s in test])
    return {"i_auroc": image_auroc(scores, labels),
            "p_auroc": pixel_auroc(maps, masks), "aupro": aupro(maps, masks, 0.3)}


def run(quick: bool) -> list[dict]:
    import torch

    from pcad.data import MVTec3DDataset

    torch.set_num_threads(1)
    names = QUICK if quick else tuple(CONFIGS)
    per: dict[str, dict[str, dict[str, float]]] = {n: {} for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        sets = _datasets(Path(tmp), quick)
        torch.set_num_threads(1)  # numba (synth) resets the OpenMP thread count
        for label, root, part in sets:
            train = list(MVTec3DDataset(root, part, "train", modality="rgb"))
            test = list(MVTec3DDataset(root, part, "test", modality="rgb"))
            assert all(s.xyz is None for s in train + test)
            for name in names:
                per[name][label] = evaluate(CONFIGS[name], train, test)
    rows: list[dict] = []
    for name in names:
        for key, unit in METRICS:
            values = [v[key] for v in per[name].values()]
            mean, sd = mean_sd(values)
            diffs = [v[key] - per[BASELINE][d][key] for d, v in per[name].items()]
            dmean, dsd = mean_sd(diffs)
            rows.append({"benchmark": f"patchcore ablation {name}", "case": f"mean {unit}",
                         "value": mean, "unit": "", "reference": None, "ratio": None,
                         "spread": sd, "delta": dmean,
                         "delta_se": dsd / math.sqrt(len(diffs)),
                         "options": CONFIGS[name],
                         "per_dataset": {d: v[key] for d, v in per[name].items()}})
    return rows


if __name__ == "__main__":  # pragma: no cover - a table for the README
    import argparse
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    rows = run(args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        by.setdefault(r["benchmark"].removeprefix("patchcore ablation "), {})[r["case"]] = r
    print(f"| configuration | {' | '.join(u for _, u in METRICS)} | "
          f"ΔI-AUROC vs {BASELINE} | ΔAUPRO vs {BASELINE} |")
    print("|---|---|---|---|---|---|")
    for name, cases in by.items():
        cells = [f"{cases[f'mean {u}']['value']:.3f} ± {cases[f'mean {u}']['spread']:.3f}"
                 for _, u in METRICS]
        deltas = [f"{cases[f'mean {u}']['delta']:+.3f} ± {cases[f'mean {u}']['delta_se']:.3f}"
                  for u in ("I-AUROC", "AUPRO@0.3")]
        print(f"| {name} | " + " | ".join(cells + deltas) + " |")
