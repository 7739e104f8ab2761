"""Hardening of dataset reading, training and evaluation (issue 18, Musts 4, 5 and 7's readers):
warnings before wrong results, checks before long work, results written as one unit, and
samples without their commit marker (``meta/<stem>.json``) skipped.

Every hostile input is made inside the test from a small synthetic dataset (generated once per
module, copied into the test's ``tmp_path``) or written by hand.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcad.checks import check_out_folder
from pcad.cli.main import EXIT_ERROR, main, show_warning
from pcad.data import MVTec3DDataset
from pcad.data._files import gt_levels_note
from pcad.detectors import create_detector
from pcad.detectors.btf import FPFHDetector
from pcad.detectors.patchcore import PatchCoreRGB
from pcad.engine import (
    MIN_IMAGE_SIDE,
    check_test_set,
    evaluate_run,
    run_category,
    train,
)
from pcad.errors import FileFormatError, InvalidInputError, PcadWarning
from pcad.io import write_rgb, write_xyz_tiff
from synth.dataset import DatasetConfig, generate

FAST = {"image_size": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """32 x 32 gear and plate: 3 train, 2 good + 2 dent test samples each."""
    root = tmp_path_factory.mktemp("base") / "data"
    generate(DatasetConfig(categories=("gear", "plate"), train=3, validation=0, test_good=2,
                           test_defect=2, defects=("dent",), size=(32, 32), seed=0),
             root, progress=False)
    torch.set_num_threads(1)  # numba resets the OpenMP thread count
    return root


@pytest.fixture(scope="module")
def gear_run(base, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "gear_fpfh"
    train(base, "gear", "fpfh", run, FAST, progress=False)
    return run


@pytest.fixture
def data(base, tmp_path) -> Path:
    """A private copy of the base dataset, to damage."""
    root = tmp_path / "data"
    shutil.copytree(base, root)
    return root


@contextlib.contextmanager
def no_pcad_warning():
    """A block in which a PcadWarning is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PcadWarning)
        yield


def cli(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_cli_error(status: int, out: str, err: str, *words: str) -> None:
    assert status == EXIT_ERROR and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pcad: error: "), err
    for w in words:
        assert w in lines[0], (w, err)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr.astype(np.uint8)).save(path)


# ------------------------------------------------------------------------ gt values (Must 4)


def test_gt_levels_rule():
    """Clean: one foreground value (0/1, 0/255, bool) or MVTec's class ids 253-255."""
    for levels in (np.array([[0, 1]], np.uint8), np.array([[0, 255]], np.uint8),
                   np.array([[0, 253], [254, 255]], np.uint8), np.array([[False, True]]),
                   np.array([[0, 128]], np.uint8), np.zeros((2, 2), np.uint8)):
        assert gt_levels_note(levels) is None, levels
    assert gt_levels_note(np.array([[0, 3], [128, 255]], np.uint8)) == \
        "values 3, 128, 255 (besides 0)"
    assert "and 2 more" in gt_levels_note(np.arange(11, dtype=np.uint8).reshape(1, -1))


def test_gt_with_soft_values_warns_and_binarizes(data, gear_run, tmp_path):
    """A mask with 3 and 128 besides 255: a warning naming the file and the values; the
    metrics are still computed on ``> 0`` (as DESIGN.md says)."""
    gt = data / "gear" / "test" / "dent" / "gt" / "000.png"
    mask = np.asarray(Image.open(gt))
    soft = mask.copy()
    soft[mask == 0] = 0
    soft[:2, :] = np.where(mask[:2, :] == 0, 3, mask[:2, :])  # stray low values
    soft[-2:, :] = 128
    write_png(gt, soft)
    with pytest.warns(PcadWarning, match="several foreground values") as rec:
        m = evaluate_run(data, "gear", gear_run, tmp_path / "res", progress=False)
    text = " ".join(str(w.message) for w in rec)
    assert str(gt) in text and "3, 128, 255" in text
    assert 0.0 <= m["p_auroc"] <= 1.0


