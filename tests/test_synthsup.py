"""Tests of the synthetic-defect source (:mod:`synth.supervision`) and the ``synthsup``
detector trained on it, end to end through ``pcad train`` / ``pcad eval``.

The dataset is tiny (64 x 64, gear only, dent and crack test defects) and generated once per
module; the detector runs at ``image_size=64`` with few variants and epochs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcad.cli.main import EXIT_ERROR, main
from pcad.data import MVTec3DDataset
from pcad.detectors import create_detector, list_detectors, load_detector
from pcad.engine import evaluate_run, train
from pcad.errors import InvalidInputError, PcadError
from pcad.features import point_mask
from synth.supervision import (
    DEFAULT_TYPES,
    DEFECT_TYPES,
    GEOMETRIC_TYPES,
    RGB_TYPES,
    DefectSource,
    SyntheticAnomaly,
    perlin_mask,
)

FAST = {"image_size": 64, "variants": 2, "epochs": 4, "hidden": 16, "layers": 2}
CATEGORY = "gear"


# one torch thread per module (a busy 2-core machine; see tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    """64 x 64 gear: 4 train, 2 good + 2 dent + 2 crack test samples."""
    return tiny_dataset(tmp_path_factory, "data", CATEGORY, train=4, test_good=2,
                        test_defect=2, defects=("dent", "crack"))


@pytest.fixture(scope="module")
def rgb_only(data, tmp_path_factory) -> Path:
    """A copy of ``data`` without its xyz folders."""
    root = tmp_path_factory.mktemp("rgb_only") / "synth"
    shutil.copytree(data, root)
    for xyz in sorted(root.rglob("xyz"), reverse=True):
        shutil.rmtree(xyz)
    return root


@pytest.fixture(scope="module")
def good(data):
    """A good training sample (rgb + xyz)."""
    return MVTec3DDataset(data, CATEGORY, "train", modality="rgb+xyz")[0]


@pytest.fixture(scope="module")
def cli_run(data, tmp_path_factory) -> Path:
    """synthsup trained by ``pcad train --holdout-defects crack``."""
    run = tmp_path_factory.mktemp("runs") / "synthsup"
    opts = [x for k, v in FAST.items() for x in ("-o", f"{k}={v}")]
    status = main(["train", "--data", str(data), "--category", CATEGORY, "--detector",
                   "synthsup", "--out", str(run), "--holdout-defects", "crack", "--quiet",
                   *opts])
    assert status == 0
    return run


def cli(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


class Recording:
    """A defect source wrapper that records every call and the types it returned."""

    def __init__(self, source: DefectSource) -> None:
        self.source, self.calls, self.made = source, 0, []
        self.holdout = source.holdout

    def __call__(self, rgb, xyz, rng):
        self.calls += 1
        a = self.source(rgb, xyz, rng)
        self.made.append(a.defect)
        return a


def predict_all(det, samples):
    out = [det.predict(s) for s in samples]
    return [s for s, _ in out], [m for _, m in out]


# ---------------------------------------------------------------------------- DefectSource


def _same(a: SyntheticAnomaly, b: SyntheticAnomaly) -> bool:
    return (a.defect == b.defect and np.array_equal(a.mask, b.mask)
            and np.array_equal(a.rgb, b.rgb) and np.array_equal(a.xyz, b.xyz)
            and json.dumps(a.params, sort_keys=True) == json.dumps(b.params, sort_keys=True))


def test_source_is_deterministic(good):
    rgb0, xyz0 = good.rgb.copy(), good.xyz.copy()
    src = DefectSource()
    draws = [src(good.rgb, good.xyz, np.random.default_rng(s)) for s in range(6)]
    again = [DefectSource()(good.rgb, good.xyz, np.random.default_rng(s)) for s in range(6)]
    assert all(_same(a, b) for a, b in zip(draws, again, strict=True))
    assert not _same(draws[0], draws[1])
    # without an rng, the source's own seed decides
    assert _same(DefectSource(seed=3)(good.rgb, good.xyz),
                 DefectSource(seed=3)(good.rgb, good.xyz))
    # the input is never modified
    assert np.array_equal(good.rgb, rgb0) and np.array_equal(good.xyz, xyz0)


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_mask_non_empty_inside_foreground_and_changes_confined(good, kind):
    fg = point_mask(good.xyz)
    src = DefectSource(types=(kind,))
    for seed in range(3):
        a = src(good.rgb, good.xyz, np.random.default_rng(seed))
        assert a.defect == kind
        assert a.mask.dtype == bool and a.mask.shape == good.shape
        assert a.mask.sum() >= src.min_pixels
        assert not (a.mask & ~fg).any()
        assert a.rgb.dtype == np.uint8 and a.xyz.dtype == np.float32
        rgb_changed = (a.rgb != good.rgb).any(axis=-1)
        assert not (rgb_changed & ~a.mask).any()  # RGB changes only inside the mask
        moved = np.linalg.norm(a.xyz.astype(np.float64) - good.xyz, axis=-1)
        if kind in RGB_TYPES:
            assert np.array_equal(a.xyz, good.xyz)
            assert rgb_changed.sum() >= 0.5 * a.mask.sum()
        else:
            # synth's ground-truth rule: moved by >= threshold or removed, and nothing else
            # outside the mask moves by as much as the threshold
            assert (moved[a.mask] > 0).all()
            thr = a.params["threshold_abs"]
            assert (moved[~a.mask] < thr * (1 + 1e-5)).all()
            assert rgb_changed.any()  # re-shaded


def test_geometric_without_shading_keeps_rgb(good):
    a = DefectSource(types=("dent",), shade=False)(good.rgb, good.xyz, np.random.default_rng(0))
    assert np.array_equal(a.rgb, good.rgb) and a.mask.any()


def test_holdout_never_attempted(good):
    src = DefectSource(holdout=("crack", "texture"))
    made = [src(good.rgb, good.xyz, np.random.default_rng(s)).defect for s in range(60)]
    assert "crack" not in made and "texture" not in made
    assert src.attempts["crack"] == 0 and src.attempts["texture"] == 0
    assert sum(src.counts.values()) == 60 and set(made) == set(src.counts)
    assert len(set(made)) >= 4  # the other types are drawn
    assert src.describe()["holdout"] == ["crack", "texture"]


def test_modalities_decide_the_types(good):
    src = DefectSource()
    rgb_made = {src(good.rgb, None, np.random.default_rng(s)).defect for s in range(20)}
    assert rgb_made <= set(RGB_TYPES) and rgb_made
    xyz = [src(None, good.xyz, np.random.default_rng(s)) for s in range(10)]
    assert {a.defect for a in xyz} <= set(GEOMETRIC_TYPES) and all(a.rgb is None for a in xyz)
    a = src(good.rgb, None, np.random.default_rng(0))
    assert a.xyz is None
    with pytest.raises(InvalidInputError, match="no defect type fits"):
        DefectSource(holdout=RGB_TYPES)(good.rgb, None, np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="rgb, xyz or both"):
        src(None, None, np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="sizes differ"):
        src(good.rgb[:32], good.xyz, np.random.default_rng(0))


@pytest.mark.parametrize(("kw", "words"), [
    ({"types": ("smudge",)}, ["'smudge'", "bump", "colour", "scratch"]),
    ({"holdout": ("crak",)}, ["'crak'", "crack"]),
    ({"holdout": DEFECT_TYPES}, ["every defect type"]),
    ({"types": ("dent",), "holdout": ("dent",)}, ["every defect type"]),
    ({"ranges": {"dent": {"depth": (0.1, 0.2)}}}, ["depth"]),
    ({"ranges": {"dent": {"strength": (0.2, 0.1)}}}, ["low <= high"]),
])
def test_bad_source_arguments(kw, words):
    with pytest.raises(InvalidInputError) as info:
        DefectSource(**kw)
    for w in words:
        assert w in str(info.value)


def test_texture_folder(good, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "tex").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
        tmp_path / "tex" / "noise.png")
    src = DefectSource(types=("texture",), textures=tmp_path / "tex")
    a = src(good.rgb, good.xyz, np.random.default_rng(1))
    assert a.params["texture"] == "noise.png" and a.mask.any()
    assert _same(a, DefectSource(types=("texture",), textures=tmp_path / "tex")(
        good.rgb, good.xyz, np.random.default_rng(1)))
    assert DefectSource(types=("texture",))(good.rgb, good.xyz, np.random.default_rng(1)
                                            ).params["texture"] == "procedural"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no .png"):
        DefectSource(textures=tmp_path / "empty")
    with pytest.raises(InvalidInputError, match="not a folder"):
        DefectSource(textures=tmp_path / "missing")


def test_perlin_mask_shapes():
    m = perlin_mask((30, 50), np.random.default_rng(0))
    assert m.shape == (30, 50) and m.dtype == bool
    assert np.array_equal(m, perlin_mask((30, 50), np.random.default_rng(0)))
    masks = [perlin_mask((64, 64), np.random.default_rng(s)) for s in range(20)]
    assert sum(m.any() for m in masks) >= 10


@pytest.mark.parametrize("kind", ["graft", "scratch", "blur"])
def test_new_appearance_types_masks_and_determinism(good, kind):
    """graft / scratch / blur change RGB only inside their mask (scratch and blur: exactly the
    mask), never xyz, and the same rng state gives the same bytes."""
    src = DefectSource(types=(kind,))
    for seed in range(3):
        a = src(good.rgb, good.xyz, np.random.default_rng(seed))
        b = DefectSource(types=(kind,))(good.rgb, good.xyz, np.random.default_rng(seed))
        assert a.defect == kind and _same(a, b)
        changed = (a.rgb != good.rgb).any(axis=-1)
        assert not (changed & ~a.mask).any() and np.array_equal(a.xyz, good.xyz)
        if kind in ("scratch", "blur"):
            assert np.array_equal(changed, a.mask)
        else:
            assert changed.sum() >= 0.5 * a.mask.sum()
    assert kind in DEFAULT_TYPES and kind in RGB_TYPES


def test_scratch_is_thin_and_small(good):
    from scipy.ndimage import binary_erosion

    src = DefectSource(types=("scratch",))
    for seed in range(6):
        m = src(good.rgb, None, np.random.default_rng(seed)).mask
        assert 0 < m.mean() < 0.06  # a few strokes of at most 4 pixels
        # 4 pixels wide at most: two 3x3 erosions leave (almost) nothing
        assert binary_erosion(m, np.ones((3, 3), bool), iterations=2).sum() <= 0.05 * m.sum()
        ys, xs = np.nonzero(m)  # elongated: spans far more than its width
        assert max(np.ptp(ys), np.ptp(xs)) + 1 >= 8 * m.sum() / (max(np.ptp(ys), np.ptp(xs)) + 1) \
            / 4


def test_blur_of_a_flat_image_is_no_defect():
    flat = np.full((48, 48, 3), 90, np.uint8)  # a blur changes nothing: no mask, no defect
    with pytest.raises(InvalidInputError, match="no defect"):
        DefectSource(types=("blur",), max_tries=3)(flat, None, np.random.default_rng(0))
    a = DefectSource(types=("colour",))(flat, None, np.random.default_rng(0))
    assert a.mask.any()


def test_graft_takes_another_image_of_the_pool(good):
    other = np.ascontiguousarray(good.rgb[::-1, ::-1])
    src = DefectSource(types=("graft",), texture_images=[good.rgb, other])
    for seed in range(8):
        assert src(good.rgb, good.xyz, np.random.default_rng(seed)).params["image"] == 1
    src.set_texture_images(None)  # no pool: crops of the sample itself
    assert src(good.rgb, good.xyz, np.random.default_rng(0)).params["image"] == -1
    assert src.describe()["n_texture_images"] == 0
    with pytest.raises(InvalidInputError, match="uint8"):
        src.set_texture_images([good.xyz])


# ---------------------------------------------------------------------------- synthsup


def test_registered_and_modes():
    assert "synthsup" in list_detectors()
    # the default mode "auto" needs RGB and picks xyz from the training set (see below)
    assert create_detector("synthsup").config["mode"] == "auto"
    assert create_detector("synthsup", mode="rgb+xyz").modalities == ("rgb", "xyz")
    assert create_detector("synthsup", mode="rgb").modalities == ("rgb",)
    with pytest.raises(InvalidInputError, match="mode"):
        create_detector("synthsup", mode="xyz")
    with pytest.raises(InvalidInputError, match="holdout_defects"):
        create_detector("synthsup", holdout_defects=[3])
    with pytest.raises(InvalidInputError, match="loss"):
        create_detector("synthsup", loss="l2")


def test_sample_without_xyz_names_the_rgb_mode(good):
    det = create_detector("synthsup", **FAST, mode="rgb+xyz")  # set explicitly: no auto pick
    rgb_sample = type(good)(rgb=good.rgb, xyz=None, mask=None, label=0, category=CATEGORY,
                            defect="good", split="train")
    with pytest.raises(InvalidInputError, match="mode='rgb'"):
        det.fit([rgb_sample], defect_source=DefectSource())


def test_fit_without_source_is_an_error(data):
    det = create_detector("synthsup", **FAST)
    with pytest.raises(InvalidInputError) as info:
        det.fit(MVTec3DDataset(data, CATEGORY, "train", modality="rgb+xyz"))
    assert "pcad train" in str(info.value) and "synth.supervision.DefectSource" in str(info.value)


def test_fit_refuses_a_source_that_makes_held_out_types(data):
    det = create_detector("synthsup", **FAST, holdout_defects=["crack"])
    samples = list(MVTec3DDataset(data, CATEGORY, "train", modality="rgb+xyz"))[:1]
    with pytest.raises(InvalidInputError, match="holds out"):
        det.fit(samples, defect_source=DefectSource())
    rogue = DefectSource(types=("crack",))
    rogue.holdout = ("crack",)  # claims to hold it out, makes nothing else
    with pytest.raises(InvalidInputError, match="held-out type 'crack'"):
        det.fit(samples, defect_source=rogue)


def test_held_out_type_never_requested_and_fit_deterministic(data):
    samples = list(MVTec3DDataset(data, CATEGORY, "train", modality="rgb+xyz"))[:2]
    tests = list(MVTec3DDataset(data, CATEGORY, "test", modality="rgb+xyz"))[::3]
    cfg = {**FAST, "variants": 4, "epochs": 2, "holdout_defects": ["crack"]}
    fits = []
    for _ in range(2):
        det = create_detector("synthsup", **cfg)
        rec = Recording(DefectSource(**det.defect_source_options()))
        det.fit(samples, defect_source=rec)
        assert rec.calls == 2 * (4 + 1)  # and one validation anomaly per sample
        assert "crack" not in rec.made and rec.source.attempts["crack"] == 0
        assert det.defect_counts["crack"] == 0
        assert sum(det.defect_counts.values()) == 8
        fits.append(predict_all(det, tests))
    assert fits[0][0] == fits[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(fits[0][1], fits[1][1], strict=True))
    # another seed gives another head
    other = create_detector("synthsup", **{**cfg, "seed": 1})
    other.fit(samples, defect_source=DefectSource(holdout=["crack"]))
    assert predict_all(other, tests)[0] != fits[0][0]


def test_cli_run_records_holdout_and_counts(cli_run):
    record = json.loads((cli_run / "detector.json").read_text())
    assert record["detector"] == "synthsup"
    assert record["config"]["holdout_defects"] == ["crack"]
    counts = record["state"]["defect_counts"]
    assert counts["crack"] == 0
    assert sum(counts.values()) == 4 * FAST["variants"]
    assert record["state"]["defect_source"]["holdout"] == ["crack"]
    assert "crack" not in record["state"]["defect_source"]["active"]
    assert (cli_run / "synthsup.pt").is_file() and (cli_run / "train.json").is_file()


def test_cli_eval_reports_holdout_and_seen(cli_run, data, tmp_path, capsys):
    status, out, err = cli(capsys, "eval", "--data", data, "--category", CATEGORY, "--run",
                           cli_run, "--out", tmp_path / "res", "--quiet")
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 4 and lines[0].startswith(f"{CATEGORY}: I-AUROC ")
    assert "mAD" in lines[1]  # ViTAD's metrics
    assert lines[2].strip().startswith("held-out [crack]: I-AUROC")
    assert lines[3].strip().startswith("seen [dent]: I-AUROC")
    m = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert set(m["per_defect"]) == {"crack", "dent"}
    assert m["per_defect"]["crack"]["n"] == 2 and set(m["per_defect"]["crack"]["aupro"]) == {"0.3"}
    assert m["holdout"]["defects"] == ["crack"] and m["holdout"]["n_anomalous"] == 2
    assert m["seen"]["defects"] == ["dent"] and m["seen"]["n_anomalous"] == 2
    for block in (m["holdout"], m["seen"], *m["per_defect"].values()):
        assert 0.0 <= block["i_auroc"] <= 1.0 and 0.0 <= block["p_auroc"] <= 1.0
    # the held-out block is the crack-vs-good breakdown
    assert m["holdout"]["i_auroc"] == m["per_defect"]["crack"]["i_auroc"]
    assert m["holdout"]["aupro"]["0.3"] == m["per_defect"]["crack"]["aupro"]["0.3"]
    for key in ("i_auroc", "p_auroc", "aupro", "n_test"):  # the usual keys stay
        assert key in m


def test_save_load_identical_predictions(cli_run, data, tmp_path):
    det = load_detector(cli_run)
    tests = list(MVTec3DDataset(data, CATEGORY, "test", modality="rgb+xyz"))
    scores, maps = predict_all(det, tests)
    assert all(m.shape == s.shape and m.dtype == np.float32 for m, s in
               zip(maps, tests, strict=True))
    det.save(tmp_path / "again")
    again = load_detector(tmp_path / "again")
    assert again.config == det.config and again.defect_counts == det.defect_counts
    scores2, maps2 = predict_all(again, tests)
    assert scores == scores2
    assert all(np.array_equal(a, b) for a, b in zip(maps, maps2, strict=True))


def test_rgb_only_mode(rgb_only, tmp_path):
    with pytest.raises(PcadError, match="xyz"):  # an explicit rgb+xyz needs xyz
        train(rgb_only, CATEGORY, "synthsup", tmp_path / "bad",
              config={**FAST, "mode": "rgb+xyz"}, progress=False)
    assert not (tmp_path / "bad" / "detector.json").exists()
    det = train(rgb_only, CATEGORY, "synthsup", tmp_path / "run",
                config={**FAST, "mode": "rgb"}, progress=False)
    assert det.modalities == ("rgb",)
    made = {k for k, v in det.defect_counts.items() if v}
    assert made and made <= set(RGB_TYPES)
    m = evaluate_run(rgb_only, CATEGORY, tmp_path / "run", tmp_path / "res", progress=False)
    assert m["detector"] == "synthsup" and 0.0 <= m["i_auroc"] <= 1.0
    assert "holdout" not in m and set(m["per_defect"]) == {"crack", "dent"}


def test_auto_mode_picks_rgb_on_rgb_only_data(rgb_only, tmp_path):
    """The default ``mode="auto"`` trains on an RGB-only dataset as ``mode="rgb"`` and records
    the mode it picked in the run (config and state), which ``pcad eval`` then reads."""
    det = train(rgb_only, CATEGORY, "synthsup", tmp_path / "run",
                config={**FAST, "epochs": 1}, progress=False)
    assert det.config["mode"] == "rgb" and det.modalities == ("rgb",) and det.mode_auto
    made = {k for k, v in det.defect_counts.items() if v}
    assert made and made <= set(RGB_TYPES)  # the source was called without xyz
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    assert record["config"]["mode"] == "rgb" and record["state"]["mode_auto"] is True
    loaded = load_detector(tmp_path / "run")
    assert loaded.config["mode"] == "rgb" and loaded.mode_auto
    m = evaluate_run(rgb_only, CATEGORY, tmp_path / "run", tmp_path / "res", progress=False)
    assert 0.0 <= m["i_auroc"] <= 1.0


def test_auto_mode_keeps_xyz_and_refuses_a_mix(data, good):
    """On rgb+xyz samples ``"auto"`` picks ``"rgb+xyz"``; a training set where only some
    samples have xyz is an error naming the count and ``mode=rgb``."""
    det = create_detector("synthsup", **{**FAST, "epochs": 1, "variants": 1})
    det.fit([good], defect_source=DefectSource(seed=0))
    assert det.config["mode"] == "rgb+xyz" and det.modalities == ("rgb", "xyz")
    assert det.mode_auto
    assert not create_detector("synthsup", mode="rgb").mode_auto
    rgb_sample = replace(good, xyz=None)
    with pytest.raises(InvalidInputError, match="1 of 2 training samples have no xyz"):
        create_detector("synthsup", **FAST).fit([good, rgb_sample],
                                                 defect_source=DefectSource())


def test_cli_holdout_refused_for_other_detectors(data, tmp_path, capsys):
    status, out, err = cli(capsys, "train", "--data", data, "--category", CATEGORY,
                           "--detector", "fpfh", "--out", tmp_path / "run",
                           "--holdout-defects", "crack", "--quiet")
    assert status == EXIT_ERROR and out == ""
    assert "--holdout-defects" in err and "synthetic defects" in err
    assert not (tmp_path / "run").exists()


def test_cli_unknown_holdout_type(data, tmp_path, capsys):
    status, out, err = cli(capsys, "train", "--data", data, "--category", CATEGORY,
                           "--detector", "synthsup", "--out", tmp_path / "run",
                           "--holdout-defects", "smudge", "--quiet")
    assert status == EXIT_ERROR and out == ""
    assert "'smudge'" in err and "crack" in err
    assert not (tmp_path / "run" / "detector.json").exists()


def _toy_features(n: int, seed: int, grid: tuple[int, int] = (8, 8), size: int = 64):
    """``n`` toy feature grids (4 channels) and soft targets: odd items carry a square whose
    channel 0 is raised (anomalous), even items are clean."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(0, 1, (n, 4, *grid)).astype(np.float32)
    targets = np.zeros((n, size, size), np.uint8)
    for i in range(1, n, 2):
        y, x = rng.integers(0, grid[0] - 2, 2)
        feats[i, 0, y:y + 2, x:x + 2] += 3.0
        s = size // grid[0]
        targets[i, y * s:(y + 2) * s, x * s:(x + 2) * s] = 255
    return feats, targets


