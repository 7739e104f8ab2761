"""Detectability curves: I-AUROC and AUPRO@0.3 against defect strength for ``btf`` and learned
detectors on built-in objects (what ``pcad sensitivity`` runs), and the detection limits.

A dataset of three built-in parts (gear, plate_holes, potato; 30 good training samples, 10 good
test scans each, 256x256, seed 0) is generated; every detector of :data:`DETECTORS` is trained
once per category and evaluated on inject-mode test sets with bumps and dents (5 of each) at
every strength of :data:`STRENGTHS` (fractions of the bounding-box diagonal; the dataset
generator draws its bumps and dents between 0.012 and 0.03). The figure
``docs/detectability.png`` is rewritten from the run when ``PCAD_BENCH_FIGURES=1``.

``PCAD_BENCH_SENS_SET=meshes`` (issue 12, Must 7) runs the default detector of ``pcad train``
(``btf``) on the real meshes of the generalization benchmark instead
(:func:`bench_generalization.mesh_files`: every mesh in ``../shared/data/meshes`` or
``$PCAD_MESHES``, each a category; 16 good training samples, 10 good test scans, 224x224,
seed 0) and writes ``docs/detectability_meshes.png``; without the folder it returns one
``skipped`` row. The meshes are a validation set looked at, never tuned on.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ("gear", "plate_holes", "potato")
STRENGTHS = (0.002, 0.004, 0.008, 0.016, 0.03)
# detector -> options (CPU-sized: the learned detectors train for a few epochs)
DETECTORS: dict[str, dict[str, Any]] = {"btf": {}, "synthsup": {}}
#: the meshes set: the default detector of ``pcad train`` with its default options
MESH_DETECTORS: dict[str, dict[str, Any]] = {"btf": {}}
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))


def _dataset(root: Path, quick: bool, meshes: list[Path] | None = None
             ) -> tuple[str, tuple[str, ...]]:
    """Render the built-in parts (or ``meshes``, each a category) into ``root``."""
    from synth.dataset import DatasetConfig, categories_from, generate

    if meshes is None:
        cats: tuple[Any, ...] = CATEGORIES[:1] if quick else CATEGORIES
        train, size = (8, (128, 128)) if quick else (30, (256, 256))
    else:
        cats = categories_from([str(m) for m in (meshes[:1] if quick else meshes)], None)
        train, size = (8, (128, 128)) if quick else (16, (224, 224))
    cfg = DatasetConfig(categories=cats, train=train, validation=1,
                        test_good=4 if quick else 10, test_defect=1, defects=("dent",),
                        size=size, seed=0)
    generate(cfg, root, workers=2, progress=False)
    return str(root), tuple(c if isinstance(c, str) else c.name for c in cats)


def _figure(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = sorted({c for per in results.values() for c in per})
    ncols = min(4, len(cats))
    nrows = -(-len(cats) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(cats):]:
        ax.set_visible(False)
    for ax, cat in zip(axes.flat, cats, strict=False):
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
        lows = [r[k] for per in results.values() for r in per[cat]["rows"]
                for k in ("i_auroc", "aupro_0.3") if r[k] is not None]
        ax.set_ylim(min([0.4, *lows]) - 0.02, 1.02)
    for row in axes:
        row[0].set_ylabel("score")
    axes.flat[len(cats) - 1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool) -> list[dict]:
    from pcad.sensitivity import run_sensitivity

    meshes = None
    detectors, figure = DETECTORS, "detectability.png"
    if os.environ.get("PCAD_BENCH_SENS_SET") == "meshes":
        from bench_generalization import mesh_files, meshes_dir

        meshes = mesh_files(meshes_dir())
        if not meshes:
            return [{"benchmark": "sensitivity meshes", "case": "skipped", "value": None,
                     "unit": "", "reference": None, "ratio": None,
                     "skipped": f"no mesh files in {meshes_dir()} (set PCAD_MESHES)"}]
        detectors, figure = MESH_DETECTORS, "detectability_meshes.png"
    rows: list[dict] = []
    results: dict[str, dict[str, dict[str, Any]]] = {}
    strengths = STRENGTHS[1::2] if quick else STRENGTHS
    with tempfile.TemporaryDirectory() as tmp:
        data, cats = _dataset(Path(tmp) / "data", quick, meshes)
        for det, options in detectors.items():
            for cat in cats:
                summary = run_sensitivity(data, cat, det, strengths, Path(tmp) / det / cat,
                                          defects=("bump", "dent"),
                                          n_per_defect=2 if quick else 5,
                                          config=dict(options), progress=False)
                results.setdefault(det, {})[cat] = summary
                limit = summary["detection_limit"]
                print(f"  sensitivity: {det} {cat}: limit {limit}", flush=True)
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
        _figure(results, ROOT / "docs" / figure)
    return rows
