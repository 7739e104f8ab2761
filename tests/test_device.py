"""One ``--device`` for every feature-computing command and every detector (issue 17, item 4;
issue 13, item 3): device names, the flag, detectors' ``device`` option, runs loading on
another device, and ``pcad info``'s op backends. CPU only; the CUDA tests skip without one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pcad.cli.main import build_parser, main
from pcad.data import MVTec3DDataset
from pcad.detectors import create_detector, list_detectors, load_detector
from pcad.detectors.patches import RGBFeatures, check_device, resolve_device
from pcad.errors import InvalidInputError, PcadWarning
from pcad.memory import MemoryBank

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")

#: the minimal arguments of every command that computes features
COMMANDS = {
    "train": ["train", "--data", "d", "--category", "c", "--out", "o"],
    "eval": ["eval", "--data", "d", "--category", "c", "--run", "r", "--out", "o"],
    "demo": ["demo"],
    "pretrain-points": ["pretrain-points", "--data", "d", "--out", "o.pth"],
    "sensitivity": ["sensitivity", "--data", "d", "--category", "c", "--strengths", "0.1",
                    "--out", "o"],
    "predict": ["predict", "--run", "r", "scan.tiff", "-o", "o"],
}


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ------------------------------------------------------------------------------ device names


@pytest.mark.parametrize("name, expected", [("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda"),
                                            ("cuda:0", "cuda:0"), ("cuda:012", "cuda:12")])
def test_check_device_accepts(name: str, expected: str) -> None:
    assert check_device(name) == expected


@pytest.mark.parametrize("bad", ["gpu", "CPU", "cuda:", "cuda:-1", "cuda:1.5", "mps", "", 0,
                                 None, "cuda:\u0661"])
def test_check_device_rejects_with_one_line(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="device: expected 'auto', 'cpu', 'cuda' or "
                                                "'cuda:N'") as exc:
        check_device(bad)
    assert "\n" not in str(exc.value)


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_resolve_cuda_without_cuda_is_one_line(name: str) -> None:
    with pytest.raises(InvalidInputError, match="no CUDA device is available") as exc:
        resolve_device(name)
    assert name in str(exc.value) and "\n" not in str(exc.value)
    assert resolve_device("auto") == torch.device("cpu")


def test_resolve_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InvalidInputError, match=r"'cuda:2'.* 2 CUDA device\(s\) \(cuda:0 to "
                                                r"cuda:1\)"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


# ------------------------------------------------------------------------------- the flag


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:1"])
def test_device_flag_parses(command: str, value: str) -> None:
    parser = build_parser()
    assert parser.parse_args(COMMANDS[command]).device is None  # the detector's / run's own
    assert parser.parse_args([*COMMANDS[command], "--device", value]).device == value


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_device_flag_rejects_a_bad_name(command: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*COMMANDS[command], "--device", "gpu"])
    assert exc.value.code == 2
    assert "argument --device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'" in \
        capsys.readouterr().err


# ------------------------------------------------------------------------------- detectors


@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_takes_a_device(name: str) -> None:
    det = create_detector(name, image_size=64, device="cpu")
    assert det.config["device"] == "cpu" and det.device == torch.device("cpu")
    assert create_detector(name, image_size=64).config["device"] == "auto"
    assert create_detector(name, image_size=64, device="cuda:1").config["device"] == "cuda:1"


@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_rejects_a_bad_device(name: str) -> None:
    with pytest.raises(InvalidInputError, match="device: expected") as exc:
        create_detector(name, image_size=64, device="gpu0")
    assert "\n" not in str(exc.value)


def test_rgb_features_batch_equals_one_by_one() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8) for i in range(3)]
    f = RGBFeatures("effnet-lite0", None, 32, device="cpu")
    batch = f.batch(images, chunk=2)
    assert batch.shape[:2] == (3, 16) and batch.dtype == np.float32
    for i, im in enumerate(images):
        np.testing.assert_allclose(batch[i], f(im), rtol=1e-4, atol=1e-5)
    # on the CPU the default is one image at a time: bitwise what each call gives
    assert f.batch(images).tobytes() == np.stack([f(im) for im in images]).tobytes()


def test_memory_bank_is_not_saved_with_its_device(tmp_path: Path) -> None:
    x = np.random.default_rng(2).normal(size=(300, 8)).astype(np.float32)
    bank = MemoryBank(coreset_ratio=0.2, device="cpu").fit(x)
    bank.save(tmp_path / "bank.npz")
    meta = json.loads(str(np.load(tmp_path / "bank.npz")["meta"]))
    assert meta["config"]["device"] is None
    back = MemoryBank.load(tmp_path / "bank.npz", device="cpu")
    assert back.device == torch.device("cpu")
    assert back.score(x[:20]).tobytes() == bank.score(x[:20]).tobytes()


# ----------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synth.dataset import DatasetConfig, generate

    root = tmp_path_factory.mktemp("device") / "data"
    generate(DatasetConfig(categories=("plate",), train=2, validation=0, test_good=1,
                           test_defect=1, defects=("dent",), size=(32, 32), seed=0),
             root, progress=False)
    return root


@pytest.fixture(scope="module")
def cpu_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """patchcore-rgb trained by ``pcad train --device cpu -o device=cuda:5``: the flag wins."""
    out = tmp_path_factory.mktemp("device") / "run"
    status = main(["train", "--data", str(tiny_data), "--category", "plate", "--detector",
                   "patchcore-rgb", "--out", str(out), "--image-size", "32", "--quiet",
                   "-o", "device=cuda:5", "--device", "cpu"])
    assert status == 0
    return out


def test_flag_overrides_the_option(cpu_run: Path) -> None:
    record = json.loads((cpu_run / "detector.json").read_text())
    assert record["config"]["device"] == "cpu"


def test_run_predicts_identically_when_loaded_again(cpu_run: Path, tiny_data: Path) -> None:
    test = list(MVTec3DDataset(tiny_data, "plate", "test", modality="rgb"))
    first = load_detector(cpu_run, device="cpu")
    again = load_detector(cpu_run, device="cpu")
    assert again.device == torch.device("cpu") and again.bank.device == torch.device("cpu")
    for s in test:
        (a, ma), (b, mb) = first.predict(s), again.predict(s)
        assert np.float64(a).tobytes() == np.float64(b).tobytes()
        assert ma.tobytes() == mb.tobytes()


def test_run_saved_for_a_missing_device_loads_with_auto(cpu_run: Path, tiny_data: Path,
                                                        tmp_path: Path) -> None:
    import shutil

    if CUDA and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    run = tmp_path / "run"
    shutil.copytree(cpu_run, run)
    record = json.loads((run / "detector.json").read_text())
    record["config"]["device"] = "cuda:7"
    (run / "detector.json").write_text(json.dumps(record))
    with pytest.warns(PcadWarning, match="'cuda:7' asked for.*loaded with device 'auto'"):
        det = load_detector(run)
    assert det.config["device"] == "auto"
    sample = next(iter(MVTec3DDataset(tiny_data, "plate", "test", modality="rgb")))
    ref = load_detector(cpu_run, device="cpu").predict(sample)[0]
    assert det.predict(sample)[0] == pytest.approx(ref, rel=1e-5)
    assert load_detector(run, device="cpu").config["device"] == "cpu"  # no warning asked


@pytest.mark.usefixtures("no_cuda")
def test_eval_on_a_missing_cuda_is_one_line(cpu_run: Path, tiny_data: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(capsys, ["eval", "--data", tiny_data, "--category", "plate",
                                   "--run", cpu_run, "--out", tmp_path / "res", "--quiet",
                                   "--device", "cuda:0"])
    assert "'cuda:0' asked for, but no CUDA device is available" in line
    assert not (tmp_path / "res" / "metrics.json").exists()


def test_eval_with_device_cpu(cpu_run: Path, tiny_data: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["eval", "--data", str(tiny_data), "--category", "plate", "--run",
                   str(cpu_run), "--out", str(tmp_path / "res"), "--quiet", "--device", "cpu",
                   "--json"])
    out = capsys.readouterr().out
    assert status == 0 and json.loads(out.strip().splitlines()[-1])["n_test"] == 2


#: small settings per detector (two training samples: no leave-one-out fusion, which btf,
#: m3dm and lsfa use by default and which needs three)
SMALL = {"btf": {"fusion": "joint"}, "cfm": {"epochs": 2},
         "m3dm": {"epochs": 1, "batch_size": 2, "fusion": "sum", "map_fusion": "sum"},
         "lsfa": {"epochs": 1, "batch_size": 2, "fusion": "sum", "map_fusion": "sum",
                  "queue_samples": 1, "global_queue": 2},
         "synthsup": {"variants": 1, "epochs": 1, "hidden": 8, "layers": 2},
         "uniad": {"epochs": 2}, "vitad": {"epochs": 2}, "pbas": {"epochs": 2},
         "fader": {"epochs": 2},
         "prototypes-ot": {"iters": 2}, "onenip": {"epochs": 2, "variants": 1},
         "hetnet": {"epochs": 2}}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_fits_on_a_device_and_predicts_on_the_cpu(
        name: str, device: str, tiny_data: Path, tmp_path: Path) -> None:
    """Fitted on ``device``, saved, loaded with ``device="cpu"``: the same scores (bitwise when
    fitted on the CPU, within float tolerance from CUDA)."""
    import warnings

    from pcad.engine import open_split, train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PcadWarning)  # no validation split: no threshold
        det = train(tiny_data, "plate", name, tmp_path / "run",
                    {"image_size": 32, "device": device, **SMALL.get(name, {})},
                    progress=False)
    assert det.device.type == device
    on_cpu = load_detector(tmp_path / "run", device="cpu")
    assert on_cpu.device == torch.device("cpu")
    for sample in open_split(tiny_data, "plate", "test", on_cpu):
        (a, ma), (b, mb) = det.predict(sample), on_cpu.predict(sample)
        if device == "cpu":
            assert np.float64(a).tobytes() == np.float64(b).tobytes()
            assert ma.tobytes() == mb.tobytes()
        else:
            assert b == pytest.approx(a, rel=1e-3, abs=1e-4)
            np.testing.assert_allclose(mb, ma, rtol=1e-3, atol=1e-3 * float(np.abs(ma).max()))


@needs_cuda
def test_cuda_run_predicts_on_cpu(tiny_data: Path, tmp_path: Path) -> None:
    from pcad.engine import train

    det = train(tiny_data, "plate", "patchcore-rgb", tmp_path / "run",
                {"image_size": 32, "device": "cuda"}, progress=False)
    assert det.bank._nn.device.type == "cuda"
    sample = next(iter(MVTec3DDataset(tiny_data, "plate", "test", modality="rgb")))
    on_cpu = load_detector(tmp_path / "run", device="cpu")
    assert on_cpu.bank._nn.device.type == "cpu"
    assert on_cpu.predict(sample)[0] == pytest.approx(det.predict(sample)[0], rel=1e-3)


# ----------------------------------------------------------------------------------- info


def test_info_reports_the_backends_the_ops_use(capsys: pytest.CaptureFixture[str]) -> None:
    from pcad.ops.backends import OP_BACKENDS, resolve_backend

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    used = info["backends"]["point_ops"]
    assert sorted(used) == (["cpu", "cuda"] if CUDA else ["cpu"])
    for dev, ops in used.items():
        assert ops == {op: resolve_backend(op, "auto", dev) for op in OP_BACKENDS}
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    cpu = used["cpu"]
    assert f"fps {cpu['fps']}, knn {cpu['knn']}" in text


def test_info_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PCAD_OPS_BACKEND", "torch")
    assert main(["info", "--json"]) == 0
    used = json.loads(capsys.readouterr().out)["backends"]["point_ops"]["cpu"]
    assert set(used.values()) == {"torch"}
