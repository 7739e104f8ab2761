"""Tests of pcad.ops: every available backend against the pure-torch reference, brute-force
checks of the reference itself, properties on small random shapes (hypothesis), errors.

Clouds with ties (integer grids, duplicated points) are used where the semantics promise an
exact tie-break (torch, numba); the other backends are compared on tie-free random clouds.
CUDA tests skip cleanly without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcad.errors import InvalidInputError
from pcad.ops import (
    BackendUnavailableError,
    available_backends,
    ball_query,
    fps,
    gather,
    group,
    interpolate_features,
    knn,
    three_interpolate,
    three_nn,
)
from pcad.ops.backends import ENV_VAR, resolve_backend
from pcad.ops.interpolate import inverse_distance_weights

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device: GPU parity tests skipped")
HYP = settings(max_examples=40, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])

# The triton backend on the CPU is Triton's interpreter: tests/test_ops_triton.py, small sizes.
FPS_CPU = [b for b in available_backends("cpu", "fps") if b not in ("torch", "triton")]
FPS_EXACT_CPU = [b for b in FPS_CPU if b != "fpsample"]
KNN_CPU = [b for b in available_backends("cpu", "knn") if b not in ("torch", "triton")]
BALL_CPU = [b for b in available_backends("cpu", "ball_query") if b not in ("torch", "triton")]
THREE_CPU = [b for b in available_backends("cpu", "three_nn") if b not in ("torch", "triton")]


def cloud(batch: int, n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, n, 3, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def grid_cloud(batch: int, n: int, seed: int) -> torch.Tensor:
    """Integer coordinates in [0, 4): many exact ties and duplicate points."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (batch, n, 3), generator=g).float()


# --- brute-force references in numpy (independent of the torch reference) ---------------------


def np_sq(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(M, 3) x (N, 3) -> (M, N) squared distances, dx*dx + dy*dy + dz*dz in q's dtype."""
    diff = q[:, None, :] - p[None, :, :]
    return diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]


