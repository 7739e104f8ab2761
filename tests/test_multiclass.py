"""Unified (multi-class) runs: pcad train/eval --categories, the means and per-category blocks,
no category-mismatch warning inside a run's categories, bad input, mixed image sizes."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from pcad.cli.main import main
from pcad.data import MVTec3DDataset
from pcad.engine import evaluate_run, train
from pcad.errors import InvalidInputError, PcadWarning
from pcad.multiclass import resolve_categories

CATS = ("gear", "plate_holes")
CONFIG = {"image_size": 64}


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory, "multiclass", CATS[0], categories=CATS, train=3,
                        validation=1, test_good=2, test_defect=2, defects=("dent",))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mc_run") / "run"
    train(data, ["all"], "patchcore-rgb", out, CONFIG, progress=False)
    return out


def cli(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_unified_run_records_categories(run):
    record = json.loads((run / "train.json").read_text())
    assert record["categories"] == list(CATS) and record["category"] is None
    assert record["n_train"] == 6  # 3 per category
    assert record["calibration"]["n_validation"] == 2  # validation good of both categories


def test_eval_categories_json_means_and_blocks(data, run, tmp_path, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, out, err = cli(capsys, "eval", "--data", data, "--categories", "all", "--run",
                               run, "--out", tmp_path / "ev", "--json", "--quiet")
    assert status == 0, err
    assert not [w for w in caught if "trained on" in str(w.message)]
    m = json.loads(out)
    assert sorted(m["per_category"]) == list(CATS) and m["categories"] == list(CATS)
    for key in ("i_auroc", "p_auroc", "i_ap", "i_f1_max", "p_ap", "p_f1_max", "aupro_0.3",
                "mad"):
        vals = [m["per_category"][c][key] for c in CATS]
        assert m[key] == pytest.approx(sum(vals) / 2), key
        assert 0.0 <= m[key] <= 1.0
    assert m["aupro"]["0.3"] == pytest.approx(m["aupro_0.3"])
    assert m["n_test"] == 8
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert written["mad"] == m["mad"]
    for c in CATS:
        assert (tmp_path / "ev" / c / "metrics.json").is_file()
        assert any((tmp_path / "ev" / "maps" / c / "test").rglob("*.tiff"))
    rows = (tmp_path / "ev" / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + 8


def test_eval_categories_table_and_report(data, run, tmp_path, capsys):
    status, out, err = cli(capsys, "eval", "--data", data, "--categories", CATS[1], "--run",
                           run, "--out", tmp_path / "ev", "--quiet")
    assert status == 0, err
    assert "mAD" in out and "I-F1-max" in out and out.splitlines()[-1].startswith("mean")
    from viz.report import metrics_table

    table = metrics_table(json.loads((tmp_path / "ev" / "metrics.json").read_text()))
    assert "<th>mAD</th>" in table and f"<td>{CATS[1]}</td>" in table


def test_one_category_of_a_unified_run_does_not_warn(data, run, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PcadWarning)
        m = evaluate_run(data, CATS[0], run, tmp_path / "one", progress=False)
    assert m["category"] == CATS[0] and "mad" in m


def test_single_category_run_still_warns_on_other_category(data, tmp_path, capsys):
    status, out, err = cli(capsys, "train", "--data", data, "--category", CATS[0],
                           "--detector", "patchcore-rgb", "--image-size", "64", "--out",
                           tmp_path / "r", "--quiet")
    assert status == 0, err
    assert json.loads((tmp_path / "r" / "train.json").read_text())["category"] == CATS[0]
    with pytest.warns(PcadWarning, match="trained on category"):
        evaluate_run(data, CATS[1], tmp_path / "r", tmp_path / "ev", progress=False)


def test_missing_category_is_one_line_error(data, run, tmp_path, capsys):
    for cmd in (["train", "--detector", "patchcore-rgb", "--out", tmp_path / "r"],
                ["eval", "--run", run, "--out", tmp_path / "ev"]):
        status, out, err = cli(capsys, *cmd, "--data", data, "--categories", CATS[0], "nope")
        assert status == 2 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "nope" in lines[0] and all(c in lines[0] for c in CATS)
    assert not (tmp_path / "r").exists() and not (tmp_path / "ev").exists()
    with pytest.raises(InvalidInputError, match="categories there"):
        resolve_categories(data, ["gear", "nope"])


def test_category_and_categories_exclusive(data, run, tmp_path, capsys):
    status, _, err = cli(capsys, "eval", "--data", data, "--run", run, "--out", tmp_path / "e")
    assert status == 2 and "--category" in err and "neither" in err
    with pytest.raises(SystemExit):
        main(["eval", "--data", str(data), "--run", str(run), "--out", str(tmp_path / "e"),
              "--category", "gear", "--categories", "gear"])
    assert "not allowed with" in capsys.readouterr().err


def test_mixed_image_sizes_warn_once(data, tiny_dataset, tmp_path_factory, tmp_path):
    other = tiny_dataset(tmp_path_factory, "mc_small", "cookie", train=2, validation=0,
                         test_good=1, test_defect=1, defects=("dent",), size=(48, 64))
    mixed = tmp_path / "mixed"
    shutil.copytree(data / CATS[0], mixed / CATS[0])
    shutil.copytree(other / "cookie", mixed / "cookie")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = train(mixed, ["cookie", CATS[0]], "patchcore-rgb", tmp_path / "r", CONFIG,
                    progress=False)
    sizes = [w for w in caught if "different image sizes" in str(w.message)]
    assert len(sizes) == 1 and "48x64" in str(sizes[0].message)
    assert "64x64" in str(sizes[0].message)
    sample = next(iter(MVTec3DDataset(mixed, "cookie", "test", modality="rgb")))
    score, amap = det.predict(sample)
    assert amap.shape == (48, 64) and score == score
