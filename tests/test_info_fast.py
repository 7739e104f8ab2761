"""``pcad info`` without torch: the torch-free backend choice equals the ops' own, the CUDA
devices read from files equal torch's, and ``pcad info`` imports neither torch, numba nor faiss
where the files tell (issue 17, item 7).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pcad.devices import cuda_devices, nvidia_gpus, torch_build
from pcad.errors import PcadError
from pcad.ops.backends import (
    BACKENDS,
    ENV_VAR,
    OP_BACKENDS,
    available_backends,
    installed,
    probe,
    resolve_backend,
    usable,
)

HEAVY = ("torch", "numba", "faiss")
ENV_VALUES = (None, "torch", "numba", "scipy", "fpsample", "torch_cluster", "pointnet2_ops",
              "triton", "fps=numba,knn=torch", "three_nn=scipy,ball_query=triton",
              "knn=pointnet2_ops", "bogus", "fps=")
# the files tell: pcad info then needs no torch
FILES_TELL = torch_build() in ("cpu", "none") or (torch_build() == "cuda"
                                                  and nvidia_gpus() is not None)


def _answer(op: str, device: str, **kwargs: object) -> str:
    try:
        return resolve_backend(op, "auto", device, **kwargs)
    except PcadError as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("interpreted", ["0", "1"])
@pytest.mark.parametrize("env", ENV_VALUES)
def test_static_choice_equals_resolve_backend(env: str | None, interpreted: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if env is None:
        monkeypatch.delenv(ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(ENV_VAR, env)
    monkeypatch.setenv("TRITON_INTERPRET", interpreted)
    for device in ("cpu", "cuda", "cuda:0"):
        for op in OP_BACKENDS:
            assert _answer(op, device, static=True) == _answer(op, device), (op, device, env)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cpu:0", "cuda:1"])
def test_static_backends_equal_the_import_probe(device: str) -> None:
    assert available_backends(device, static=True) == available_backends(torch.device(device))
    for op in OP_BACKENDS:
        assert (available_backends(device, op, static=True)
                == available_backends(torch.device(device), op))
    dev = torch.device(device).type
    for name in BACKENDS:
        assert usable(name, dev, static=True) == usable(name, dev), name
        assert installed(name) == probe(name), name


def test_devices_from_files_equal_torch() -> None:
    build = torch_build()
    if build == "cpu":
        assert torch.version.cuda is None or not torch.cuda.is_available()
    elif build == "cuda":
        assert torch.version.cuda is not None
    names = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
             if torch.cuda.is_available() else [])
    assert cuda_devices() == names


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc files")
def test_nvidia_gpus_reads_the_driver_files(tmp_path: Path) -> None:
    proc, dev = tmp_path / "gpus", tmp_path / "dev"
    dev.mkdir()
    assert nvidia_gpus(proc, dev, env={}) == []  # no driver
    for node in ("dxg", "nvidiactl"):  # WSL, a sandbox hiding /proc: only CUDA can tell
        (dev / node).touch()
        assert nvidia_gpus(proc, dev, env={}) is None
        (dev / node).unlink()

    def gpu(bus: str, model: str, minor: int, excluded: str = "No") -> None:
        (proc / bus).mkdir(parents=True)
        (proc / bus / "information").write_text(
            f"Model: \t\t {model}\nIRQ: \t\t 10\nDevice Minor: \t {minor}\n"
            f"GPU Excluded: \t {excluded}\n")
        (dev / f"nvidia{minor}").touch()

    gpu("0000:02:00.0", "NVIDIA A100", 1)
    gpu("0000:01:00.0", "NVIDIA A100", 0)
    gpu("0000:03:00.0", "NVIDIA A100", 2, excluded="Yes")
    assert nvidia_gpus(proc, dev, env={}) == ["NVIDIA A100"] * 2
    assert nvidia_gpus(proc, dev, env={"CUDA_VISIBLE_DEVICES": "1"}) == ["NVIDIA A100"]
    assert nvidia_gpus(proc, dev, env={"CUDA_VISIBLE_DEVICES": ""}) == []
    assert nvidia_gpus(proc, dev, env={"CUDA_VISIBLE_DEVICES": "GPU-1234"}) is None
    assert nvidia_gpus(proc, dev, env={"CUDA_VISIBLE_DEVICES": "0,5"}) is None
    (dev / "nvidia1").unlink()  # a GPU this process cannot open (a container's)
    assert nvidia_gpus(proc, dev, env={}) == ["NVIDIA A100"]
    gpu("0000:00:05.0", "NVIDIA H200", 3)
    assert nvidia_gpus(proc, dev, env={}) is None  # CUDA numbers the fastest first
    assert (nvidia_gpus(proc, dev, env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
            == ["NVIDIA H200", "NVIDIA A100"])
    (proc / "0000:00:05.0" / "information").write_text("Model: NVIDIA H200\n")
    assert nvidia_gpus(proc, dev, env={}) is None  # no minor number: unexpected


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(not FILES_TELL, reason="only torch can tell this machine's CUDA devices")
@pytest.mark.parametrize("args", [["info"], ["info", "--json"]])
def test_pcad_info_imports_no_torch_numba_faiss(args: list[str]) -> None:
    out = _run("import json, sys\n"
               "from pcad.cli.main import main\n"
               f"status = main({args!r})\n"
               f"print(json.dumps([status, [m for m in {HEAVY!r} if m in sys.modules]]))\n")
    status, heavy = json.loads(out.strip().splitlines()[-1])
    assert status == 0
    assert heavy == []
    if "--json" in args:
        info = json.loads(out[:out.rindex("\n[")])
        assert sorted(info) == ["backends", "devices", "packages", "pcad", "platform", "python"]


def test_pcad_ops_loads_its_ops_lazily() -> None:
    out = _run("import sys, json\n"
               "import pcad.ops.backends\n"
               "first = 'torch' in sys.modules\n"
               "import pcad.ops.knn, pcad.ops.fps\n"
               "import pcad.ops\n"
               "from pcad.ops import fps, knn, BackendUnavailableError\n"
               "print(json.dumps([first, callable(pcad.ops.knn), pcad.ops.fps is fps,\n"
               "                  pcad.ops.knn is knn, 'torch' in sys.modules]))\n")
    assert json.loads(out) == [False, True, True, True, True]
    import pcad.ops

    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        _ = pcad.ops.nonesuch
