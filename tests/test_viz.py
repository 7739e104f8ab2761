"""Tests of viz: figures, offline HTML, sweeps, maps, curves, renders, reports, samples, CLI.

The run folder of the report tests is written here in the layout ``pcad eval`` writes
(metrics.json, scores.csv, maps/<category>/test/<defect>/NNN.tiff) next to a tiny dataset in
the MVTec 3D-AD layout.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import tifffile
import trimesh
from PIL import Image

import viz
import viz.render as render_mod
from pcad.cli.main import EXIT_ERROR, main
from pcad.errors import FileFormatError, InvalidInputError
from pcad.io import write_mask_png, write_rgb, write_xyz_tiff
from synth import apply_defect, create_defect
from viz.colors import GT_RGB, NAN_COLOUR, NAN_RGB
from viz.html import external_scripts

# -- helpers -----------------------------------------------------------------------------------


def _cloud(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points on a unit sphere and their outward normals (float32)."""
    p = np.random.default_rng(seed).normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return p.astype(np.float32), p.astype(np.float32)


def _assert_offline(text: str) -> None:
    assert external_scripts(text) == []  # no <script src=...>: nothing is fetched
    assert not re.search(r"<link[^>]+href=[\"']?https?:", text, re.IGNORECASE)
    assert len(text) > 3_000_000  # plotly.js (about 4.8 MB) is embedded
    assert "Plotly.newPlot" in text or "Plotly.react" in text


def _make_sample(root: Path, cat: str, kind: str, idx: int, rng: np.random.Generator,
                 size: tuple[int, int] = (24, 32), anomalous: bool = False) -> dict:
    h, w = size
    stem = f"{idx:03d}"
    base = root / cat / "test" / kind
    rgb = (rng.random((h, w, 3)) * 200 + 30).astype(np.uint8)
    gt = np.zeros((h, w), bool)
    if anomalous:
        gt[6:12, 10:18] = True
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    xyz = np.stack([xx * 0.01, yy * 0.01, 1.0 + 0.01 * np.sin(xx / 4)], -1).astype(np.float32)
    xyz[:2] = 0.0
    write_rgb(base / "rgb" / f"{stem}.png", rgb)
    write_mask_png(base / "gt" / f"{stem}.png", gt)
    write_xyz_tiff(base / "xyz" / f"{stem}.tiff", xyz)
    (base / "meta").mkdir(parents=True, exist_ok=True)
    (base / "meta" / f"{stem}.json").write_text(json.dumps({"defect": kind, "index": idx}))
    return {"gt": gt, "path": f"{cat}/test/{kind}/xyz/{stem}.tiff"}


def make_train_run(folder: Path, threshold: float | None, n_train: int = 7,
                   detector: str = "fpfh", category: str = "gear") -> Path:
    """A training run folder with ``train.json`` (and a calibration at ``threshold``)."""
    from pcad.calibration import Calibration

    folder.mkdir(parents=True, exist_ok=True)
    cal = None if threshold is None else Calibration(threshold, 0.1, 0.01, 5,
                                                     threshold - 0.3).to_dict()
    (folder / "train.json").write_text(json.dumps({
        "detector": detector, "category": category, "n_train": n_train, "calibration": cal}))
    (folder / "detector.json").write_text(json.dumps({"detector": detector,
                                                      "config": {"image_size": 64}}))
    return folder


