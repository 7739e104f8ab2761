"""Does LSFA's feature adaptation beat the unadapted banks? An ablation through the engine.

One dataset made by the dataset generator with seed 0 (four built-in categories: gear,
plate_holes, cookie, bracket; 20 good training samples, 6 good and 2 of each of the six default
defect types in the test set, 128 x 128), and ``lsfa`` trained and evaluated per category
(:func:`pcad.engine.train` + :func:`pcad.engine.evaluate_run`, no maps written) with the
offline backbones (EfficientNet-Lite0 RGB, the packaged Point-MAE) at ``image_size`` 128 in
these configurations (:data:`CONFIGS`):

- ``frozen``: ``epochs=0``, the unadapted double lib (LSFA's banks and fusion on the frozen
  features);
- ``lsfa``: the defaults (2 epochs);
- ``lsfa 10 epochs``;
- ``lsfa untrained adapters``: ``lr`` 1e-12 (the randomly initialised blocks, no learning);
- ``lsfa no compactness``: ``compact_weight=0``;
- ``lsfa no alignment``: ``la_weight=0, ga_weight=0``;
- ``frozen sum`` / ``lsfa sum`` / ``lsfa 10 epochs sum``: ``fusion`` and ``map_fusion``
  ``"sum"`` (no one-class SVMs: the ``bank_weights``-weighted sum).
- ``fpfh ...``: ``frozen``, ``lsfa`` and their ``sum`` variants with ``point_backbone="fpfh"``
  (point features that do see the geometric defects).

Rows: the mean I-AUROC, AUPRO@0.3 and P-AUROC of each configuration over the categories, with
the per-category values, the fitted SVM weights (``w_image``, ``w_patch``: xyz, rgb) and the
adapters' loss per epoch in the JSON file. The finding is written up in the docstring of
:mod:`pcad.detectors.lsfa`. ``--quick``: two categories, 8 training samples, 2 epochs at most.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ("gear", "plate_holes", "cookie", "bracket")
BASE: dict[str, Any] = {"image_size": 128, "device": "cpu"}
SUM = {"fusion": "sum", "map_fusion": "sum"}
CONFIGS: dict[str, dict[str, Any]] = {
    "frozen": {"epochs": 0},
    "lsfa": {},
    "lsfa 10 epochs": {"epochs": 10},
    "lsfa untrained adapters": {"lr": 1e-12},
    "lsfa no compactness": {"compact_weight": 0.0},
    "lsfa no alignment": {"la_weight": 0.0, "ga_weight": 0.0},
    "frozen sum": {"epochs": 0, **SUM},
    "lsfa sum": {**SUM},
    "lsfa 10 epochs sum": {"epochs": 10, **SUM},
    "fpfh frozen": {"epochs": 0, "point_backbone": "fpfh"},
    "fpfh lsfa": {"point_backbone": "fpfh"},
    "fpfh frozen sum": {"epochs": 0, "point_backbone": "fpfh", **SUM},
    "fpfh lsfa sum": {"point_backbone": "fpfh", **SUM},
}
METRICS = (("i_auroc", "I-AUROC"), ("aupro", "AUPRO@0.3"), ("p_auroc", "P-AUROC"))


def _dataset(root: Path, quick: bool) -> tuple[str, tuple[str, ...]]:
    from synth.dataset import DatasetConfig, generate

    cats = CATEGORIES[:2] if quick else CATEGORIES
    cfg = DatasetConfig(categories=cats, train=8 if quick else 20, validation=1,
                        test_good=3 if quick else 6, test_defect=1 if quick else 2,
                        size=(128, 128), seed=0)
    generate(cfg, root, workers=1, progress=False)
    return str(root), cats


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def run(quick: bool) -> list[dict]:
    import torch

    from pcad.engine import evaluate_run, train

    torch.set_num_threads(1)  # small networks on a shared machine
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data, cats = _dataset(Path(tmp) / "data", quick)
        torch.set_num_threads(1)  # numba (synth) resets the OpenMP thread count
        for label, options in CONFIGS.items():
            config = {**BASE, **options}
            if quick and config.get("epochs", 2) > 2:
                config["epochs"] = 2
            per: dict[str, dict[str, Any]] = {}
            for cat in cats:
                work = Path(tmp) / "work" / label.replace(" ", "_") / cat
                train(data, cat, "lsfa", work / "run", dict(config), progress=False)
                m = evaluate_run(data, cat, work / "run", work / "eval", progress=False,
                                 write_maps=False)
                state = json.loads((work / "run" / "detector.json").read_text())["state"]
                per[cat] = {"i_auroc": m["i_auroc"], "aupro": m["aupro"]["0.3"],
                            "p_auroc": m["p_auroc"], "w_image": state["w_image"],
                            "w_patch": state["w_patch"], "history": state["history"]}
            for key, unit in METRICS:
                rows.append({"benchmark": f"lsfa ablation {label}", "case": f"mean {unit}",
                             "value": _mean([v[key] for v in per.values()]), "unit": "",
                             "reference": None, "ratio": None, "options": options,
                             "per_category": {c: v[key] for c, v in per.items()}})
            rows[-1]["fit"] = {c: {k: v[k] for k in ("w_image", "w_patch", "history")}
                               for c, v in per.items()}
    return rows
