"""benchmarks/bench_conditions.py: aggregation and table on a hand-made case, detector
selection, and a tiny quick run (one part, 64 px, btf) with its runs log and resume."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import bench_module

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bc():
    with bench_module("bench_conditions") as module:
        yield module


def _m(i: float | None, p: float, fit: float = 10.0, ms: float = 100.0) -> dict:
    return {"i_auroc": i, "p_auroc": p, "aupro": 0.5, "fit_s": fit, "infer_ms": ms}


def _runs() -> list[dict]:
    # "a": part g over seeds 0 and 1, part h over seed 0 (seed 1 failed); "b": g seed 0
    return [
        {"detector": "a", "part": "g", "seed": 0,
         "metrics": {"standard": _m(0.9, 0.95), "strong": _m(0.7, 0.85, ms=120.0)}},
        {"detector": "a", "part": "g", "seed": 1,
         "metrics": {"standard": _m(1.0, 0.97, fit=12.0), "strong": _m(0.6, 0.93, fit=12.0)}},
        {"detector": "a", "part": "h", "seed": 0,
         "metrics": {"standard": _m(0.8, 0.9), "strong": _m(None, 0.9)}},
        {"detector": "a", "part": "h", "seed": 1, "error": "Traceback\nValueError: boom"},
        {"detector": "b", "part": "g", "seed": 0,
         "metrics": {"standard": _m(0.5, 0.6), "strong": _m(0.55, 0.5)}},
    ]


def _row(rows, det, part, cond, metric):
    found = [r for r in rows if r.get("detector") == det and r.get("part") == part
             and r.get("conditions") == cond and r.get("metric") == metric]
    assert len(found) == 1, (det, part, cond, metric, found)
    return found[0]


def test_aggregate_hand_made_case(bc):
    rows = bc.aggregate(_runs())
    assert _row(rows, "a", "g", "standard", "i_auroc")["value"] == pytest.approx(0.95)
    assert _row(rows, "a", "g", "strong", "i_auroc")["value"] == pytest.approx(0.65)
    drop = _row(rows, "a", "g", "drop", "i_auroc")  # per seed -0.2 and -0.4
    assert drop["value"] == pytest.approx(-0.3)
    assert drop["std"] == pytest.approx(math.sqrt(0.02))
    assert drop["per_seed"] == {"0": pytest.approx(-0.2), "1": pytest.approx(-0.4)}
    assert _row(rows, "a", "g", "standard", "fit_s")["value"] == pytest.approx(11.0)
    assert _row(rows, "a", "g", "strong", "infer_ms")["unit"] == "ms/sample"
    assert not [r for r in rows if r.get("conditions") == "drop" and r["metric"] == "fit_s"]
    # part h: the strong I-AUROC is undefined, so is its drop; the failed seed counts nothing
    assert _row(rows, "a", "h", "drop", "i_auroc")["value"] is None
    assert _row(rows, "a", "h", "standard", "i_auroc")["n"] == 1
    # mean over parts: mean of the per-part means; an undefined part does not count
    mean = _row(rows, "a", "mean", "drop", "i_auroc")
    assert mean["value"] == pytest.approx(-0.3) and mean["n"] == 1
    p = _row(rows, "a", "mean", "drop", "p_auroc")  # g: -0.1, -0.04 -> -0.07; h: 0
    assert p["value"] == pytest.approx(-0.035)
    assert p["per_part"] == {"g": pytest.approx(-0.07), "h": pytest.approx(0.0)}
    assert _row(rows, "b", "mean", "drop", "i_auroc")["value"] == pytest.approx(0.05)
    err = [r for r in rows if r.get("error")]
    assert len(err) == 1 and (err[0]["part"], err[0]["seed"]) == ("h", 1)
    for r in rows:  # the runner's columns
        assert {"benchmark", "case", "value", "unit", "reference", "ratio"} <= set(r)


def test_table(bc, tmp_path, capsys):
    rows = bc.aggregate(_runs())
    table = bc.render_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith(
        "| detector | seeds | I-AUROC std | I-AUROC strong | I-AUROC drop |")
    a = [c.strip() for c in next(x for x in lines if x.startswith("| a |")).strip("|").split("|")]
    # I-AUROC: standard mean of g (0.95) and h (0.8); strong: g only; drop: g only; ± the
    # mean over parts of the std over seeds (g: 0.9 / 1.0, std 0.0707; h: one seed, 0)
    assert a[1] == "2" and a[2:5] == ["0.875 ± 0.035", "0.650 ± 0.071", "-0.300 ± 0.141"]
    assert a[7] == "-0.035" and a[11] == "10.5" and a[12] == "100" and a[13] == "105"
    b = [c.strip() for c in next(x for x in lines if x.startswith("| b |")).strip("|").split("|")]
    assert b[1] == "1" and b[2] == "0.500"  # one seed: no spread
    assert "| I-AUROC drop | g | h |" in table
    assert "| a | -0.300 | - |" in table and "| b | +0.050 | - |" in table
    assert "error: a on h seed 1: ValueError: boom" in table
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"rows": rows + [{"benchmark": "other", "case": "x"}]}))
    assert bc.main(["--table", str(path)]) == 0
    assert capsys.readouterr().out.strip() == table


def test_detector_selection(bc, monkeypatch):
    from pcad.detectors import list_detectors

    monkeypatch.delenv("PCAD_BENCH_DETECTORS", raising=False)
    names = list_detectors()
    chosen = bc.selected_detectors()
    assert chosen[:5] == ["btf", "patchcore-rgb", "synthsup", "pbas", "prototypes-ot"]
    assert set(chosen[5:]) == {n for n in bc.OPTIONAL_DETECTORS if n in names}
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "pbas, btf")
    assert bc.selected_detectors() == ["pbas", "btf"]
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "btf,nope")
    with pytest.raises(ValueError, match="nope"):
        bc.selected_detectors()


def test_quick_run_logs_and_resumes(bc, tmp_path, monkeypatch):
    monkeypatch.setattr(bc, "QUICK", {"train": 3, "validation": 1, "test_good": 2,
                                      "test_defect": 1, "size": (64, 64)})
    monkeypatch.setattr(bc, "PARTS", ("plate",))
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "btf")
    monkeypatch.delenv("PCAD_BENCH_SEEDS", raising=False)
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("PCAD_BENCH_RUNS", str(log))
    monkeypatch.setenv("PCAD_BENCH_DATA", str(tmp_path / "kept"))
    rows = bc.run(quick=True)
    assert not [r for r in rows if r.get("error")], rows
    # the renders are kept where PCAD_BENCH_DATA says, both conditions complete
    for cond in ("standard", "strong"):
        info = json.loads((tmp_path / "kept" / f"data-0-{cond}" / "dataset.json").read_text())
        assert info["complete"] and info["config"].get("conditions", "standard") == cond
    for key in ("i_auroc", "p_auroc", "aupro"):
        std = _row(rows, "btf", "plate", "standard", key)["value"]
        strong = _row(rows, "btf", "plate", "strong", key)["value"]
        assert 0.0 <= std <= 1.0 and 0.0 <= strong <= 1.0
        assert _row(rows, "btf", "plate", "drop", key)["value"] == pytest.approx(strong - std)
    assert _row(rows, "btf", "plate", "standard", "fit_s")["value"] > 0
    assert _row(rows, "btf", "plate", "strong", "infer_ms")["value"] > 0
    # measured in the child: its own peak memory; the run keeps btf's two memory banks
    assert _row(rows, "btf", "plate", "standard", "peak_rss_mb")["value"] > 50
    assert _row(rows, "btf", "plate", "standard", "params")["value"] > 1000
    assert _row(rows, "btf", "plate", "standard", "run_mb")["value"] > 0
    setting = next(r for r in rows if r.get("case") == "setting")
    assert setting["parts"] == ["plate"] and setting["seeds"] == [0]
    logged = bc.load_runs(log)
    assert [(r["detector"], r["part"], r["seed"]) for r in logged] == [("btf", "plate", 0)]

    def no_rendering(*args, **kwargs):
        raise AssertionError("a seed whose runs are all logged was rendered again")

    monkeypatch.setattr(bc, "render", no_rendering)
    again = bc.run(quick=True)
    assert _row(again, "btf", "plate", "drop", "i_auroc")["value"] == \
        _row(rows, "btf", "plate", "drop", "i_auroc")["value"]