def test_gt_with_mvtec_class_ids_is_silent(data, gear_run, tmp_path):
    gt = data / "gear" / "test" / "dent" / "gt" / "000.png"
    mask = np.asarray(Image.open(gt))
    ids = np.where(mask > 0, 253, 0).astype(np.uint8)
    rows, cols = np.nonzero(mask)
    ids[rows[:1], cols[:1]] = 255
    ids[rows[1:2], cols[1:2]] = 254
    assert set(np.unique(ids).tolist()) == {0, 253, 254, 255}
    write_png(gt, ids)
    with no_pcad_warning():
        evaluate_run(data, "gear", gear_run, tmp_path / "res", progress=False)


def test_mostly_anomalous_gt_warns(data, gear_run, tmp_path):
    """An inverted mask (255 = normal) marks most pixels anomalous: warned, with the share."""
    gt = data / "gear" / "test" / "dent" / "gt" / "001.png"
    mask = np.asarray(Image.open(gt))
    write_png(gt, np.where(mask > 0, 0, 255))
    with pytest.warns(PcadWarning, match=r"more than 50% of their pixels") as rec:
        evaluate_run(data, "gear", gear_run, tmp_path / "res", progress=False)
    assert str(gt) in " ".join(str(w.message) for w in rec)


# ---------------------------------------------------------------- training inputs (Must 4)


def test_all_zero_xyz_in_training_warns(data, tmp_path):
    xyz = data / "gear" / "train" / "good" / "xyz" / "001.tiff"
    write_xyz_tiff(xyz, np.zeros((32, 32, 3), np.float32))
    with pytest.warns(PcadWarning, match=r"1 of 3 xyz files have no measured pixel") as rec:
        train(data, "gear", "fpfh", tmp_path / "run", FAST, progress=False)
    assert str(xyz) in " ".join(str(w.message) for w in rec)


def tiny_dataset(root: Path, side: int) -> Path:
    """By hand: ``side x side`` RGB-only images, 2 train, 1 good + 1 defective test sample."""
    rng = np.random.default_rng(0)
    for split, defect, n in (("train", "good", 2), ("test", "good", 1), ("test", "hole", 1)):
        d = root / "part" / split / defect
        for i in range(n):
            write_rgb(d / "rgb" / f"{i:03d}.png",
                      rng.integers(0, 255, (side, side, 3)).astype(np.uint8))
            if split == "test":
                (d / "gt").mkdir(parents=True, exist_ok=True)
                gt = np.zeros((side, side), np.uint8)
                gt[0, 0] = 255 if defect != "good" else 0
                write_png(d / "gt" / f"{i:03d}.png", gt)
    return root


def test_tiny_training_images_warn(tmp_path):
    root = tiny_dataset(tmp_path / "tiny", 1)
    with pytest.warns(PcadWarning, match=rf"2 of 2 images are smaller than {MIN_IMAGE_SIDE}"
                      ) as rec:
        train(root, "part", "patchcore-rgb", tmp_path / "run", FAST, progress=False)
    assert "(1x1)" in str(rec[0].message)


def test_normal_training_set_is_silent(data, tmp_path):
    with no_pcad_warning():
        # this dataset has no validation split: the one warning expected says no threshold
        # is calibrated (tests/test_predict.py covers it)
        warnings.filterwarnings("ignore", message=".*no decision threshold", category=PcadWarning)
        train(data, "plate", "fpfh", tmp_path / "run", FAST, progress=False)
    assert run_category(tmp_path / "run") == "plate"


def test_incomplete_dataset_warns(data, tmp_path):
    record = json.loads((data / "dataset.json").read_text())
    assert record["complete"] is True
    (data / "dataset.json").write_text(json.dumps({**record, "complete": False}))
    with pytest.warns(PcadWarning, match=r'dataset.json: the dataset is incomplete'):
        train(data, "gear", "fpfh", tmp_path / "run", FAST, progress=False)


def test_category_mismatch_warns(data, gear_run, tmp_path):
    assert run_category(gear_run) == "gear"
    with pytest.warns(PcadWarning, match=r"trained on category 'gear', evaluated on 'plate'"):
        evaluate_run(data, "plate", gear_run, tmp_path / "res", progress=False)