def test_image_head_trains_and_is_saved(good, tmp_path):
    feats, targets = _toy_features(16, 0)
    det = create_detector("synthsup", image_size=64, hidden=8, layers=1, epochs=40, lr=1e-2,
                          image_score="max", mode="rgb")
    det.fit_features(feats, targets)
    assert det.image_head is not None and det.best_epoch is None and det.val_history == []
    x = det._standardise(feats)
    with torch.no_grad():
        hidden = det.head[:-1](x)
        p = torch.sigmoid(det.image_head(hidden, det.head[-1](hidden))).numpy()
    assert p[1::2].min() > p[0::2].max()  # the image head separates the training labels
    # on a real sample: saved, loaded, same scores; the image score is never below the map's
    det2 = create_detector("synthsup", **{**FAST, "epochs": 2, "variants": 1},
                           image_score="max")
    det2.fit([good], defect_source=DefectSource(seed=0))
    score, amap = det2.predict(good)
    assert score >= foreground_max_of(det2, good, amap) - 1e-7
    assert score >= det2.image_head_score(good) - 1e-7
    det2.save(tmp_path / "run")
    again = load_detector(tmp_path / "run")
    assert again.image_head is not None and again.predict(good)[0] == score
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    assert record["state"]["best_epoch"] == det2.best_epoch >= 1
    assert len(record["state"]["val_history"]) == len(det2.history)
    with pytest.raises(InvalidInputError, match="image_head"):
        create_detector("synthsup", image_head=False, image_score="max")
    with pytest.raises(InvalidInputError, match="image_score"):
        create_detector("synthsup", image_score="mean")
    no_head = create_detector("synthsup", image_head=False, val_variants=0, mode="rgb",
                              image_size=64, hidden=8, layers=1, epochs=2)
    no_head.fit_features(feats, targets)
    with pytest.raises(InvalidInputError, match="no image head"):
        no_head.image_head_score(good)


