"""Generalization: every detector on datasets rendered from real meshes nobody tuned on.

Workload (issue 12, Must 1): one dataset per seed made by the dataset generator from every
mesh file (``.stl``/``.ply``/``.obj``/``.off``) in the shared meshes folder
(``../shared/data/meshes`` from the repository root; ``PCAD_MESHES=FOLDER`` overrides it), each
mesh a category (what ``pcad make-dataset --objects FILE...`` does), the default defect mix,
16 good training samples, 2 validation, 6 good and 12 of each default defect type in the test
set, 224 x 224, seeds 0, 1 and 2. ``--quick``: the first two meshes, seed 0, 128 x 128, 8
training samples, 1 validation, 3 good and 2 of each defect type (a smoke test).

Every registered detector (:func:`pcad.detectors.list_detectors`;
``PCAD_BENCH_DETECTORS=btf,m3dm`` restricts them, ``PCAD_BENCH_SEEDS=0,1`` the seeds) runs with
its default options, fitted per category and evaluated through the engine
(:func:`pcad.engine.train`, :func:`pcad.engine.evaluate_run`, no maps written), in this
process with one torch thread. Each (detector, mesh, seed) gives I-AUROC, P-AUROC and AUPRO@0.3
overall and per defect type (the engine's :func:`~pcad.engine.defect_breakdown`), fit seconds,
inference ms/sample and, for detectors with several memory banks
(:meth:`pcad.detectors.multimodal.MultiBankDetector.bank_scores`), each bank's image AUROC on
its own, so that a blind bank shows.

Rows (:func:`aggregate`): per detector and mesh, every metric's mean over seeds with its
spread (``std``: sample standard deviation, 0 for one seed; ``min``, ``max``; ``per_seed``);
per detector, the mean over meshes (``mesh`` = ``"mean"``) of the per-mesh means, with
``seed_std`` (mean of the per-mesh seed std) and the worst and best mesh (``min``, ``max``).
A run that fails gives an ``error`` row and the others go on. ``PCAD_BENCH_RUNS=FILE.jsonl``
keeps every finished run as one JSON line and skips the runs already there, so an interrupted
benchmark resumes where it stopped (a seed whose runs are all done is not rendered again);
``PCAD_BENCH_DATA=DIR`` keeps the rendered datasets in ``DIR`` (:func:`runlog.data_root`).
Without the meshes folder (CI clones have no ``../shared``) the module returns one ``skipped`` row.

The README table (:func:`render_table`):
``python benchmarks/bench_generalization.py --table benchmarks/generalization.json``.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from runlog import append_run, data_root, load_runs, setting_row, table_main  # noqa: E402

BENCH = "generalization"
MESH_SUFFIXES = (".stl", ".ply", ".obj", ".off")
SEEDS = (0, 1, 2)
#: the issue's recipe (full) and the smoke test (quick)
FULL = {"train": 16, "validation": 2, "test_good": 6, "test_defect": 12, "size": (224, 224)}
QUICK = {"train": 8, "validation": 1, "test_good": 3, "test_defect": 2, "size": (128, 128)}
#: metric key -> label of the overall metrics; per defect type ``"<key>/<defect>"``, per bank
#: ``"bank_i_auroc/<bank>"``
METRICS = (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"), ("aupro", "AUPRO@0.3"),
           ("fit_s", "fit s"), ("infer_ms", "ms/sample"))


def meshes_dir() -> Path:
    """The meshes folder: ``$PCAD_MESHES`` or ``<repo>/../shared/data/meshes``."""
    env = os.environ.get("PCAD_MESHES")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "meshes"


def mesh_files(folder: Path) -> list[Path]:
    """The mesh files in ``folder``, sorted by name; ``[]`` when it is absent.

    >>> mesh_files(Path("/nonexistent-folder"))
    []
    """
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES),
                  key=lambda p: p.name.lower())


def selected_detectors() -> list[str]:
    """Every registered detector, or those named in ``$PCAD_BENCH_DETECTORS`` (comma list)."""
    from pcad.detectors import list_detectors

    names = list_detectors()
    only = os.environ.get("PCAD_BENCH_DETECTORS")
    if not only:
        return names
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ValueError(f"PCAD_BENCH_DETECTORS: unknown detector(s) {unknown}; known: {names}")
    return wanted


def selected_seeds(default: tuple[int, ...]) -> tuple[int, ...]:
    """``default``, or the seeds in ``$PCAD_BENCH_SEEDS`` (comma list of integers)."""
    only = os.environ.get("PCAD_BENCH_SEEDS")
    if not only:
        return default
    try:
        return tuple(int(s) for s in only.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"PCAD_BENCH_SEEDS: expected integers separated by commas, got {only!r}")\
            from None


def skip_row(reason: str) -> dict:
    """The one row returned when the benchmark cannot run (no meshes)."""
    return {"benchmark": BENCH, "case": "skipped", "value": None, "unit": "",
            "reference": None, "ratio": None, "skipped": reason}


def _bank_aurocs(det: Any, data: str, category: str) -> dict[str, float]:
    """Image AUROC of each memory bank's own score over the category's test set."""
    from pcad.engine import open_split
    from pcad.metrics import image_auroc

    per: dict[str, list[float]] = {}
    labels = []
    for sample in open_split(data, category, "test", det):
        _, scores = det.bank_scores(sample)
        for b, s in scores.items():
            per.setdefault(b, []).append(float(s))
        labels.append(sample.label)
    return {b: float(image_auroc(v, labels)) for b, v in per.items()}


def run_one(data: str, category: str, detector: str, work: Path) -> dict[str, Any]:
    """Fit ``detector`` on one category and evaluate it: a flat ``{metric: value}`` dict
    (:data:`METRICS` keys, ``"<metric>/<defect>"`` per defect type, ``"bank_i_auroc/<bank>"``
    for multi-bank detectors)."""
    import torch

    from pcad.detectors.multimodal import MultiBankDetector
    from pcad.engine import evaluate_run, train

    torch.set_num_threads(1)  # numba (synth) resets the OpenMP thread count
    t0 = time.perf_counter()
    det = train(data, category, detector, work / "run", {}, progress=False)
    fit_s = time.perf_counter() - t0
    m = evaluate_run(data, category, work / "run", work / "eval", progress=False,
                     write_maps=False)
    out: dict[str, Any] = {"i_auroc": m["i_auroc"], "p_auroc": m["p_auroc"],
                           "aupro": m["aupro"]["0.3"], "fit_s": fit_s,
                           "infer_ms": m["latency_ms_per_sample"]}
    for d, v in m["per_defect"].items():
        out[f"i_auroc/{d}"] = v["i_auroc"]
        out[f"p_auroc/{d}"] = v["p_auroc"]
        out[f"aupro/{d}"] = v["aupro"]["0.3"]
    if isinstance(det, MultiBankDetector) and hasattr(det, "bank_scores"):
        for b, v in _bank_aurocs(det, data, category).items():
            out[f"bank_i_auroc/{b}"] = v
    return out


def _stats(values: list[float | None]) -> dict[str, Any]:
    """``mean``, ``std`` (sample, ddof 1; 0 for one value), ``min``, ``max``, ``n`` of the
    values that are not None (all None when none is).

    >>> s = _stats([0.5, 0.7, None])
    >>> round(s["mean"], 3), round(s["std"], 4), s["min"], s["max"], s["n"]
    (0.6, 0.1414, 0.5, 0.7, 2)
    """
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(v), "max": max(v), "n": len(v)}


def _unit(metric: str) -> str:
    return {"fit_s": "s", "infer_ms": "ms/sample"}.get(metric, "")


def aggregate(runs: list[dict[str, Any]]) -> list[dict]:
    """Rows from per-run results ``{"detector", "mesh", "seed", "metrics": {key: value}}``.

    Per (detector, mesh) and metric: ``value`` = mean over seeds, ``std``/``min``/``max``/``n``
    and ``per_seed``. Per detector and metric, ``mesh="mean"``: ``value`` = mean of the
    per-mesh means, ``min``/``max`` = worst/best mesh, ``std`` = std of the per-mesh means,
    ``seed_std`` = mean of the per-mesh seed std, ``n_seeds`` = most seeds of a mesh,
    ``per_mesh``. A run with ``"error"`` gives an error row and counts for nothing else.

    >>> runs = [{"detector": "d", "mesh": "a", "seed": s, "metrics": {"i_auroc": v}}
    ...         for s, v in ((0, 0.8), (1, 1.0))]
    >>> runs.append({"detector": "d", "mesh": "b", "seed": 0, "metrics": {"i_auroc": 0.6}})
    >>> rows = aggregate(runs)
    >>> [(r["mesh"], round(r["value"], 3), round(r["std"], 4)) for r in rows]
    [('a', 0.9, 0.1414), ('b', 0.6, 0.0), ('mean', 0.75, 0.2121)]
    """
    rows: list[dict] = []
    by: dict[str, dict[str, dict[str, dict[int, Any]]]] = {}
    for r in runs:
        if r.get("error"):
            rows.append({"benchmark": f"{BENCH} {r['detector']}",
                         "case": f"{r['mesh']} seed {r['seed']}: error", "value": None,
                         "unit": "", "reference": None, "ratio": None,
                         "detector": r["detector"], "mesh": r["mesh"], "seed": r["seed"],
                         "error": r["error"]})
            continue
        per_mesh = by.setdefault(r["detector"], {}).setdefault(r["mesh"], {})
        for key, value in r["metrics"].items():
            per_mesh.setdefault(key, {})[r["seed"]] = value
    for det, meshes in by.items():
        means: dict[str, dict[str, Any]] = {}
        for mesh, metrics in meshes.items():
            for key in _ordered(metrics):
                seeds = metrics[key]
                s = _stats(list(seeds.values()))
                means.setdefault(key, {})[mesh] = s
                rows.append({"benchmark": f"{BENCH} {det}", "case": f"{mesh} {key}",
                             "value": s["mean"], "unit": _unit(key), "reference": None,
                             "ratio": None, "detector": det, "mesh": mesh, "metric": key,
                             "std": s["std"], "min": s["min"], "max": s["max"], "n": s["n"],
                             "per_seed": {str(k): v for k, v in sorted(seeds.items())}})
        for key in _ordered(means):
            per = means[key]
            s = _stats([v["mean"] for v in per.values()])
            seed_std = _stats([v["std"] for v in per.values()])["mean"]
            rows.append({"benchmark": f"{BENCH} {det}", "case": f"mean over meshes {key}",
                         "value": s["mean"], "unit": _unit(key), "reference": None,
                         "ratio": None, "detector": det, "mesh": "mean", "metric": key,
                         "std": s["std"], "seed_std": seed_std, "min": s["min"],
                         "max": s["max"], "n": s["n"],
                         "n_seeds": max(v["n"] for v in per.values()),
                         "per_mesh": {m: v["mean"] for m, v in per.items()}})
    return rows


def _ordered(keys: Any) -> list[str]:
    """Metric keys: the overall ones in :data:`METRICS` order, then the rest sorted."""
    first = [k for k, _ in METRICS if k in keys]
    return first + sorted(k for k in keys if k not in first)


def _cell(row: dict | None, digits: int = 3, spread: bool = True) -> str:
    if row is None or row.get("value") is None:
        return "-"
    fmt = f"{{:.{digits}f}}"
    text = fmt.format(row["value"])
    sd = row.get("seed_std", row.get("std"))
    if spread and sd is not None and row.get("n_seeds", row.get("n", 1)) > 1:
        text += f" ± {fmt.format(sd)}"  # no spread from one seed
    return text


def render_table(rows: list[dict]) -> str:
    """The README tables (markdown) from this module's rows.

    First table: per detector, the seeds, the mean over meshes of I-AUROC, P-AUROC,
    AUPRO@0.3 (± the mean seed std when more than one seed, [worst-best mesh] for I-AUROC), the
    I-AUROC per defect type, the per-bank image AUROC, fit s and ms/sample. Second table:
    I-AUROC per detector and mesh, mean ± std over seeds.

    >>> runs = [{"detector": "d", "mesh": "a", "seed": 0,
    ...          "metrics": {"i_auroc": 0.9, "i_auroc/bump": 1.0}}]
    >>> print(render_table(aggregate(runs)).splitlines()[2])
    | d | 1 | 0.900 [0.90-0.90] | - | - | 1.00 | - | - | - |
    """
    rows = [r for r in rows if str(r.get("benchmark", "")).startswith(BENCH)]
    skipped = [r for r in rows if r.get("case") == "skipped"]
    if skipped and len(rows) == len(skipped):
        return f"(generalization benchmark skipped: {skipped[0].get('skipped')})"
    idx = {(r["detector"], r["mesh"], r["metric"]): r for r in rows if "metric" in r}
    dets = list(dict.fromkeys(r["detector"] for r in rows if "metric" in r))
    meshes = list(dict.fromkeys(r["mesh"] for r in rows if "metric" in r and r["mesh"] != "mean"))
    defects = sorted({k.split("/", 1)[1] for (_, _, k) in idx if k.startswith("i_auroc/")})
    head = (["detector", "seeds", "I-AUROC", "P-AUROC", "AUPRO@0.3"] + [f"{d}" for d in defects]
            + ["banks (image AUROC)", "fit s", "ms/sample"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for det in dets:
        def get(key: str, det: str = det) -> dict | None:
            return idx.get((det, "mean", key))
        i = get("i_auroc")
        first = _cell(i)
        if i is not None and i.get("min") is not None:
            first += f" [{i['min']:.2f}-{i['max']:.2f}]"
        banks = sorted(k.split("/", 1)[1] for (d, m, k) in idx
                       if d == det and m == "mean" and k.startswith("bank_i_auroc/"))
        bank_text = ", ".join(f"{b} {get('bank_i_auroc/' + b)['value']:.2f}" for b in banks
                              if get('bank_i_auroc/' + b)["value"] is not None) or "-"
        seeds = str(i.get("n_seeds", "-")) if i is not None else "-"
        cells = ([det, seeds, first, _cell(get("p_auroc")), _cell(get("aupro"))]
                 + [_cell(get(f"i_auroc/{d}"), 2, spread=False) for d in defects]
                 + [bank_text, _cell(get("fit_s"), 1, spread=False),
                    _cell(get("infer_ms"), 0, spread=False)])
        lines.append("| " + " | ".join(cells) + " |")
    if meshes:
        lines += ["", "| I-AUROC | " + " | ".join(meshes) + " |",
                  "|" + "---|" * (len(meshes) + 1)]
        for det in dets:
            cells = [_cell(idx.get((det, m, "i_auroc"))) for m in meshes]
            lines.append(f"| {det} | " + " | ".join(cells) + " |")
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += [""] + [f"- error: {r['detector']} on {r['mesh']} seed {r['seed']}: "
                         f"{r['error'].splitlines()[-1] if r['error'] else ''}" for r in errors]
    return "\n".join(lines)


def run(quick: bool) -> list[dict]:
    import torch

    from synth.dataset import DatasetConfig, categories_from, generate

    folder = meshes_dir()
    files = mesh_files(folder)
    if not files:
        return [skip_row(f"no mesh files in {folder} (set PCAD_MESHES)")]
    if quick:
        files = files[:2]
    detectors = selected_detectors()
    counts = QUICK if quick else FULL
    seeds = selected_seeds(SEEDS[:1] if quick else SEEDS)
    cats = categories_from([str(f) for f in files], None)
    log = Path(os.environ["PCAD_BENCH_RUNS"]) if os.environ.get("PCAD_BENCH_RUNS") else None
    wanted = {(d, c.name, s) for d in detectors for c in cats for s in seeds}
    runs = [r for r in load_runs(log) if (r["detector"], r["mesh"], r["seed"]) in wanted]
    done = {(r["detector"], r["mesh"], r["seed"]) for r in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            if all((d, c.name, seed) in done for d in detectors for c in cats):
                continue
            data = data_root(tmp) / f"data-{seed}"
            cfg = DatasetConfig(categories=cats, seed=seed, **counts)
            t0 = time.perf_counter()
            generate(cfg, data, workers=2, progress=False)
            print(f"  generalization: seed {seed}: {len(cats)} meshes rendered in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            torch.set_num_threads(1)
            for det in detectors:
                for cat in cats:
                    if (det, cat.name, seed) in done:
                        continue
                    work = Path(tmp) / "work" / f"{det}-{cat.name}-{seed}"
                    r: dict[str, Any] = {"detector": det, "mesh": cat.name, "seed": seed}
                    t0 = time.perf_counter()
                    try:
                        r["metrics"] = run_one(str(data), cat.name, det, work)
                    except Exception:  # one failing run must not lose hours of others
                        r["error"] = traceback.format_exc(limit=3)
                        print(f"  generalization: {det} on {cat.name} seed {seed} failed:\n"
                              f"{r['error']}", file=sys.stderr, flush=True)
                    print(f"  generalization: {det} {cat.name} seed {seed}: "
                          f"I-AUROC {r.get('metrics', {}).get('i_auroc')} "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
                    runs.append(r)
                    append_run(log, r)
    rows = aggregate(runs)
    rows.append(setting_row(BENCH, runs, detectors, seeds, counts,
                            meshes=[c.name for c in cats]))
    return rows


def main(argv: list[str] | None = None) -> int:
    return table_main(render_table, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