def test_category_mismatch_in_sensitivity_warns_once(data, gear_run, tmp_path):
    from pcad.sensitivity import run_sensitivity

    with pytest.warns(PcadWarning) as rec:
        run_sensitivity(data, "plate", None, [0.02, 0.04], tmp_path / "sens",
                        defects=("dent",), n_per_defect=1, run=gear_run)
    hits = [w for w in rec if "trained on category 'gear'" in str(w.message)]
    assert len(hits) == 1


# ---------------------------------------------------------------- negative options (Must 4)


@pytest.mark.parametrize("name", ["patchcore-rgb", "fpfh", "btf"])
@pytest.mark.parametrize("option, value, word", [
    ("sigma", -1.0, "sigma: must be >= 0"),
    ("seed", -1, "seed: must be >= 0"),
    ("n_reweight", 0, "n_reweight: must be >= 1"),
    ("seed", 0.5, "seed: expected an integer"),
])
def test_negative_options_are_errors(name, option, value, word):
    with pytest.raises(InvalidInputError, match=word):
        create_detector(name, **{option: value})


def test_cli_negative_sigma(data, tmp_path, capsys):
    status, out, err = cli(capsys, "train", "--data", data, "--category", "gear", "--detector",
                           "fpfh", "-o", "sigma=-2", "--out", tmp_path / "run", "--quiet")
    assert_cli_error(status, out, err, "sigma", "-2")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------- checks before work (Must 5)


@pytest.fixture
def no_predict(monkeypatch):
    """Any prediction fails the test: the checks must come first."""
    def predict(self, sample):
        raise AssertionError("predicted before the checks")
    monkeypatch.setattr(FPFHDetector, "predict", predict)


def test_eval_without_defective_samples_fails_before_predicting(data, gear_run, tmp_path,
                                                                no_predict):
    shutil.rmtree(data / "gear" / "test" / "dent")
    with pytest.raises(InvalidInputError, match="no defective test sample"):
        evaluate_run(data, "gear", gear_run, tmp_path / "res", progress=False)
    assert not (tmp_path / "res").exists()


def test_eval_without_good_samples_fails_before_predicting(data, gear_run, tmp_path,
                                                           no_predict):
    shutil.rmtree(data / "gear" / "test" / "good")
    with pytest.raises(InvalidInputError, match="no good test sample"):
        evaluate_run(data, "gear", gear_run, tmp_path / "res", progress=False)


def test_eval_with_empty_defect_masks_fails_before_predicting(data, gear_run, tmp_path,
                                                              no_predict):
    for gt in (data / "gear" / "test" / "dent" / "gt").iterdir():
        write_png(gt, np.zeros((32, 32)))
    with pytest.raises(InvalidInputError, match="marks an anomalous pixel"):
        evaluate_run(data, "gear", gear_run, tmp_path / "res", progress=False)


def test_eval_missing_gt_fails_before_predicting(data, gear_run, tmp_path, no_predict):
    """A committed defective sample (its meta is there) without gt: an error at opening."""
    (data / "gear" / "test" / "dent" / "gt" / "001.png").unlink()
    with pytest.raises(FileFormatError, match="needs a ground-truth mask"):
        evaluate_run(data, "gear", gear_run, tmp_path / "res", progress=False)


def test_eval_out_is_a_file(data, gear_run, tmp_path, no_predict, capsys):
    (tmp_path / "res").write_text("not a folder")
    with pytest.raises(InvalidInputError, match="exists and is not a folder"):
        evaluate_run(data, "gear", gear_run, tmp_path / "res", progress=False)
    status, out, err = cli(capsys, "eval", "--data", data, "--category", "gear", "--run",
                           gear_run, "--out", tmp_path / "res", "--quiet")
    assert_cli_error(status, out, err, "--out", str(tmp_path / "res"), "not a folder")
    status, out, err = cli(capsys, "eval", "--data", data, "--category", "gear", "--run",
                           gear_run, "--out", tmp_path / "res" / "sub", "--quiet")
    assert_cli_error(status, out, err, "--out", "is a file")
    assert (tmp_path / "res").read_text() == "not a folder"