def make_run(tmp_path: Path, *, map_scale: int = 1, category: str = "gear",
             threshold: float | None = None, run_name: str = "run",
             specs: list | None = None) -> tuple[Path, Path]:
    """A dataset (2 good + 3 anomalous test images of one category) and an eval run folder
    with maps at 1/map_scale of the gt size; with ``threshold``, a training run
    (``<tmp>/train_<category>``) calibrated at it that the eval's metrics name. Returns
    (run, data_root)."""
    rng = np.random.default_rng(0)
    data, run = tmp_path / "data", tmp_path / run_name
    rows = []
    specs = specs or [("good", 0, False, 0.9), ("good", 1, False, 0.2),
                      ("dent", 0, True, 0.8), ("dent", 1, True, 0.1), ("bump", 0, True, 0.7)]
    for kind, idx, anomalous, score in specs:
        s = _make_sample(data, category, kind, idx, rng, anomalous=anomalous)
        amap = rng.random(s["gt"].shape).astype(np.float32) * 0.3
        amap[s["gt"]] += score
        amap = amap[::map_scale, ::map_scale]
        out = run / "maps" / category / "test" / kind / f"{idx:03d}.tiff"
        out.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(out, amap)
        rows.append({"path": s["path"], "category": category, "defect": kind,
                     "label": int(anomalous), "score": score})
    metrics = {"i_auroc": 0.5, "p_auroc": 0.9, "aupro": {"0.3": 0.61, "0.1": 0.4},
               "f1_max_image": 0.75, "ap_image": 0.7, "n_test": 5, "n_anomalous": 3,
               category: {"i_auroc": 0.5, "p_auroc": 0.9, "aupro": {"0.3": 0.61, "0.1": 0.4}}}
    if threshold is not None:
        train = make_train_run(tmp_path / f"train_{category}", threshold, category=category)
        metrics.update(detector="fpfh", category=category, run=str(train),
                       data_root=str(data.resolve()))
    (run / "metrics.json").write_text(json.dumps(metrics))
    with open(run / "scores.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "category", "defect", "label", "score"])
        w.writeheader()
        w.writerows(rows)
    return run, data


# -- clouds and HTML ---------------------------------------------------------------------------


def test_cloud_figure_colours_values_and_nan_in_a_distinct_colour() -> None:
    p, _ = _cloud(500)
    v = p[:, 2].astype(np.float64).copy()
    v[:7] = np.nan
    v[7] = np.inf
    fig = viz.cloud_figure(p, v, value_name="height")
    assert [t.name for t in fig.data] == ["height", "NaN (8)"]
    assert len(fig.data[0].x) == 492 and fig.data[1].marker.color == NAN_COLOUR
    assert fig.data[0].marker.cmin == pytest.approx(float(np.nanmin(v[8:])), rel=1e-6)
    assert viz.cloud_figure(p, "z").data[0].marker.colorbar.title.text == "z"
    assert len(viz.cloud_figure(p, v, max_points=100).data[0].x) <= 100


@pytest.mark.parametrize("points, values, match", [
    (np.zeros((10, 3)), np.zeros(9), r"values: 9 values for 10 points"),
    (np.zeros((0, 3)), None, r"empty"),
    (np.full((5, 3), np.nan), None, r"NaN"),
    (np.zeros((5, 2)), None, r"shape \(N, 3\)"),
    (np.zeros((5, 3)), np.array(["a"] * 5), r"expected numbers"),
    (np.zeros((5, 3)), "w", r"one of 'x', 'y', 'z'"),
])
def test_cloud_figure_bad_input_is_a_clear_error(points, values, match) -> None:
    with pytest.raises(InvalidInputError, match=match):
        viz.cloud_figure(points, values)


def test_save_html_is_self_contained_and_atomic(tmp_path: Path) -> None:
    p, _ = _cloud(100)
    out = viz.save_html(viz.cloud_figure(p, p[:, 0]), tmp_path / "sub" / "c.html")
    text = out.read_text()
    _assert_offline(text)
    assert [f.name for f in (tmp_path / "sub").iterdir()] == ["c.html"]  # no temp file left


def test_html_page_embeds_plotly_once() -> None:
    fig = go.Figure(go.Scatter(y=[1, 2]))
    page = viz.html_page(viz.figure_div(fig) + viz.figure_div(fig), title="t")
    _assert_offline(page)
    assert page.count("<script type=\"text/javascript\">/**") <= 1
    assert len(page) < len(viz.figure_html(fig)) + 20000


# -- defects -----------------------------------------------------------------------------------


def test_defect_figure_before_after_with_gt() -> None:
    p, n = _cloud()
    r = apply_defect(p, "bump", normals=n, seed=1)
    fig = viz.defect_figure(p, r)
    names = [t.name for t in fig.data]
    assert names[0] == "before" and names[1] == "|offset| / diagonal"
    assert names[-1].startswith(f"ground truth ({r.n_anomalous} of")
    assert {t.scene for t in fig.data} == {"scene", "scene2"}
    assert len(fig.data[-1].x) == r.n_anomalous  # every point shown (2000 < max_points)


def test_defect_figure_hole_marks_removed_points_and_organized_input(organized_scan) -> None:
    p, n = _cloud()
    r = apply_defect(p, "hole", normals=n, seed=0)
    fig = viz.defect_figure(p, r)
    removed = [t for t in fig.data if t.name.startswith("removed")]
    assert removed and len(removed[0].x) == len(r.removed)
    ro = apply_defect(organized_scan, "dent", seed=0)
    fig = viz.defect_figure(organized_scan, ro)
    assert fig.data[-1].name.startswith(f"ground truth ({ro.n_anomalous} of")
    with pytest.raises(InvalidInputError, match="organized"):
        viz.defect_figure(p, ro)


# -- sweeps ------------------------------------------------------------------------------------


def test_compute_sweep_frames_hold_full_results_in_product_order() -> None:
    p, n = _cloud(1500)
    s = viz.compute_sweep(p, {"scale": [2, 8], "strength": [0.01, 0.03], "octaves": [1, 3]},
                          normals=n, seed=0)
    assert len(s.frames) == 8 and s.names == ("scale", "strength", "octaves")
    fr = s.frame(1, 0, 1)
    assert fr.params == {"scale": 8, "strength": 0.01, "octaves": 3}
    assert fr.index == (1, 0, 1) and s.key(*fr.index) == "1-0-1"
    ref = apply_defect(p, create_defect("perlin", scale=8, strength=0.01, octaves=3),
                       normals=n, seed=0)
    np.testing.assert_array_equal(fr.points, ref.points)  # the data are never downsampled
    np.testing.assert_array_equal(fr.mask, ref.mask)


def test_sweep_figure_one_slider_per_parameter_and_same_display_subset(tmp_path: Path) -> None:
    p, n = _cloud(3000)
    s = viz.compute_sweep(p, {"scale": [2, 4, 8], "strength": [0.02], "octaves": [1, 4]},
                          normals=n)
    fig = viz.sweep_figure(s, max_points=500)
    assert len(fig.frames) == 6 and {f.name for f in fig.frames} == {
        f"{i}-0-{k}" for i in range(3) for k in range(2)}
    sliders = fig.layout.sliders
    assert [len(sl.steps) for sl in sliders] == [3, 2]  # strength has one value: no slider
    assert all(st.method == "skip" for sl in sliders for st in sl.steps)
    assert fig.layout.meta["pcad_sweep"]["slider_of"] == [0, -1, 1]
    # the same points every frame: x of a frame differs from the input only by the offsets
    lens = {len(f.data[0].x) for f in fig.frames}
    assert lens == {500}
    cmax = {f.data[0].marker.cmax for f in fig.frames}
    assert len(cmax) == 1  # one colour range for all frames
    text = viz.save_html(fig, tmp_path / "s.html").read_text()
    _assert_offline(text)
    assert "pcadSweepKey" in text
    assert "Plotly.animate('" not in text  # plotly's auto-play call is not written


def test_sweep_figure_combined_slider_needs_no_script(organized_scan) -> None:
    s = viz.compute_sweep(organized_scan, {"scale": [2, 6], "octaves": [1, 2]}, seed=3)
    assert s.organized and len(s.frames) == 4
    fig = viz.sweep_figure(s, sliders="combined")
    (sl,) = fig.layout.sliders
    assert [st.method for st in sl.steps] == ["animate"] * 4
    assert sl.steps[3].label == "6 / 2" and list(sl.steps[3].args[0]) == ["1-1"]
    assert fig.layout.meta is None
    assert "pcadSweepKey" not in viz.figure_html(fig)


@pytest.mark.parametrize("grid, kw, match", [
    ({"scale": [2], "bogus": [1]}, {}, r"no parameter 'bogus'"),
    ({"scale": []}, {}, r"no value for 'scale'"),
    ({}, {}, r"nothing to sweep"),
    ({"scale": [1, 1]}, {}, r"repeated"),
    ({"scale": list(range(1, 30)), "octaves": list(range(1, 17)), "strength": [0.01, 0.02]},
     {}, r"at most 512 frames"),
    ({"scale": [2, -1]}, {}, r"scale"),
    ({"scale": [2]}, {"scale": 3}, r"both swept and fixed"),
])
def test_compute_sweep_bad_grid(grid, kw, match) -> None:
    p, n = _cloud(200)
    with pytest.raises(InvalidInputError, match=match):
        viz.compute_sweep(p, grid, normals=n, **kw)


def test_default_grid_follows_the_defect() -> None:
    assert viz.default_grid("perlin") == {"scale": [2.0, 4.0, 8.0],
                                          "strength": [0.01, 0.02, 0.04], "octaves": [1, 4, 8]}
    assert "strength" not in viz.default_grid("hole")


# -- anomaly maps and overlays -----------------------------------------------------------------


def test_anomaly_map_figure_organized_and_unorganized(organized_scan) -> None:
    h, w, _ = organized_scan.shape
    amap = np.random.default_rng(0).random((h, w))
    amap[10, 10] = np.nan
    gt = np.zeros((h, w), bool)
    gt[20:25, 30:40] = True
    fig = viz.anomaly_map_figure(organized_scan, amap, gt)
    n_valid = int(np.any(organized_scan != 0, axis=-1).sum())
    names = [t.name for t in fig.data]
    assert names == ["anomaly score", "NaN (1)", "ground truth (50)"]
    assert fig.data[0].type == "mesh3d" and len(fig.data[0].x) == n_valid  # a lit surface
    assert fig.data[0].lighting.diffuse > 0 and fig.data[0].intensity is not None
    assert fig.data[-1].marker.color == viz.colors.GT_COLOUR
    assert fig.layout.scene.aspectmode == "manual" and fig.layout.scene.camera.eye.z < 0
    p, _ = _cloud(300)
    fig = viz.anomaly_map_figure(p, p[:, 0], p[:, 0] > 0.5)
    assert fig.data[-1].name == f"ground truth ({int((p[:, 0] > 0.5).sum())})"
    with pytest.raises(InvalidInputError, match=r"map of shape \(60, 80\)"):
        viz.anomaly_map_figure(organized_scan, amap[:10])
    with pytest.raises(InvalidInputError, match="gt: 299 values for 300 points"):
        viz.anomaly_map_figure(p, p[:, 0], np.zeros(299))


def test_overlay_image_contour_map_and_resizing() -> None:
    rgb = np.full((40, 60, 3), 100, np.uint8)
    gt = np.zeros((40, 60), bool)
    gt[10:20, 10:30] = True
    amap = np.zeros((20, 30))
    amap[5:10, 5:15] = 1.0
    out = viz.overlay_image(rgb, amap, gt)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert tuple(out[10, 15]) == GT_RGB and tuple(out[15, 20]) != GT_RGB  # border only
    assert tuple(out[35, 50]) == (100, 100, 100) or np.abs(out[35, 50] - 100).max() < 60
    assert out[15, 20].astype(int).sum() != 300  # the map shows over the image
    nan_map = np.full((40, 60), np.nan)
    assert tuple(viz.overlay_image(None, nan_map)[0, 0]) == NAN_RGB
    fig = viz.overlay_figure(rgb, amap, gt, title="x")
    assert [t.type for t in fig.data] == ["image", "image"]
    assert fig.data[0].source.startswith("data:image/png;base64,")
    with pytest.raises(InvalidInputError, match="at least one"):
        viz.overlay_image()


# -- curves ------------------------------------------------------------------------------------


def test_roc_and_pro_figures_use_the_exact_metrics() -> None:
    from pcad.metrics import aupro, image_auroc

    fpr, tpr = viz.roc_curve([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0] and tpr.tolist() == [0.0, 0.5, 1.0, 1.0]
    rng = np.random.default_rng(1)
    s, y = rng.random(50), np.arange(50) % 2
    fig = viz.roc_figure({"a": (s, y), "b": (s, np.zeros(50))})
    assert fig.data[0].name == f"a: AUROC {image_auroc(s, y):.3f}"
    assert fig.data[1].name.startswith("b: undefined")
    maps = [rng.random((16, 16)) for _ in range(3)]
    masks = [np.zeros((16, 16), int) for _ in range(3)]
    masks[0][4:8, 4:8] = 1
    maps[0][4:8, 4:8] += 0.6
    fig = viz.pro_figure(maps, masks, fpr_limit=0.3)
    assert fig.data[0].name == f"all: AUPRO@0.3 {aupro(maps, masks, 0.3):.3f}"
    with pytest.raises(InvalidInputError):
        viz.roc_figure([0.1, 0.2], [0, 0])


def test_thin_curve_keeps_few_points_and_the_ends() -> None:
    from viz.curves import thin_curve

    x = np.sort(np.random.default_rng(0).random(200_000))
    tx, ty = thin_curve(x, x ** 2)
    assert len(tx) <= 2100 and tx[0] == x[0] and tx[-1] == x[-1]


# -- rendering ---------------------------------------------------------------------------------


def _png_ok(path: Path) -> np.ndarray:
    arr = np.asarray(Image.open(path).convert("RGB"))
    assert arr.shape == (120, 160, 3)
    assert arr.std() > 5  # not blank
    return arr


def test_render_png_matplotlib(tmp_path: Path) -> None:
    p, _ = _cloud(800)
    v = p[:, 2].astype(float).copy()
    v[:50] = np.nan
    assert viz.render_png(p, tmp_path / "m.png", values=v, width=160, height=120,
                          backend="matplotlib") == "matplotlib"
    _png_ok(tmp_path / "m.png")


def test_render_png_falls_back_when_the_open3d_child_crashes(tmp_path: Path, monkeypatch) -> None:
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    monkeypatch.setattr(render_mod, "_child_argv", lambda npz, png: crash)
    p, _ = _cloud(500)
    with pytest.warns(viz.RenderFallbackWarning, match="SIGSEGV"):
        backend = viz.render_png(p, tmp_path / "c.png", width=160, height=120)
    assert backend == "matplotlib"
    _png_ok(tmp_path / "c.png")
    with pytest.raises(InvalidInputError, match="open3d offscreen rendering failed"):
        viz.render_png(p, tmp_path / "d.png", backend="open3d")
    assert not (tmp_path / "d.png").exists()


def test_render_png_falls_back_on_a_hanging_child(tmp_path: Path, monkeypatch) -> None:
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    monkeypatch.setattr(render_mod, "_child_argv", lambda npz, png: hang)
    p, _ = _cloud(300)
    with pytest.warns(viz.RenderFallbackWarning, match="timed out"):
        assert viz.render_png(p, tmp_path / "h.png", width=160, height=120,
                              timeout=1.0) == "matplotlib"


def test_render_png_real_subprocess_never_crashes_the_caller(tmp_path: Path) -> None:
    """Open3D where an offscreen context exists (EGL/Vulkan), else matplotlib with a warning."""
    p, _ = _cloud(1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = viz.render_png(p, tmp_path / "r.png", values=p[:, 0], width=160,
                                 height=120, timeout=120)
    fallback = [w for w in caught if issubclass(w.category, viz.RenderFallbackWarning)]
    assert (backend == "matplotlib") == bool(fallback)
    _png_ok(tmp_path / "r.png")


def test_render_png_bad_input(tmp_path: Path) -> None:
    p, _ = _cloud(100)
    with pytest.raises(InvalidInputError, match="values: 99 values for 100"):
        viz.render_png(p, tmp_path / "x.png", values=np.zeros(99), backend="matplotlib")
    with pytest.raises(InvalidInputError, match="backend"):
        viz.render_png(p, tmp_path / "x.png", backend="vtk")
    with pytest.raises(InvalidInputError, match="empty"):
        viz.render_png(np.zeros((0, 3)), tmp_path / "x.png")


# -- reports -----------------------------------------------------------------------------------


def test_report_of_a_run_folder(tmp_path: Path) -> None:
    run, data = make_run(tmp_path, threshold=0.5)
    text = viz.write_report(run, tmp_path / "report.html", data_root=data, n_worst=2) \
        .read_text()
    _assert_offline(text)
    assert "<td>0.610</td>" in text and "AUPRO@0.3" in text and "AUPRO@0.1" in text
    assert text.count('<table class="metrics">') == 1
    assert "Image-level ROC" in text and "Per-region overlap" in text
    # the header: detector, data relative to the report, sizes, threshold, decisions
    header = text.split('<table class="metrics header">')[1].split("</table>")[0]
    assert "<td>fpfh</td>" in header and "<td>data</td>" in header
    assert "24×32 (model input 64)" in header and "<td>7</td>" in header
    assert "0.5 (calibrated on 5 good validation samples at 1 % false alarms)" in header
    assert "1 of 2 good" in header and "1 of 3 defective" in header
    assert str(tmp_path) not in text.split("<h2>Run details")[0]  # no absolute temp path
    fp = text.split("Worst false positives")[1].split("Worst false negatives")[0]
    fn = text.split("Worst false negatives")[1]
    assert "gear/good/000" in fp and "score 0.9" in fp  # above the threshold
    assert "gear/good/001" not in fp  # 0.2: below the run's threshold, not a false positive
    assert "gear/dent/001" in fn and "gear/dent/000" not in fn and "gear/bump" not in fn
    assert fp.count("<img src=\"data:image/png;base64,") == 2  # card strip + colour bar
    assert 'class="cbar"' in fp and "Image scores" in text and "threshold 0.5" in text
    assert 'class="note"' not in text  # everything was found


def test_report_without_a_threshold_uses_the_f1_optimal_one(tmp_path: Path) -> None:
    specs = [("good", 0, False, 0.3), ("good", 1, False, 0.6), ("dent", 0, True, 0.8),
             ("dent", 1, True, 0.5), ("bump", 0, True, 0.7)]  # best F1: t in (0.3, 0.5)
    run, data = make_run(tmp_path, specs=specs)
    text = viz.report_html(run, data_root=data)
    assert "F1-optimal on the test scores" in text
    fp = text.split("Worst false positives")[1].split("Worst false negatives")[0]
    assert "gear/good/000" not in fp and "1 of 1 false positives" in fp
    assert "gear/good/001" in fp


def test_report_of_a_folder_of_eval_runs(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    make_run(tmp_path, category="gear", threshold=0.5, run_name="results/gear")
    make_run(tmp_path, category="cookie", threshold=0.75, run_name="results/cookie")
    assert main(["viz", "report", str(results)]) == 0  # -o defaults to RESULTS/report.html
    text = (results / "report.html").read_text()
    assert "wrote" in capsys.readouterr().out
    header = text.split('<table class="metrics header">')[1].split("</table>")[0]
    assert "<td>gear</td>" in header and "<td>cookie</td>" in header
    assert "0.75 (calibrated" in header and "<td>mean</td>" in text
    assert "<h3>gear</h3>" in text and "<h3>cookie</h3>" in text
    assert "../data" in header  # relative to the report's folder
    fp = text.split("Worst false positives")[1].split("Worst false negatives")[0]
    cookie = fp.split("<h3>cookie</h3>")[1]
    assert "cookie/good/000" in cookie and "cookie/good/001" not in cookie
    assert 'class="note"' not in text  # maps and samples of both were found


def test_report_resizes_small_maps_and_notes_missing_things(tmp_path: Path) -> None:
    run, data = make_run(tmp_path, map_scale=2)
    (run / "maps" / "gear" / "test" / "bump" / "000.tiff").unlink()
    text = viz.report_html(run, data_root=data)
    assert "PRO curve left out, 1 of 5 images miss a map" in text
    assert "missing: map" in text or "Worst false negatives" in text
    run2, _ = make_run(tmp_path / "b", map_scale=2)
    text = viz.report_html(run2)  # no data root: gt not found, still a page
    assert "PRO curve left out" in text and "missing: RGB" in text


def test_report_bad_run_folders(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no metrics.json; not an evaluation run"):
        viz.report_html(tmp_path)
    with pytest.raises(FileNotFoundError):
        viz.report_html(tmp_path / "nope")
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        viz.report_html(tmp_path)
    (tmp_path / "metrics.json").write_text('{"loss": 1.0}')
    with pytest.raises(InvalidInputError, match="holds no metrics"):
        viz.report_html(tmp_path)
    (tmp_path / "metrics.json").write_text('{"i_auroc": 0.9}')
    assert "no scores.csv" in viz.report_html(tmp_path)
    (tmp_path / "scores.csv").write_text("path,score\na,1\n")
    with pytest.raises(FileFormatError, match=r"missing column\(s\) \['category', 'defect'"):
        viz.report_html(tmp_path)
    (tmp_path / "scores.csv").write_text("path,category,defect,label,score\na,c,d,1,high\n")
    with pytest.raises(FileFormatError, match=r"scores.csv:2: .* not a number"):
        viz.report_html(tmp_path)
    with pytest.raises(InvalidInputError, match="use a .html"):
        viz.write_report(tmp_path, tmp_path / "r.pdf")


def test_metric_rows_of_nested_metrics() -> None:
    from viz.report import metric_rows, metrics_table

    m = {"mean": {"i_auroc": 0.8}, "categories": {"gear": {"i_auroc": 0.7}}, "aupro": {}}
    assert [n for n, _ in metric_rows(m)] == ["mean", "gear"]
    assert [n for n, _ in metric_rows({"i_auroc": 1.0, "category": "nut"})] == ["nut"]
    table = metrics_table({"i_auroc": 1.0, "aupro": 0.42, "n_test": 7})
    assert "<th>AUPRO@0.3</th>" in table and "<td>0.420</td>" in table and "<td>7</td>" in table


# -- samples -----------------------------------------------------------------------------------


def test_sample_page_from_any_of_its_files(tmp_path: Path) -> None:
    _make_sample(tmp_path, "gear", "dent", 0, np.random.default_rng(0), anomalous=True)
    base = tmp_path / "gear" / "test" / "dent"
    for p in (base / "rgb" / "000.png", base / "gt" / "000.png", base / "meta" / "000.json",
              base / "000"):
        s = viz.find_sample(p)
        assert s.stem == "000" and s.xyz == base / "xyz" / "000.tiff" and s.gt is not None
    text = viz.write_sample_page(base / "xyz" / "000.tiff", tmp_path / "s.html").read_text()
    _assert_offline(text)
    assert "gear/test/dent/000" in text and "ground truth (48)" in text
    assert text.count('<img src="data:image/png;base64,') == 3
    with pytest.raises(InvalidInputError, match="a folder"):
        viz.find_sample(base)
    with pytest.raises(FileNotFoundError, match="no such sample"):
        viz.find_sample(base / "xyz" / "007.tiff")


def test_sample_page_of_a_labelled_cloud(tmp_path: Path) -> None:
    p, _ = _cloud(400)
    f = tmp_path / "c.txt"
    np.savetxt(f, np.c_[p, p[:, 0] > 0.8], fmt="%.5f")
    text = viz.sample_html(f)
    assert f"ground truth ({int((p[:, 0] > 0.8).sum())})" in text


# -- command line ------------------------------------------------------------------------------


def test_cli_viz_sweep_on_a_mesh(tmp_path: Path, capsys) -> None:
    mesh = tmp_path / "box.stl"
    trimesh.creation.box(extents=[2.0, 1.0, 0.5]).export(mesh)
    out = tmp_path / "sweep.html"
    rc = main(["viz", "sweep", str(mesh), "-o", str(out), "--scale", "2", "4", "--octaves",
               "1", "3", "--strength", "0.02", "--points", "1500", "--display-points", "400",
               "--json"])
    assert rc == 0
    record = json.loads(capsys.readouterr().out)
    assert record["frames"] == 4 and record["points"] == 1500 and out.exists()
    text = out.read_text()
    _assert_offline(text)
    assert text.count("\"name\":\"") >= 4 and "pcadSweepKey" in text


def test_cli_viz_sweep_on_an_xyz_tiff_with_defaults(tmp_path: Path, organized_scan,
                                                    capsys) -> None:
    tif = tmp_path / "scan.tiff"
    write_xyz_tiff(tif, organized_scan)
    out = tmp_path / "s.html"
    assert main(["viz", "sweep", str(tif), "-o", str(out), "--sliders", "combined"]) == 0
    assert "frames 27" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["viz", "sweep", "IN", "-o", "OUT.png"], "use a .html file name"),
    (["viz", "sweep", "MISSING.stl", "-o", "OUT.html"], "no such file"),
    (["viz", "sweep", "IN", "-o", "OUT.html", "--defect", "hole", "--strength", "0.1"],
     "has no parameter 'strength'"),
    (["viz", "sweep", "IN", "-o", "OUT.html", "--points", "3"], "--points: must be >= 10"),
    (["viz", "report", "RUNDIR", "-o", "OUT.html"], "no metrics.json"),
    (["viz", "sample", "RUNDIR", "-o", "OUT.html"], "a folder"),
])
def test_cli_viz_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, argv, match) -> None:
    mesh = tmp_path / "box.stl"
    trimesh.creation.box().export(mesh)
    (tmp_path / "run").mkdir()
    subs = {"IN": str(mesh), "OUT.png": str(tmp_path / "o.png"),
            "OUT.html": str(tmp_path / "o.html"), "MISSING.stl": str(tmp_path / "m.stl"),
            "RUNDIR": str(tmp_path / "run")}
    assert main([subs.get(a, a) for a in argv]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("pcad: error: ") and re.search(re.escape(match), err)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o.html").exists()


def test_cli_viz_report_and_sample(tmp_path: Path, capsys) -> None:
    run, data = make_run(tmp_path)
    out = tmp_path / "r.html"
    assert main(["viz", "report", str(run), "-o", str(out), "--data", str(data)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and out.exists()
    out2 = tmp_path / "s.html"
    assert main(["viz", "sample", str(data / "gear/test/dent/rgb/000.png"), "-o",
                 str(out2)]) == 0
    assert "gear/test/dent/000" in out2.read_text()
