"""benchmarks/bench_generalization.py: aggregation, table and skip, on fabricated per-run
metrics (no rendering, no fitting)."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import bench_module


@pytest.fixture(scope="module")
def bg():
    with bench_module("bench_generalization") as module:
        yield module


def _runs():
    # detector "a": mesh m1 over 3 seeds, mesh m2 over 2 seeds (one seed failed); "b": m1 only
    runs = []
    for seed, (i, bump, fit) in enumerate(((0.6, 0.5, 10.0), (0.8, 0.7, 12.0), (1.0, 0.9, 14.0))):
        runs.append({"detector": "a", "mesh": "m1", "seed": seed,
                     "metrics": {"i_auroc": i, "p_auroc": 0.9, "aupro": 0.8, "fit_s": fit,
                                 "infer_ms": 100.0, "i_auroc/bump": bump,
                                 "bank_i_auroc/xyz": 0.4 + 0.1 * seed}})
    for seed, i in ((0, 0.5), (1, 0.7)):
        runs.append({"detector": "a", "mesh": "m2", "seed": seed,
                     "metrics": {"i_auroc": i, "p_auroc": 0.95, "aupro": 0.7, "fit_s": 20.0,
                                 "infer_ms": 50.0, "i_auroc/bump": None,
                                 "bank_i_auroc/xyz": 0.6}})
    runs.append({"detector": "a", "mesh": "m2", "seed": 2, "error": "Traceback\nValueError: x"})
    runs.append({"detector": "b", "mesh": "m1", "seed": 0,
                 "metrics": {"i_auroc": 0.3, "p_auroc": 0.5, "aupro": 0.1, "fit_s": 1.0,
                             "infer_ms": 5.0, "i_auroc/bump": 0.25}})
    return runs


def _row(rows, det, mesh, metric):
    found = [r for r in rows if r.get("detector") == det and r.get("mesh") == mesh
             and r.get("metric") == metric]
    assert len(found) == 1, (det, mesh, metric, found)
    return found[0]


def test_mean_and_spread_over_seeds(bg):
    rows = bg.aggregate(_runs())
    r = _row(rows, "a", "m1", "i_auroc")
    assert r["value"] == pytest.approx(0.8)
    assert r["std"] == pytest.approx(0.2)  # sample std of 0.6, 0.8, 1.0
    assert (r["min"], r["max"], r["n"]) == (0.6, 1.0, 3)
    assert r["per_seed"] == {"0": 0.6, "1": 0.8, "2": 1.0}
    assert _row(rows, "a", "m1", "fit_s")["value"] == pytest.approx(12.0)
    assert _row(rows, "a", "m1", "fit_s")["unit"] == "s"
    m2 = _row(rows, "a", "m2", "i_auroc")
    assert m2["value"] == pytest.approx(0.6) and m2["n"] == 2  # the failed seed counts for nothing
    assert m2["std"] == pytest.approx(math.sqrt(0.02))
    assert _row(rows, "b", "m1", "i_auroc")["std"] == 0.0  # one seed: no spread
    # a metric undefined on every seed is None, not 0
    assert _row(rows, "a", "m2", "i_auroc/bump")["value"] is None


def test_mean_over_meshes(bg):
    rows = bg.aggregate(_runs())
    r = _row(rows, "a", "mean", "i_auroc")
    assert r["value"] == pytest.approx(0.7)  # mean of the per-mesh means 0.8 and 0.6
    assert (r["min"], r["max"]) == (pytest.approx(0.6), pytest.approx(0.8))
    assert r["seed_std"] == pytest.approx((0.2 + math.sqrt(0.02)) / 2)
    assert r["per_mesh"] == {"m1": pytest.approx(0.8), "m2": pytest.approx(0.6)}
    # a mesh where the metric is undefined does not pull the mean down
    assert _row(rows, "a", "mean", "i_auroc/bump")["value"] == pytest.approx(0.7)
    assert _row(rows, "a", "mean", "bank_i_auroc/xyz")["value"] == pytest.approx(0.55)
    err = [r for r in rows if r.get("error")]
    assert len(err) == 1 and err[0]["mesh"] == "m2" and err[0]["seed"] == 2
    for r in rows:  # the runner's columns
        assert {"benchmark", "case", "value", "unit", "reference", "ratio"} <= set(r)


def test_table(bg, tmp_path, capsys):
    rows = bg.aggregate(_runs())
    table = bg.render_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| detector | seeds | I-AUROC | P-AUROC | AUPRO@0.3 | bump |")
    a = next(line for line in lines if line.startswith("| a |"))
    cells = [c.strip() for c in a.strip("|").split("|")]
    assert cells[1] == "3"  # the most seeds of a mesh
    assert cells[2] == f"0.700 ± {(0.2 + math.sqrt(0.02)) / 2:.3f} [0.60-0.80]"
    assert cells[3] == "0.925 ± 0.000" and cells[5] == "0.70"
    assert cells[6] == "xyz 0.55" and cells[7] == "16.0" and cells[8] == "75"
    b = next(line for line in lines if line.startswith("| b |"))
    assert "| b | 1 | 0.300 [0.30-0.30] |" in b  # one seed: no spread
    assert "| - |" in b  # no bank for b
    assert "| I-AUROC | m1 | m2 |" in table
    assert "| a | 0.800 ± 0.200 | 0.600 ± 0.141 |" in table
    assert "| b | 0.300 | - |" in table
    assert "error: a on m2 seed 2: ValueError: x" in table
    # the command line reads run.py's JSON file
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"rows": rows + [{"benchmark": "other", "case": "x"}]}))
    assert bg.main(["--table", str(path)]) == 0
    assert capsys.readouterr().out.strip() == table


def test_skip_without_meshes(bg, tmp_path, monkeypatch):
    monkeypatch.setenv("PCAD_MESHES", str(tmp_path / "absent"))
    rows = bg.run(quick=True)
    assert len(rows) == 1 and rows[0]["case"] == "skipped" and rows[0]["value"] is None
    assert "absent" in rows[0]["skipped"]
    assert bg.render_table(rows).startswith("(generalization benchmark skipped")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.md").write_text("no meshes here")
    (tmp_path / "m" / "B.STL").write_text("")
    (tmp_path / "m" / "a.ply").write_text("")
    assert [p.name for p in bg.mesh_files(tmp_path / "m")] == ["a.ply", "B.STL"]


def test_detector_selection(bg, monkeypatch):
    from pcad.detectors import list_detectors

    monkeypatch.delenv("PCAD_BENCH_DETECTORS", raising=False)
    assert bg.selected_detectors() == list_detectors()
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "fpfh, btf")
    assert bg.selected_detectors() == ["fpfh", "btf"]
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "btf,nope")
    with pytest.raises(ValueError, match="nope"):
        bg.selected_detectors()


def test_runs_log_resumes_without_rendering(bg, tmp_path, monkeypatch):
    import trimesh

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    for name in ("a_box", "b_box"):
        trimesh.creation.box(extents=(1.0, 2.0, 3.0)).export(meshes / f"{name}.stl")
    log = tmp_path / "runs.jsonl"
    kept = [{"detector": "btf", "mesh": m, "seed": 0,
             "metrics": {"i_auroc": v, "p_auroc": 0.9, "aupro": 0.8}}
            for m, v in (("a_box", 0.6), ("b_box", 0.8))]
    other = {"detector": "fpfh", "mesh": "a_box", "seed": 0, "metrics": {"i_auroc": 0.1}}
    log.write_text("".join(json.dumps(r) + "\n" for r in [*kept, other]) + '{"detector": "bt')
    assert bg.load_runs(log) == [*kept, other]  # the cut last line is ignored
    monkeypatch.setenv("PCAD_MESHES", str(meshes))
    monkeypatch.setenv("PCAD_BENCH_DETECTORS", "btf")
    monkeypatch.setenv("PCAD_BENCH_RUNS", str(log))

    def no_rendering(*args, **kwargs):
        raise AssertionError("a seed whose runs are all logged was rendered again")

    monkeypatch.setattr("synth.dataset.generate", no_rendering)
    rows = bg.run(quick=True)
    assert _row(rows, "btf", "mean", "i_auroc")["value"] == pytest.approx(0.7)
    assert not [r for r in rows if r.get("detector") == "fpfh"]  # not selected: left out
    setting = next(r for r in rows if r.get("case") == "setting")
    assert setting["seeds"] == [0] and setting["runs"] == kept


def test_seed_selection(bg, monkeypatch):
    monkeypatch.delenv("PCAD_BENCH_SEEDS", raising=False)
    assert bg.selected_seeds((0, 1, 2)) == (0, 1, 2)
    monkeypatch.setenv("PCAD_BENCH_SEEDS", "2, 0")
    assert bg.selected_seeds((0, 1, 2)) == (2, 0)
    monkeypatch.setenv("PCAD_BENCH_SEEDS", "1,x")
    with pytest.raises(ValueError, match="PCAD_BENCH_SEEDS"):
        bg.selected_seeds((0,))
