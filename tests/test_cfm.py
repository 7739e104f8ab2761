"""Tests of the ``cfm`` detector (Crossmodal Feature Mapping) on a tiny synthetic dataset."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from pcad.cli.main import main
from pcad.data import MVTec3DDataset
from pcad.detectors import create_detector, list_detectors, load_detector
from pcad.detectors.base import upsample_map
from pcad.detectors.cfm import STATE_FILE, CFMDetector
from pcad.errors import InvalidInputError

CATEGORY = "plate_holes"
FAST = {"image_size": 64, "epochs": 5}


# one torch thread per module (a busy 2-core machine; see tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory, "cfm_data", CATEGORY, train=6, test_good=2,
                        test_defect=2, defects=("dent", "hole"))


@pytest.fixture(scope="module")
def train_set(data):
    return list(MVTec3DDataset(data, CATEGORY, "train", modality="rgb+xyz"))


@pytest.fixture(scope="module")
def eval_set(data):
    return list(MVTec3DDataset(data, CATEGORY, "test", modality="rgb+xyz"))


@pytest.fixture(scope="module")
def train_feats(train_set):
    """``patch_features`` of the training samples (FPFH is the slow part: computed once)."""
    det = create_detector("cfm", **FAST)
    return [det.patch_features(s) for s in train_set]


@pytest.fixture(scope="module")
def eval_feats(eval_set):
    det = create_detector("cfm", **FAST)
    return [det.patch_features(s) for s in eval_set]


def foreground_stack(feats):
    return (np.concatenate([r[fg] for r, _, fg in feats]),
            np.concatenate([p[fg] for _, p, fg in feats]))


@pytest.fixture(scope="module")
def fitted(train_feats) -> CFMDetector:
    return create_detector("cfm", **FAST).fit_features(*foreground_stack(train_feats))


def all_patch_scores(det, feats):
    return [det.score_features(*f) for f in feats]


def test_registered():
    assert "cfm" in list_detectors()
    det = create_detector("cfm")
    assert isinstance(det, CFMDetector)
    assert det.modalities == ("rgb", "xyz")
    assert det.config["image_size"] == 224 and det.config["sigma"] == 4.0


@pytest.mark.parametrize("config, word", [
    ({"image_size": 60}, "multiple of 8"), ({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"),
    ({"batch_size": 0}, "batch_size"), ({"image_score": "mean"}, "image_score"),
    ({"hidden": 0}, "hidden"), ({"colour": 1}, "unknown option"),
])
def test_bad_config(config, word):
    with pytest.raises(InvalidInputError, match=word):
        create_detector("cfm", **config)


def test_patch_features(train_feats):
    for rgb, pts, fg in train_feats:
        assert rgb.shape == (64, 152) and pts.shape == (64, 33) and fg.shape == (64,)
        assert rgb.dtype == pts.dtype == np.float32 and fg.dtype == bool
        assert 0 < fg.sum() < 64  # the part and some background mat
        assert not pts[~fg].any()  # FPFH is zero off the part


def test_fit_predict_shapes(fitted, eval_set, eval_feats):
    assert fitted.fitted
    # MLPs: 152 <-> 33 (effnet-lite0, FPFH), hidden = 2 * 152 by default
    assert fitted.f_2d3d[0].in_features == 152 and fitted.f_2d3d[-1].out_features == 33
    assert fitted.f_3d2d[0].in_features == 33 and fitted.f_3d2d[-1].out_features == 152
    assert fitted.f_2d3d[0].out_features == 304
    for s, f in list(zip(eval_set, eval_feats, strict=True))[::2]:
        score, amap = fitted.predict(s)
        assert isinstance(score, float) and np.isfinite(score)
        assert amap.shape == s.shape and amap.dtype == np.float32
        assert np.isfinite(amap).all() and (amap >= 0).all()
        assert score <= amap.max() + 1e-6
        patch = fitted.score_features(*f)
        assert patch.shape == fitted.grid == (8, 8) and patch.dtype == np.float32
        assert (patch >= 0).all() and patch.max() > 0
        assert not patch.reshape(-1)[~f[2]].any()  # 0 off the part
        np.testing.assert_array_equal(amap, upsample_map(patch, s.shape, 4.0))


def test_loss_decreases(fitted):
    assert len(fitted.history) == FAST["epochs"]
    assert all(np.isfinite(fitted.history))
    assert fitted.history[-1] < fitted.history[0]


def test_fit_equals_fit_features(train_set, train_feats):
    """``fit`` = feature extraction + ``fit_features`` on the foreground patches."""
    a = create_detector("cfm", **FAST).fit(train_set[:2])
    b = create_detector("cfm", **FAST).fit_features(*foreground_stack(train_feats[:2]))
    assert a.history == b.history


def test_deterministic(train_feats, eval_feats):
    """Two fits in one test (one thread count: float sums depend on it) agree exactly."""
    fitted = create_detector("cfm", **FAST).fit_features(*foreground_stack(train_feats))
    again = create_detector("cfm", **FAST).fit_features(*foreground_stack(train_feats))
    assert again.history == fitted.history
    for m1, m2 in zip(all_patch_scores(fitted, eval_feats), all_patch_scores(again, eval_feats),
                      strict=True):
        np.testing.assert_array_equal(m1, m2)
    other = create_detector("cfm", **FAST, seed=1).fit_features(*foreground_stack(train_feats))
    assert other.history != fitted.history


def test_save_load_round_trip(fitted, eval_set, eval_feats, tmp_path):
    fitted.save(tmp_path / "run")
    assert (tmp_path / "run" / STATE_FILE).is_file()
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    assert record["detector"] == "cfm" and record["config"]["epochs"] == 5
    back = load_detector(tmp_path / "run", expect="cfm")
    assert isinstance(back, CFMDetector) and back.history == fitted.history
    for m1, m2 in zip(all_patch_scores(fitted, eval_feats), all_patch_scores(back, eval_feats),
                      strict=True):
        np.testing.assert_array_equal(m1, m2)
    s1, a1 = fitted.predict(eval_set[-1])
    s2, a2 = back.predict(eval_set[-1])
    assert s1 == s2
    np.testing.assert_array_equal(a1, a2)


def test_missing_state_file(fitted, tmp_path):
    fitted.save(tmp_path / "run")
    (tmp_path / "run" / STATE_FILE).unlink()
    with pytest.raises(InvalidInputError, match=STATE_FILE):
        load_detector(tmp_path / "run")


def test_rgb_only_sample_names_xyz(fitted, data, train_set):
    rgb_only = next(iter(MVTec3DDataset(data, CATEGORY, "test", modality="rgb")))
    with pytest.raises(InvalidInputError, match="xyz"):
        fitted.predict(rgb_only)
    rgb_train = list(MVTec3DDataset(data, CATEGORY, "train", modality="rgb"))
    with pytest.raises(InvalidInputError, match="xyz"):
        create_detector("cfm", **FAST).fit(rgb_train)


def test_predict_before_fit(eval_set, tmp_path):
    with pytest.raises(InvalidInputError, match="fit"):
        create_detector("cfm", **FAST).predict(eval_set[0])
    with pytest.raises(InvalidInputError, match="fit"):
        create_detector("cfm", **FAST).save(tmp_path / "run")


def test_unpaired_or_empty_features():
    with pytest.raises(InvalidInputError, match="paired"):
        create_detector("cfm").fit_features(np.zeros((4, 152), np.float32),
                                            np.zeros((3, 33), np.float32))
    with pytest.raises(InvalidInputError, match="foreground"):
        create_detector("cfm").fit_features(np.zeros((0, 152), np.float32),
                                            np.zeros((0, 33), np.float32))


def test_cli_train_and_eval(data, tmp_path, capsys):
    run, res = tmp_path / "run", tmp_path / "res"
    status = main(["train", "--data", str(data), "--category", CATEGORY, "--detector", "cfm",
                   "--image-size", "64", "--out", str(run), "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "cfm" in captured.out
    det = load_detector(run, expect="cfm")
    assert det.config["image_size"] == 64 and len(det.history) == det.config["epochs"]
    status = main(["eval", "--data", str(data), "--category", CATEGORY, "--run", str(run),
                   "--out", str(res), "--json", "--quiet"])
    out = capsys.readouterr().out
    assert status == 0
    metrics = json.loads((res / "metrics.json").read_text())
    assert metrics == json.loads(out)
    assert metrics["detector"] == "cfm" and metrics["n_test"] == 6
    assert 0.0 <= metrics["i_auroc"] <= 1.0


def test_pointmae_point_backbone(train_set, eval_set, tmp_path):
    """``point_backbone="pointmae"``: the shipped Point-MAE's features (not FPFH's 33) are
    mapped; the run saves and reloads with the same scores; a bad name is refused."""
    det = create_detector("cfm", **FAST, point_backbone="pointmae", num_group=64)
    rgb, pts, fg = det.patch_features(train_set[0])
    assert rgb.shape[0] == pts.shape[0] == fg.shape[0] == 64
    assert pts.shape[1] != 33 and pts.dtype == np.float32 and np.isfinite(pts).all()
    det.fit(train_set[:3])
    score, amap = det.predict(eval_set[-1])
    assert np.isfinite(score) and amap.shape == eval_set[-1].shape
    det.save(tmp_path / "run")
    again = load_detector(tmp_path / "run", expect="cfm")
    assert again.predict(eval_set[-1])[0] == pytest.approx(score, rel=1e-5)
    with pytest.raises(InvalidInputError, match="point_backbone"):
        create_detector("cfm", point_backbone="pointnet")


def test_foreground_mean_image_score(fitted, eval_set, tmp_path):
    """``image_score="foreground-mean"``: the map's mean over the dilated part, the same map;
    batched = per sample; an export refuses it (the file scores maxima only)."""
    from pcad.detectors.patches import SampleForeground, foreground_mean
    from pcad.export import export_run

    mean = copy.copy(fitted)
    mean.config = {**fitted.config, "image_score": "foreground-mean"}
    samples = eval_set[:3]
    batch = mean.predict_batch(samples)
    for s, (score, amap) in zip(samples, batch, strict=True):
        ref_score, ref_map = fitted.predict(s)
        np.testing.assert_array_equal(amap, ref_map)
        part = SampleForeground(s.xyz).part()
        assert score == pytest.approx(float(amap[part].mean()), rel=1e-6)
        assert score == foreground_mean(amap, s.xyz)
        one_score, one_map = mean.predict(s)
        assert one_score == score
        np.testing.assert_array_equal(one_map, amap)
        assert score < ref_score  # a mean is below the maximum
    mean.save(tmp_path / "run")
    with pytest.raises(InvalidInputError, match="foreground-mean"):
        export_run(tmp_path / "run", tmp_path / "cfm.pt")
    assert not (tmp_path / "cfm.pt").exists()
