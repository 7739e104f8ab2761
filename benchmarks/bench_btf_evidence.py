"""Where does btf's image score find its evidence? A diagnosis per modality bank (issue 12).

btf scores an image from one memory bank per modality (RGB backbone features, FPFH), each
bank's score being the foreground maximum of its own blurred map, LOO-normalised and summed
(:mod:`pcad.detectors.btf`). This script asks, on the built-in parts where defaults are
chosen (gear, plate, bracket, potato; 20 good training samples, 2 validation, 8 good and 4 of
each default defect type in the test set, 224 x 224, the dataset seeds given), three things:

1. each bank's own image AUROC, overall and per defect type (against the good samples);
2. **max on defect**: per defect type, the fraction of defective samples whose bank maximum
   over the part lies within :data:`TOLERANCE_PX` pixels of the ground truth (the image score
   is driven by the defect, not by the part's own surface elsewhere);
3. the I-AUROC of other monotone fusions of the same LOO-normalised bank scores
   (:data:`FUSIONS`: btf's ``zsum`` and ``zmax``, Fisher's combination of Gaussian tail
   probabilities, log-sum-exp), to see whether the fusion rule or the banks' evidence limits
   the image score.

Run: ``.venv/bin/python benchmarks/bench_btf_evidence.py [--seeds 0,1] [--data DIR] [--quick]
[--out FILE.json]``; prints a markdown table. ``--data DIR`` reuses (or makes) the datasets in
``DIR/ds<seed>``; ``--quick``: two parts, 8 training samples, 128 px.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("gear", "plate", "bracket", "potato")
FULL = {"train": 20, "validation": 2, "test_good": 8, "test_defect": 4, "size": (224, 224)}
QUICK = {"train": 8, "validation": 1, "test_good": 3, "test_defect": 2, "size": (128, 128)}
#: how far (pixels) a bank's maximum may lie from the ground truth and still count as on it
TOLERANCE_PX = 8


def fuse(z: np.ndarray, how: str) -> np.ndarray:
    """``(n, k)`` LOO-normalised bank scores -> ``(n,)`` fused scores; every rule is
    non-decreasing in each bank's score.

    >>> z = np.array([[0.0, 3.0], [1.0, 1.0]])
    >>> fuse(z, "zsum").tolist(), fuse(z, "zmax").tolist()
    ([3.0, 2.0], [3.0, 1.0])
    >>> bool(fuse(z, "fisher")[0] > fuse(z, "fisher")[1])
    True
    """
    from scipy.special import logsumexp
    from scipy.stats import norm

    if how == "zsum":
        return z.sum(axis=1)
    if how == "zmax":
        return z.max(axis=1)
    if how == "fisher":
        return (-2.0 * norm.logsf(z)).sum(axis=1)
    if how == "logsumexp":
        return logsumexp(z, axis=1)
    raise ValueError(f"fusion: unknown {how!r}")


#: the fusions compared (``zsum`` is btf's default)
FUSIONS = ("zsum", "zmax", "fisher", "logsumexp")


def _dataset(root: Path, seed: int, quick: bool) -> str:
    from synth.dataset import DatasetConfig, generate

    out = root / f"ds{seed}"
    counts = QUICK if quick else FULL
    cfg = DatasetConfig(categories=PARTS[:2] if quick else PARTS, seed=seed, **counts)
    generate(cfg, out, workers=1, progress=False)
    return str(out)


def run_part(data: str, category: str, work: Path) -> dict[str, Any]:
    """Train btf on one part and score its test set bank by bank: labels, defect types,
    ``z`` (``(n, 2)`` LOO-normalised rgb / xyz scores) and ``on_defect`` (per bank, whether
    each sample's maximum lies on its defect; None for good samples)."""
    import torch
    from scipy.ndimage import binary_dilation

    from pcad.detectors.patches import SampleForeground
    from pcad.engine import open_split, train

    torch.set_num_threads(1)
    det = train(data, category, "btf", work / "run", {}, progress=False)
    items = list(open_split(data, category, "test", det))
    size = det.config["image_size"]
    fores = [SampleForeground(s.xyz, size) for s in items]
    parts = det.batch_patch_features(items, fores)
    # per defective sample, once for every bank: the pixels within TOLERANCE_PX of its defect
    near = [binary_dilation(s.mask, iterations=TOLERANCE_PX) if s.label else None
            for s in items]
    z = np.zeros((len(items), len(det.modalities)))
    on: dict[str, list[bool | None]] = {}
    for j, m in enumerate(det.modalities):
        amaps, scores = det.score_patches(det.source_banks[m], [p[m] for p in parts], items,
                                          fores)
        z[:, j] = (np.asarray(scores) - det.z_image[j, 0]) / det.z_image[j, 1]
        on[m] = []
        for f, a, close in zip(fores, amaps, near, strict=True):
            if close is None:
                on[m].append(None)
                continue
            iy, ix = np.unravel_index(np.argmax(np.where(f.part(), a, -np.inf)), a.shape)
            on[m].append(bool(close[iy, ix]))
    return {"category": category, "labels": [int(s.label) for s in items],
            "defects": [s.defect for s in items], "modalities": list(det.modalities),
            "z": z.tolist(), "on_defect": on}


def summarise(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the (part, seed) runs: each bank's image AUROC (overall and per defect
    type), its max-on-defect rate per defect type, each fusion's I-AUROC."""
    from pcad.metrics import image_auroc

    out: dict[str, Any] = {"runs": len(parts), "bank_auroc": {}, "max_on_defect": {},
                           "fusion_auroc": {}}
    for how in FUSIONS:
        out["fusion_auroc"][how] = float(np.mean([
            image_auroc(fuse(np.asarray(p["z"]), how), p["labels"]) for p in parts]))
    for j, m in enumerate(parts[0]["modalities"]):
        per: dict[str, list[float]] = {"all": []}
        hits: dict[str, list[bool]] = {}
        for p in parts:
            z, labels = np.asarray(p["z"])[:, j], np.asarray(p["labels"])
            defects = np.asarray(p["defects"])
            per["all"].append(image_auroc(z, labels))
            for d in sorted(set(defects) - {"good"}):
                keep = (defects == "good") | (defects == d)
                per.setdefault(d, []).append(image_auroc(z[keep], labels[keep]))
            for d, h in zip(defects, p["on_defect"][m], strict=True):
                if h is not None:
                    hits.setdefault(d, []).append(h)
        out["bank_auroc"][m] = {d: float(np.mean(v)) for d, v in per.items()}
        out["max_on_defect"][m] = {d: float(np.mean(v)) for d, v in sorted(hits.items())}
    return out


def render_table(s: dict[str, Any]) -> str:
    """Markdown: one row per bank (image AUROC / max-on-defect per defect type), then the
    fusions' I-AUROC."""
    types = sorted(next(iter(s["max_on_defect"].values())))
    lines = ["| bank | I-AUROC | " + " | ".join(types) + " |",
             "|---|---|" + "---|" * len(types)]
    for m, auc in s["bank_auroc"].items():
        cells = [f"{auc.get(t, float('nan')):.2f} / {s['max_on_defect'][m][t]:.2f}"
                 for t in types]
        lines.append(f"| {m} | {auc['all']:.3f} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| fusion | " + " | ".join(FUSIONS) + " |")
    lines.append("|---|" + "---|" * len(FUSIONS))
    lines.append("| I-AUROC | " + " | ".join(f"{s['fusion_auroc'][h]:.3f}" for h in FUSIONS)
                 + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--data", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    seeds = [int(x) for x in a.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.data) if a.data else Path(tmp)
        parts = []
        for seed in seeds:
            data = _dataset(root, seed, a.quick)
            for cat in (PARTS[:2] if a.quick else PARTS):
                r = run_part(data, cat, Path(tmp) / f"run_{seed}_{cat}")
                parts.append({**r, "seed": seed})
                print(f"seed {seed} {cat} done", file=sys.stderr, flush=True)
    s = summarise(parts)
    if a.out:
        Path(a.out).write_text(json.dumps({"summary": s, "parts": parts}, indent=1))
    print(render_table(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
