"""Threshold calibration on validation, ``pcad predict`` on a fresh run, eval's confusion
counts at the run's threshold, and bad inputs."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pcad.calibration import (
    Calibration,
    confusion_at_threshold,
    read_calibration,
)
from pcad.data import MVTec3DDataset
from pcad.detectors import load_detector
from pcad.engine import train
from pcad.errors import InvalidInputError, PcadWarning
from pcad.io import read_rgb, write_rgb, write_xyz_tiff
from pcad.predict import collect_scans
from tests.helpers import run_pcad

CATEGORY = "gear"
DETECTOR = "patchcore-rgb"

pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory, "predict_data", CATEGORY, train=3, validation=4,
                        test_good=2, test_defect=2, defects=("dent", "bump"))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict_run") / "run"
    train(data, CATEGORY, DETECTOR, out, {"image_size": 64}, progress=False,
          false_alarm_rate=0.25)
    return out


# ---------------------------------------------------------------------------- calibration


def test_calibration_threshold_is_the_false_alarm_quantile():
    scores = np.random.default_rng(0).gamma(2.0, 1.5, size=200)
    for rate in (0.01, 0.1, 0.3):
        cal = Calibration.from_scores(scores, rate)
        assert cal.threshold == pytest.approx(np.quantile(scores, 1.0 - rate))
        assert float(cal.normalize(cal.threshold)) == 0.5
        assert float(cal.normalize(np.median(scores))) == pytest.approx(0.1)
        flagged = np.mean(np.array(cal.decide(scores)) == "defect")
        assert flagged <= rate + 1.0 / len(scores)


def test_normalization_is_strictly_monotone_in_unit_interval():
    cal = Calibration.from_scores([1.0, 1.1, 1.2, 1.3], 0.01)  # a tight validation set
    raw = np.concatenate([-1e6, np.linspace(-5, 5, 1001), [30.0, 100.0, 1e4, 1e8]], axis=None)
    n = cal.normalize(raw)
    assert np.all(np.diff(n) > 0), "ties or inversions would change rankings"
    assert n.min() > 0.0 and n.max() < 1.0
    # decisions agree with the normalized score against 0.5
    assert [d == "defect" for d in cal.decide(raw)] == list(n > 0.5)


def test_calibration_degenerate_and_bad_input():
    cal = Calibration.from_scores([2.0], 0.01)  # one sample: threshold == median
    assert cal.threshold == 2.0 and cal.scale > 0
    assert float(cal.normalize(2.0)) == 0.5
    assert Calibration.from_dict(cal.to_dict()) == cal
    for rate in (0.0, 1.0, -0.1, "x"):
        with pytest.raises(InvalidInputError, match="false_alarm_rate"):
            Calibration.from_scores([1.0, 2.0], rate)
    with pytest.raises(InvalidInputError, match="NaN"):
        Calibration.from_scores([1.0, float("nan")])


def test_train_records_threshold_at_quantile_of_validation_scores(data, run):
    record = json.loads((run / "train.json").read_text())["calibration"]
    cal = read_calibration(run)
    assert record["false_alarm_rate"] == 0.25 and cal is not None
    det = load_detector(run)
    val = [det.predict(s)[0] for s in MVTec3DDataset(data, CATEGORY, "validation")]
    assert record["n_validation"] == len(val) == 4
    assert cal.threshold == pytest.approx(np.quantile(val, 0.75), rel=1e-6)
    assert float(cal.normalize(cal.threshold)) == 0.5


def test_train_cli_prints_threshold_and_checks_rate(data, tmp_path):
    status, out, _ = run_pcad(["train", "--data", str(data), "--category", CATEGORY,
                              "--detector", DETECTOR, "--out", str(tmp_path / "r"), "-o",
                              "image_size=64", "--quiet"])
    assert status == 0
    assert "threshold" in out and "1% false-alarm rate on 4 good validation" in out
    status, _, err = run_pcad(["train", "--data", str(data), "--category", CATEGORY,
                              "--detector", DETECTOR, "--out", str(tmp_path / "r2"),
                              "--false-alarm-rate", "1.5", "--quiet"])
    assert status == 2 and "false_alarm_rate" in err and not (tmp_path / "r2").exists()


def test_no_validation_split_warns_and_predict_reports_raw_scores(tmp_path_factory,
                                                                 tiny_dataset, tmp_path):
    data = tiny_dataset(tmp_path_factory, "predict_noval", CATEGORY, train=2, validation=0,
                        test_good=1, test_defect=1, defects=("dent",))
    with pytest.warns(PcadWarning, match="no decision threshold"):
        train(data, CATEGORY, DETECTOR, tmp_path / "run", {"image_size": 64}, progress=False)
    assert json.loads((tmp_path / "run" / "train.json").read_text())["calibration"] is None
    assert read_calibration(tmp_path / "run") is None
    status, out, _ = run_pcad(["predict", "--run", str(tmp_path / "run"),
                              str(data / CATEGORY / "test"), "-o", str(tmp_path / "p"),
                              "--quiet"])
    assert status == 0 and "no calibrated threshold" in out
    rows = json.loads((tmp_path / "p" / "predictions.json").read_text())["predictions"]
    assert len(rows) == 2
    assert all(r["decision"] is None and r["normalized_score"] is None for r in rows)


# ---------------------------------------------------------------------------- eval counts


def test_confusion_counts_by_hand():
    scores = [0.1, 0.4, 0.5, 0.55, 0.9, 0.2, 0.7]
    labels = [0, 0, 0, 1, 1, 1, 0]
    c = confusion_at_threshold(scores, labels, 0.5)  # above 0.5 -> defect; 0.5 itself is ok
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (2, 1, 3, 1)
    assert c["precision"] == pytest.approx(2 / 3) and c["recall"] == pytest.approx(2 / 3)
    assert c["false_alarm_rate"] == pytest.approx(0.25)
    none = confusion_at_threshold([0.1], [0], 0.5)
    assert none["precision"] is None and none["recall"] is None


def test_eval_reports_confusion_at_run_threshold(data, run, tmp_path):
    status, out, _ = run_pcad(["eval", "--data", str(data), "--category", CATEGORY, "--run",
                              str(run), "--out", str(tmp_path / "ev"), "--quiet"])
    assert status == 0 and "at the run's threshold" in out and "TP " in out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    at = metrics["at_threshold"]
    with open(tmp_path / "ev" / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    thr = read_calibration(run).threshold
    pred = [float(r["score"]) > thr for r in rows]
    lab = [r["label"] == "1" for r in rows]
    assert at["tp"] == sum(p and y for p, y in zip(pred, lab, strict=True))
    assert at["fp"] == sum(p and not y for p, y in zip(pred, lab, strict=True))
    assert at["tn"] == sum(not p and not y for p, y in zip(pred, lab, strict=True))
    assert at["fn"] == sum(not p and y for p, y in zip(pred, lab, strict=True))
    assert at["tp"] + at["fp"] + at["tn"] + at["fn"] == metrics["n_test"]
    assert at["threshold"] == pytest.approx(thr)


# ---------------------------------------------------------------------------- predict


def test_predict_on_split_folder_and_files(data, run, tmp_path):
    test_dir = data / CATEGORY / "test"
    again = test_dir / "dent" / "xyz" / "000.tiff"  # a scan already in the folder: once
    copy = tmp_path / "copy" / "dent" / "rgb" / "000.png"  # another scan of the same name
    copy.parent.mkdir(parents=True)
    copy.write_bytes((test_dir / "dent" / "rgb" / "000.png").read_bytes())
    status, out, err = run_pcad(["predict", "--run", str(run), str(test_dir), str(again),
                                str(copy), "-o", str(tmp_path / "p"), "--quiet"])
    assert status == 0, err
    summary = json.loads((tmp_path / "p" / "predictions.json").read_text())
    test = MVTec3DDataset(data, CATEGORY, "test")
    assert summary["n"] == len(test) + 1 and summary["detector"] == DETECTOR
    det, cal = load_detector(run), read_calibration(run)
    by_name = {r["name"]: r for r in summary["predictions"]}
    assert by_name["dent_000-1"]["rgb"] == str(copy)  # the folder's and the copy's
    assert by_name["dent_000-1"]["score"] == pytest.approx(by_name["dent_000"]["score"])
    for sample in test:
        row = by_name[f"{sample.defect}_{sample.stem}"]
        score, amap = det.predict(sample)
        assert row["score"] == pytest.approx(score, rel=1e-6)
        assert 0.0 <= row["normalized_score"] <= 1.0
        assert row["decision"] == ("defect" if row["normalized_score"] > 0.5 else "ok")
        assert row["normalized_score"] == pytest.approx(float(cal.normalize(score)))
        saved = tifffile.imread(tmp_path / "p" / "maps" / f"{row['name']}.tiff")
        assert saved.dtype == np.float32 and saved.shape == sample.shape
        np.testing.assert_allclose(saved, amap, rtol=1e-5, atol=1e-5)
        assert read_rgb(tmp_path / "p" / "overlays" / f"{row['name']}.png").shape == \
            (*sample.shape, 3)
    with open(tmp_path / "p" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [r["name"] for r in summary["predictions"]]
    assert summary["n_defect"] == sum(r["decision"] == "defect" for r in rows)
    assert "predicted" in out


def test_collect_scans_pairs_files_beside_each_other(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    write_rgb(tmp_path / "a.png", rgb)
    write_xyz_tiff(tmp_path / "a.tiff", np.ones((8, 8, 3), np.float32))
    (tmp_path / "gt").mkdir()
    write_rgb(tmp_path / "gt" / "a.png", rgb)  # ground truth is never a scan
    scans = collect_scans([tmp_path], ("rgb", "xyz"))
    assert [(s.name, s.rgb.name, s.xyz.name) for s in scans] == [("a", "a.png", "a.tiff")]
    write_rgb(tmp_path / "results" / "overlays" / "a.png", rgb)  # a results folder
    assert len(collect_scans([tmp_path], ("rgb", "xyz"), exclude=[tmp_path / "results"])) == 1
    with pytest.raises(InvalidInputError, match="no xyz TIFF"):
        collect_scans([tmp_path / "a.png", tmp_path / "gt"], ("rgb", "xyz"))


def test_predict_bad_inputs_write_nothing(data, run, tmp_path):
    test_dir = data / CATEGORY / "test" / "good"
    out = tmp_path / "p"
    status, _, err = run_pcad(["predict", "--run", str(run), str(tmp_path / "missing"),
                              "-o", str(out), "--quiet"])
    assert status == 2 and "missing: no such file or folder" in err and not out.exists()
    (tmp_path / "notes.txt").write_text("x")
    status, _, err = run_pcad(["predict", "--run", str(run), str(tmp_path / "notes.txt"),
                              "-o", str(out), "--quiet"])
    assert status == 2 and "notes.txt: not a scan file" in err and not out.exists()
    # a corrupt image after good ones: one line naming it, nothing written
    bad = tmp_path / "bad" / "zz.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    status, _, err = run_pcad(["predict", "--run", str(run), str(test_dir), str(bad), "-o",
                              str(out), "--quiet"])
    assert status == 2 and str(bad) in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    # an existing results folder stays as it was
    assert run_pcad(["predict", "--run", str(run), str(test_dir), "-o", str(out),
                    "--quiet"])[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status, _, err = run_pcad(["predict", "--run", str(run), str(bad), "-o", str(out),
                                  "--quiet", "--overwrite"])
    assert status == 2 and str(bad) in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    status, _, err = run_pcad(["predict", "--run", str(run), str(test_dir), "-o", str(out),
                              "--quiet"])  # the overwrite policy: a non-empty -o is refused
    assert status == 2 and "--overwrite" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    status, _, err = run_pcad(["predict", "--run", str(tmp_path), str(test_dir), "-o",
                              str(tmp_path / "q"), "--quiet"])
    assert status == 2 and "not a detector run" in err


def test_predict_warns_on_category_mismatch_and_takes_device(data, run, tmp_path):
    good = data / CATEGORY / "test" / "good"
    status, _, err = run_pcad(["predict", "--run", str(run), str(good), "-o",
                              str(tmp_path / "p"), "--quiet", "--category", "cookie",
                              "--device", "cpu"])
    assert status == 0 and "pcad: warning:" in err and "'cookie'" in err
    with pytest.raises(SystemExit) as exc:  # argparse refuses the spelling
        run_pcad(["predict", "--run", str(run), str(good), "-o", str(tmp_path / "q"),
                 "--device", "tpu"])
    assert exc.value.code == 2 and not (tmp_path / "q").exists()
