"""Detectability curve: detection quality against defect strength (what ``pcad sensitivity``
runs).

A detector is trained once on ``<data>/<category>/train`` (or an existing run is reused). For
every strength ``S`` (a fraction of the object's bounding-box diagonal, the synthesizer's
``strength``) a test set is built in inject mode (:mod:`synth.dataset.inject`): the source's
``test/good`` is copied and ``test/<defect>`` holds ``n_per_defect`` geometric defects per
defect type on the good scans, cycled in the same order and with the same per-sample seeds at
every strength, so that only the strength differs between the sets. Each set is evaluated with
:func:`pcad.engine.evaluate_run`.

Written in ``out``:

- ``run/``: the trained detector (unless ``run`` is given);
- ``sets/s_<S>/<category>/test/...``: the test sets (MVTec 3D-AD layout, as inject mode);
- ``eval/s_<S>/``: ``metrics.json``, ``scores.csv`` and ``maps/`` of each set;
- ``sensitivity.csv``: ``strength,i_auroc,p_auroc,aupro_0.3,n_test``, one row per strength;
- ``sensitivity.json``: the rows, the detection limit and the settings;
- ``sensitivity.png`` / ``sensitivity.html``: I-AUROC and AUPRO@0.3 against strength, the
  0.95 line and the detection limit marked.

The detection limit is the smallest strength at which the strength-sorted I-AUROC curve first
reaches 0.95, linearly interpolated between the last strength below and the first at or above
(:func:`detection_limit`); ``None`` when no strength reaches it.

A ``run`` trained on another category than ``category`` is used, with a
:class:`~pcad.errors.PcadWarning` (:func:`pcad.engine.warn_category_mismatch`) before any set
is built.

Example:
    >>> from pcad.sensitivity import detection_limit
    >>> round(detection_limit([0.01, 0.02, 0.04], [0.5, 0.9, 1.0]), 9)
    0.03
    >>> detection_limit([0.01, 0.02], [0.5, 0.6]) is None
    True
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pcad.checks import check_int
from pcad.errors import InvalidInputError, PcadWarning

THRESHOLD = 0.95
AUPRO_LIMIT = "0.3"
DEFAULT_DEFECTS = ("bump", "dent")
CSV_COLUMNS = ("strength", "i_auroc", "p_auroc", "aupro_0.3", "n_test")


def check_strengths(strengths: Any) -> list[float]:
    """The strengths as floats: non-empty, finite, > 0 and distinct (order kept)."""
    if strengths is None or isinstance(strengths, (str, bytes)):
        raise InvalidInputError("--strengths: expected a list of numbers")
    values = list(strengths)
    if not values:
        raise InvalidInputError("--strengths: empty list; give at least one strength")
    out: list[float] = []
    for s in values:
        if isinstance(s, bool):
            raise InvalidInputError(f"--strengths: expected a number, got {s!r}")
        try:
            v = float(s)
        except (TypeError, ValueError):
            raise InvalidInputError(f"--strengths: expected a number, got {s!r}") from None
        if not math.isfinite(v):
            raise InvalidInputError(f"--strengths: must be finite, got {s!r}")
        if v <= 0:
            raise InvalidInputError(f"--strengths: must be > 0 (a fraction of the object's "
                                    f"bounding-box diagonal), got {s!r}")
        if v in out:
            raise InvalidInputError(f"--strengths: {v!r} is given twice")
        out.append(v)
    return out


def check_defects(defects: Any) -> tuple[str, ...]:
    """Geometric defect types that take a ``strength`` (``hole`` has none)."""
    from synth.defects import defect_info, list_defects

    if defects is None or isinstance(defects, (str, bytes)):
        raise InvalidInputError("--defects: expected a list of defect types")
    names = tuple(defects)
    if not names:
        raise InvalidInputError("--defects: empty list")
    geometric = list_defects(kind="geometric")
    for d in names:
        if d not in geometric:
            what = (f"{d!r} is an {defect_info(d).info['kind']} defect, not a geometric one"
                    if d in list_defects() else f"unknown defect {d!r}")
            raise InvalidInputError(f"--defects: {what}; expected defects with a strength "
                                    f"among {geometric}")
        if "strength" not in {f.name for f in dataclasses.fields(defect_info(d).obj)}:
            raise InvalidInputError(f"--defects: {d!r} has no strength parameter, so a strength "
                                    "sweep means nothing for it; use e.g. bump, dent, crack")
    if len(set(names)) != len(names):
        raise InvalidInputError(f"--defects: a defect is given twice in {list(names)}")
    return names


def detection_limit(strengths: Sequence[float], i_aurocs: Sequence[float],
                    threshold: float = THRESHOLD) -> float | None:
    """The smallest strength where the I-AUROC curve first reaches ``threshold``.

    The points are sorted by strength; between the last point below the threshold and the first
    at or above it the strength is interpolated linearly. The first strength is returned when
    the curve is already there; ``None`` when it never gets there (NaN counts as below).
    """
    if len(strengths) != len(i_aurocs):
        raise InvalidInputError(f"detection_limit: {len(strengths)} strengths but "
                                f"{len(i_aurocs)} I-AUROC values")
    pts = sorted(zip((float(s) for s in strengths), (float(v) for v in i_aurocs),
                        strict=True))
    for k, (s1, v1) in enumerate(pts):
        if not v1 >= threshold:  # NaN is below
            continue
        if k == 0:
            return s1
        s0, v0 = pts[k - 1]
        if not math.isfinite(v0):
            return s1
        return s0 + (threshold - v0) * (s1 - s0) / (v1 - v0)
    return None


def strength_name(strength: float) -> str:
    """The folder name of a strength's set: ``s_`` and the shortest exact float text."""
    return f"s_{float(strength)!r}"


