"""The HTML report of an evaluation run: metrics table, ROC and PRO curves, worst cases.

An evaluation run folder (written by ``pcad eval``) holds::

    <run>/metrics.json                       i_auroc, p_auroc, aupro {"0.3": ...}, f1_max_image,
                                             ap_image, n_test, ... (top level and/or one dict
                                             per category)
    <run>/scores.csv                         path, category, defect, label, score (one row per
                                             test image; path: one of the sample's files)
    <run>/maps/<category>/test/<defect>/NNN.tiff   float anomaly maps

The report shows every metric row, the image-level ROC per category (from ``scores.csv``), the
exact PRO curve per category (maps and the dataset's gt masks; maps of another size than the gt
are resized bilinearly for the curve, as the official evaluation expects maps at the gt's
size), and the worst false positives (good images with the highest scores) and false negatives
(anomalous images with the lowest scores) as RGB / anomaly map / gt-contour overlays. Sample
paths in ``scores.csv`` are resolved as given, then against ``data_root`` (argument, or
``data_root``/``dataset`` in metrics.json), the run folder and its parent. What cannot be found
is reported on the page instead of failing it; a folder without ``metrics.json`` is an error.

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
from viz.html import figure_div, html_page, write_html
from viz.maps import overlay_image, png_data_uri, resize_map

SCORE_COLUMNS = ("path", "category", "defect", "label", "score")
#: Metric columns of the table, in order (AUPRO columns are added per limit found).
TABLE_COLUMNS = (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"), ("AUPRO", ""),
                 ("f1_max_image", "F1-max (image)"), ("ap_image", "AP (image)"),
                 ("f1_max_pixel", "F1-max (pixel)"), ("ap_pixel", "AP (pixel)"),
                 ("n_test", "test images"), ("n_anomalous", "anomalous"))
DATA_ROOT_KEYS = ("data_root", "dataset", "data", "root", "dataset_root")


@dataclass
class ScoreRow:
    """One line of ``scores.csv``."""

    path: str
    category: str
    defect: str
    label: int
    score: float


@dataclass
class Run:
    """An evaluation run folder, read."""

    root: Path
    metrics: dict[str, Any]
    rows: list[ScoreRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def map_path(self, row: ScoreRow) -> Path:
        """``<run>/maps/<category>/test/<defect>/<stem>.tiff`` of a row."""
        stem = Path(row.path).name.split(".")[0]
        return self.root / "maps" / row.category / "test" / row.defect / f"{stem}.tiff"


def load_run(run: str | os.PathLike[str]) -> Run:
    """Read ``metrics.json`` (required) and ``scores.csv`` (optional: a note when absent).

    Raises:
        FileNotFoundError: ``run`` does not exist.
        InvalidInputError: ``run`` is not a folder, or has no ``metrics.json``, or its
            metrics hold no ``i_auroc``.
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
        raise InvalidInputError(f"{root}: no metrics.json; not an evaluation run folder "
                                "(expected metrics.json, scores.csv and maps/ from pcad eval)")
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
        for k in DATA_ROOT_KEYS:
            v = run.metrics.get(k)
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


def _map_range(run: Run, samples: _Samples, category: str) -> tuple[float, float] | None:
    vals = []
    for k in _by_category(run.rows)[category]:
        a = samples.amap(k, run.rows[k])
        if a is not None and np.isfinite(a).any():
            vals.append((float(np.nanmin(a)), float(np.nanmax(a))))
    if not vals:
        return None
    return min(v[0] for v in vals), max(v[1] for v in vals)


