"""The HTML report of evaluation results: header, metrics, score histograms, ROC and PRO
curves, worst cases at the decision threshold.

An evaluation run folder (written by ``pcad eval``) holds::

    <run>/metrics.json                       i_auroc, p_auroc, aupro {"0.3": ...}, f1_max_image,
                                             ap_image, n_test, ... (top level and/or one dict
                                             per category)
    <run>/scores.csv                         path, category, defect, label, score (one row per
                                             test image; path: one of the sample's files)
    <run>/maps/<category>/test/<defect>/NNN.tiff   float anomaly maps

A folder without ``metrics.json`` whose sub-folders are such run folders (``pcad eval --out
RESULTS/<category>`` for several categories) is read as one multi-category run.

The header names, per category, the detector, the data folder (relative to the report), the
image size, the number of training samples (the training run's ``train.json``, found through
the eval's ``run`` entry) and the decision threshold: the run's calibrated one
(:func:`viz.report_info.run_threshold`), else the F1-optimal threshold of the test scores,
labelled as such; with the accepted/rejected counts at it. Score histograms of good vs
defective images show the threshold. False positives are good images scored above the
threshold, false negatives defective images at or below it; their anomaly maps are drawn on
inferno with one colour range (and colour bar) per category, the ground truth in cyan.

The report shows every metric row, the image-level ROC per category (from ``scores.csv``), the
exact PRO curve per category (maps and the dataset's gt masks; maps of another size than the gt
are resized bilinearly for the curve, as the official evaluation expects maps at the gt's
size), and the worst false positives and false negatives as RGB + gt contour / anomaly map
thumbnails. Sample
paths in ``scores.csv`` are resolved as given, then against ``data_root`` (argument, or
``data_root``/``dataset`` in metrics.json), the run folder and its parent. What cannot be found
is reported on the page instead of failing it; a folder without ``metrics.json`` (and without
sub-folders that have one) is an error.

Example:
    >>> import json, pathlib, tempfile
    >>> from viz.report import load_run, write_report
    >>> tmp = tempfile.TemporaryDirectory()
    >>> run = pathlib.Path(tmp.name) / "eval1"
    >>> run.mkdir()
    >>> _ = (run / "metrics.json").write_text(json.dumps({"category": "gear", "i_auroc": 0.75}))
    >>> _ = (run / "scores.csv").write_text("path,category,defect,label,score\\n"
    ...                                     "a.tiff,gear,good,0,0.2\\nb.tiff,gear,dent,1,0.9\\n")
    >>> [(r.defect, r.label, r.score) for r in load_run(run).rows]
    [('good', 0, 0.2), ('dent', 1, 0.9)]
    >>> write_report(run, run / "report.html").name
    'report.html'
    >>> tmp.cleanup()
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcad.errors import FileFormatError, InvalidInputError
from viz.colors import MAP_CMAP, colorbar_image
from viz.html import PAGE_CSS, figure_div, html_page, write_html
from viz.maps import overlay_image, png_data_uri, resize_map
from viz.report_info import (
    Threshold,
    decision_counts,
    display_path,
    f1_optimal_threshold,
    find_train_run,
    read_json,
    run_threshold,
)

SCORE_COLUMNS = ("path", "category", "defect", "label", "score")
#: Metric columns of the table, in order (AUPRO columns are added per limit found).
TABLE_COLUMNS = (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"), ("AUPRO", ""),
                 ("f1_max_image", "F1-max (image)"), ("ap_image", "AP (image)"),
                 ("f1_max_pixel", "F1-max (pixel)"), ("ap_pixel", "AP (pixel)"),
                 ("mad", "mAD"), ("n_test", "test images"), ("n_anomalous", "anomalous"))
DATA_ROOT_KEYS = ("data_root", "dataset", "data", "root", "dataset_root")


@dataclass
class ScoreRow:
    """One line of ``scores.csv``."""

    path: str
    category: str
    defect: str
    label: int
    score: float
    source: Path | None = None  #: the eval folder of the row (a folder of runs), else None


@dataclass
class Run:
    """An evaluation run folder (or a folder of them, one per category), read."""

    root: Path
    metrics: dict[str, Any]
    rows: list[ScoreRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: per category: the eval folder whose ``metrics.json`` describes it (may be ``root``)
    sources: dict[str, Path] = field(default_factory=dict)

    def map_path(self, row: ScoreRow) -> Path:
        """``<eval folder>/maps/<category>/test/<defect>/<stem>.tiff`` of a row: in the row's
        own eval folder when it has that map, else under ``root`` (a shared maps tree)."""
        stem = Path(row.path).name.split(".")[0]
        rel = Path("maps") / row.category / "test" / row.defect / f"{stem}.tiff"
        if row.source is not None and (row.source / rel).is_file():
            return row.source / rel
        return self.root / rel

    def category_metrics(self, category: str) -> dict[str, Any]:
        """The metrics object of a category (its eval folder's, a per-category object of the
        top level, else the top level)."""
        src = self.sources.get(category)
        if src is not None and src != self.root:
            m = read_json(src / "metrics.json")
            if m is not None:
                return m
        for name, m in metric_rows(self.metrics):
            if name == category:
                return m
        return self.metrics


def load_run(run: str | os.PathLike[str]) -> Run:
    """Read ``metrics.json`` (required) and ``scores.csv`` (optional: a note when absent);
    a folder without ``metrics.json`` whose sub-folders are eval runs (one per category, as
    ``pcad eval --out RESULTS/<category>`` writes them) is read as one multi-category run.

    Raises:
        FileNotFoundError: ``run`` does not exist.
        InvalidInputError: ``run`` is not a folder, or has no ``metrics.json`` (nor
            sub-folders that have one), or its metrics hold no ``i_auroc``.
        FileFormatError: unreadable JSON or CSV, missing CSV columns, bad labels or scores.
    """
    root = Path(run)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such run folder")
    if not root.is_dir():
        raise InvalidInputError(f"{root}: not a folder; give an evaluation run folder "
                                "(metrics.json, scores.csv, maps/)")
    mpath = root / "metrics.json"
    if not mpath.is_file():
        subs = sorted(d for d in root.iterdir() if (d / "metrics.json").is_file())
        if subs:
            return _load_folder_of_runs(root, subs)
        raise InvalidInputError(f"{root}: no metrics.json; not an evaluation run folder "
                                "(expected metrics.json, scores.csv and maps/ from pcad eval, "
                                "or sub-folders that hold them)")
    try:
        metrics = json.loads(mpath.read_text())
    except ValueError as exc:
        raise FileFormatError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(metrics, dict) or not metric_rows(metrics):
        raise InvalidInputError(f"{mpath}: holds no metrics (no 'i_auroc' at the top level or "
                                "in a per-category object)")
    out = Run(root=root, metrics=metrics)
    spath = root / "scores.csv"
    if spath.is_file():
        out.rows = read_scores(spath)
    else:
        out.notes.append("no scores.csv: no curves and no worst cases")
    for cat in {r.category for r in out.rows} | {n for n, _ in metric_rows(metrics)}:
        sub = root / cat  # e.g. pcad demo: <eval>/<category>/metrics.json beside the union
        out.sources[cat] = sub if (sub / "metrics.json").is_file() else root
    return out


def _load_folder_of_runs(root: Path, subs: list[Path]) -> Run:
    """One :class:`Run` of the eval folders ``subs`` (their rows, their metrics under
    ``categories``, and a ``mean`` row over them when there are several)."""
    cats: dict[str, dict[str, Any]] = {}
    out = Run(root=root, metrics={})
    for sub in subs:
        one = load_run(sub)
        rows = metric_rows(one.metrics)
        name = str(one.metrics.get("category") or (rows[0][0] if rows else sub.name))
        if name in ("all", "mean"):
            name = sub.name
        if name in cats:
            raise InvalidInputError(f"{root}: two eval folders hold category {name!r} "
                                    f"({out.sources[name].name} and {sub.name}); give one")
        cats[name] = one.metrics if "i_auroc" in one.metrics else rows[0][1]
        out.sources[name] = sub
        out.rows += [ScoreRow(r.path, r.category, r.defect, r.label, r.score, sub)
                     for r in one.rows]
        out.notes += [f"{sub.name}: {n}" for n in one.notes]
    metrics: dict[str, Any] = {}
    if len(cats) > 1:
        mean: dict[str, Any] = {}
        for key in ("i_auroc", "p_auroc", "f1_max_image", "ap_image", "mad"):
            vals = [m.get(key) for m in cats.values()]
            if all(isinstance(v, (int, float)) for v in vals):
                mean[key] = float(np.mean(vals))
        limits = set.intersection(*(set(_aupro(m)) for m in cats.values()))
        if limits:
            mean["aupro"] = {lim: float(np.mean([_aupro(m)[lim] for m in cats.values()]))
                             for lim in sorted(limits)}
        mean["n_test"] = sum(int(m.get("n_test") or 0) for m in cats.values())
        if "i_auroc" in mean:
            metrics["mean"] = mean
    metrics["categories"] = cats
    out.metrics = metrics
    return out


def read_scores(path: Path) -> list[ScoreRow]:
    """The rows of a ``scores.csv`` (columns :data:`SCORE_COLUMNS`, any order, more allowed)."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in SCORE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise FileFormatError(f"{path}: missing column(s) {missing}; expected "
                                      f"{', '.join(SCORE_COLUMNS)}")
            rows = []
            for k, r in enumerate(reader, start=2):
                try:
                    label = int(float(r["label"]))
                    score = float(r["score"])
                except (TypeError, ValueError):
                    raise FileFormatError(f"{path}:{k}: label {r['label']!r} or score "
                                          f"{r['score']!r} is not a number") from None
                rows.append(ScoreRow(r["path"], r["category"], r["defect"], int(label > 0),
                                     score))
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path}: not a text CSV file ({exc})") from None
    return rows


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(name, metrics)`` of every object in ``metrics.json`` that holds ``i_auroc``: the top
    level (named by its ``category`` key, else ``all``), objects under a key (named by the
    key, e.g. ``{"gear": {...}, "mean": {...}}``) and one level further (e.g.
    ``{"categories": {"gear": {...}}}``)."""
    rows: list[tuple[str, dict[str, Any]]] = []
    if "i_auroc" in metrics:
        rows.append((str(metrics.get("category", "all")), metrics))
    for key, value in metrics.items():
        if not isinstance(value, dict) or key == "aupro":
            continue
        if "i_auroc" in value:
            rows.append((str(key), value))
            continue
        for key2, value2 in value.items():
            if isinstance(value2, dict) and "i_auroc" in value2:
                rows.append((str(key2), value2))
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.3f}"
    return html.escape(str(v))


def _aupro(m: dict[str, Any]) -> dict[str, Any]:
    """``{limit: value}`` of a metrics object (a bare number counts as the 0.3 limit)."""
    a = m.get("aupro")
    if isinstance(a, dict):
        return a
    return {"0.3": a} if isinstance(a, (int, float)) else {}


def metrics_table(metrics: dict[str, Any]) -> str:
    """The HTML table of :func:`metric_rows` (one row per object)."""
    rows = metric_rows(metrics)
    limits = sorted({k for _, m in rows for k in _aupro(m)},
                    key=lambda s: -float(s) if _is_number(s) else 0.0)
    head, cols = ["<th>category</th>"], []
    for key, label in TABLE_COLUMNS:
        if key == "AUPRO":
            for lim in limits:
                head.append(f"<th>AUPRO@{html.escape(lim)}</th>")
                cols.append(("aupro", lim))
        else:
            head.append(f"<th>{label}</th>")
            cols.append((key, None))
    body = []
    for name, m in rows:
        cells = [f"<td>{html.escape(name)}</td>"]
        for key, lim in cols:
            v = _aupro(m).get(lim) if key == "aupro" else m.get(key)
            cells.append(f"<td>{_fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ('<table class="metrics"><tr>' + "".join(head) + "</tr>" + "".join(body)
            + "</table>")


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class _Samples:
    """Finds and caches each row's files (gt, RGB) and map."""

    def __init__(self, run: Run, data_root: str | os.PathLike[str] | None) -> None:
        self.run = run
        roots: list[Path] = []
        if data_root is not None:
            roots.append(Path(data_root))
        objs = [run.metrics] + [run.category_metrics(c) for c in sorted(run.sources)]
        for m in objs:
            for k in DATA_ROOT_KEYS:
                v = m.get(k)
                if isinstance(v, str) and v:
                    roots.append(Path(v) if Path(v).is_absolute() else run.root / v)
                    roots.append(Path(v))
        roots += [run.root, run.root.parent, Path.cwd()]
        self.roots = roots
        self._maps: dict[int, np.ndarray | None] = {}

    def files(self, row: ScoreRow):
        from viz.sample import find_sample

        p = Path(row.path)
        candidates = [p] if p.is_absolute() else [r / p for r in self.roots]
        for c in candidates:
            try:
                return find_sample(c)
            except (FileNotFoundError, InvalidInputError):
                continue
        return None

    def gt(self, row: ScoreRow, shape: tuple[int, int] | None) -> np.ndarray | None:
        from pcad.io import read_mask_png

        f = self.files(row)
        if f is not None and f.gt is not None:
            return read_mask_png(f.gt)
        if row.label == 0 and shape is not None:
            return np.zeros(shape, bool)  # good images need no gt file
        return None

    def rgb(self, row: ScoreRow) -> np.ndarray | None:
        from pcad.io import read_rgb

        f = self.files(row)
        return read_rgb(f.rgb) if f is not None and f.rgb is not None else None

    def amap(self, k: int, row: ScoreRow) -> np.ndarray | None:
        if k not in self._maps:
            path = self.run.map_path(row)
            a = None
            if path.is_file():
                import tifffile

                try:
                    a = np.squeeze(np.asarray(tifffile.imread(path), dtype=np.float32))
                except Exception as exc:  # noqa: BLE001 - any unreadable map
                    raise FileFormatError(f"{path}: not a float TIFF map ({exc})") from None
                if a.ndim != 2:
                    raise FileFormatError(f"{path}: expected an (H, W) map, got {a.shape}")
            self._maps[k] = a
        return self._maps[k]