def build_set(source: str | os.PathLike[str], category: str, defects: Sequence[str],
              strength: float, n_per_defect: int, seed: int,
              out: str | os.PathLike[str]) -> Path:
    """Write one strength's test set to ``out`` (``<out>/<category>/test/...``)."""
    import shutil

    from pcad.io import atomic_write
    from synth.dataset.config import sample_seed
    from synth.dataset.inject import ScanCache, good_scans, inject_sample, write_injected
    from synth.dataset.sample import width

    src_cat, root = Path(source) / category, Path(out)
    goods = good_scans(src_cat)
    dst = root / category / "test"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src_cat / "test" / "good", dst / "good")
    scans = ScanCache()  # sample i of every defect type starts from the same good scan
    for i in range(n_per_defect):
        for d in defects:
            src = goods[i % len(goods)]
            s_seed = sample_seed(seed, category, f"test/{d}", i)
            xyz, gt, rgb_src, meta = inject_sample(src, category, d, i, s_seed, scans,
                                                   strength=strength)
            write_injected(dst / d, f"{i:0{width(n_per_defect)}d}", rgb_src, xyz, gt, meta)
    record = {"generator": "pcad", "mode": "sensitivity",
              "config": {"source": str(Path(source).resolve()), "category": category,
                         "defects": list(defects), "strength": strength,
                         "test_defect": n_per_defect, "seed": seed}}
    with atomic_write(root / "dataset.json", "w") as fh:
        json.dump(record, fh, indent=2)
    return root


def _validate(data: Any, category: str, detector: str | None, strengths: Any, out: Any,
              defects: Any, n_per_defect: Any, seed: Any, config: dict[str, Any] | None,
              run: Any) -> tuple[list[float], tuple[str, ...], int, int, str]:
    from pcad.detectors import create_detector, load_detector
    from pcad.engine import warn_category_mismatch
    from synth.dataset.inject import find_categories, good_scans
    from synth.defects import create_defect

    values = check_strengths(strengths)
    names = check_defects(defects)
    n = check_int(n_per_defect, "--n-per-defect", minimum=1)
    s = check_int(seed, "--seed", minimum=0)
    for d in names:
        for v in values:
            create_defect(d, strength=v)
    cats = find_categories(data)
    if category not in cats:
        raise InvalidInputError(f"--category: {category!r} is not in {data}; categories there: "
                                f"{', '.join(cats)}")
    cat_dir = Path(data) / category
    if not (cat_dir / "test" / "good" / "xyz").is_dir() or not good_scans(cat_dir):
        raise InvalidInputError(f"{cat_dir}: no test/good xyz scans; the sensitivity test sets "
                                "are made from (and evaluated against) the good test scans")
    if run is not None:
        if config:
            raise InvalidInputError("detector options (--image-size...) do not apply to an "
                                    "existing --run")
        name = load_detector(run, expect=detector).name
        warn_category_mismatch(run, category)
    else:
        if detector is None:
            raise InvalidInputError("--detector: required unless --run is given")
        # checks the name and the options; cheap (backbones load lazily)
        create_detector(detector, **(config or {}))
        if not (cat_dir / "train" / "good").is_dir():
            raise InvalidInputError(f"{cat_dir}: no train/good to fit the detector on")
        name = detector
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InvalidInputError(f"{root}: exists and is not an empty folder; choose another "
                                "--out")
    return values, names, n, s, name


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([repr(float(r["strength"])), repr(float(r["i_auroc"])),
                    repr(float(r["p_auroc"])), repr(float(r["aupro_0.3"])), int(r["n_test"])])
    return buf.getvalue()