def foreground_max_of(det, sample, amap) -> float:
    from pcad.detectors.patches import foreground_max

    return foreground_max(amap, sample.xyz)


def test_early_stopping_keeps_the_best_epoch():
    """Validation on toy anomalies: the kept weights are those of the best validation pixel AP,
    training stops ``patience`` epochs after it, and the segmentation head is the same with or
    without the image head (it trains on detached features)."""
    from pcad.detectors.synthsup import pixel_average_precision

    feats, targets = _toy_features(16, 0)
    vf, vt = _toy_features(6, 1)
    vt = vt[:, ::-1].copy()  # validation masks partly off the anomalies: AP peaks early
    cfg = {"image_size": 64, "hidden": 8, "layers": 1, "epochs": 30, "lr": 3e-2,
           "mode": "rgb", "patience": 3}
    det = create_detector("synthsup", **cfg).fit_features(feats, targets, val_feats=vf,
                                                          val_targets=vt)
    aps = [r["pixel_ap"] for r in det.val_history]
    assert [r["epoch"] for r in det.val_history] == list(range(1, len(aps) + 1))
    assert det.best_epoch == int(np.argmax(aps)) + 1
    assert len(det.history) == len(aps) == min(30, det.best_epoch + 3) < 30  # stopped early
    x = det._standardise(vf)
    with torch.no_grad():
        probs = torch.sigmoid(torch.nn.functional.interpolate(
            det.head(x), size=(64, 64), mode="bilinear", align_corners=False)[:, 0])
    assert pixel_average_precision(probs, torch.from_numpy(vt) > 127) == aps[det.best_epoch - 1]
    # no patience: every epoch, the best one kept
    full = create_detector("synthsup", **{**cfg, "patience": 0}).fit_features(
        feats, targets, val_feats=vf, val_targets=vt)
    assert len(full.history) == 30 and full.val_history[:len(aps)] == det.val_history
    # the image head does not change the segmentation
    plain = create_detector("synthsup", **{**cfg, "image_head": False}).fit_features(
        feats, targets, val_feats=vf, val_targets=vt)
    assert plain.val_history == det.val_history


def test_pixel_average_precision_hand_case():
    from pcad.detectors.synthsup import pixel_average_precision

    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    labels = torch.tensor([True, False, True, False])
    assert pixel_average_precision(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(pixel_average_precision(scores, labels & False))
