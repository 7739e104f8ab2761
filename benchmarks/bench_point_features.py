"""Which point feature carries defect evidence: the shipped Point-MAE or FPFH?

Measured only on the built-in procedural parts (:data:`CATEGORIES`, :data:`SEEDS`): per seed a
dataset from the dataset generator (128 x 128, 10 good training samples, 4 good and 2 of each
of :data:`DEFECTS` in the test set), and per category and point backbone (``point_backbone``
``"pointmae"``, the packaged checkpoint, and ``"fpfh"``) ``m3dm`` and ``lsfa`` fitted with their
other defaults at ``image_size`` 128 on the CPU. Per (detector, backbone):

- ``point-bank patch AUROC``: the patch distances of the detector's point bank alone
  (``MultiBankDetector.bank_scores``, ``"xyz"``; m3dm's is the frozen point feature, lsfa's the
  adapted one) against the ground truth pooled to the ``16 x 16`` patch grid (a patch is
  anomalous when any of its pixels is), over the patches with measured points on the part;
- ``point-bank I-AUROC``: the point bank's own image score;
- ``I-AUROC`` and ``AUPRO@0.3`` of the detector's fused output.

Each row's ``value`` is the mean over categories and seeds and ``spread`` the (population)
standard deviation of the per-(category, seed) values, all of which are in ``per_run``.
``--quick``: two categories, one seed, 6 training samples, ``epochs=1``.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

CATEGORIES = ("gear", "plate_holes", "potato")
SEEDS = (0, 1)
DEFECTS = ("bump", "dent", "crack", "hole")
BACKBONES = ("pointmae", "fpfh")
DETECTORS = ("m3dm", "lsfa")
SIZE = 128


def _dataset(root: Path, cats: tuple[str, ...], seed: int, quick: bool) -> None:
    from synth.dataset import DatasetConfig, generate

    generate(DatasetConfig(categories=cats, train=6 if quick else 10, validation=0,
                           test_good=3 if quick else 4, test_defect=1 if quick else 2,
                           defects=DEFECTS, size=(SIZE, SIZE), seed=seed),
             root, workers=1, progress=False)


def patch_truth(mask: Any, xyz: Any, grid: tuple[int, int]) -> tuple[Any, Any]:
    """``(anomalous (h, w) bool, on_part (h, w) bool)``: a patch is anomalous when any of its
    pixels is, on the part when any of its pixels has a measured point.

    Example:
        >>> import numpy as np
        >>> m = np.zeros((4, 4), bool); m[0, 0] = True
        >>> a, p = patch_truth(m, np.ones((4, 4, 3)), (2, 2))
        >>> a.tolist(), bool(p.all())
        ([[True, False], [False, False]], True)
    """
    import numpy as np

    h, w = grid
    rows = (np.arange(mask.shape[0]) * h) // mask.shape[0]
    cols = (np.arange(mask.shape[1]) * w) // mask.shape[1]
    anomalous = np.zeros(grid, bool)
    on_part = np.zeros(grid, bool)
    np.logical_or.at(anomalous, (rows[:, None], cols[None, :]), mask)
    np.logical_or.at(on_part, (rows[:, None], cols[None, :]), np.any(xyz != 0, axis=-1))
    return anomalous, on_part


def _score(det: Any, test: list) -> dict[str, float]:
    import numpy as np

    from pcad.metrics import aupro, image_auroc

    captured: dict[str, Any] = {}
    original = det.bank_scores

    def spy(sample, foreground=None, scored=None):
        captured["out"] = original(sample, foreground)  # every bank's score, not only scored
        return captured["out"]

    det.bank_scores = spy  # predict scores every bank once; keep the point bank's share
    scores, maps, bank_img, pat_s, pat_y = [], [], [], [], []
    for s in test:
        captured.clear()
        score, amap = det.predict(s)
        patches, per_bank = captured.get("out") or original(s)
        scores.append(score)
        maps.append(amap)
        bank_img.append(per_bank["xyz"])
        y, part = patch_truth(s.mask, s.xyz, det.grid)
        pat_s.append(patches["xyz"][part])
        pat_y.append(y[part])
    labels = np.array([s.label for s in test])
    masks = [s.mask for s in test]
    return {"patch_auroc": image_auroc(np.concatenate(pat_s), np.concatenate(pat_y)),
            "bank_i_auroc": image_auroc(bank_img, labels),
            "i_auroc": image_auroc(scores, labels), "aupro": aupro(maps, masks, 0.3)}


KEYS = (("patch_auroc", "point-bank patch AUROC"), ("bank_i_auroc", "point-bank I-AUROC"),
        ("i_auroc", "I-AUROC"), ("aupro", "AUPRO@0.3"))


def run(quick: bool) -> list[dict]:
    import torch

    from pcad.data import MVTec3DDataset
    from pcad.detectors import create_detector

    cats = CATEGORIES[:2] if quick else CATEGORIES
    seeds = SEEDS[:1] if quick else SEEDS
    per: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            root = Path(tmp) / f"seed{seed}"
            _dataset(root, cats, seed, quick)
            torch.set_num_threads(1)  # numba (synth) resets the OpenMP thread count
            for cat in cats:
                train = list(MVTec3DDataset(root, cat, "train", modality="rgb+xyz"))
                test = list(MVTec3DDataset(root, cat, "test", modality="rgb+xyz"))
                for name in DETECTORS:
                    for bb in BACKBONES:
                        opts: dict[str, Any] = {"image_size": SIZE, "point_backbone": bb,
                                                "device": "cpu", "seed": seed}
                        if quick:
                            opts["epochs"] = 1
                        det = create_detector(name, **opts).fit(train)
                        m = _score(det, test)
                        per.setdefault((name, bb), []).append(
                            {"category": cat, "seed": seed, **m})
    rows = []
    for (name, bb), runs in per.items():
        for key, label in KEYS:
            values = [r[key] for r in runs]
            rows.append({"benchmark": f"point features {name} {bb}", "case": label,
                         "value": statistics.fmean(values), "unit": "",
                         "reference": None, "ratio": None,
                         "spread": statistics.pstdev(values),
                         "per_run": [{"category": r["category"], "seed": r["seed"],
                                      "value": r[key]} for r in runs]})
    return rows


if __name__ == "__main__":  # pragma: no cover
    import sys

    for row in run("--quick" in sys.argv):
        print(f"{row['benchmark']:34s} {row['case']:24s} {row['value']:.3f} "
              f"+- {row['spread']:.3f}")
