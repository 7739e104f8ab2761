"""benchmarks/bench_gpu.py run tiny on the CPU: the op table's rows and exactness, the noise
rows, a detector's fit/inference rows, and the clean skip without CUDA."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_gpu  # noqa: E402

KEYS = {"benchmark", "case", "value", "unit", "reference", "ratio"}
TINY = [
    ("fps", "fps tiny", dict(b=2, n=300, s=16)),
    ("knn", "knn tiny", dict(b=2, m=40, n=300, k=8)),
    ("ball_query", "ball tiny", dict(b=2, m=40, n=300, k=8, r=0.2)),
    ("three_nn", "three_nn tiny", dict(b=2, m=40, n=300)),
]


def test_ops_rows_on_cpu():
    rows = bench_gpu.run_ops("cpu", TINY, backends=("torch", "numba"), repeats=3)
    assert all(KEYS <= r.keys() for r in rows)
    assert [r["benchmark"] for r in rows] == [label for _, label, _ in TINY for _ in (0, 1)]
    for r in rows:
        assert r["case"] in ("torch", "numba") and r["unit"] == "ms"
        assert r["value"] > 0 and len(r["times"]) == 3 and r["device"] == "cpu"
        assert r["exact"] is True, r  # numba is exact on these inputs
        if r["case"] == "torch":
            assert r["ratio"] is None and r["reference"] == "-"
        else:
            assert r["reference"] == "torch" and r["ratio"] > 0
        if r["op"] != "fps":
            assert r["max_abs_d2"] < 1e-6


def test_compare_detects_a_difference():
    want = (torch.zeros(1, 2, 3), torch.arange(6).view(1, 2, 3))
    got = (torch.full((1, 2, 3), 0.5), torch.arange(6).view(1, 2, 3).flip(-1))
    assert bench_gpu._compare(got, want) == (False, 0.5)
    assert bench_gpu._compare(torch.tensor([[0, 2]]), torch.tensor([[0, 1]]))[0] is False


def test_noise_rows_on_cpu():
    rows = bench_gpu.run_noise("cpu", n=5000, n_numba=2000)
    assert [r["case"] for r in rows] == ["pnoise2 torch cpu", "pnoise2 numba CPU",
                                         "pnoise3 torch cpu", "pnoise3 numba CPU"]
    assert all(r["value"] > 0 for r in rows)
    assert rows[0]["max_abs_diff"] < 1e-5 and rows[2]["max_abs_diff"] < 1e-5


def test_run_skips_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    rows = bench_gpu.run(quick=True)
    assert len(rows) == 1 and rows[0]["case"] == "skipped"
    assert "CUDA is not available" in rows[0]["note"]


def test_detector_plan_without_open3d():
    plan = {name: (opts, skip) for name, opts, skip in bench_gpu.detector_plan(False)}
    for name in ("m3dm", "lsfa", "cfm"):
        assert plan[name] == ({"point_backbone": "pointmae"}, None)
    for name in ("btf", "fpfh", "synthsup"):
        assert "Open3D" in plan[name][1]
    assert plan["patchcore-rgb"] == ({}, None)
    # with open3d every FPFH detector runs
    assert all(skip is None for _, _, skip in bench_gpu.detector_plan(True))


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory, "bench_gpu", "plate", train=3, test_good=1,
                        test_defect=1, defects=("dent",))


def test_detector_rows_on_cpu(data):
    rows = bench_gpu.run_detectors(data, "cpu", image_size=64, only=["patchcore-rgb"],
                                   batches=(1, 3))
    cases = [r["case"] for r in rows]
    assert cases == ["fit (3 samples)", "peak GPU memory, fit",
                     "predict_batch vs predict: max relative difference", "inference, batch 1",
                     "inference, batch 3", "peak GPU memory, inference"], rows
    assert rows[0]["value"] > 0 and rows[3]["value"] > 0 and rows[4]["value"] > 0
    assert rows[1]["value"] is None  # no GPU memory on the CPU
    assert rows[2]["value"] == 0.0  # bitwise on the CPU
    assert "predict" in rows[4]["note"]


def test_standalone_writes_json(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--device", "cpu", "--parts", "noise", "--quick",
                           "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["device"] == "cpu" and any(r["case"] == "pnoise2 numba CPU"
                                              for r in payload["rows"])
    printed = capsys.readouterr().out
    assert "pnoise3 torch cpu" in printed and printed.rstrip().endswith(f"to {out}")