def test_eval_maps_folder_is_a_file(data, gear_run, tmp_path, no_predict):
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "maps").write_text("x")
    with pytest.raises(InvalidInputError, match="maps exists and is not a folder"):
        evaluate_run(data, "gear", gear_run, tmp_path / "res", progress=False)


def test_train_out_is_a_file_fails_before_fitting(data, tmp_path, monkeypatch, capsys):
    def fit(self, samples, progress=False):
        raise AssertionError("fitted before checking --out")
    monkeypatch.setattr(FPFHDetector, "fit", fit)
    (tmp_path / "run").write_text("a file")
    with pytest.raises(InvalidInputError, match="exists and is not a folder"):
        train(data, "gear", "fpfh", tmp_path / "run", FAST, progress=False)
    status, out, err = cli(capsys, "train", "--data", data, "--category", "gear", "--detector",
                           "fpfh", "--out", tmp_path / "run" / "inner", "--quiet")
    assert_cli_error(status, out, err, "--out", "is a file")


def test_check_out_folder_not_writable(tmp_path, monkeypatch):
    import pcad.checks

    (tmp_path / "ro").mkdir()
    # the mode bits do not bind root: simulate a read-only folder
    monkeypatch.setattr(pcad.checks.os, "access", lambda path, mode: False)
    with pytest.raises(InvalidInputError, match=r"cannot create .*new: .*ro is not writable"):
        check_out_folder(tmp_path / "ro" / "new")
    with pytest.raises(InvalidInputError, match="the folder is not writable"):
        check_out_folder(tmp_path / "ro")


# --------------------------------------------------------- results as one unit (Must 5)


def fail_predict_after(monkeypatch, n: int, message: str) -> dict[str, int]:
    """Make ``FPFHDetector.predict`` raise ``RuntimeError(message)`` from its call ``n + 1``
    on; returns the call counter (``{"n": calls so far}``)."""
    calls = {"n": 0}
    original = FPFHDetector.predict

    def flaky(self, sample):
        calls["n"] += 1
        if calls["n"] > n:
            raise RuntimeError(message)
        return original(self, sample)

    monkeypatch.setattr(FPFHDetector, "predict", flaky)
    return calls


def test_failed_eval_leaves_existing_results_intact(data, gear_run, tmp_path, monkeypatch):
    """A failure midway into an existing results folder: the old results are untouched and
    nothing new is there (no half-written maps, no staging folder left)."""
    res = tmp_path / "res"
    evaluate_run(data, "gear", gear_run, res, progress=False)
    before = snapshot(tmp_path)
    assert "res/metrics.json" in before and any(k.startswith("res/maps/") for k in before)

    calls = fail_predict_after(monkeypatch, 2, "device lost")
    with pytest.raises(RuntimeError, match="device lost"):
        evaluate_run(data, "gear", gear_run, res, progress=False)
    assert calls["n"] == 3
    after = snapshot(tmp_path)
    assert after == before


def test_failed_eval_into_new_folder_leaves_nothing(data, gear_run, tmp_path, monkeypatch):
    def broken(self, sample):
        raise RuntimeError("boom")

    monkeypatch.setattr(FPFHDetector, "predict", broken)
    with pytest.raises(RuntimeError):
        evaluate_run(data, "gear", gear_run, tmp_path / "out" / "res", progress=False)
    assert not (tmp_path / "out" / "res").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_failed_metrics_leave_results_intact(data, gear_run, tmp_path, monkeypatch):
    """A failure after every map was written (in the metrics) changes nothing either."""
    import pcad.metrics

    res = tmp_path / "res"
    evaluate_run(data, "gear", gear_run, res, progress=False)
    before = snapshot(tmp_path)

    def fail(*args, **kwargs):
        raise MemoryError("metrics")

    monkeypatch.setattr(pcad.metrics, "evaluate", fail)
    with pytest.raises(MemoryError):
        evaluate_run(data, "gear", gear_run, res, progress=False)
    assert snapshot(tmp_path) == before


