"""Detectability curves: I-AUROC and AUPRO@0.3 against defect strength for ``btf`` and learned
detectors on built-in objects (what ``pcad sensitivity`` runs), and the detection limits.

A dataset of three built-in parts (gear, plate_holes, potato; 30 good training samples, 10 good
test scans each, 256x256, seed 0) is generated; every detector of :data:`DETECTORS` is trained
once per category and evaluated on inject-mode test sets with bumps and dents (5 of each) at
every strength of :data:`STRENGTHS` (fractions of the bounding-box diagonal; the dataset
generator draws its bumps and dents between 0.012 and 0.03). The figure
``docs/detectability.png`` is rewritten from the run when ``PCAD_BENCH_FIGURES=1``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ("gear", "plate_holes", "potato")
STRENGTHS = (0.002, 0.004, 0.008, 0.016, 0.03)
# detector -> options (CPU-sized: the learned detectors train for a few epochs)
DETECTORS: dict[str, dict[str, Any]] = {"btf": {}, "synthsup": {}}


def _dataset(root: Path, quick: bool) -> tuple[str, tuple[str, ...]]:
    from synth.dataset import DatasetConfig, generate

    cats = CATEGORIES[:1] if quick else CATEGORIES
    cfg = DatasetConfig(categories=cats, train=8 if quick else 30, validation=1,
                        test_good=4 if quick else 10, test_defect=1, defects=("dent",),
                        size=(128, 128) if quick else (256, 256), seed=0)
    generate(cfg, root, workers=2, progress=False)
    return str(root), cats


def _figure(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = sorted({c for per in results.values() for c in per})
    fig, axes = plt.subplots(1, len(cats), figsize=(4.2 * len(cats), 3.4), squeeze=False)
    for ax, cat in zip(axes[0], cats, strict=True):
        for det, per in results.items():
            rows = per[cat]["rows"]
            xs = [r["strength"] for r in rows]
            ax.plot(xs, [r["i_auroc"] for r in rows], "o-", label=f"{det} I-AUROC")
            ax.plot(xs, [r["aupro_0.3"] for r in rows], "s--", alpha=0.6,
                    label=f"{det} AUPRO@0.3")
            limit = per[cat]["detection_limit"]
            if limit is not None:
                ax.axvline(limit, ls=":", color=ax.lines[-2].get_color())
        ax.axhline(0.95, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_title(cat)
        ax.set_xlabel("strength (fraction of bbox diagonal)")
        ax.set_ylim(0.4, 1.02)
    axes[0][0].set_ylabel("score")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool) -> list[dict]:
    from pcad.sensitivity import run_sensitivity

    rows: list[dict] = []
    results: dict[str, dict[str, dict[str, Any]]] = {}
    strengths = STRENGTHS[1::2] if quick else STRENGTHS
    with tempfile.TemporaryDirectory() as tmp:
        data, cats = _dataset(Path(tmp) / "data", quick)
        for det, options in DETECTORS.items():
            for cat in cats:
                summary = run_sensitivity(data, cat, det, strengths, Path(tmp) / det / cat,
                                          defects=("bump", "dent"),
                                          n_per_defect=2 if quick else 5,
                                          config=dict(options), progress=False)
                results.setdefault(det, {})[cat] = summary
                limit = summary["detection_limit"]
                rows.append({"benchmark": f"detection limit {det}", "case": cat,
                             "value": limit, "unit": "x diagonal", "reference": None,
                             "ratio": None,
                             "curve": [{k: r[k] for k in ("strength", "i_auroc", "p_auroc",
                                                          "aupro_0.3")}
                                       for r in summary["rows"]]})
                for r in summary["rows"]:
                    rows.append({"benchmark": f"sensitivity {det} {cat}",
                                 "case": f"strength {r['strength']}", "value": r["i_auroc"],
                                 "unit": "I-AUROC", "reference": None, "ratio": None,
                                 "aupro_0.3": r["aupro_0.3"]})
    if os.environ.get("PCAD_BENCH_FIGURES") == "1" and not quick:
        _figure(results, ROOT / "docs" / "detectability.png")
    return rows
