"""Robustness: every detector on standard vs strong test conditions of the demo parts.

Workload (issue 15, Must 5): per seed, the dataset generator renders the parts ``gear``,
``plate``, ``bracket`` and ``potato`` twice with the same seed: ``--conditions standard`` and
``--conditions strong`` (:mod:`synth.render.conditions`: the test samples get wider pose,
light, exposure/gain and background-mat ranges; train and validation are byte-identical, so the
strong copy renders its test splits only). Each detector is fitted once per (part, seed) on the
standard training samples and evaluated on both test sets; the drop ``strong - standard`` of
I-AUROC, P-AUROC and AUPRO@0.3 is the figure (negative: worse under strong conditions). Full:
20 good training samples, 2 validation, 8 good and 4 of each default defect type in the test
set, 224 x 224, seeds 0, 1 and 2. ``--quick``: the first part (``gear``), seed 0, 96 x 96,
6 training samples, 1 validation, 3 good and 1 of each defect type (a smoke test).

Detectors (:data:`DEFAULT_DETECTORS`): btf, patchcore-rgb, synthsup, pbas, prototypes-ot and
whichever of fader, hetnet, onenip, uniad, vitad are registered when it runs;
``PCAD_BENCH_DETECTORS=btf,pbas`` chooses others, ``PCAD_BENCH_SEEDS=0,1`` the seeds,
``PCAD_BENCH_RUNS=FILE.jsonl`` keeps every finished (detector, part, seed) as one JSON line and
skips those already there (an interrupted benchmark resumes), ``PCAD_BENCH_DATA=DIR`` keeps the
rendered datasets in ``DIR`` (:func:`runlog.data_root`: a later run renders nothing again).
Each run is fitted and evaluated through the engine (:func:`pcad.engine.train`,
:func:`pcad.engine.evaluate_run`, no maps) in a child process with one torch thread, which also
reports its peak resident memory
(``peak_rss_mb``) and what the fitted run keeps (:func:`footprint`: ``params``, the values in
its weights, statistics and memory banks, and ``run_mb``); a run that fails gives an ``error``
row.

Rows (:func:`aggregate`): per (detector, part, conditions, metric) the mean over seeds with its
spread (``std``, ``min``, ``max``, ``n``, ``per_seed``), where ``conditions`` is ``standard``,
``strong`` or ``drop`` (the per-seed difference strong - standard, then its mean); per
(detector, conditions, metric) with ``part="mean"`` the mean of the per-part means.

The README table (:func:`render_table`):
``python benchmarks/bench_conditions.py --table benchmarks/results.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_generalization import _stats, selected_seeds  # noqa: E402
from runlog import (  # noqa: E402
    append_run,
    child_env,
    data_root,
    load_runs,
    setting_row,
    table_main,
)

BENCH = "conditions"
PARTS = ("gear", "plate", "bracket", "potato")
SEEDS = (0, 1, 2)
CONDITIONS = ("standard", "strong")
FULL = {"train": 20, "validation": 2, "test_good": 8, "test_defect": 4, "size": (224, 224)}
QUICK = {"train": 6, "validation": 1, "test_good": 3, "test_defect": 1, "size": (96, 96)}
#: always benchmarked (when registered)
BASE_DETECTORS = ("btf", "patchcore-rgb", "synthsup", "pbas", "prototypes-ot")
#: benchmarked when they are registered
OPTIONAL_DETECTORS = ("fader", "hetnet", "onenip", "uniad", "vitad")
#: metric key -> label; the first three get a drop
METRICS = (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"), ("aupro", "AUPRO@0.3"),
           ("fit_s", "fit s"), ("infer_ms", "ms/sample"), ("params", "params"),
           ("peak_rss_mb", "peak RSS MB"), ("run_mb", "run MB"))
QUALITY = ("i_auroc", "p_auroc", "aupro")


def selected_detectors() -> list[str]:
    """The default list (module docstring) among the registered detectors, or those named in
    ``$PCAD_BENCH_DETECTORS`` (comma list; an unknown name is a ValueError)."""
    from pcad.detectors import list_detectors

    names = list_detectors()
    only = os.environ.get("PCAD_BENCH_DETECTORS")
    if not only:
        return [n for n in (*BASE_DETECTORS, *OPTIONAL_DETECTORS) if n in names]
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ValueError(f"PCAD_BENCH_DETECTORS: unknown detector(s) {unknown}; known: {names}")
    return wanted


def run_one(data: dict[str, str], category: str, detector: str, work: Path
            ) -> dict[str, dict[str, Any]]:
    """Fit ``detector`` on the standard dataset's category and evaluate it on the test set of
    each conditions' dataset (``data``: conditions -> root): ``{conditions: {metric: value}}``
    (:data:`METRICS` keys; ``fit_s`` is the one fit's, in both)."""
    import torch

    from pcad.engine import evaluate_run, train

    torch.set_num_threads(1)  # numba (synth) resets the OpenMP thread count
    t0 = time.perf_counter()
    train(data["standard"], category, detector, work / "run", {}, progress=False)
    fit_s = time.perf_counter() - t0
    out: dict[str, dict[str, Any]] = {}
    for cond, root in data.items():
        m = evaluate_run(root, category, work / "run", work / f"eval-{cond}", progress=False,
                         write_maps=False)
        out[cond] = {"i_auroc": m["i_auroc"], "p_auroc": m["p_auroc"],
                     "aupro": m["aupro"]["0.3"], "fit_s": fit_s,
                     "infer_ms": m["latency_ms_per_sample"]}
    return out


def footprint(run: Path) -> dict[str, float]:
    """What a fitted run keeps: ``params``, the number of values in its tensors and arrays
    (network weights, statistics, memory banks; ``*.pt`` and ``*.npz``, the training
    checkpoint left out) and ``run_mb``, the size of its files in MB.

    >>> import tempfile, numpy as np, torch
    >>> d = Path(tempfile.mkdtemp())
    >>> torch.save({"net": {"w": torch.zeros(3, 4)}, "stats": [torch.ones(5)]}, d / "a.pt")
    >>> np.savez(d / "bank_rgb.npz", features=np.zeros((10, 2)))
    >>> footprint(d)["params"]
    37
    """
    import numpy as np
    import torch

    def count(obj: Any) -> int:
        if isinstance(obj, torch.Tensor):
            return obj.numel()
        if isinstance(obj, dict):
            return sum(count(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(count(v) for v in obj)
        return 0

    params, size = 0, 0
    for f in sorted(run.rglob("*")):
        if not f.is_file():
            continue
        size += f.stat().st_size
        if f.suffix == ".pt" and f.name != "checkpoint.pt":
            params += count(torch.load(f, map_location="cpu", weights_only=True))
        elif f.suffix == ".npz":
            with np.load(f) as z:
                params += sum(z[k].size for k in z.files)
    return {"params": params, "run_mb": size / 1e6}


CHILD = r"""
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench_conditions import footprint, run_one
work = Path(sys.argv[5])
out = run_one(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], work)
extra = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
         **footprint(work / "run")}
print(json.dumps({cond: {**m, **extra} for cond, m in out.items()}))
"""


def run_child(data: dict[str, str], category: str, detector: str, work: Path
              ) -> dict[str, dict[str, Any]]:
    """:func:`run_one` in its own process, so that its peak resident memory (the child's
    ``ru_maxrss``) is its own; each conditions' metrics gain ``peak_rss_mb``, ``params`` and
    ``run_mb`` (:func:`footprint`). A failing child raises RuntimeError with its stderr's
    end."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", CHILD, str(BENCH_DIR), json.dumps(data),
                           category, detector, str(work)], capture_output=True, text=True,
                          cwd=BENCH_DIR.parent, env=child_env())
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _unit(metric: str) -> str:
    return {"fit_s": "s", "infer_ms": "ms/sample", "peak_rss_mb": "MB",
            "run_mb": "MB"}.get(metric, "")


def _row(det: str, part: str, cond: str, key: str, s: dict[str, Any], **extra: Any) -> dict:
    where = "mean over parts" if part == "mean" else part
    return {"benchmark": f"{BENCH} {det}", "case": f"{where} {cond} {key}", "value": s["mean"],
            "unit": _unit(key), "reference": None, "ratio": None, "detector": det,
            "part": part, "conditions": cond, "metric": key, "std": s["std"],
            "min": s["min"], "max": s["max"], "n": s["n"], **extra}


def aggregate(runs: list[dict[str, Any]]) -> list[dict]:
    """Rows from per-run results ``{"detector", "part", "seed", "metrics": {conditions:
    {metric: value}}}`` (module docstring). The drop of a seed is None when either value is.

    >>> runs = [{"detector": "d", "part": "p", "seed": s,
    ...          "metrics": {"standard": {"i_auroc": a}, "strong": {"i_auroc": b}}}
    ...         for s, a, b in ((0, 0.9, 0.6), (1, 1.0, 0.9))]
    >>> [(r["part"], r["conditions"], round(r["value"], 3)) for r in aggregate(runs)]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('p', 'standard', 0.95), ('p', 'strong', 0.75), ('p', 'drop', -0.2),
     ('mean', 'standard', 0.95), ('mean', 'strong', 0.75), ('mean', 'drop', -0.2)]
    """
    rows: list[dict] = []
    # detector -> part -> (conditions, metric) -> seed -> value
    by: dict[str, dict[str, dict[tuple[str, str], dict[int, Any]]]] = {}
    for r in runs:
        if r.get("error"):
            rows.append({"benchmark": f"{BENCH} {r['detector']}",
                         "case": f"{r['part']} seed {r['seed']}: error", "value": None,
                         "unit": "", "reference": None, "ratio": None,
                         "detector": r["detector"], "part": r["part"], "seed": r["seed"],
                         "error": r["error"]})
            continue
        cell = by.setdefault(r["detector"], {}).setdefault(r["part"], {})
        for cond, metrics in r["metrics"].items():
            for key, value in metrics.items():
                cell.setdefault((cond, key), {})[r["seed"]] = value
        for key in QUALITY:
            a = r["metrics"].get("standard", {}).get(key)
            b = r["metrics"].get("strong", {}).get(key)
            if (a is not None or b is not None) and "standard" in r["metrics"]:
                cell.setdefault(("drop", key), {})[r["seed"]] = (
                    None if a is None or b is None else b - a)
    for det, parts in by.items():
        means: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for part, cells in parts.items():
            for cond, key in _ordered(cells):
                seeds = cells[(cond, key)]
                s = _stats(list(seeds.values()))
                means.setdefault((cond, key), {})[part] = s
                rows.append(_row(det, part, cond, key, s,
                                 per_seed={str(k): v for k, v in sorted(seeds.items())}))
        for cond, key in _ordered(means):
            per = means[(cond, key)]
            s = _stats([v["mean"] for v in per.values()])
            rows.append(_row(det, "mean", cond, key, s,
                             seed_std=_stats([v["std"] for v in per.values()])["mean"],
                             per_part={p: v["mean"] for p, v in per.items()}))
    return rows


def _ordered(keys: Any) -> list[tuple[str, str]]:
    """(conditions, metric) keys: metrics in :data:`METRICS` order, then conditions standard,
    strong, drop; then the rest sorted."""
    order = [(c, k) for k, _ in METRICS for c in (*CONDITIONS, "drop")]
    first = [ck for ck in order if ck in keys]
    return first + sorted(ck for ck in keys if ck not in first)


def _fmt(row: dict | None, digits: int = 3, signed: bool = False, spread: bool = False) -> str:
    """``row``'s value; with ``spread``, ``± seed_std`` (the mean over parts of the per-part
    std over seeds) after it."""
    if row is None or row.get("value") is None:
        return "-"
    text = f"{row['value']:+.{digits}f}" if signed else f"{row['value']:.{digits}f}"
    if spread and row.get("seed_std") is not None:
        text += f" ± {row['seed_std']:.{digits}f}"
    return text


def render_table(rows: list[dict]) -> str:
    """The README table (markdown): per detector, the number of seeds, the mean over parts of
    I-AUROC, P-AUROC and AUPRO@0.3 under standard and strong conditions with the drop (strong -
    standard; I-AUROC ± the mean per-part std over seeds when there are several), fit s and
    ms/sample under each; then the I-AUROC drop per detector and part.

    >>> runs = [{"detector": "d", "part": "p", "seed": 0,
    ...          "metrics": {"standard": {"i_auroc": 0.9, "fit_s": 2.0},
    ...                      "strong": {"i_auroc": 0.7, "fit_s": 2.0}}}]
    >>> print(render_table(aggregate(runs)).splitlines()[2])
    | d | 1 | 0.900 | 0.700 | -0.200 | - | - | - | - | - | - | 2.0 | - | - | - | - |
    """
    rows = [r for r in rows if str(r.get("benchmark", "")).startswith(BENCH)]
    idx = {(r["detector"], r["part"], r["conditions"], r["metric"]): r
           for r in rows if "metric" in r}
    dets = list(dict.fromkeys(r["detector"] for r in rows if "metric" in r))
    parts = list(dict.fromkeys(r["part"] for r in rows if "metric" in r and r["part"] != "mean"))
    head = ["detector", "seeds"]
    for _, label in METRICS[:3]:
        head += [f"{label} std", f"{label} strong", f"{label} drop"]
    head += ["fit s", "ms/sample std", "ms/sample strong", "params", "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for det in dets:
        def get(cond: str, key: str, det: str = det) -> dict | None:
            return idx.get((det, "mean", cond, key))
        seeds = max((r.get("n", 0) for (d, p, c, k), r in idx.items()
                     if d == det and p != "mean" and c == "standard" and k == "i_auroc"),
                    default=0)
        cells = [det, str(seeds)]
        for key in QUALITY:
            many = seeds > 1 and key == "i_auroc"  # the seed spread where it is read most
            cells += [_fmt(get("standard", key), spread=many),
                      _fmt(get("strong", key), spread=many),
                      _fmt(get("drop", key), signed=True, spread=many)]
        params = get("standard", "params")
        cells += [_fmt(get("standard", "fit_s"), 1), _fmt(get("standard", "infer_ms"), 0),
                  _fmt(get("strong", "infer_ms"), 0),
                  "-" if params is None or params.get("value") is None
                  else f"{params['value'] / 1e6:.2f} M",
                  _fmt(get("standard", "peak_rss_mb"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    if parts:
        lines += ["", "| I-AUROC drop | " + " | ".join(parts) + " |",
                  "|" + "---|" * (len(parts) + 1)]
        for det in dets:
            cells = [_fmt(idx.get((det, p, "drop", "i_auroc")), signed=True) for p in parts]
            lines.append(f"| {det} | " + " | ".join(cells) + " |")
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += [""] + [f"- error: {r['detector']} on {r['part']} seed {r['seed']}: "
                         f"{r['error'].splitlines()[-1] if r['error'] else ''}" for r in errors]
    return "\n".join(lines)


def render(seed: int, parts: tuple[str, ...], counts: dict[str, Any], tmp: Path,
           workers: int = 2) -> dict[str, str]:
    """The standard dataset and the strong one's test splits (train and validation would be
    the same bytes) of ``parts`` at ``seed`` with ``workers`` processes: conditions -> root."""
    from synth.dataset import DatasetConfig, generate

    roots = {}
    for cond in CONDITIONS:
        c = dict(counts)
        if cond != "standard":
            c.update(train=0, validation=0)
        roots[cond] = str(tmp / f"data-{seed}-{cond}")
        generate(DatasetConfig(categories=parts, seed=seed, conditions=cond, **c), roots[cond],
                 workers=workers, progress=False)
    return roots


def run(quick: bool) -> list[dict]:
    import torch

    detectors = selected_detectors()
    counts = QUICK if quick else FULL
    parts = PARTS[:1] if quick else PARTS
    seeds = selected_seeds(SEEDS[:1] if quick else SEEDS)
    log = Path(os.environ["PCAD_BENCH_RUNS"]) if os.environ.get("PCAD_BENCH_RUNS") else None
    wanted = {(d, p, s) for d in detectors for p in parts for s in seeds}
    runs = [r for r in load_runs(log) if (r["detector"], r["part"], r["seed"]) in wanted]
    done = {(r["detector"], r["part"], r["seed"]) for r in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            if all((d, p, seed) in done for d in detectors for p in parts):
                continue
            t0 = time.perf_counter()
            data = render(seed, parts, counts, data_root(tmp), workers=1 if quick else 2)
            print(f"  conditions: seed {seed}: {len(parts)} parts rendered twice in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            torch.set_num_threads(1)
            for det in detectors:
                for part in parts:
                    if (det, part, seed) in done:
                        continue
                    work = Path(tmp) / "work" / f"{det}-{part}-{seed}"
                    r: dict[str, Any] = {"detector": det, "part": part, "seed": seed}
                    t0 = time.perf_counter()
                    try:
                        r["metrics"] = run_child(data, part, det, work)
                    except Exception:  # one failing run must not lose hours of others
                        r["error"] = traceback.format_exc(limit=3)
                        print(f"  conditions: {det} on {part} seed {seed} failed:\n"
                              f"{r['error']}", file=sys.stderr, flush=True)
                    got = r.get("metrics", {})
                    print(f"  conditions: {det} {part} seed {seed}: I-AUROC standard "
                          f"{got.get('standard', {}).get('i_auroc')} strong "
                          f"{got.get('strong', {}).get('i_auroc')} "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
                    runs.append(r)
                    append_run(log, r)
    rows = aggregate(runs)
    rows.append(setting_row(BENCH, runs, detectors, seeds, counts, parts=list(parts)))
    return rows


def main(argv: list[str] | None = None) -> int:
    return table_main(render_table, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