def test_eval_replaces_results_as_a_unit(data, gear_run, tmp_path):
    """A second eval into the folder replaces the category's maps (a stale map goes), the
    scores and the metrics; nothing hidden is left beside or inside it."""
    res = tmp_path / "res"
    evaluate_run(data, "gear", gear_run, res, progress=False)
    stale = res / "maps" / "gear" / "test" / "dent" / "999.tiff"
    stale.write_bytes(b"old")
    (res / "notes.txt").write_text("mine")
    first = json.loads((res / "metrics.json").read_text())
    m = evaluate_run(data, "gear", gear_run, res, progress=False)
    assert not stale.exists()
    assert (res / "notes.txt").read_text() == "mine"
    assert m["i_auroc"] == first["i_auroc"]
    assert len(list((res / "maps").rglob("*.tiff"))) == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert [p for p in res.rglob(".*")] == []


def test_eval_maps_root_and_no_maps(data, gear_run, tmp_path):
    shared = tmp_path / "shared"
    evaluate_run(data, "gear", gear_run, tmp_path / "r1", progress=False, maps_root=shared)
    assert len(list((shared / "gear").rglob("*.tiff"))) == 4
    assert [p.name for p in shared.iterdir()] == ["gear"]
    assert not (tmp_path / "r1" / "maps").exists()
    # a failure leaves the shared tree as it was
    before = snapshot(shared)
    with pytest.MonkeyPatch.context() as mp:
        fail_predict_after(mp, 1, "lost")
        with pytest.raises(RuntimeError):
            evaluate_run(data, "gear", gear_run, tmp_path / "r1", progress=False,
                         maps_root=shared)
    assert snapshot(shared) == before
    # write_maps=False into a folder that has maps: the stale maps of the category go
    evaluate_run(data, "gear", gear_run, tmp_path / "r2", progress=False)
    evaluate_run(data, "gear", gear_run, tmp_path / "r2", progress=False, write_maps=False)
    assert not (tmp_path / "r2" / "maps" / "gear").exists()
    assert (tmp_path / "r2" / "metrics.json").exists()


# ------------------------------------------------------- meta as the commit marker (Must 7)


def test_sample_without_meta_is_skipped_with_one_warning(data, gear_run, tmp_path):
    """A kill between the renames of one sample: rgb and xyz are there, gt and meta not."""
    dent = data / "gear" / "test" / "dent"
    (dent / "gt" / "001.png").unlink()
    (dent / "meta" / "001.json").unlink()
    (data / "gear" / "test" / "good" / "meta" / "000.json").unlink()
    with pytest.warns(PcadWarning, match="skipped 2 incomplete sample") as rec:
        ds = MVTec3DDataset(data, "gear", "test")
    assert len(rec) == 1
    assert "dent/001" in str(rec[0].message) and "good/000" in str(rec[0].message)
    assert [(e.defect, e.stem) for e in ds.entries] == [("dent", "000"), ("good", "001")]
    assert ds.skipped == ["dent/001", "good/000"]
    with pytest.warns(PcadWarning, match="skipped 2 incomplete"):
        m = evaluate_run(data, "gear", gear_run, tmp_path / "res", progress=False)
    assert m["n_test"] == 2


def test_training_sample_without_meta_is_skipped(data, tmp_path):
    (data / "gear" / "train" / "good" / "meta" / "002.json").unlink()
    (data / "gear" / "train" / "good" / "xyz" / "002.tiff").unlink()  # rgb only: cut short
    with pytest.warns(PcadWarning, match="good/002"):
        ds = MVTec3DDataset(data, "gear", "train")
    assert len(ds) == 2


def test_dataset_without_meta_folders_reads_every_sample(data, tmp_path):
    """The real MVTec 3D-AD has no meta folder: every sample is read, without a warning."""
    for meta in list(data.rglob("meta")):
        shutil.rmtree(meta)
    with no_pcad_warning():
        ds = MVTec3DDataset(data, "gear", "test")
    assert len(ds) == 4 and ds.skipped == []
    (data / "gear" / "test" / "dent" / "gt" / "001.png").unlink()
    with pytest.raises(FileFormatError, match="needs a ground-truth mask"):
        MVTec3DDataset(data, "gear", "test")