def _by_category(rows: list[ScoreRow]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        out.setdefault(r.category, []).append(k)
    return out


def _curves(run: Run, samples: _Samples, limit: float) -> tuple[list[str], list[str]]:
    """(HTML blocks, notes) of the ROC and PRO figures."""
    from viz.curves import pro_figure, roc_figure

    blocks, notes = [], []
    cats = _by_category(run.rows)
    groups = {}
    for c, idx in cats.items():
        ok = [k for k in idx if math.isfinite(run.rows[k].score)]
        if len(ok) < len(idx):
            notes.append(f"{c}: {len(idx) - len(ok)} NaN scores left out of the ROC")
        groups[c] = ([run.rows[k].score for k in ok], [run.rows[k].label for k in ok])
    if len(cats) > 1:
        groups["all (pooled)"] = _flat(groups)
    try:
        blocks.append(figure_div(roc_figure(groups), height="440px"))
    except InvalidInputError as exc:
        notes.append(f"no ROC: {exc}")
    pro_groups, resized = {}, 0
    for c, idx in cats.items():
        maps, masks, missing = [], [], []
        for k in idx:
            row = run.rows[k]
            a = samples.amap(k, row)
            g = samples.gt(row, None if a is None else a.shape)
            if a is None or g is None:
                missing.append(Path(row.path).name if a is not None else
                               str(run.map_path(row).relative_to(run.root)))
                continue
            if a.shape != g.shape:
                a = resize_map(a, g.shape)
                resized += 1
            maps.append(a)
            masks.append(g)
        if missing:
            notes.append(f"{c}: PRO curve left out, {len(missing)} of {len(idx)} images miss "
                         f"a map or a gt mask (first: {missing[0]})")
            continue
        pro_groups[c] = (maps, masks)
    if resized:
        notes.append(f"{resized} maps were resized (bilinear) to their gt's size for the PRO "
                     "curve")
    if pro_groups:
        try:
            blocks.append(figure_div(pro_figure(pro_groups, fpr_limit=limit), height="440px"))
        except InvalidInputError as exc:
            notes.append(f"no PRO curve: {exc}")
    return blocks, notes


def _flat(groups: dict[str, tuple[list, list]]) -> tuple[list, list]:
    s, y = [], []
    for gs, gy in groups.values():
        s += list(gs)
        y += list(gy)
    return s, y


@dataclass
class CategoryInfo:
    """What the header says about one category of the report."""

    name: str
    detector: str | None
    data_root: str | None
    train_run: Path | None
    n_train: int | None
    image_size: tuple[int, int] | None  #: the test images' (H, W)
    model_size: int | None  #: the detector's ``image_size`` option, when it has one
    threshold: Threshold | None
    counts: dict[str, int] | None  #: decisions at the threshold


def category_info(run: Run, samples: _Samples, category: str) -> CategoryInfo:
    """The :class:`CategoryInfo` of ``category``: from its eval ``metrics.json``, the training
    run it names (``train.json``, ``detector.json``: absent files leave blanks), the first of
    its images found, and its scores (the threshold: the run's calibrated one, else the
    F1-optimal one of the test scores)."""
    m = run.category_metrics(category)
    src = run.sources.get(category, run.root)
    train_run = find_train_run(m.get("run"), src, run.root, run.root.parent)
    rec = read_json(train_run / "train.json") if train_run is not None else None
    det = read_json(train_run / "detector.json") if train_run is not None else None
    cfg = det.get("config") if det is not None and isinstance(det.get("config"), dict) else {}
    n_train = rec.get("n_train") if rec is not None else None
    data_root = m.get("data_root") or run.metrics.get("data_root") \
        or (rec.get("data_root") if rec is not None else None)
    idx = _by_category(run.rows).get(category, [])
    image_size = None
    for k in idx[:4]:
        f = samples.files(run.rows[k])
        path = None if f is None else (f.rgb or f.gt)
        if path is not None:
            from PIL import Image

            with Image.open(path) as im:
                image_size = (im.height, im.width)
            break
    s = [run.rows[k].score for k in idx]
    y = [run.rows[k].label for k in idx]
    thr = run_threshold(train_run)
    if thr is None and s:
        t = f1_optimal_threshold(s, y)
        thr = None if t is None else Threshold(t, "F1-optimal")
    detector = m.get("detector") or run.metrics.get("detector") \
        or (rec.get("detector") if rec is not None else None)
    size = cfg.get("image_size")
    return CategoryInfo(category, None if detector is None else str(detector),
                        None if data_root is None else str(data_root), train_run,
                        n_train if isinstance(n_train, int) else None, image_size,
                        size if isinstance(size, int) else None, thr,
                        None if thr is None or not s else decision_counts(s, y, thr.value))


def header_table(infos: list[CategoryInfo], base: Path | None) -> str:
    """The header: one row per category (detector, data, sizes, threshold, decisions)."""
    head = ("<tr><th>category</th><th>detector</th><th>data</th><th>image size</th>"
            "<th>training samples</th><th>threshold</th><th>accepted (ok)</th>"
            "<th>rejected (defect)</th><th>false positives</th><th>false negatives</th></tr>")
    body = []
    for c in infos:
        size = "–" if c.image_size is None else f"{c.image_size[0]}×{c.image_size[1]}"
        if c.model_size is not None:
            size += f" (model input {c.model_size})"
        n = c.counts
        cells = [c.name, c.detector or "–", display_path(c.data_root, base), size,
                 "–" if c.n_train is None else str(c.n_train),
                 "–" if c.threshold is None else c.threshold.describe()]
        if n is None:
            cells += ["–"] * 4
        else:
            cells += [str(n["tn"] + n["fn"]), str(n["tp"] + n["fp"]),
                      f'{n["fp"]} of {n["fp"] + n["tn"]} good',
                      f'{n["fn"]} of {n["fn"] + n["tp"]} defective']
        body.append("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in cells) + "</tr>")
    return '<table class="metrics header">' + head + "".join(body) + "</table>"


GOOD_COLOUR = "#4c78a8"
DEFECT_COLOUR = "#e45756"


def histogram_figure(run: Run, infos: list[CategoryInfo]):
    """Image-score histograms of good vs defective test images, one panel per category, the
    threshold as a vertical line (plotly figure)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cats = _by_category(run.rows)
    names = [c.name for c in infos if c.name in cats]
    ncol = min(3, max(1, len(names)))
    nrow = -(-len(names) // ncol)
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=names, horizontal_spacing=0.06,
                        vertical_spacing=0.5 / max(nrow, 1) if nrow > 1 else 0.1)
    by_name = {c.name: c for c in infos}
    for k, name in enumerate(names):
        r, col = k // ncol + 1, k % ncol + 1
        rows = [run.rows[i] for i in cats[name] if math.isfinite(run.rows[i].score)]
        vals = [x.score for x in rows]
        thr = by_name[name].threshold
        lo = min(vals + ([thr.value] if thr else [])) if vals else 0.0
        hi = max(vals + ([thr.value] if thr else [])) if vals else 1.0
        size = (hi - lo) / 20 or 1.0
        for label, colour, lab in (("good", GOOD_COLOUR, 0), ("defect", DEFECT_COLOUR, 1)):
            fig.add_trace(go.Histogram(
                x=[x.score for x in rows if x.label == lab], name=label, legendgroup=label,
                showlegend=k == 0, marker_color=colour, opacity=0.65,
                xbins=dict(start=lo - size / 2, end=hi + size / 2, size=size)), row=r, col=col)
        if thr is not None:
            fig.add_vline(x=thr.value, line=dict(color="#222", width=2, dash="dash"), row=r,
                          col=col, annotation_text=f"threshold {thr.value:.3g}"
                          + (" (F1-opt.)" if thr.kind != "calibrated" else ""),
                          annotation_position="top right")
        fig.update_xaxes(title_text="image score", row=r, col=col)
        fig.update_yaxes(title_text="images", row=r, col=col)
    fig.update_layout(barmode="overlay", height=300 * nrow + 60, margin=dict(l=50, r=20, t=50,
                      b=40), legend=dict(orientation="h", x=0, y=1.1 + 0.05 * (nrow > 1)))
    return fig


def _map_range(run: Run, samples: _Samples, category: str) -> tuple[float, float] | None:
    vals = []
    for k in _by_category(run.rows)[category]:
        a = samples.amap(k, run.rows[k])
        if a is not None and np.isfinite(a).any():
            vals.append((float(np.nanmin(a)), float(np.nanmax(a))))
    if not vals:
        return None
    return min(v[0] for v in vals), max(v[1] for v in vals)


THUMB_PX = 224  #: the displayed width of each thumbnail tile


def colour_bar_html(lo: float, hi: float, label: str) -> str:
    """A horizontal colour bar of the map colour scale from ``lo`` to ``hi``."""
    return (f'<div class="cbar"><span>{lo:.3g}</span><img src="'
            f'{png_data_uri(colorbar_image(MAP_CMAP, 256, 12))}" width="256" height="12" '
            f'alt="colour bar"><span>{hi:.3g}</span> <span class="muted">'
            f"{html.escape(label)}</span></div>")


def _cards(run: Run, samples: _Samples, picks: list[int], kind: str,
           rng: tuple[float, float] | None, thr: Threshold | None) -> str:
    if not picks:
        return f'<p class="muted">no {kind}</p>'
    cards = []
    for k in picks:
        row = run.rows[k]
        a = samples.amap(k, row)
        rgb = samples.rgb(row)
        g = samples.gt(row, a.shape if a is not None else
                       (rgb.shape[:2] if rgb is not None else None))
        tiles = []
        if rgb is not None or g is not None:
            tiles.append(overlay_image(rgb, None, g))
        if a is not None:  # opaque map on the shared range, the gt contour over it
            tiles.append(overlay_image(None, a, g if g is not None and g.shape == a.shape
                                       else (None if g is None else resize_map(
                                           g.astype(np.float32), a.shape, nearest=True) > 0),
                                       vmin=rng[0] if rng else None,
                                       vmax=rng[1] if rng else None))
            if tiles[0].shape[:2] != tiles[-1].shape[:2] and len(tiles) == 2:
                from PIL import Image

                h, w = tiles[0].shape[:2]
                tiles[1] = np.asarray(Image.fromarray(tiles[1]).resize(
                    (w, h), Image.Resampling.NEAREST))
        missing = [w for w, v in (("RGB", rgb), ("map", a), ("gt", g)) if v is None]
        img = ""
        if tiles:
            h, w = tiles[0].shape[:2]
            gap = np.full((h, max(2, w // 40), 3), 255, np.uint8)
            strip = np.concatenate([tiles[0], gap, tiles[1]], axis=1) if len(tiles) == 2 \
                else tiles[0]
            width = round(strip.shape[1] * THUMB_PX / max(w, 1))
            img = (f'<img src="{png_data_uri(strip)}" width="{width}" '
                   f'alt="{html.escape(row.path)}">')
        name = f"{row.category}/{row.defect}/{Path(row.path).name.split('.')[0]}"
        margin = "" if thr is None else f" ({'+' if row.score > thr.value else ''}" \
            f"{row.score - thr.value:.3g} from the threshold)"
        cap = (f"<b>{html.escape(name)}</b> · score {row.score:.4g}{margin}"
               + (f' · <span class="muted">missing: {", ".join(missing)}</span>'
                  if missing else ""))
        cards.append(f'<div class="card">{img}<div class="cap">{cap}</div></div>')
    return '<div class="cards">' + "".join(cards) + "</div>"


REPORT_CSS = """
table.header td { text-align: left; } .cbar { display: flex; align-items: center; gap: 6px;
  margin: 6px 0 4px; font-size: 0.85em; } .cbar img { border: 1px solid #999; }
"""


def _worst(run: Run, samples: _Samples, infos: list[CategoryInfo], n_worst: int) -> list[str]:
    """The worst false positives and false negatives at each category's threshold."""
    parts = ['<h2>Worst false positives</h2><p class="muted">good images scored above the '
             "threshold (rejected), highest first. Left: RGB with the ground-truth contour "
             "(cyan); right: the anomaly map, one colour range per category (bar below)</p>"]
    fns = ['<h2>Worst false negatives</h2><p class="muted">defective images scored at or '
           "below the threshold (accepted), lowest first</p>"]
    cats = _by_category(run.rows)
    multi = len(infos) > 1
    for c in infos:
        idx = cats.get(c.name, [])
        rng = _map_range(run, samples, c.name)
        t = c.threshold
        fin = [k for k in idx if math.isfinite(run.rows[k].score)]
        if t is None:
            fp = sorted((k for k in fin if run.rows[k].label == 0),
                        key=lambda k: -run.rows[k].score)
            fn = sorted((k for k in fin if run.rows[k].label == 1),
                        key=lambda k: run.rows[k].score)
            note = " (no threshold: no defective image; the highest-scoring good images)"
        else:
            fp = sorted((k for k in fin if run.rows[k].label == 0
                         and run.rows[k].score > t.value), key=lambda k: -run.rows[k].score)
            fn = sorted((k for k in fin if run.rows[k].label == 1
                         and run.rows[k].score <= t.value), key=lambda k: run.rows[k].score)
            note = f" at threshold {t.describe()}"
        bar = colour_bar_html(*rng, f"anomaly map ({c.name})") if rng else ""
        for out, picks, what in ((parts, fp, "false positive"), (fns, fn, "false negative")):
            head = f"<h3>{html.escape(c.name)}</h3>" if multi else ""
            shown = f"{min(len(picks), n_worst)} of {len(picks)} {what}s{note}"
            out.append(f'{head}<p class="muted">{html.escape(shown)}</p>'
                       + _cards(run, samples, picks[:n_worst], f"{what}s", rng, t)
                       + (bar if picks[:n_worst] else ""))
    return parts + fns


def _results_name(root: Path, base: Path) -> str:
    shown = display_path(root, base)
    return root.resolve().name if shown == "." else shown


def report_html(run: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None,
                n_worst: int = 4, fpr_limit: float = 0.3, title: str | None = None,
                base: str | os.PathLike[str] | None = None) -> str:
    """The report page of an evaluation run or a folder of them (module docstring); paths
    are shown relative to ``base`` (the report's folder; default the run's parent)."""
    from pcad.checks import check_int

    n_worst = check_int(n_worst, "n_worst", minimum=0)
    r = load_run(run)
    samples = _Samples(r, data_root)
    base_path = Path(base) if base is not None else r.root.resolve().parent
    names = list(dict.fromkeys([n for n in _by_category(r.rows)]
                               + [n for n in r.sources if n not in ("all", "mean")]))
    infos = [category_info(r, samples, c) for c in names]
    dets = sorted({c.detector for c in infos if c.detector})
    title = title or (f"Evaluation report: {', '.join(dets) or r.root.resolve().name}"
                      f" on {len(infos)} categor{'y' if len(infos) == 1 else 'ies'}")
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="muted">results {html.escape(_results_name(r.root, base_path))} · '
             f"{len(r.rows)} scored test images · written "
             f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
             header_table(infos, base_path), "<h2>Metrics</h2>", metrics_table(r.metrics)]
    notes = list(r.notes)
    if r.rows:
        parts.append("<h2>Image scores</h2><p class=\"muted\">good and defective test images "
                     "per category; dashed: the decision threshold (score above it: "
                     "defect)</p>")
        hist = histogram_figure(r, infos)
        parts.append(figure_div(hist, height=f"{hist.layout.height}px"))
        blocks, cnotes = _curves(r, samples, fpr_limit)
        notes += cnotes
        parts.append("<h2>Curves</h2>")
        # a grid (not flex): each plot's width is known when plotly lays it out
        parts.append('<div style="display:grid;grid-template-columns:repeat(auto-fill,'
                     'minmax(480px,1fr));gap:10px">'
                     + "".join(f"<div>{b}</div>" for b in blocks) + "</div>")
        parts += _worst(r, samples, infos, n_worst)
    if notes:
        parts.insert(3, "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes))
    parts.append("<h2>Run details</h2><details><summary>metrics.json</summary><pre>"
                 + html.escape(json.dumps(r.metrics, indent=1)) + "</pre></details>")
    return html_page("\n".join(parts), title=title, css=PAGE_CSS + REPORT_CSS)


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str],
                 **kwargs: Any) -> Path:
    """Write :func:`report_html` of ``run`` to ``out`` atomically (paths on the page relative
    to ``out``'s folder); returns ``out``."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(f"{out}: the report is HTML; use a .html file name")
    kwargs.setdefault("base", out.resolve().parent)
    return write_html(out, report_html(run, **kwargs))