def _plot_png(rows: list[dict[str, Any]], limit: float | None, title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pcad.io import atomic_save

    s = [r["strength"] for r in rows]
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(s, [r["i_auroc"] for r in rows], "o-", label="I-AUROC")
    ax.plot(s, [r["aupro_0.3"] for r in rows], "s--", label="AUPRO@0.3")
    ax.axhline(THRESHOLD, color="grey", lw=0.8, ls=":", label=f"I-AUROC = {THRESHOLD}")
    if limit is not None:
        ax.axvline(limit, color="red", lw=1.0, label=f"detection limit {limit:.4g}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("defect strength (fraction of the bounding-box diagonal)")
    ax.set_ylabel("metric")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))


def _plot_html(rows: list[dict[str, Any]], limit: float | None, title: str, path: Path) -> None:
    import plotly.graph_objects as go

    from viz import save_html

    s = [r["strength"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=s, y=[r["i_auroc"] for r in rows], mode="lines+markers",
                             name="I-AUROC"))
    fig.add_trace(go.Scatter(x=s, y=[r["aupro_0.3"] for r in rows], mode="lines+markers",
                             name="AUPRO@0.3", line={"dash": "dash"}))
    fig.add_hline(y=THRESHOLD, line_dash="dot", line_color="grey",
                  annotation_text=f"I-AUROC = {THRESHOLD}")
    if limit is not None:
        fig.add_vline(x=limit, line_color="red", annotation_text=f"limit {limit:.4g}")
    fig.update_layout(title=title, xaxis_title="defect strength (fraction of the diagonal)",
                      yaxis_title="metric", yaxis_range=[-0.02, 1.02])
    save_html(fig, path)


def run_sensitivity(data: str | os.PathLike[str], category: str, detector: str | None,
                    strengths: Sequence[float], out: str | os.PathLike[str],
                    defects: Sequence[str] = DEFAULT_DEFECTS, n_per_defect: int = 3,
                    seed: int = 0, config: dict[str, Any] | None = None,
                    run: str | os.PathLike[str] | None = None,
                    progress: bool = False, device: str | None = None) -> dict[str, Any]:
    """Train (or reuse ``run``), build and evaluate one test set per strength; write the table,
    the JSON summary and the plots in ``out`` (module docstring). Returns the summary.

    ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``): where the detector trains
    and scores (overrides ``config["device"]``); None: the detector's or the run's own option.

    Every input is checked before anything is written (InvalidInputError).
    """
    from pcad.engine import evaluate_run, train
    from pcad.io import atomic_write

    if device is not None:  # present here, or a one-line error before anything is written
        from pcad.detectors.patches import resolve_device

        resolve_device(device)
        if run is None:  # an existing run is loaded on the device (evaluate_run)
            config = {**(config or {}), "device": device}

    values, names, n, s, det_name = _validate(data, category, detector, strengths, out,
                                              defects, n_per_defect, seed, config, run)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if run is None:
        run_dir = root / "run"
        train(data, category, det_name, run_dir, config or {}, progress=progress)
    else:
        run_dir = Path(run)
    rows = []
    for v in sorted(values):
        name = strength_name(v)
        set_dir = build_set(data, category, names, v, n, s, root / "sets" / name)
        with warnings.catch_warnings():  # said once, by _validate
            warnings.filterwarnings("ignore", ".*a run trained on category", PcadWarning)
            m = evaluate_run(set_dir, category, run_dir, root / "eval" / name,
                             progress=progress, device=device)
        rows.append({"strength": v, "i_auroc": m["i_auroc"], "p_auroc": m["p_auroc"],
                     "aupro_0.3": m["aupro"][AUPRO_LIMIT], "n_test": m["n_test"],
                     "set": str(set_dir), "eval": str(root / "eval" / name)})
    limit = detection_limit([r["strength"] for r in rows], [r["i_auroc"] for r in rows])
    summary = {"category": category, "detector": det_name, "data_root": str(Path(data).resolve()),
               "run": str(run_dir.resolve()), "out": str(root.resolve()),
               "defects": list(names), "n_per_defect": n, "seed": s, "threshold": THRESHOLD,
               "detection_limit": limit, "reached": limit is not None, "rows": rows}
    with atomic_write(root / "sensitivity.csv", "w") as fh:
        fh.write(_csv_text(rows))
    with atomic_write(root / "sensitivity.json", "w") as fh:
        json.dump(summary, fh, indent=2)
    title = f"{category}: {det_name}, defects {'/'.join(names)}"
    _plot_png(rows, limit, title, root / "sensitivity.png")
    _plot_html(rows, limit, title, root / "sensitivity.html")
    summary["files"] = {k: str(root / f"sensitivity.{k}") for k in ("csv", "json", "png", "html")}
    return summary
