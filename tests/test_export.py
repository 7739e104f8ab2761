"""``pcad export``: the TorchScript file gives the run's scores and maps (patchcore-rgb, btf,
cfm, m3dm, lsfa);
detectors that cannot be exported get a one-line error naming them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pcad.calibration import read_calibration
from pcad.data import MVTec3DDataset
from pcad.detectors import load_detector
from pcad.engine import train
from pcad.export import load_export, sample_inputs
from tests.helpers import run_pcad

CATEGORY = "gear"
SIZE = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory, "export_data", CATEGORY, train=2, validation=2,
                        test_good=1, test_defect=1, defects=("dent", "bump"))


@pytest.fixture(scope="module")
def data3(tmp_path_factory, tiny_dataset) -> Path:
    """Three training samples: the zsum / zmax fusions of btf, m3dm and lsfa need them."""
    return tiny_dataset(tmp_path_factory, "export_data3", CATEGORY, train=3, validation=2,
                        test_good=1, test_defect=1, defects=("dent", "bump"))


@pytest.mark.parametrize(("detector", "options"), [
    ("patchcore-rgb", {}), ("btf", {}), ("btf", {"fusion": "zmax"}),
    ("btf", {"fusion": "joint"})])
def test_export_gives_the_runs_scores_and_maps(data, data3, tmp_path, detector, options):
    run = tmp_path / "run"
    if detector == "btf" and options.get("fusion") != "joint":
        data = data3
    train(data, CATEGORY, detector, run, {"image_size": SIZE, **options}, progress=False)
    status, out, err = run_pcad(["export", "--run", str(run), "-o", str(tmp_path / "m.pt")])
    assert status == 0 and err == "" and "exported" in out
    module, info = load_export(tmp_path / "m.pt")
    assert info["detector"] == detector and info["config"]["image_size"] == SIZE
    fused = detector == "btf" and options.get("fusion") != "joint"
    assert (info["fusion"] is not None) == fused
    cal = read_calibration(run)
    assert info["calibration"] == cal.to_dict()
    assert module.threshold == pytest.approx(cal.threshold)
    det = load_detector(run)
    samples = list(MVTec3DDataset(data, CATEGORY, "test"))
    assert len(samples) == 3
    for sample in samples:
        score, amap = det.predict(sample)
        # pcad's inputs for the file: FPFH with the run's neighbours and the part mask
        inputs = sample_inputs(info, sample.xyz)
        with torch.no_grad():
            escore, emap = module(torch.from_numpy(sample.rgb), inputs["xyz_features"],
                                  inputs["part"] if detector == "btf" else None)
        assert float(escore) == pytest.approx(score, rel=1e-4, abs=1e-5)
        assert emap.shape == amap.shape
        np.testing.assert_allclose(emap.numpy(), amap, rtol=1e-4, atol=1e-4 * amap.max())


MULTIMODAL = [("cfm", {"epochs": 2}), ("m3dm", {"epochs": 1}),
              ("lsfa", {"epochs": 1}), ("m3dm", {"epochs": 1, "fusion": "zmax",
                                                 "image_score": "foreground-max"}),
              ("lsfa", {"epochs": 1, "fusion": "ocsvm", "map_fusion": "sum"}),
              ("lsfa", {"epochs": 1, "banks": "triple"}),
              ("lsfa", {"epochs": 1, "banks": "split"}),
              ("m3dm", {"epochs": 1, "fused_balance": "none"})]


@pytest.mark.parametrize(("detector", "options"), MULTIMODAL)
def test_export_of_networks_and_banks_gives_the_runs_scores(data3, tmp_path, detector,
                                                            options):
    """cfm (MLPs), m3dm (UFF + 3 banks), lsfa (adapters + 2 banks): the file's scores and maps
    equal ``predict``'s within 1e-4 relative, the point features passed in by pcad."""
    run = tmp_path / "run"
    train(data3, CATEGORY, detector, run, {"image_size": SIZE, **options}, progress=False)
    status, out, err = run_pcad(["export", "--run", str(run), "-o", str(tmp_path / "m.pt")])
    assert status == 0 and err == "" and "exported" in out
    module, info = load_export(tmp_path / "m.pt")
    assert info["detector"] == detector and info["calibration"] == read_calibration(
        run).to_dict()
    det = load_detector(run)
    samples = list(MVTec3DDataset(data3, CATEGORY, "test"))
    assert len(samples) == 3
    scores, escores = [], []
    for sample in samples:
        score, amap = det.predict(sample)
        inputs = sample_inputs(info, sample.xyz)
        assert inputs["xyz_features"].shape[0] == (SIZE // 8) ** 2
        with torch.no_grad():
            escore, emap = module(torch.from_numpy(sample.rgb), **inputs)
        assert float(escore) == pytest.approx(score, rel=1e-4, abs=1e-5)
        assert emap.shape == amap.shape
        np.testing.assert_allclose(emap.numpy(), amap, rtol=1e-4,
                                   atol=1e-4 * np.abs(amap).max())
        scores.append(score)
        escores.append(float(escore))
    assert np.argsort(scores).tolist() == np.argsort(escores).tolist()


def test_export_refuses_reweighted_bank_scores_in_one_line(data3, tmp_path):
    run = tmp_path / "run"
    train(data3, CATEGORY, "lsfa", run, {"image_size": SIZE, "epochs": 0,
                                          "bank_score": "reweighted"}, progress=False)
    status, _, err = run_pcad(["export", "--run", str(run), "-o", str(tmp_path / "m.pt")])
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "bank_score 'reweighted'" in err and not (tmp_path / "m.pt").exists()


def test_export_refuses_other_detectors_in_one_line(data, tmp_path):
    run = tmp_path / "run"
    train(data, CATEGORY, "fpfh", run, {"image_size": SIZE}, progress=False)
    status, _, err = run_pcad(["export", "--run", str(run), "-o", str(tmp_path / "m.pt")])
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "'fpfh' cannot be exported yet" in err and "patchcore-rgb" in err
    assert not (tmp_path / "m.pt").exists()


def test_export_without_calibration_stores_nan(tmp_path_factory, tiny_dataset, tmp_path):
    data = tiny_dataset(tmp_path_factory, "export_noval", CATEGORY, train=2, validation=0,
                        test_good=1, test_defect=1, defects=("dent",))
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="no decision threshold"):
        train(data, CATEGORY, "patchcore-rgb", run, {"image_size": SIZE}, progress=False)
    assert run_pcad(["export", "--run", str(run), "-o", str(tmp_path / "m.pt")])[0] == 0
    module, info = load_export(tmp_path / "m.pt")
    assert info["calibration"] is None and math.isnan(module.threshold)
