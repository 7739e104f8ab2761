"""Tests of ``pcad sensitivity`` (:mod:`pcad.sensitivity`): detectability curves over defect
strength on a tiny synthetic dataset (plate_holes, 64 x 64, fpfh at image_size 64)."""

from __future__ import annotations

import contextlib
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pcad.cli.main import main
from pcad.engine import evaluate_run
from pcad.errors import InvalidInputError
from pcad.io import read_mask_png, read_xyz_tiff
from pcad.sensitivity import build_set, check_strengths, detection_limit, strength_name
from synth.dataset import DatasetConfig, generate
from synth.dataset.inject import InjectConfig, inject
from viz.html import external_scripts

CATEGORY = "plate_holes"
STRENGTHS = (0.005, 0.02, 0.05)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sens_src") / "synth"
    generate(DatasetConfig(categories=(CATEGORY,), train=5, validation=0, test_good=2,
                           test_defect=1, defects=("dent",), size=(64, 64)), root,
             progress=False)
    return root


@pytest.fixture(scope="module")
def result(source, tmp_path_factory) -> dict:
    """One ``pcad sensitivity --json`` run: its exit status, summary and folder."""
    out = tmp_path_factory.mktemp("sens_out") / "out"
    stdout = tmp_path_factory.mktemp("sens_stdout") / "stdout.txt"
    with open(stdout, "w") as fh, contextlib.redirect_stdout(fh):
        rc = main(["sensitivity", "--data", str(source), "--category", CATEGORY,
                   "--detector", "fpfh", "--image-size", "64", "--n-per-defect", "2",
                   "--strengths", *map(str, STRENGTHS), "--out", str(out), "--json"])
    text = stdout.read_text().strip()
    return {"rc": rc, "summary": json.loads(text), "stdout": text, "out": out}


