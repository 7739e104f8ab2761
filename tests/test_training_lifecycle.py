"""The training lifecycle: live loss and ``train_log.csv``, ``pcad train --resume`` (an
interrupted training resumed gives the uninterrupted run), one ``--overwrite`` policy for every
command that writes an output, the category-mismatch warning of ``pcad eval``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from pcad.cli.main import EXIT_ERROR, main
from pcad.detectors.training import CHECKPOINT_FILE, LOG_FILE, EpochLoop
from pcad.trainlog import LOG_COLUMNS

CATEGORY, OTHER = "plate_holes", "gear"
#: a tiny, fast configuration of every learned detector
LEARNED = {
    "cfm": ["-o", "image_size=64", "-o", "epochs=3"],
    "synthsup": ["-o", "image_size=64", "-o", "epochs=3", "-o", "variants=1", "-o", "hidden=8",
                 "-o", "layers=2"],
    "m3dm": ["-o", "image_size=64", "-o", "epochs=3", "-o", "point_backbone=fpfh",
             "-o", "batch_size=2"],
    "lsfa": ["-o", "image_size=64", "-o", "epochs=3", "-o", "point_backbone=fpfh",
             "-o", "batch_size=2"],
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    """64 x 64 plate_holes and gear: 4 train, 2 good + 2 dent test samples each."""
    return tiny_dataset(tmp_path_factory, "lifecycle", CATEGORY, categories=(CATEGORY, OTHER),
                        train=4, test_good=2, test_defect=2, defects=("dent",))


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def train(capsys, data: Path, out: Path, detector: str = "cfm", *extra: str | Path):
    return cli(capsys, "train", "--data", data, "--category", CATEGORY, "--detector", detector,
               "--out", out, *LEARNED.get(detector, []), *extra)


def log_rows(run: Path) -> list[dict[str, str]]:
    with open(run / LOG_FILE, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == LOG_COLUMNS
        return list(reader)


def scores(capsys, data: Path, run: Path, out: Path) -> list[str]:
    status, _, err = cli(capsys, "eval", "--data", data, "--category", CATEGORY, "--run", run,
                         "--out", out, "--quiet")
    assert status == 0, err
    with open(out / "scores.csv", newline="") as fh:
        return [row["score"] for row in csv.DictReader(fh)]


def same(a: object, b: object) -> bool:
    """Equal nested dicts / lists of tensors and plain values (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and sorted(a) == sorted(b) and all(same(a[k], b[k])
                                                                       for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def interrupt_after(monkeypatch: pytest.MonkeyPatch, epochs: int) -> None:
    """Make every training loop stop (KeyboardInterrupt, as Ctrl-C) once ``epochs`` epochs are
    finished and checkpointed."""
    original = EpochLoop.end_epoch

    def end_epoch(self, loss, **kw):
        original(self, loss, **kw)
        if len(self.history) >= epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochLoop, "end_epoch", end_epoch)


# ------------------------------------------------------------------------- loss and the log


def test_train_log_has_one_row_per_epoch_and_the_bar_shows_the_loss(data, tmp_path, capsys):
    status, out, err = train(capsys, data, tmp_path / "run")
    assert status == 0, err
    rows = log_rows(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    steps = [int(r["steps"]) for r in rows]
    assert steps[0] > 0 and steps == [steps[0] * k for k in (1, 2, 3)]
    assert all(float(r["loss"]) > 0 and float(r["lr"]) > 0 for r in rows)
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds)
    assert "loss=" in err  # the progress bar's postfix
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists()  # the run is complete
    status, _, err = train(capsys, data, tmp_path / "quiet", "cfm", "--quiet")
    assert status == 0 and "loss=" not in err
    assert len(log_rows(tmp_path / "quiet")) == 3


def test_an_interrupted_training_leaves_a_valid_log_and_a_checkpoint(data, tmp_path, capsys,
                                                                     monkeypatch):
    interrupt_after(monkeypatch, 2)
    status, _, _ = train(capsys, data, tmp_path / "run")
    assert status == 130
    assert [r["epoch"] for r in log_rows(tmp_path / "run")] == ["1", "2"]
    assert (tmp_path / "run" / CHECKPOINT_FILE).is_file()
    assert not (tmp_path / "run" / "train.json").exists()


# --------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("detector", sorted(LEARNED))
def test_resume_gives_the_uninterrupted_run(detector, data, tmp_path, capsys, monkeypatch):
    status, _, err = train(capsys, data, tmp_path / "whole", detector, "--quiet")
    assert status == 0, err
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        assert train(capsys, data, tmp_path / "cut", detector, "--quiet")[0] == 130
    assert len(log_rows(tmp_path / "cut")) == 1
    status, _, err = train(capsys, data, tmp_path / "cut", detector, "--quiet", "--resume")
    assert status == 0, err
    assert not (tmp_path / "cut" / CHECKPOINT_FILE).exists()
    whole, cut = log_rows(tmp_path / "whole"), log_rows(tmp_path / "cut")
    assert [(r["epoch"], r["steps"], r["loss"], r["lr"]) for r in whole] == \
        [(r["epoch"], r["steps"], r["loss"], r["lr"]) for r in cut]
    for f in sorted((tmp_path / "whole").iterdir()):
        if f.suffix == ".pt":  # the zip's inner folder name is the temporary file's: tensors
            a, b = (torch.load(p, weights_only=True) for p in (f, tmp_path / "cut" / f.name))
            assert same(a, b), f.name
        elif f.name not in ("train.json", LOG_FILE):
            assert f.read_bytes() == (tmp_path / "cut" / f.name).read_bytes(), f.name
    assert scores(capsys, data, tmp_path / "whole", tmp_path / "e1") == \
        scores(capsys, data, tmp_path / "cut", tmp_path / "e2")


def test_resume_errors(data, tmp_path, capsys, monkeypatch):
    status, _, err = train(capsys, data, tmp_path / "none", "cfm", "--resume")
    assert status == EXIT_ERROR and "--resume: no checkpoint" in err
    assert str(tmp_path / "none") in err
    status, _, err = train(capsys, data, tmp_path / "btf", "btf")
    assert status == 0, err
    status, _, err = train(capsys, data, tmp_path / "btf", "btf", "--resume")
    assert status == EXIT_ERROR and "the run finished" in err
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        assert train(capsys, data, tmp_path / "cut", "cfm", "--quiet")[0] == 130
    status, _, err = train(capsys, data, tmp_path / "cut", "cfm", "--resume", "-o", "epochs=4")
    assert status == EXIT_ERROR and "from another run" in err and "epochs 3 -> 4" in err
    assert len(err.strip().splitlines()) == 1
    status, _, err = train(capsys, data, tmp_path / "cut", "synthsup", "--resume")
    assert status == EXIT_ERROR and "from another run" in err and "detector" in err
    status, _, err = train(capsys, data, tmp_path / "cut", "cfm", "--resume", "--overwrite")
    assert status == EXIT_ERROR and "--overwrite" in err
    assert (tmp_path / "cut" / CHECKPOINT_FILE).is_file()  # the errors left it alone


# ------------------------------------------------------------------------------ overwrite


def old_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "old.txt").write_text("old")
    return path