def test_many_skipped_samples_are_summarized(tmp_path):
    d = tmp_path / "data" / "part" / "train" / "good"
    for i in range(13):
        write_rgb(d / "rgb" / f"{i:03d}.png", np.zeros((4, 4, 3), np.uint8))
    (d / "meta").mkdir()
    (d / "meta" / "000.json").write_text("{}")
    with pytest.warns(PcadWarning, match="skipped 12 incomplete") as rec:
        ds = MVTec3DDataset(tmp_path / "data", "part", "train")
    assert len(ds) == 1 and "and 2 more" in str(rec[0].message)


# -------------------------------------------------------------- the CLI prints warnings


def test_cli_prints_warnings_as_one_line_and_exits_0(data, gear_run, tmp_path, capsys):
    gt = data / "plate" / "test" / "dent" / "gt" / "000.png"
    mask = np.asarray(Image.open(gt))
    write_png(gt, np.where(mask > 0, 255, 7))
    status, out, err = cli(capsys, "eval", "--data", data, "--category", "plate", "--run",
                           gear_run, "--out", tmp_path / "res", "--quiet")
    assert status == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 3, err  # category mismatch, soft gt, mostly anomalous
    assert all(line.startswith("pcad: warning: ") for line in lines), err
    assert any("trained on category 'gear'" in line for line in lines)
    assert any(str(gt) in line and "7, 255" in line for line in lines)
    assert "Traceback" not in err and "UserWarning" not in err
    assert out.startswith("plate: I-AUROC")


def test_cli_train_warning_then_success(data, tmp_path, capsys):
    record = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**record, "complete": False}))
    status, out, err = cli(capsys, "train", "--data", data, "--category", "gear", "--detector",
                           "fpfh", "--image-size", "32", "--out", tmp_path / "run", "--quiet")
    assert status == 0
    lines = err.splitlines()  # this dataset also has no validation split: no threshold
    assert len(lines) == 2 and all(x.startswith("pcad: warning: ") for x in lines), err
    assert "incomplete" in lines[0] and "no decision threshold" in lines[1]
    assert "trained fpfh on gear" in out


def test_show_warning_of_another_category():
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        show_warning(RuntimeWarning("slow path"), RuntimeWarning, "x.py", 3)
    assert buf.getvalue() == "pcad: warning: slow path (RuntimeWarning)\n"


def test_check_test_set_reads_only_gt(data, gear_run):
    """The pre-check on a clean split: silent, no exception."""
    with no_pcad_warning():
        check_test_set(MVTec3DDataset(data, "gear", "test"))


def test_patchcore_checked_values_are_plain():
    det = create_detector("patchcore-rgb", sigma=2, seed=3.0, n_reweight=np.int64(2))
    assert det.config["sigma"] == 2.0 and isinstance(det.config["sigma"], float)
    assert det.config["seed"] == 3 and type(det.config["seed"]) is int
    assert type(det.config["n_reweight"]) is int
    assert isinstance(det, PatchCoreRGB)


def test_staging_folders_of_killed_evaluations_are_removed(tmp_path):
    """A killed ``pcad eval`` leaves ``.eval.<pid>.<random>.tmp`` in ``--out``: the next
    evaluation into that folder removes it, and keeps those of a live process."""
    import os
    import subprocess
    import sys

    from pcad.engine import remove_dead_stages

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that has exited (and been reaped)
    dead = tmp_path / f".eval.{child.pid}.x1y2.tmp"
    dead_old = tmp_path / f".maps.{child.pid}.q_9.old.tmp"
    live = tmp_path / f".eval.{os.getpid()}.abc.tmp"
    other = tmp_path / f".000.png.{child.pid}-0badcafe.r4nd.tmp"  # not a staging folder
    for d in (dead, dead_old, live, other):
        d.mkdir()
        (d / "metrics.json").write_text("{}")
    assert remove_dead_stages(tmp_path) == sorted([dead, dead_old])
    assert not dead.exists() and not dead_old.exists()
    assert live.is_dir() and other.is_dir()
