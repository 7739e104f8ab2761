"""Which synthetic defects and which training rules make ``synthsup`` work?

On real RGB images ``synthsup`` (texture + colour + geometric defects) scored I-AUROC 0.496 /
P-AUROC 0.658. This ablation measures its additions (issue 12) on the **built-in procedural
parts** (the only data defaults may be chosen on), in ``mode=rgb+xyz`` and in ``mode=rgb`` on
RGB-only reads of the same data (``MVTec3DDataset(..., modality="rgb")``, as
bench_patchcore_ablation.py):

- data: :func:`synth.dataset.generate` per seed in :data:`SEEDS`, parts :data:`PARTS`,
  :data:`SIZE` pixels, 8 good training samples, 4 good and 2 of each default defect type
  (bump, dent, crack, hole, contamination, combined) in the test set;
- configurations (:data:`CONFIGS`): ``old`` (the previous mix: geometric + texture + colour,
  no image head, no validation), ``+graft`` / ``+scratch`` / ``+blur`` (one new appearance
  type added), ``all`` (every type), ``all+val`` (every type, early stopping on synthetic
  validation anomalies, image head) scored by the map maximum and ``all+val head-max`` (the
  same fit scored by the maximum of the map and the image head);
- rows: per mode and configuration, I-AUROC and P-AUROC, the mean over the (part, seed)
  datasets with their standard deviation (``spread``) and the mean paired difference to
  ``old`` with its standard error (``delta``, ``delta_se``).

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

PARTS = ("gear", "cookie")
SEEDS = (0, 1)
SIZE = 128
FIT = {"image_size": 128, "variants": 4, "epochs": 15, "hidden": 32, "layers": 2}
OLD = ("bump", "dent", "crack", "hole", "perlin", "texture", "colour")
NO_EXTRAS = {"image_head": False, "val_variants": 0}
CONFIGS: dict[str, dict[str, Any]] = {
    "old": {"defect_types": list(OLD), **NO_EXTRAS},
    "+graft": {"defect_types": [*OLD, "graft"], **NO_EXTRAS},
    "+scratch": {"defect_types": [*OLD, "scratch"], **NO_EXTRAS},
    "+blur": {"defect_types": [*OLD, "blur"], **NO_EXTRAS},
    "all": {"defect_types": None, **NO_EXTRAS},
    "all+val": {"defect_types": None, "image_head": True, "val_variants": 1, "patience": 5},
}
#: rows scored from another configuration's fit with another image score
SCORED = {"all+val head-max": ("all+val", "max")}
MODES = ("rgb+xyz", "rgb")
METRICS = (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"))


def _datasets(root: Path, quick: bool) -> list[tuple[str, Path, str]]:
    from synth.dataset import DatasetConfig, generate

    parts = PARTS[:1] if quick else PARTS
    out = []
    for seed in SEEDS[:1] if quick else SEEDS:
        cfg = DatasetConfig(categories=parts, train=8, validation=0, test_good=4,
                            test_defect=2, size=(SIZE, SIZE), seed=seed)
        where = root / f"seed{seed}"
        generate(cfg, where, workers=1, progress=False)
        out += [(f"{part}/seed{seed}", where, part) for part in parts]
    return out


def evaluate(options: dict[str, Any], train: list, test: list) -> dict[str, dict[str, float]]:
    """Per image score rule (``map-max``, ``max`` when the fit has an image head), I-AUROC and
    P-AUROC of ``synthsup`` with ``options``."""
    import numpy as np

    from pcad.detectors import create_detector
    from pcad.metrics import image_auroc, pixel_auroc
    from synth.supervision import DefectSource

    det = create_detector("synthsup", **{**FIT, **options})
    det.fit(train, defect_source=DefectSource(**det.defect_source_options()))
    labels = np.array([s.label for s in test])
    masks = np.stack([s.mask for s in test])
    out = {}
    for rule in ("map-max", "max") if det.image_head is not None else ("map-max",):
        det.config["image_score"] = rule
        res = [det.predict(s) for s in test]
        out[rule] = {"i_auroc": image_auroc(np.array([r[0] for r in res]), labels),
                     "p_auroc": pixel_auroc(np.stack([r[1] for r in res]), masks),
                     "best_epoch": det.best_epoch}
    return out


def run(quick: bool) -> list[dict]:
    import torch

    from pcad.data import MVTec3DDataset

    torch.set_num_threads(1)
    rows_names = (*CONFIGS, *SCORED)
    per: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = _datasets(Path(tmp), quick)
        torch.set_num_threads(1)  # numba (synth) resets the OpenMP thread count
        for label, root, part in sets:
            for mode in MODES:
                modality = "rgb+xyz" if mode == "rgb+xyz" else "rgb"
                train = list(MVTec3DDataset(root, part, "train", modality=modality))
                test = list(MVTec3DDataset(root, part, "test", modality=modality))
                for name, options in CONFIGS.items():
                    res = evaluate({**options, "mode": mode}, train, test)
                    per.setdefault((mode, name), {})[label] = res["map-max"]
                    for row, (base, rule) in SCORED.items():
                        if base == name:
                            per.setdefault((mode, row), {})[label] = res[rule]
                    print(mode, label, name, {k: v for k, v in res.items()}, flush=True)
    rows: list[dict] = []
    for mode in MODES:
        for name in rows_names:
            for key, unit in METRICS:
                values = [v[key] for v in per[(mode, name)].values()]
                mean, sd = mean_sd(values)
                diffs = [v[key] - per[(mode, "old")][d][key]
                         for d, v in per[(mode, name)].items()]
                dmean, dsd = mean_sd(diffs)
                rows.append({"benchmark": f"synthsup ablation {mode} {name}",
                             "case": f"mean {unit}", "value": mean, "unit": "",
                             "reference": None, "ratio": None, "spread": sd, "delta": dmean,
                             "delta_se": dsd / math.sqrt(len(diffs)),
                             "per_dataset": {d: v[key] for d, v in per[(mode, name)].items()}})
    return rows


if __name__ == "__main__":  # pragma: no cover - a table for the README
    import argparse
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    table = run(args.quick)
    for r in table:
        print(f"{r['benchmark']:<42} {r['case']:<14} {r['value']:.3f} +- {r['spread']:.3f} "
              f"delta {r['delta']:+.3f} +- {r['delta_se']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
