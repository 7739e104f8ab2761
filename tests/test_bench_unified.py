"""benchmarks/bench_unified.py: the child script on a tiny dataset (both settings), the rows,
the unified - per-category gaps and the README table on fabricated results."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import bench_module


@pytest.fixture(scope="module")
def bu():
    with bench_module("bench_unified") as module:
        yield module


def _result(mad_a: float, mad_b: float, fit: float = 2.0) -> dict:
    def block(mad: float, ms: float) -> dict:
        return {**{k: 0.5 for k, _ in (("i_auroc", 0), ("i_ap", 0), ("i_f1_max", 0),
                                        ("p_auroc", 0), ("p_ap", 0), ("p_f1_max", 0),
                                        ("aupro_0.3", 0))}, "mad": mad, "infer_ms": ms}

    return {"fit_s": fit, "train_s": fit / 2, "peak_rss_mb": 321.0,
            "per_category": {"a": block(mad_a, 10.0), "b": block(mad_b, 30.0)}}


@pytest.mark.parametrize("setting", ["per category", "unified"])
def test_child_runs_both_settings(bu, plate_bumps, tmp_path, setting):
    proc = subprocess.run([sys.executable, "-c", bu.CHILD, str(plate_bumps), "patchcore-rgb",
                           str(tmp_path / "w"), "plate", setting],
                          capture_output=True, text=True, cwd=bu.ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(out["per_category"]) == ["plate"]
    block = out["per_category"]["plate"]
    assert {k for k, _ in bu.METRICS} | {"infer_ms"} == set(block)
    assert 0.0 <= block["i_auroc"] <= 1.0 and block["infer_ms"] > 0
    mean7 = sum(block[k] for k, _ in bu.METRICS if k != "mad") / 7
    assert block["mad"] == pytest.approx(mean7)  # mAD: the mean of the seven
    assert out["fit_s"] > 0 and out["peak_rss_mb"] > 50
    assert out["train_s"] is None  # a memory bank has no training loop


def test_rows_gaps_and_table(bu, tmp_path, capsys):
    rows = bu.rows_for("d", "demo", "per category", _result(0.8, 0.6, fit=5.0))
    rows += bu.rows_for("d", "demo", "unified", _result(0.7, 0.6, fit=3.0))
    mad = [r for r in rows if r["metric"] == "mad"]
    assert [r["value"] for r in mad] == [pytest.approx(0.7), pytest.approx(0.65)]
    assert mad[0]["per_category"] == {"a": 0.8, "b": 0.6}
    infer = next(r for r in rows if r["metric"] == "infer_ms")
    assert infer["value"] == pytest.approx(20.0) and infer["unit"] == "ms/sample"
    gap = bu.gaps(rows)
    assert [(r["case"], round(r["value"], 6)) for r in gap] == [
        ("unified - per category mAD", -0.05), ("unified - per category I-AUROC", 0.0)]
    table = bu.render_table(rows + gap).splitlines()
    assert table[0].startswith("| detector | dataset | setting | I-AUROC |")
    assert table[2].startswith("| d | demo | per category | 0.500 |")
    assert table[3].endswith("| 0.650 | 3 | 2 | 20 | 321 |")
    assert len(table) == 4  # the gap rows are not table lines
    path = tmp_path / "u.json"
    path.write_text(json.dumps({"rows": rows}))
    assert bu.main(["--table", str(path)]) == 0
    assert capsys.readouterr().out.strip() == bu.render_table(rows)


def test_selection(bu, monkeypatch):
    monkeypatch.delenv("PCAD_BENCH_DETECTORS", raising=False)
    assert bu.selected(("vitad", "nope"), "PCAD_BENCH_DETECTORS", ["vitad", "btf"]) == ["vitad"]
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "btf, vitad")
    assert bu.selected(bu.DETECTORS, "PCAD_BENCH_DETECTORS", ["vitad", "btf"]) == ["btf",
                                                                                   "vitad"]
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "btf,zzz")
    with pytest.raises(ValueError, match="zzz"):
        bu.selected(bu.DETECTORS, "PCAD_BENCH_DETECTORS", ["btf"])


def test_run_resumes_from_kept_runs(bu, tmp_path, monkeypatch):
    """Every (detector, dataset, setting) kept in PCAD_BENCH_RUNS: nothing renders or runs,
    the rows come from the kept results, and a kept error stays an error row."""
    log = tmp_path / "runs.jsonl"
    kept = [{"detector": "btf", "dataset": "demo", "setting": "per category",
             "result": _result(0.8, 0.6)},
            {"detector": "btf", "dataset": "demo", "setting": "unified", "error": "boom"}]
    log.write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"truncated')
    monkeypatch.setenv("PCAD_BENCH_RUNS", str(log))
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "btf")
    monkeypatch.setenv("PCAD_BENCH_SETS", "demo")
    monkeypatch.setattr(bu, "_render", lambda *a: pytest.fail("rendered a kept dataset"))
    rows = bu.run(quick=True)
    mad = [r for r in rows if r.get("metric") == "mad"]
    assert [(r["setting"], r["value"]) for r in mad] == [("per category", pytest.approx(0.7))]
    assert [r["error"] for r in rows if r.get("case") == "error"] == ["boom"]
