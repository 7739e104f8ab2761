"""Unified (multi-class) detectors against per-category ones: ViTAD's eight metrics, fit time,
inference time and peak memory (issue 14, Must 7).

Workload: the demo dataset (the seven default built-in categories as ``pcad demo`` makes them:
30 good training samples, 1 validation, 6 good and 3 of each default defect type in the test
set; 224 x 224; seed 0) and, where the shared meshes folder exists (``../shared/data/meshes``
or ``$PCAD_MESHES``), a dataset rendered from every mesh in it with the same counts. Each
selected detector is fitted two ways on each dataset:

- ``per category``: one model per category (``pcad train --category C``), evaluated on its own
  category;
- ``unified``: one model on every category's training samples (``pcad train --categories
  all``), evaluated on each category (:func:`pcad.multiclass.evaluate_categories`).

Detectors: ``vitad``, ``uniad`` and ``onenip`` (those registered), beside ``btf`` and
``patchcore-rgb`` in the same run (``PCAD_BENCH_DETECTORS=vitad,btf`` restricts them;
``PCAD_BENCH_SETS=demo`` the datasets, ``PCAD_BENCH_SETTINGS=unified`` the settings).
Every (detector, dataset, setting) runs in its own child process with one torch thread
(``PCAD_BENCH_THREADS=2``: two, the issue's "two CPU cores" for a run alone on the machine),
so that its peak resident memory (the child's
``ru_maxrss``) is its own, and with ``OMP_WAIT_POLICY=PASSIVE`` (unless set): OpenMP threads
that spin while they wait took the CPU from the run beside them (an onenip training step on
the demo bracket, one other run beside it: 1.4 s spinning, 0.23 s passive).
``--quick``: two categories, 64 x 64, 6 training samples, 2 good and
1 of each defect type per category, the demo set only (a smoke test).
``PCAD_BENCH_RUNS=FILE.jsonl`` keeps every finished (detector, dataset, setting) as one JSON
line and skips those already there (an interrupted benchmark resumes; datasets all of whose
runs are kept are not rendered again); ``PCAD_BENCH_DATA=DIR`` keeps the rendered datasets in
``DIR`` (:func:`runlog.data_root`).

Rows: per (detector, dataset, setting) the mean over categories of I-AUROC, I-AP, I-F1-max,
P-AUROC, P-AP, P-F1-max, AUPRO@0.3 and mAD (``per_category`` holds each category's), fit
seconds (all categories: features, training and calibration), training seconds (the training
loops alone, from each run's ``train_log.csv``; none for the memory banks), inference
ms/sample and peak RSS; per (detector, dataset) the
difference ``unified - per category`` of mAD and I-AUROC. The README table:
``python benchmarks/bench_unified.py --table FILE.json`` (a ``benchmarks/run.py`` output).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from runlog import append_run, child_env, data_root, load_runs, table_main  # noqa: E402

BENCH = "unified"
#: the detectors compared (those not registered are left out)
DETECTORS = ("vitad", "uniad", "onenip", "btf", "patchcore-rgb")
SETTINGS = ("per category", "unified")
#: ViTAD's eight metrics, as keys of a metrics.json block, and their labels
METRICS = (("i_auroc", "I-AUROC"), ("i_ap", "I-AP"), ("i_f1_max", "I-F1-max"),
           ("p_auroc", "P-AUROC"), ("p_ap", "P-AP"), ("p_f1_max", "P-F1-max"),
           ("aupro_0.3", "AUPRO@0.3"), ("mad", "mAD"))
FULL = {"train": 30, "validation": 1, "test_good": 6, "test_defect": 3, "size": (224, 224)}
QUICK = {"train": 6, "validation": 1, "test_good": 2, "test_defect": 1, "size": (64, 64)}

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[6]) if len(sys.argv) > 6 else 1)
from pcad.engine import evaluate_run, train
from pcad.multiclass import evaluate_categories
from pcad.trainlog import training_seconds
data, det, work, cats, setting = (sys.argv[1], sys.argv[2], Path(sys.argv[3]),
                                  sys.argv[4].split(","), sys.argv[5])
t0 = time.perf_counter()
blocks = {}
if setting == "unified":
    train(data, cats, det, work / "run", {}, progress=False)
    fit_s = time.perf_counter() - t0
    train_s = training_seconds(work / "run" / "train_log.csv")
    top = evaluate_categories(data, cats, work / "run", work / "eval", progress=False,
                              write_maps=False)
    blocks = top["per_category"]
else:
    fit_s, train_s = 0.0, None
    for c in cats:
        t0 = time.perf_counter()
        train(data, c, det, work / "run" / c, {}, progress=False)
        fit_s += time.perf_counter() - t0
        t = training_seconds(work / "run" / c / "train_log.csv")
        train_s = None if t is None else (train_s or 0.0) + t
        blocks[c] = evaluate_run(data, c, work / "run" / c, work / "eval" / c, progress=False,
                                 write_maps=False)
out = {"fit_s": fit_s, "train_s": train_s,
       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "per_category": {c: {**{k: b.get(k) for k in ("i_auroc", "i_ap", "i_f1_max", "p_auroc",
                                                     "p_ap", "p_f1_max", "aupro_0.3", "mad")},
                            "infer_ms": b["latency_ms_per_sample"]} for c, b in blocks.items()}}
print(json.dumps(out))
"""