def test_runs_and_writes_every_file(result) -> None:
    assert result["rc"] == 0
    assert len(result["stdout"].splitlines()) == 1  # --json: one JSON object
    out = result["out"]
    for name in ("sensitivity.csv", "sensitivity.json", "sensitivity.png", "sensitivity.html",
                 "run/train.json"):
        assert (out / name).is_file(), name
    assert (out / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert external_scripts((out / "sensitivity.html").read_text()) == []  # works offline
    for s in STRENGTHS:
        assert (out / "sets" / strength_name(s) / CATEGORY / "test" / "good").is_dir()
        for d in ("bump", "dent"):
            assert len(list((out / "sets" / strength_name(s) / CATEGORY / "test" / d / "xyz")
                            .glob("*.tiff"))) == 2
        assert (out / "eval" / strength_name(s) / "metrics.json").is_file()


def test_table_matches_separate_evaluations(result, tmp_path) -> None:
    out = result["out"]
    with open(out / "sensitivity.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["strength", "i_auroc", "p_auroc", "aupro_0.3", "n_test"]
    assert [float(r["strength"]) for r in rows] == sorted(STRENGTHS)
    saved = json.loads((out / "sensitivity.json").read_text())
    for row, jrow in zip(rows, saved["rows"], strict=True):
        s = float(row["strength"])
        m = evaluate_run(out / "sets" / strength_name(s), CATEGORY, out / "run",
                         tmp_path / strength_name(s), progress=False)
        assert float(row["i_auroc"]) == m["i_auroc"]
        assert float(row["p_auroc"]) == m["p_auroc"]
        assert float(row["aupro_0.3"]) == m["aupro"]["0.3"]
        assert int(row["n_test"]) == m["n_test"] == 2 + 2 * 2
        assert (jrow["strength"], jrow["i_auroc"], jrow["p_auroc"], jrow["aupro_0.3"]) == (
            s, m["i_auroc"], m["p_auroc"], m["aupro"]["0.3"])
    limit = detection_limit([float(r["strength"]) for r in rows],
                            [float(r["i_auroc"]) for r in rows])
    assert saved["detection_limit"] == result["summary"]["detection_limit"] == limit


def test_same_objects_and_seeds_at_every_strength(result) -> None:
    sets = result["out"] / "sets"
    for d in ("bump", "dent"):
        for stem in ("000", "001"):
            metas = [json.loads((sets / strength_name(s) / CATEGORY / "test" / d / "meta"
                                 / f"{stem}.json").read_text()) for s in STRENGTHS]
            assert len({m["source_xyz"] for m in metas}) == 1
            assert len({m["sample_seed"] for m in metas}) == 1
            assert len({m["geometric"]["centre_index"] for m in metas}) == 1
            assert [m["strength"] for m in metas] == list(STRENGTHS)
            assert [m["geometric"]["strength"] for m in metas] == list(STRENGTHS)


def test_set_equals_inject_mode_at_the_default_strength(source, tmp_path) -> None:
    """At the defect's default strength a sensitivity set holds inject mode's samples."""
    inject(InjectConfig(str(source), defects=("dent",), test_defect=2, seed=0,
                        categories=(CATEGORY,)), tmp_path / "inj", progress=False)
    build_set(source, CATEGORY, ("dent",), 0.01, 2, 0, tmp_path / "set")
    for stem in ("000", "001"):
        a = tmp_path / "inj" / CATEGORY / "test" / "dent"
        b = tmp_path / "set" / CATEGORY / "test" / "dent"
        np.testing.assert_array_equal(read_xyz_tiff(a / "xyz" / f"{stem}.tiff"),
                                      read_xyz_tiff(b / "xyz" / f"{stem}.tiff"))
        np.testing.assert_array_equal(read_mask_png(a / "gt" / f"{stem}.png"),
                                      read_mask_png(b / "gt" / f"{stem}.png"))
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


def test_existing_run_gives_the_same_row(result, tmp_path, capsys) -> None:
    out = tmp_path / "again"
    rc = main(["sensitivity", "--data", str(result["summary"]["data_root"]), "--category",
               CATEGORY, "--run", str(result["out"] / "run"), "--n-per-defect", "2",
               "--strengths", "0.02", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "detection limit: 0.02 " in text or "detection limit: not reached" in text
    row = json.loads((out / "sensitivity.json").read_text())["rows"][0]
    ref = next(r for r in result["summary"]["rows"] if r["strength"] == 0.02)
    assert {k: row[k] for k in ("i_auroc", "p_auroc", "aupro_0.3", "n_test")} == {
        k: ref[k] for k in ("i_auroc", "p_auroc", "aupro_0.3", "n_test")}
    assert not (out / "run").exists()


def test_detection_limit_interpolates_the_crossing() -> None:
    assert detection_limit([0.01, 0.02, 0.04], [0.5, 0.9, 1.0]) == pytest.approx(0.03)
    # unsorted input, and the first crossing counts even if the curve dips again later
    assert detection_limit([0.04, 0.01, 0.03, 0.02], [0.9, 0.6, 0.99, 0.8]) == pytest.approx(
        0.02 + (0.95 - 0.8) / (0.99 - 0.8) * 0.01)
    # exactly at the threshold: that strength
    assert detection_limit([0.01, 0.02], [0.5, 0.95]) == pytest.approx(0.02)


def test_detection_limit_reached_at_the_first_point() -> None:
    assert detection_limit([0.03, 0.01, 0.02], [1.0, 0.96, 0.99]) == 0.01


def test_detection_limit_never_reached() -> None:
    assert detection_limit([0.01, 0.02, 0.05], [0.5, 0.7, 0.94]) is None
    assert detection_limit([0.01], [math.nan]) is None
    with pytest.raises(InvalidInputError):
        detection_limit([0.01, 0.02], [0.5])


def test_check_strengths() -> None:
    assert check_strengths(["0.02", 0.01]) == [0.02, 0.01]
    for bad in ([], [0.0], [-0.01], [math.nan], [math.inf], [0.01, 0.01], [True]):
        with pytest.raises(InvalidInputError, match="--strengths"):
            check_strengths(bad)


@pytest.mark.parametrize("extra, match", [
    (["--strengths", "-0.01"], "must be > 0"),
    (["--strengths", "0"], "must be > 0"),
    (["--strengths", "nan"], "finite"),
    (["--strengths", "0.01", "0.02", "0.01"], "given twice"),
    (["--strengths", "0.01", "--defects", "hole"], "no strength parameter"),
    (["--strengths", "0.01", "--defects", "dent", "hole"], "no strength parameter"),
    (["--strengths", "0.01", "--defects", "smudge"], "unknown defect"),
    (["--strengths", "0.01", "--n-per-defect", "0"], "n-per-defect"),
    (["--strengths", "0.01", "--category", "gear"], "not in"),
    (["--strengths", "0.01", "--image-size", "60"], "multiple of 8"),
])
def test_bad_input_is_one_line_and_writes_nothing(source, tmp_path, capsys, extra,
                                                  match) -> None:
    out = tmp_path / "out"
    args = ["sensitivity", "--data", str(source), "--category", CATEGORY, "--detector", "fpfh",
            "--out", str(out)]
    # argparse keeps the last --category given
    rc = main(args + extra)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("pcad: error:"), err
    assert match in err
    assert not out.exists()


def test_empty_strength_list_and_unknown_detector_are_argparse_errors(source, tmp_path,
                                                                      capsys) -> None:
    out = tmp_path / "out"
    base = ["sensitivity", "--data", str(source), "--category", CATEGORY, "--out", str(out)]
    for argv in (base + ["--detector", "fpfh", "--strengths"],
                 base + ["--detector", "nope", "--strengths", "0.01"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_non_empty_out_and_missing_detector_are_refused(source, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    base = ["sensitivity", "--data", str(source), "--category", CATEGORY, "--strengths", "0.01"]
    assert main(base + ["--detector", "fpfh", "--out", str(out)]) == 2
    assert f"{out} is not empty; pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert main(base + ["--out", str(tmp_path / "o2")]) == 2
    assert "--detector: required" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