def assert_refused(status: int, err: str, folder: Path) -> None:
    assert status == EXIT_ERROR
    assert f"{folder} is not empty; pass --overwrite" in err
    assert (folder / "old.txt").read_text() == "old"


def test_train_and_eval_refuse_a_non_empty_out_without_overwrite(data, tmp_path, capsys):
    run = old_folder(tmp_path / "run")
    assert_refused(*train(capsys, data, run, "btf")[::2], run)
    status, _, err = train(capsys, data, run, "btf", "--overwrite")
    assert status == 0, err
    assert not (run / "old.txt").exists() and (run / "train.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    ev = old_folder(tmp_path / "eval")
    argv = ["eval", "--data", data, "--category", CATEGORY, "--run", run, "--out", ev, "--quiet"]
    assert_refused(*cli(capsys, *argv)[::2], ev)
    status, _, err = cli(capsys, *argv, "--overwrite")
    assert status == 0, err
    assert sorted(p.name for p in ev.iterdir()) == ["maps", "metrics.json", "scores.csv"]


def test_a_failed_overwrite_keeps_the_old_folder(data, tmp_path, capsys, monkeypatch):
    run = old_folder(tmp_path / "run")
    interrupt_after(monkeypatch, 1)
    assert train(capsys, data, run, "cfm", "--quiet", "--overwrite")[0] == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in run.iterdir()) == ["old.txt"]
    ev = old_folder(tmp_path / "eval")
    status, _, err = cli(capsys, "eval", "--data", data, "--category", CATEGORY, "--run",
                         tmp_path / "missing", "--out", ev, "--overwrite")
    assert status == EXIT_ERROR
    assert sorted(p.name for p in ev.iterdir()) == ["old.txt"]