def selected(names: tuple[str, ...], env: str, known: list[str]) -> list[str]:
    """``names`` that are in ``known``, or those in ``$env`` (comma list; unknown ones raise).

    >>> selected(("a", "b", "z"), "PCAD_NO_SUCH_VARIABLE", ["a", "b"])
    ['a', 'b']
    """
    only = os.environ.get(env)
    if not only:
        return [n for n in names if n in known]
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"{env}: unknown name(s) {unknown}; known: {known}")
    return wanted


def _mean(values: list[float | None]) -> float | None:
    v = [float(x) for x in values if x is not None]
    return sum(v) / len(v) if v else None


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Means over categories of a child's ``per_category`` metrics (and ``infer_ms``).

    >>> r = summarize({"per_category": {"a": {"mad": 0.8, "infer_ms": 10.0},
    ...                                 "b": {"mad": 0.6, "infer_ms": 30.0}}})
    >>> round(r["mad"], 3), r["infer_ms"], r["i_auroc"]
    (0.7, 20.0, None)
    """
    per = result["per_category"]
    keys = [k for k, _ in METRICS] + ["infer_ms"]
    return {k: _mean([m.get(k) for m in per.values()]) for k in keys}


def rows_for(det: str, dataset: str, setting: str, result: dict[str, Any]) -> list[dict]:
    """The rows of one child's result: one per metric (means over categories) plus fit time,
    training time (None: no training loop, or a run from before it was kept), inference time
    and peak RSS."""
    means = summarize(result)
    bench = f"{BENCH} {det} [{dataset}, {setting}]"
    base = {"reference": None, "ratio": None, "detector": det, "dataset": dataset,
            "setting": setting}
    rows = [{"benchmark": bench, "case": label, "value": means[key], "unit": "", **base,
             "metric": key,
             "per_category": {c: m.get(key) for c, m in result["per_category"].items()}}
            for key, label in METRICS]
    rows += [{"benchmark": bench, "case": "fit (all categories)", "value": result["fit_s"],
              "unit": "s", **base, "metric": "fit_s"},
             {"benchmark": bench, "case": "training loops (all categories)",
              "value": result.get("train_s"), "unit": "s", **base, "metric": "train_s"},
             {"benchmark": bench, "case": "inference", "value": means["infer_ms"],
              "unit": "ms/sample", **base, "metric": "infer_ms"},
             {"benchmark": bench, "case": "peak RSS", "value": result["peak_rss_mb"],
              "unit": "MB", **base, "metric": "peak_rss_mb"}]
    return rows


def gaps(rows: list[dict]) -> list[dict]:
    """Per (detector, dataset): ``unified - per category`` of mAD and I-AUROC.

    >>> rs = [{"detector": "d", "dataset": "demo", "setting": s, "metric": "mad", "value": v}
    ...       for s, v in (("per category", 0.9), ("unified", 0.85))]
    >>> [(r["case"], round(r["value"], 3)) for r in gaps(rs)]
    [('unified - per category mAD', -0.05)]
    """
    idx = {(r["detector"], r["dataset"], r["setting"], r["metric"]): r["value"] for r in rows
           if "setting" in r}
    out = []
    for det, dataset in dict.fromkeys((d, s) for d, s, _, _ in idx):
        for key, label in (("mad", "mAD"), ("i_auroc", "I-AUROC")):
            per = idx.get((det, dataset, "per category", key))
            uni = idx.get((det, dataset, "unified", key))
            if per is not None and uni is not None:
                out.append({"benchmark": f"{BENCH} {det} [{dataset}]",
                            "case": f"unified - per category {label}", "value": uni - per,
                            "unit": "", "reference": None, "ratio": None, "detector": det,
                            "dataset": dataset, "metric": f"gap_{key}"})
    return out


def _datasets(quick: bool) -> dict[str, list]:
    """Dataset name -> its categories (built-in names or mesh categories), as selected."""
    from synth.dataset import DEFAULT_CATEGORIES, categories_from

    sets: dict[str, list] = {
        "demo": list(DEFAULT_CATEGORIES)[:2] if quick else list(DEFAULT_CATEGORIES)}
    meshes = Path(os.environ.get("PCAD_MESHES") or ROOT.parent / "shared" / "data" / "meshes")
    files = sorted(p for p in meshes.glob("*") if p.suffix.lower() in (".stl", ".ply", ".obj",
                                                                      ".off"))
    if files and not quick:
        sets["meshes"] = [str(f) for f in files]
    wanted = selected(tuple(sets), "PCAD_BENCH_SETS", list(sets))
    return {name: categories_from(sets[name], None) if name == "meshes" else sets[name]
            for name in wanted}


def _render(cats: list, root: Path, quick: bool) -> tuple[str, list[str]]:
    """Render ``cats`` into ``root``: ``(root, category names)``."""
    from synth.dataset import DatasetConfig, generate

    cfg = DatasetConfig(categories=tuple(cats), seed=0, **(QUICK if quick else FULL))
    generate(cfg, root, workers=2, progress=False)
    return str(root), [getattr(c, "name", c) for c in cats]


def run(quick: bool) -> list[dict]:
    from pcad.detectors import list_detectors

    dets = selected(DETECTORS, "PCAD_BENCH_DETECTORS", list_detectors())
    settings = selected(SETTINGS, "PCAD_BENCH_SETTINGS", list(SETTINGS))
    log = Path(os.environ["PCAD_BENCH_RUNS"]) if os.environ.get("PCAD_BENCH_RUNS") else None
    kept = {(r["detector"], r["dataset"], r["setting"]): r for r in load_runs(log)}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, cats in _datasets(quick).items():
            todo = [(d, s) for d in dets for s in settings if (d, dataset, s) not in kept]
            data, names = (_render(cats, data_root(Path(tmp) / "data") / dataset, quick) if todo
                           else ("", []))
            for det in dets:
                for setting in settings:
                    r = kept.get((det, dataset, setting))
                    if r is None:
                        r = _child(data, det, dataset, setting, names, Path(tmp))
                        append_run(log, r)
                    if r.get("error"):
                        rows.append({"benchmark": f"{BENCH} {det} [{dataset}, {setting}]",
                                     "case": "error", "value": None, "unit": "",
                                     "reference": None, "ratio": None, "error": r["error"]})
                        continue
                    rows += rows_for(det, dataset, setting, r["result"])
    return rows + gaps(rows)


def _child(data: str, det: str, dataset: str, setting: str, cats: list[str], tmp: Path
           ) -> dict[str, Any]:
    """One (detector, dataset, setting) in its own process: ``{"detector", "dataset",
    "setting", "result"}`` or ``{..., "error"}``."""
    work = tmp / "work" / f"{det}-{dataset}-{setting}".replace(" ", "_")
    threads = os.environ.get("PCAD_BENCH_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", CHILD, data, det, str(work), ",".join(cats),
                           setting, threads], capture_output=True, text=True, cwd=ROOT,
                          env=child_env())
    r: dict[str, Any] = {"detector": det, "dataset": dataset, "setting": setting}
    if proc.returncode != 0:
        r["error"] = proc.stderr[-3000:]
        print(f"  unified: {det} {dataset} {setting} failed:\n{r['error']}", file=sys.stderr,
              flush=True)
        return r
    r["result"] = json.loads(proc.stdout.strip().splitlines()[-1])
    mad = summarize(r["result"])["mad"]
    print(f"  unified: {det} {dataset} {setting}: mAD "
          f"{'-' if mad is None else format(mad, '.3f')}, fit {r['result']['fit_s']:.0f} s",
          flush=True)
    return r


def render_table(rows: list[dict]) -> str:
    """The README table: one line per (detector, dataset, setting) with the eight metrics,
    fit s, ms/sample and peak RSS.

    >>> rs = rows_for("d", "demo", "unified", {"fit_s": 3.0, "peak_rss_mb": 100.0,
    ...     "per_category": {"a": {**{k: 0.5 for k, _ in METRICS}, "infer_ms": 12.0}}})
    >>> render_table(rs).splitlines()[2].split(" | ")[-7:]
    ['0.500', '0.500', '0.500', '3', '-', '12', '100 |']
    """
    idx = {(r["detector"], r["dataset"], r["setting"], r["metric"]): r["value"] for r in rows
           if "setting" in r and "metric" in r}
    head = ["detector", "dataset", "setting"] + [label for _, label in METRICS] + [
        "fit s", "train s", "ms/sample", "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key3 in dict.fromkeys((d, s, t) for d, s, t, _ in idx):
        def cell(key: str, fmt: str, key3: tuple = key3) -> str:
            v = idx.get((*key3, key))
            return "-" if v is None else format(v, fmt)
        cells = ([*key3] + [cell(k, ".3f") for k, _ in METRICS]
                 + [cell("fit_s", ".0f"), cell("train_s", ".0f"), cell("infer_ms", ".0f"),
                    cell("peak_rss_mb", ".0f")])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return table_main(render_table, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
