"""The ``triton`` backend of pcad.ops: exact parity with the torch reference.

Without CUDA the kernels run through Triton's interpreter (the root ``conftest.py`` sets
``TRITON_INTERPRET=1`` before Triton is imported), so sizes stay small. With CUDA the same
tests run the compiled kernels on bigger clouds, where FPS splits each item over several
cooperating programs. Every comparison is exact (``torch.equal``): the kernels compute
distances as the reference does and break ties the same way.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from pcad.ops import ball_query, fps, interpolate_features, knn, three_nn  # noqa: E402
from pcad.ops.backends import (  # noqa: E402
    BackendUnavailableError,
    resolve_backend,
    triton_interpreted,
    usable,
)

CUDA = torch.cuda.is_available()
DEVICES = [d for d in ("cpu", "cuda") if usable("triton", d)[0]]
if not DEVICES:
    pytest.skip("triton cannot run here (no CUDA and TRITON_INTERPRET is not 1)",
                allow_module_level=True)
DTYPES = (torch.float32, torch.float64)


def scale(device: str) -> int:
    """Cloud size: small for the interpreter, big enough on CUDA for multi-program FPS."""
    return 5000 if device == "cuda" else 240


def cloud(batch: int, n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, 3, generator=g, dtype=torch.float64).to(dtype)


def grid_cloud(batch: int, n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Integer coordinates in [0, 4): many exactly equal distances and duplicate points."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (batch, n, 3), generator=g).to(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fps_equals_reference(device, dtype):
    n = scale(device)
    pts = cloud(3, n, 1, dtype)
    lengths = torch.tensor([n, n * 2 // 3, 40])
    want = fps(pts, 40, lengths, start="random", seed=5, backend="torch")
    got = fps(pts.to(device), 40, lengths.to(device), start="random", seed=5, backend="triton")
    assert got.device.type == device and got.dtype == torch.int64
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("device", DEVICES)
def test_fps_ties_and_duplicates(device):
    n = scale(device)
    pts = grid_cloud(2, n, 2)  # 64 distinct points: ties everywhere, then repeated points
    want = fps(pts, 80, start=[3, 0], backend="torch")
    got = fps(pts.to(device), 80, start=[3, 0], backend="triton")
    assert torch.equal(got.cpu(), want)
    assert all(row.unique().numel() == 80 for row in got.cpu())  # never picked twice


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 16, 37])
def test_knn_equals_reference(device, dtype, k):
    n = scale(device)
    q, p = cloud(3, 70, 3, dtype), cloud(3, n, 4, dtype)
    ql, pl = torch.tensor([70, 31, 0]), torch.tensor([n, 20, n])  # k > 20 pads item 1
    wd, wi = knn(q, p, k, ql, pl, backend="torch")
    d, i = knn(q.to(device), p.to(device), k, ql.to(device), pl.to(device), backend="triton")
    assert d.dtype == dtype and i.dtype == torch.int64
    assert torch.equal(d.cpu(), wd) and torch.equal(i.cpu(), wi)


@pytest.mark.parametrize("device", DEVICES)
def test_knn_ties_go_to_the_lower_index(device):
    q, p = grid_cloud(2, 50, 5), grid_cloud(2, scale(device), 6)
    wd, wi = knn(q, p, 12, backend="torch")
    d, i = knn(q.to(device), p.to(device), 12, backend="triton")
    assert torch.equal(d.cpu(), wd) and torch.equal(i.cpu(), wi)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pad", ["first", "-1"])
def test_ball_query_equals_reference(device, dtype, pad):
    n = scale(device)
    q, p = cloud(2, 60, 7, dtype), cloud(2, n, 8, dtype)
    ql, pl = torch.tensor([60, 17]), torch.tensor([n, n // 2])
    for radius, k in ((0.08, 8), (0.5, 16)):  # sparse balls, then balls that fill early
        wd, wi = ball_query(q, p, radius, k, ql, pl, pad=pad, backend="torch")
        d, i = ball_query(q.to(device), p.to(device), radius, k, ql.to(device), pl.to(device),
                          pad=pad, backend="triton")
        assert torch.equal(d.cpu(), wd) and torch.equal(i.cpu(), wi)


@pytest.mark.parametrize("device", DEVICES)
def test_three_nn_and_interpolation_equal_reference(device):
    u, kn = cloud(2, 90, 9), cloud(2, scale(device) // 2, 10)
    feats = cloud(2, kn.shape[1], 11)[..., :2]
    wd, wi = three_nn(u, kn, backend="torch")
    d, i = three_nn(u.to(device), kn.to(device), backend="triton")
    assert torch.equal(d.cpu(), wd) and torch.equal(i.cpu(), wi)
    args = (u.to(device), kn.to(device), feats.to(device))  # weights: same device's arithmetic
    want = interpolate_features(*args, backend="torch")
    assert torch.equal(interpolate_features(*args, backend="triton"), want)


def test_auto_picks_triton_on_cuda_only():
    for op in ("fps", "knn", "ball_query", "three_nn"):
        assert resolve_backend(op, "auto", "cpu") != "triton"
        if CUDA:
            assert resolve_backend(op, "auto", "cuda") == "triton"


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    if not triton_interpreted():
        pytest.skip("TRITON_INTERPRET is not set in this process")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
        knn(cloud(1, 5, 0), cloud(1, 9, 1), 2, backend="triton")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("registers", [True, False])
def test_fps_kernels_with_small_tiles(device, registers):
    """Both FPS kernels, with tiles smaller than the items (several tiles per program, or on
    CUDA several programs per item), equal the reference."""
    from pcad.ops._triton import fps_triton

    n = scale(device)
    pts = cloud(2, n, 12).to(device)
    lengths, starts = torch.tensor([n, n - 37]), torch.tensor([4, 0])
    want = fps(pts.cpu(), 50, lengths, start=starts, backend="torch")
    got = fps_triton(pts, 50, lengths, starts, block=64, registers=registers)
    assert torch.equal(got.cpu(), want)