def _cards(run: Run, samples: _Samples, picks: list[int], kind: str) -> str:
    if not picks:
        return f'<p class="muted">no {kind}</p>'
    cards = []
    n = len(run.rows)
    order = sorted(range(n), key=lambda k: -run.rows[k].score)
    rank = {k: i + 1 for i, k in enumerate(order)}
    for k in picks:
        row = run.rows[k]
        a = samples.amap(k, row)
        rgb = samples.rgb(row)
        g = samples.gt(row, a.shape if a is not None else
                       (rgb.shape[:2] if rgb is not None else None))
        rng = _map_range(run, samples, row.category)
        tiles = []
        if rgb is not None or g is not None:
            tiles.append(overlay_image(rgb, None, g))
        if a is not None:
            tiles.append(overlay_image(rgb, a, g, vmin=rng[0] if rng else None,
                                       vmax=rng[1] if rng else None))
        missing = [w for w, v in (("RGB", rgb), ("map", a), ("gt", g)) if v is None]
        img = ""
        if tiles:  # both tiles have the RGB's size (else the gt's, else the map's)
            h = tiles[0].shape[0]
            gap = np.full((h, 4, 3), 255, np.uint8)
            strip = np.concatenate([tiles[0], gap, tiles[1]], axis=1) if len(tiles) == 2 \
                else tiles[0]
            scale = max(1, 192 // max(h, 1))
            img = (f'<img src="{png_data_uri(strip)}" width="{strip.shape[1] * scale}" '
                   f'alt="{html.escape(row.path)}">')
        name = f"{row.category}/{row.defect}/{Path(row.path).name.split('.')[0]}"
        cap = (f"<b>{html.escape(name)}</b> · score {row.score:.4g} · rank {rank[k]} of {n}"
               + (f' · <span class="muted">missing: {", ".join(missing)}</span>'
                  if missing else ""))
        cards.append(f'<div class="card">{img}<div class="cap">{cap}</div></div>')
    return '<div class="cards">' + "".join(cards) + "</div>"


def report_html(run: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None,
                n_worst: int = 4, fpr_limit: float = 0.3, title: str | None = None) -> str:
    """The report page of an evaluation run (module docstring); plotly.js embedded."""
    from pcad.checks import check_int

    n_worst = check_int(n_worst, "n_worst", minimum=0)
    r = load_run(run)
    samples = _Samples(r, data_root)
    title = title or f"Evaluation report: {r.root.resolve().name}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="muted">run {html.escape(str(r.root.resolve()))} · '
             f"{len(r.rows)} scored test images · written "
             f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
             "<h2>Metrics</h2>", metrics_table(r.metrics)]
    notes = list(r.notes)
    if r.rows:
        blocks, cnotes = _curves(r, samples, fpr_limit)
        notes += cnotes
        parts.append("<h2>Curves</h2>")
        # a grid (not flex): each plot's width is known when plotly lays it out
        parts.append('<div style="display:grid;grid-template-columns:repeat(auto-fill,'
                     'minmax(480px,1fr));gap:10px">'
                     + "".join(f"<div>{b}</div>" for b in blocks) + "</div>")
        good = sorted((k for k, x in enumerate(r.rows) if x.label == 0
                       and math.isfinite(x.score)), key=lambda k: -r.rows[k].score)
        bad = sorted((k for k, x in enumerate(r.rows) if x.label == 1
                      and math.isfinite(x.score)), key=lambda k: r.rows[k].score)
        parts.append("<h2>Worst false positives</h2><p class=\"muted\">good images with the "
                     "highest scores: left RGB with the gt contour, right the anomaly map "
                     "(colour range shared by the category)</p>")
        parts.append(_cards(r, samples, good[:n_worst], "good test images"))
        parts.append("<h2>Worst false negatives</h2><p class=\"muted\">anomalous images with "
                     "the lowest scores (green: ground-truth contour)</p>")
        parts.append(_cards(r, samples, bad[:n_worst], "anomalous test images"))
    if notes:
        parts.insert(4, "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes))
    parts.append("<h2>Run details</h2><details><summary>metrics.json</summary><pre>"
                 + html.escape(json.dumps(r.metrics, indent=1)) + "</pre></details>")
    return html_page("\n".join(parts), title=title)


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str],
                 **kwargs: Any) -> Path:
    """Write :func:`report_html` of ``run`` to ``out`` atomically; returns ``out``."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(f"{out}: the report is HTML; use a .html file name")
    return write_html(out, report_html(run, **kwargs))