def test_sensitivity_demo_and_make_dataset_follow_the_policy(data, tmp_path, capsys):
    sens = old_folder(tmp_path / "sens")
    argv = ["sensitivity", "--data", data, "--category", CATEGORY, "--detector", "btf",
            "--strengths", "0.05", "--defects", "bump", "--n-per-defect", "1", "--image-size",
            "64", "--out", sens, "--quiet", "--json"]
    assert_refused(*cli(capsys, *argv)[::2], sens)
    status, out, err = cli(capsys, *argv, "--overwrite")
    assert status == 0, err
    assert json.loads(out)["out"] == str(sens.resolve()) and not (sens / "old.txt").exists()
    demo = old_folder(tmp_path / "demo")
    argv = ["demo", "--out", demo, "--points", "3000", "--objects", "plate", "--no-dataset",
            "--no-html"]
    assert_refused(*cli(capsys, *argv)[::2], demo)
    status, _, err = cli(capsys, *argv, "--overwrite")
    assert status == 0, err
    assert (demo / "summary.json").is_file() and not (demo / "old.txt").exists()
    ds = old_folder(tmp_path / "ds")
    argv = ["make-dataset", "--out", ds, "--categories", "plate", "--train", "1",
            "--validation", "0", "--test-good", "1", "--test-defect", "1", "--defects", "dent",
            "--size", "32", "32", "--quiet"]
    status, _, err = cli(capsys, *argv)
    assert status == EXIT_ERROR and (ds / "old.txt").exists()
    status, _, err = cli(capsys, *argv, "--overwrite")
    assert status == 0, err
    assert (ds / "dataset.json").is_file() and not (ds / "old.txt").exists()
    assert cli(capsys, *argv)[0] == 0  # a rerun of the same dataset still resumes


def test_pretrain_points_refuses_an_existing_file_and_logs_each_epoch(tmp_path, capsys,
                                                                      data):
    out = tmp_path / "w.pth"
    out.write_text("old")
    argv = ["pretrain-points", "--data", data, "--out", out, "--epochs", "2", "--points", "64",
            "--num-group", "8", "--group-size", "8", "--trans-dim", "16", "--depth", "1",
            "--num-heads", "2", "--decoder-depth", "1", "--batch-size", "4"]
    status, _, err = cli(capsys, *argv)
    assert status == EXIT_ERROR and f"{out} exists; pass --overwrite" in err
    assert out.read_text() == "old"
    status, _, err = cli(capsys, *argv, "--overwrite")
    assert status == 0, err
    assert "epoch 2/2" in err
    with open(tmp_path / "w.pth.train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[1]["loss"]) > 0


# ----------------------------------------------------------------------- category warning


def test_eval_warns_when_the_category_differs_from_the_runs(data, tmp_path, capsys):
    assert train(capsys, data, tmp_path / "run", "btf")[0] == 0
    status, _, err = cli(capsys, "eval", "--data", data, "--category", OTHER, "--run",
                         tmp_path / "run", "--out", tmp_path / "ev", "--quiet")
    assert status == 0, err
    assert "pcad: warning:" in err and f"trained on category {CATEGORY!r}" in err
    assert f"evaluated on {OTHER!r}" in err
    status, _, err = cli(capsys, "eval", "--data", data, "--category", CATEGORY, "--run",
                         tmp_path / "run", "--out", tmp_path / "ev2", "--quiet")
    assert status == 0 and "trained on category" not in err