def np_knn(q: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np_sq(q, p)
    cols = np.broadcast_to(np.arange(p.shape[0]), d.shape)
    order = np.lexsort((cols, d), axis=-1)[:, :k]
    return np.take_along_axis(d, order, -1), order


def np_ball(q, p, r2, k, pad_first):
    d = np_sq(q, p)
    out_i = np.full((q.shape[0], k), -1, np.int64)
    out_d = np.full((q.shape[0], k), np.inf, q.dtype)
    for m in range(q.shape[0]):
        hits = np.nonzero(d[m] < r2)[0][:k]
        out_i[m, : hits.size] = hits
        out_d[m, : hits.size] = d[m, hits]
        if pad_first and hits.size:
            out_i[m, hits.size:] = hits[0]
            out_d[m, hits.size:] = d[m, hits[0]]
    return out_d, out_i


def np_fps(p: np.ndarray, s: int, start: int) -> np.ndarray:
    mind = np.full(p.shape[0], np.inf, p.dtype)
    out = [start]
    for _ in range(1, s):
        mind = np.minimum(mind, np_sq(p[out[-1]][None], p)[0])
        mind[out] = -1
        out.append(int(np.argmax(mind)))
    return np.array(out)


# --- fps ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", FPS_EXACT_CPU)
@pytest.mark.parametrize("start", ["first", "random", 3, [1, 2, 0]])
def test_fps_parity_with_reference(backend, start):
    pts = cloud(3, 2000, 0)
    lengths = torch.tensor([2000, 1234, 300])
    want = fps(pts, 150, lengths, start=start, seed=11, backend="torch")
    got = fps(pts, 150, lengths, start=start, seed=11, backend=backend)
    assert got.dtype == torch.int64 and got.shape == (3, 150)
    assert torch.equal(got, want)


def test_fps_reference_matches_numpy_brute_force():
    pts = cloud(2, 400, 1)
    got = fps(pts, 60, torch.tensor([400, 250]), start=[7, 0], backend="torch")
    assert got[0].tolist() == np_fps(pts[0].numpy(), 60, 7).tolist()
    assert got[1].tolist() == np_fps(pts[1, :250].numpy(), 60, 0).tolist()


@pytest.mark.parametrize("backend", FPS_EXACT_CPU)
def test_fps_exact_with_ties_and_duplicates(backend):
    pts = grid_cloud(2, 300, 2)  # 64 distinct positions: duplicates are picked after them
    want = fps(pts, 120, start=[0, 5], backend="torch")
    if backend == "torch_cluster":  # exact ties are broken another way after the roll
        pytest.skip("torch_cluster matches the reference on tie-free clouds only")
    assert torch.equal(fps(pts, 120, start=[0, 5], backend=backend), want)
    assert all(len(set(row.tolist())) == 120 for row in want)


@pytest.mark.skipif("fpsample" not in FPS_CPU, reason="fpsample is not installed")
def test_fpsample_valid_count_and_fps_after_its_own_start():
    pts = cloud(2, 5000, 3)
    lengths = torch.tensor([5000, 3000])
    got = fps(pts, 200, lengths, backend="fpsample")
    assert got.shape == (2, 200) and got.dtype == torch.int64
    for b in range(2):
        row = got[b]
        assert len(set(row.tolist())) == 200
        assert int(row.min()) >= 0 and int(row.max()) < int(lengths[b])
        # documented: the standard FPS sequence from whatever index it started at
        ref = fps(pts[b:b + 1], 200, lengths[b:b + 1], start=int(row[0]), backend="torch")
        assert torch.equal(row, ref[0])


@pytest.mark.skipif("fpsample" not in FPS_CPU, reason="fpsample is not installed")
def test_fpsample_duplicates_fall_back_to_exact():
    pts = grid_cloud(1, 200, 4)
    with pytest.warns(RuntimeWarning, match="repeated"):
        got = fps(pts, 100, backend="fpsample")
    assert len(set(got[0].tolist())) == 100


def _min_dist_sequence(p: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Distance of each selected point (after the first) to the points selected before it."""
    d = np_sq(p[idx], p[idx])
    return np.array([d[s, :s].min() for s in range(1, len(idx))])


@HYP
@given(batch=st.integers(1, 3), n=st.integers(1, 40), data=st.data(),
       grid=st.booleans(), seed=st.integers(0, 10_000))
def test_fps_properties(batch, n, data, grid, seed):
    pts = grid_cloud(batch, n, seed) if grid else cloud(batch, n, seed)
    lengths = torch.tensor(data.draw(st.lists(st.integers(1, n), min_size=batch,
                                              max_size=batch)))
    s = data.draw(st.integers(1, int(lengths.min())))
    want = fps(pts, s, lengths, start="random", seed=seed, backend="torch")
    starts = fps(pts, 1, lengths, start="random", seed=seed, backend="torch")[:, 0]
    for backend in FPS_EXACT_CPU:
        if backend == "torch_cluster" and grid:
            continue
        assert torch.equal(fps(pts, s, lengths, start="random", seed=seed, backend=backend), want)
    for b in range(batch):
        row = want[b].numpy()
        assert row[0] == int(starts[b])
        assert len(set(row.tolist())) == s
        assert row.min() >= 0 and row.max() < int(lengths[b])
        seq = _min_dist_sequence(pts[b].numpy(), row)
        assert np.all(np.diff(seq) <= 0)  # farthest first: the radius never grows


def test_fps_random_start_is_seeded():
    pts = cloud(4, 500, 5)
    a = fps(pts, 10, start="random", seed=3)
    assert torch.equal(a, fps(pts, 10, start="random", seed=3))
    assert torch.equal(a, fps(pts, 10, start="random", seed=torch.Generator().manual_seed(3)))
    assert not torch.equal(a[:, 0], fps(pts, 10, start="random", seed=4)[:, 0])


def test_fps_env_var_forces_backend(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "torch")
    assert resolve_backend("fps", "auto", "cpu") == "torch"
    assert resolve_backend("fps", "numba", "cpu") == "numba"  # an explicit argument wins
    monkeypatch.setenv(ENV_VAR, "fps=numba,knn=torch")
    assert resolve_backend("knn", "auto", "cpu") == "torch"
    assert resolve_backend("fps", "auto", "cpu") == "numba"
    monkeypatch.setenv(ENV_VAR, "fpsample")  # not a knn backend: knn stays on auto
    assert resolve_backend("knn", "auto", "cpu") == available_backends("cpu", "knn")[0]
    monkeypatch.setenv(ENV_VAR, "pointnet2_ops")
    with pytest.raises(BackendUnavailableError, match="PCAD_OPS_BACKEND"):
        fps(cloud(1, 10, 0), 2)
    monkeypatch.setenv(ENV_VAR, "nope")
    with pytest.raises(InvalidInputError, match="PCAD_OPS_BACKEND"):
        fps(cloud(1, 10, 0), 2)
    monkeypatch.setenv(ENV_VAR, "fps:numba")
    with pytest.raises(InvalidInputError, match="PCAD_OPS_BACKEND"):
        fps(cloud(1, 10, 0), 2)


def test_auto_picks_fast_exact_cpu_backends(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_backend("fps", "auto", "cpu") == "numba"
    assert resolve_backend("knn", "auto", "cpu") == "numba"
    assert resolve_backend("ball_query", "auto", "cpu") == "numba"
    assert available_backends("cpu")[0] == "torch"
    assert "pointnet2_ops" not in available_backends("cpu")


def test_backend_errors():
    pts = cloud(1, 10, 0)
    with pytest.raises(BackendUnavailableError, match="cuda"):
        fps(pts, 2, backend="pointnet2_ops")
    with pytest.raises(InvalidInputError, match="does not implement knn"):
        knn(pts, pts, 2, backend="fpsample")
    with pytest.raises(InvalidInputError, match="unknown backend"):
        knn(pts, pts, 2, backend="faster")
    with pytest.raises(InvalidInputError, match="op"):
        available_backends("cpu", op="sort")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(points=np.zeros((1, 5, 3), np.float32)), "torch.Tensor.*from_numpy"),
        (dict(points=torch.zeros(5, 3)), r"points: expected shape \(B, N, 3\)"),
        (dict(points=torch.zeros(1, 5, 2)), r"points: expected shape \(B, N, 3\)"),
        (dict(points=torch.zeros(1, 5, 3, dtype=torch.int64)), "points: expected a floating"),
        (dict(points=torch.full((1, 5, 3), float("nan"))), "points: NaN"),
        (dict(n_samples=0), "n_samples: must be >= 1"),
        (dict(n_samples=2.0), "n_samples: expected an integer"),
        (dict(n_samples=6), "n_samples: 6 is more than"),
        (dict(lengths=torch.tensor([5, 2])), r"lengths: expected shape \(1,\)"),
        (dict(lengths=torch.tensor([6])), r"lengths: values must lie in \[0, 5\]"),
        (dict(lengths=torch.tensor([2.0])), "lengths: expected an integer dtype"),
        (dict(lengths=torch.tensor([2])), "lengths: item 0 has 2 points, fewer than"),
        (dict(start="middle"), "start: expected"),
        (dict(start="random"), "seed: start='random' needs"),
        (dict(start=5), r"start: index 5 of item 0 is outside \[0, 5\)"),
        (dict(start=[0, 1]), "start: expected 1 integers"),
        (dict(backend=3), "backend: expected a string"),
    ],
)
def test_fps_errors(kwargs, match):
    args = dict(points=torch.rand(1, 5, 3), n_samples=3) | kwargs
    with pytest.raises(InvalidInputError, match=match):
        fps(**args)


def test_fps_float64_numba_matches_reference():
    pts = cloud(2, 700, 6, torch.float64)
    assert torch.equal(fps(pts, 50, backend="numba"), fps(pts, 50, backend="torch"))


def test_fps_edge_sizes():
    one = torch.rand(1, 1, 3)
    assert fps(one, 1).tolist() == [[0]]
    pts = cloud(2, 7, 7)
    for backend in ["torch", *FPS_CPU]:
        got = fps(pts, 7, backend=backend)
        assert sorted(got[0].tolist()) == list(range(7))


# --- knn ---------------------------------------------------------------------------------------


def _ragged_pair():
    q = cloud(3, 700, 10)
    p = cloud(3, 1500, 11)
    return q, p, torch.tensor([700, 90, 0]), torch.tensor([1500, 7, 400])


def test_knn_reference_matches_brute_force():
    q, p, ql, pl = _ragged_pair()
    d, i = knn(q, p, 9, ql, pl, backend="torch")
    for b in range(3):
        m, n = int(ql[b]), int(pl[b])
        kk = min(9, n)
        if m:
            wd, wi = np_knn(q[b, :m].numpy(), p[b, :n].numpy(), kk)
            np.testing.assert_array_equal(d[b, :m, :kk].numpy(), wd)
            np.testing.assert_array_equal(i[b, :m, :kk].numpy(), wi)
        assert bool((i[b, :, kk:] == -1).all()) and bool(torch.isinf(d[b, :, kk:]).all())
        assert bool((i[b, m:] == -1).all()) and bool(torch.isinf(d[b, m:]).all())


@pytest.mark.parametrize("backend", KNN_CPU)
@pytest.mark.parametrize("k", [1, 16, 40])
def test_knn_parity_with_reference(backend, k):
    q, p, ql, pl = _ragged_pair()
    wd, wi = knn(q, p, k, ql, pl, backend="torch")
    d, i = knn(q, p, k, ql, pl, backend=backend)
    assert d.dtype == torch.float32 and i.dtype == torch.int64 and d.shape == (3, 700, k)
    assert torch.equal(d, wd)
    assert torch.equal(i, wi)


@HYP
@given(batch=st.integers(1, 2), m=st.integers(1, 25), n=st.integers(1, 30),
       k=st.integers(1, 12), grid=st.booleans(), seed=st.integers(0, 10_000))
def test_knn_properties(batch, m, n, k, grid, seed):
    q = grid_cloud(batch, m, seed) if grid else cloud(batch, m, seed)
    p = grid_cloud(batch, n, seed + 1) if grid else cloud(batch, n, seed + 1)
    wd, wi = knn(q, p, k, backend="torch")
    kk = min(k, n)
    for b in range(batch):
        bd, bi = np_knn(q[b].numpy(), p[b].numpy(), kk)
        np.testing.assert_array_equal(wd[b, :, :kk].numpy(), bd)
        np.testing.assert_array_equal(wi[b, :, :kk].numpy(), bi)
    for backend in KNN_CPU:
        d, i = knn(q, p, k, backend=backend)
        assert torch.equal(d, wd)
        if backend == "numba" or not grid:  # the others may keep another tied index
            assert torch.equal(i, wi)


def test_knn_float64_and_self_query():
    p = cloud(2, 300, 12, torch.float64)
    d, i = knn(p, p, 3)
    assert d.dtype == torch.float64
    assert torch.equal(i[..., 0], torch.arange(300).expand(2, -1))
    assert bool((d[..., 0] == 0).all())
    wd, wi = knn(p, p, 3, backend="torch")
    assert torch.equal(d, wd) and torch.equal(i, wi)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(k=0), "k: must be >= 1"),
        (dict(points=torch.rand(2, 5, 3)), "points: batch size 2 differs"),
        (dict(query=torch.rand(1, 4, 4)), r"query: expected shape \(B, N, 3\)"),
        (dict(query_lengths=torch.tensor([5])), r"query_lengths: values must lie in \[0, 4\]"),
        (dict(point_lengths=torch.tensor([-1])), r"point_lengths: values must lie"),
        (dict(points=[[0.0, 0, 0]]), "points: expected a torch.Tensor"),
    ],
)
def test_knn_errors(kwargs, match):
    args = dict(query=torch.rand(1, 4, 3), points=torch.rand(1, 5, 3), k=2) | kwargs
    with pytest.raises(InvalidInputError, match=match):
        knn(**args)


# --- ball query --------------------------------------------------------------------------------


@pytest.mark.parametrize("pad", ["first", "-1"])
def test_ball_query_reference_matches_brute_force(pad):
    q, p, ql, pl = _ragged_pair()
    r2 = np.float32(0.3) * np.float32(0.3)
    d, i = ball_query(q, p, 0.3, 12, ql, pl, pad=pad, backend="torch")
    for b in range(3):
        m, n = int(ql[b]), int(pl[b])
        if m and n:
            wd, wi = np_ball(q[b, :m].numpy(), p[b, :n].numpy(), r2, 12, pad == "first")
            np.testing.assert_array_equal(d[b, :m].numpy(), wd)
            np.testing.assert_array_equal(i[b, :m].numpy(), wi)
        assert bool((i[b, m:] == -1).all())
    assert bool((i[1, :90] == -1).any())  # 7 points: some balls are empty
    assert bool((d[i >= 0] < r2).all())


@pytest.mark.parametrize("backend", BALL_CPU)
@pytest.mark.parametrize("pad", ["first", "-1"])
@pytest.mark.parametrize("radius", [0.05, 0.3, 5.0])
def test_ball_query_parity_with_reference(backend, pad, radius):
    q, p, ql, pl = _ragged_pair()
    wd, wi = ball_query(q, p, radius, 24, ql, pl, pad=pad, backend="torch")
    d, i = ball_query(q, p, radius, 24, ql, pl, pad=pad, backend=backend)
    assert torch.equal(i, wi)
    assert torch.equal(d, wd)


@HYP
@given(m=st.integers(1, 20), n=st.integers(1, 40), k=st.integers(1, 10),
       radius=st.sampled_from([0.5, 1.0, 1.5, 2.0]), seed=st.integers(0, 10_000))
def test_ball_query_properties(m, n, k, radius, seed):
    q, p = grid_cloud(1, m, seed), grid_cloud(1, n, seed + 1)  # points exactly on the sphere
    for pad in ("first", "-1"):
        wd, wi = ball_query(q, p, radius, k, pad=pad, backend="torch")
        bd, bi = np_ball(q[0].numpy(), p[0].numpy(), np.float32(radius) ** 2, k, pad == "first")
        np.testing.assert_array_equal(wi[0].numpy(), bi)
        np.testing.assert_array_equal(wd[0].numpy(), bd)
        for backend in BALL_CPU:
            d, i = ball_query(q, p, radius, k, pad=pad, backend=backend)
            assert torch.equal(i, wi) and torch.equal(d, wd)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(radius=0), "radius: must be finite and > 0"),
        (dict(radius=float("inf")), "radius: must be finite"),
        (dict(radius="big"), "radius: expected a number"),
        (dict(k=0), "k: must be >= 1"),
        (dict(pad="zero"), "pad: expected one of"),
    ],
)
def test_ball_query_errors(kwargs, match):
    args = dict(query=torch.rand(1, 4, 3), points=torch.rand(1, 5, 3), radius=0.2, k=2) | kwargs
    with pytest.raises(InvalidInputError, match=match):
        ball_query(**args)


# --- gather / group ----------------------------------------------------------------------------


def test_gather_and_group():
    values = torch.arange(24.0).view(2, 4, 3).requires_grad_()
    idx = torch.tensor([[[3, -1], [0, 0]], [[1, 2], [-1, -1]]])
    out = gather(values, idx)
    assert out.shape == (2, 2, 2, 3)
    assert torch.equal(out[0, 0, 0], values[0, 3].detach())
    assert bool((out[0, 0, 1] == 0).all()) and bool((out[1, 1] == 0).all())
    out.sum().backward()
    assert values.grad[0, 0].tolist() == [2.0, 2.0, 2.0] and values.grad[0, 1].sum() == 0
    centers = torch.ones(2, 2, 3)
    grouped = group(values.detach(), idx, centers=centers)
    assert torch.equal(grouped[0, 0, 0], values[0, 3].detach() - 1)
    assert bool((grouped[0, 0, 1] == 0).all())  # padding stays zero, not -center
    ints = gather(torch.arange(8).view(1, 4, 2), torch.tensor([[-1, 1]]))
    assert ints.tolist() == [[[0, 0], [2, 3]]]


def test_gather_group_errors():
    v = torch.rand(1, 4, 3)
    with pytest.raises(InvalidInputError, match="idx: entries must be < 4"):
        gather(v, torch.tensor([[4]]))
    with pytest.raises(InvalidInputError, match="idx: expected an integer"):
        gather(v, torch.tensor([[1.0]]))
    with pytest.raises(InvalidInputError, match=r"idx: expected shape \(1, ...\)"):
        gather(v, torch.tensor([[1], [2]]))
    with pytest.raises(InvalidInputError, match=r"values: expected shape \(B, N, C\)"):
        gather(torch.rand(4, 3), torch.tensor([[1]]))
    with pytest.raises(InvalidInputError, match=r"idx: expected shape \(B, M, K\)"):
        group(v, torch.tensor([[1]]))
    with pytest.raises(InvalidInputError, match="centers: expected shape"):
        group(v, torch.tensor([[[1]]]), centers=torch.zeros(1, 2, 3))


# --- interpolation -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", THREE_CPU)
def test_three_nn_parity(backend):
    u, k = cloud(2, 500, 20), cloud(2, 200, 21)
    lengths = torch.tensor([200, 2])
    wd, wi = three_nn(u, k, known_lengths=lengths, backend="torch")
    d, i = three_nn(u, k, known_lengths=lengths, backend=backend)
    assert torch.equal(d, wd) and torch.equal(i, wi)
    assert bool((wi[1, :, 2] == -1).all())  # only 2 known points
    kd, ki = knn(u, k, 3, point_lengths=lengths, backend="torch")
    assert torch.equal(kd, wd) and torch.equal(ki, wi)


def test_interpolation_weights_sum_to_one():
    u, k = cloud(2, 300, 22), cloud(2, 100, 23)
    d2, idx = three_nn(u, k, known_lengths=torch.tensor([100, 2]))
    for power in (1, 2):
        w = inverse_distance_weights(d2, idx, power=power)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 300))
        assert bool((w[idx < 0] == 0).all())
        assert bool((w[..., 0] >= w[..., 1]).all())  # nearer neighbours weigh more


def test_interpolate_features():
    known, unknown = cloud(2, 80, 24), cloud(2, 30, 25)
    feats = torch.randn(2, 80, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = interpolate_features(unknown, known, feats, unknown_lengths=torch.tensor([30, 10]))
    assert out.shape == (2, 30, 4)
    assert bool((out[1, 10:] == 0).all())  # padded unknown rows
    d2, idx = three_nn(unknown, known)
    w = 1.0 / (d2 + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    manual = (gather(feats.detach(), idx) * w[..., None]).sum(2)
    torch.testing.assert_close(out[0], manual[0])
    out.sum().backward()
    assert feats.grad is not None and bool(torch.isfinite(feats.grad).all())
    # a known point at the query takes (nearly) all the weight
    same = interpolate_features(known[:, :5], known, feats.detach())
    torch.testing.assert_close(same, feats.detach()[:, :5], rtol=1e-5, atol=1e-5)
    ones = interpolate_features(unknown, known, torch.ones(2, 80, 3), power=1)
    torch.testing.assert_close(ones, torch.ones(2, 30, 3))


def test_three_interpolate_and_errors():
    feats = torch.tensor([[[1.0], [3.0], [5.0]]])
    idx = torch.tensor([[[0, 2, -1]]])
    out = three_interpolate(feats, idx, torch.tensor([[[0.25, 0.75, 0.5]]]))
    assert out.tolist() == [[[4.0]]]
    with pytest.raises(InvalidInputError, match="weights: expected the shape of idx"):
        three_interpolate(feats, idx, torch.ones(1, 1, 2))
    with pytest.raises(InvalidInputError, match="features: expected shape"):
        interpolate_features(torch.rand(1, 2, 3), torch.rand(1, 3, 3), torch.rand(1, 4, 2))
    with pytest.raises(InvalidInputError, match="known_lengths: every item"):
        interpolate_features(torch.rand(1, 2, 3), torch.rand(1, 3, 3), torch.rand(1, 3, 2),
                             known_lengths=torch.tensor([0]))


# --- CUDA --------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("backend", available_backends("cuda", "fps") if CUDA else [])
def test_cuda_fps_parity(backend):
    pts = cloud(3, 3000, 30).cuda()
    lengths = torch.tensor([3000, 2000, 500])
    want = fps(pts.cpu(), 128, lengths, backend="torch")
    got = fps(pts, 128, lengths.cuda(), backend=backend)
    assert got.device.type == "cuda" and got.dtype == torch.int64
    if backend == "torch":
        assert torch.equal(got.cpu(), want)
    else:  # fused multiply-adds in the CUDA kernels: compare the selection radii
        for b in range(3):
            p = pts[b].cpu().numpy()
            np.testing.assert_allclose(_min_dist_sequence(p, got[b].cpu().numpy()),
                                       _min_dist_sequence(p, want[b].numpy()), rtol=1e-4)


@needs_cuda
@pytest.mark.parametrize("backend", available_backends("cuda", "knn") if CUDA else [])
def test_cuda_knn_parity(backend):
    q, p, ql, pl = _ragged_pair()
    wd, wi = knn(q, p, 16, ql, pl, backend="torch")
    d, i = knn(q.cuda(), p.cuda(), 16, ql.cuda(), pl.cuda(), backend=backend)
    torch.testing.assert_close(d.cpu(), wd, rtol=1e-5, atol=1e-6)
    assert (i.cpu() == wi).float().mean() > 0.999


@needs_cuda
@pytest.mark.parametrize("backend", available_backends("cuda", "ball_query") if CUDA else [])
def test_cuda_ball_query_parity(backend):
    q, p, ql, pl = _ragged_pair()
    wd, wi = ball_query(q, p, 0.3, 16, ql, pl, backend="torch")
    d, i = ball_query(q.cuda(), p.cuda(), 0.3, 16, ql.cuda(), pl.cuda(), backend=backend)
    assert (i.cpu() == wi).float().mean() > 0.999


@needs_cuda
@pytest.mark.parametrize("backend", available_backends("cuda", "three_nn") if CUDA else [])
def test_cuda_three_nn_parity(backend):
    u, k = cloud(2, 500, 31), cloud(2, 200, 32)
    wd, wi = three_nn(u, k, backend="torch")
    d, i = three_nn(u.cuda(), k.cuda(), backend=backend)
    torch.testing.assert_close(d.cpu(), wd, rtol=1e-5, atol=1e-6)
    assert (i.cpu() == wi).float().mean() > 0.999
