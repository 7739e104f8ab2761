"""Memory bank: greedy coreset (chunked vs reference), nearest neighbours, PatchCore score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pcad.errors import FileFormatError, InvalidInputError
from pcad.memory import (
    MemoryBank,
    NearestNeighbours,
    coreset_memory_bytes,
    coreset_size,
    faiss_available,
    greedy_coreset,
    greedy_coreset_reference,
    patchcore_image_score,
)

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss not installed")


def _features(n: int, c: int, seed: int = 0, clusters: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c))
    if clusters:
        centres = rng.normal(scale=6.0, size=(clusters, c))
        x = x + centres[rng.integers(0, clusters, n)]
    return x.astype(np.float32)


def _farthest_point_numpy(x: np.ndarray, k: int, start: int) -> np.ndarray:
    """Textbook farthest-point sampling in float64, exact distances."""
    chosen = [start]
    d = np.full(len(x), np.inf)
    for _ in range(k - 1):
        d = np.minimum(d, ((x - x[chosen[-1]]) ** 2).sum(1))
        d[chosen] = -np.inf
        chosen.append(int(np.argmax(d)))
    return np.asarray(chosen)


def _covering_radius(x: np.ndarray, idx: np.ndarray) -> float:
    c = x[idx].astype(np.float64)
    d2 = (x.astype(np.float64) ** 2).sum(1)[:, None] - 2 * x @ c.T + (c**2).sum(1)[None]
    return float(np.sqrt(max(d2.min(1).max(), 0)))


# ----------------------------------------------------------------------------- coreset


@pytest.mark.parametrize("budget_mb", [0.01, 0.2, 256])
@pytest.mark.parametrize(("n", "c", "proj"), [(3000, 200, 64), (2500, 40, 128), (2000, 16, None)])
def test_chunked_coreset_equals_reference(budget_mb, n, c, proj):
    x = _features(n, c, seed=n, clusters=20)
    got = greedy_coreset(x, n=150, projection_dim=proj, seed=3, memory_budget_mb=budget_mb)
    want = greedy_coreset_reference(x, n=150, projection_dim=proj, seed=3)
    assert got.dtype == np.int64 and got.shape == (150,)
    assert np.array_equal(got, want)


def test_coreset_input_forms_agree():
    x = _features(1500, 64, seed=1)
    base = greedy_coreset(x, ratio=0.05, seed=0)
    assert np.array_equal(greedy_coreset(torch.from_numpy(x), ratio=0.05, seed=0), base)
    # float64 input is converted chunk by chunk; the float32 values are the same
    assert np.array_equal(greedy_coreset(x.astype(np.float64), ratio=0.05, seed=0), base)


def test_coreset_without_projection_is_farthest_point_sampling():
    x = _features(800, 8, seed=2, clusters=5)
    got = greedy_coreset(x, n=60, projection_dim=None, seed=7)
    want = _farthest_point_numpy(x.astype(np.float64), 60, int(got[0]))
    assert np.array_equal(got, want)


def test_coreset_seeded_unique_and_sized():
    x = _features(2000, 96, seed=4)
    a = greedy_coreset(x, ratio=0.1, seed=11)
    assert np.array_equal(a, greedy_coreset(x, ratio=0.1, seed=11))
    assert not np.array_equal(a, greedy_coreset(x, ratio=0.1, seed=12))
    assert len(a) == 200 and len(np.unique(a)) == 200
    assert a.min() >= 0 and a.max() < 2000
    everything = greedy_coreset(x[:50], n=50, seed=0)
    assert sorted(everything.tolist()) == list(range(50))
    # duplicated features still give distinct indices
    dup = np.repeat(x[:10], 5, axis=0)
    assert len(np.unique(greedy_coreset(dup, n=40, seed=0))) == 40


def test_coreset_covering_radius_shrinks_with_ratio():
    x = _features(3000, 32, seed=5, clusters=30)
    radii = [_covering_radius(x, greedy_coreset(x, ratio=r, seed=0))
             for r in (0.005, 0.02, 0.05, 0.2)]
    assert all(a > b for a, b in zip(radii, radii[1:], strict=False))
    # greedy k-center beats a random subset of the same size
    rand = np.random.default_rng(0).choice(3000, 150, replace=False)
    assert _covering_radius(x, greedy_coreset(x, n=150, seed=0)) < _covering_radius(x, rand)


def test_coreset_input_errors():
    x = _features(100, 8)
    with pytest.raises(InvalidInputError, match="exactly one"):
        greedy_coreset(x)
    with pytest.raises(InvalidInputError, match="exactly one"):
        greedy_coreset(x, n=5, ratio=0.1)
    with pytest.raises(InvalidInputError, match="n: must be"):
        greedy_coreset(x, n=101)
    with pytest.raises(InvalidInputError, match="ratio"):
        greedy_coreset(x, ratio=1.5)
    with pytest.raises(InvalidInputError, match=r"\(N, C\)"):
        greedy_coreset(x[0], n=1)
    bad = x.copy()
    bad[50, 3] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        greedy_coreset(bad, n=5, memory_budget_mb=0.001)
    with pytest.raises(InvalidInputError, match="NaN"):
        greedy_coreset(bad, n=5, projection_dim=None)
    with pytest.raises(InvalidInputError, match="memory_budget_mb"):
        greedy_coreset(x, n=5, memory_budget_mb=0)


def test_coreset_size_and_memory_estimate():
    assert coreset_size(1000, ratio=0.1) == 100
    assert coreset_size(5, ratio=0.01) == 1
    per_row = coreset_memory_bytes(2_000_000, 1152, 128, 0) / 2_000_000
    assert per_row == (128 + 3) * 4
    assert coreset_memory_bytes(10, 64, 128, 1) == 10 * 67 * 4 + 2**20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_coreset_cuda_matches_cpu():
    x = _features(4000, 64, seed=6)
    cpu = greedy_coreset(x, n=100, seed=0)
    gpu = greedy_coreset(x, n=100, seed=0, device="cuda")
    assert (cpu == gpu).mean() > 0.9  # different BLAS; near-ties may resolve differently


# ----------------------------------------------------------------------------- search


def test_torch_search_matches_brute_force():
    bank, q = _features(700, 24, seed=7), _features(90, 24, seed=8)
    d2, idx = NearestNeighbours(bank, backend="torch", memory_budget_mb=0.05).query(q, k=4)
    full = ((q[:, None].astype(np.float64) - bank[None]) ** 2).sum(-1)
    want = np.argsort(full, axis=1)[:, :4]
    assert np.array_equal(idx, want)
    np.testing.assert_allclose(d2, np.take_along_axis(full, want, 1), rtol=1e-4, atol=1e-3)
    assert d2.dtype == np.float32 and idx.dtype == np.int64


@needs_faiss
@pytest.mark.parametrize("k", [1, 5])
def test_faiss_and_torch_agree(k):
    bank, q = _features(5000, 48, seed=9, clusters=10), _features(700, 48, seed=10, clusters=10)
    fa = NearestNeighbours(bank, backend="faiss")
    to = NearestNeighbours(bank, backend="torch")
    assert NearestNeighbours(bank).backend == "faiss"
    d_f, i_f = fa.query(q, k)
    d_t, i_t = to.query(q, k)
    np.testing.assert_allclose(d_f, d_t, rtol=1e-4, atol=1e-3)
    assert (i_f == i_t).mean() > 0.999  # exact ties aside


def test_search_input_errors():
    nn = NearestNeighbours(_features(20, 4), backend="torch")
    with pytest.raises(InvalidInputError, match="4 columns"):
        nn.query(np.zeros((3, 5)))
    with pytest.raises(InvalidInputError, match="k"):
        nn.query(np.zeros((3, 4)), k=21)
    with pytest.raises(InvalidInputError, match="NaN"):
        nn.query(np.full((1, 4), np.nan))
    with pytest.raises(InvalidInputError, match="backend"):
        NearestNeighbours(_features(20, 4), backend="annoy")
    assert nn.query(np.zeros(4))[0].shape == (1, 1)


# ----------------------------------------------------------------------------- image score


def test_image_score_hand_case():
    bank = np.array([[0, 0], [1, 0], [0, 1], [5, 5]], np.float32)
    patches = np.array([[0.1, 0], [-2, 0], [1, 0.1]], np.float32)
    d2, idx = NearestNeighbours(bank, backend="torch").query(patches, 1)
    score, w = patchcore_image_score(patches, d2, idx, bank, n_reweight=3, return_weight=True)
    # s* = 2 (patch (-2, 0), nearest bank feature m* = (0, 0)); m*'s 3 nearest bank
    # features are m*, (1, 0), (0, 1): drop m*, distances from m_test are 3 and sqrt(5)
    root = math.sqrt(2)
    want_w = 1 - math.exp(2 / root) / (math.exp(3 / root) + math.exp(math.sqrt(5) / root))
    assert w == pytest.approx(want_w, rel=1e-6)
    assert score == pytest.approx(want_w * 2, rel=1e-6)
    assert 0.5 <= w < 1
    # n_reweight <= 1: the plain maximum
    assert patchcore_image_score(patches, d2, idx, bank, n_reweight=1) == pytest.approx(2)


def _reference_score(patch: torch.Tensor, lib: torch.Tensor, n_reweight: int = 3) -> float:
    """rvorias/ind_knn_ad PatchCore.predict (reused by BTF/M3DM), verbatim in substance."""
    dist = torch.cdist(patch, lib)
    min_val, min_idx = torch.min(dist, dim=1)
    s_idx = torch.argmax(min_val)
    s_star = torch.max(min_val)
    m_test = patch[s_idx].unsqueeze(0)
    m_star = lib[min_idx[s_idx]].unsqueeze(0)
    w_dist = torch.cdist(m_star, lib)
    _, nn_idx = torch.topk(w_dist, k=n_reweight, largest=False)
    m_star_knn = torch.linalg.norm(m_test - lib[nn_idx[0, 1:]], dim=1)
    d = torch.sqrt(torch.tensor(patch.shape[1]))
    w = 1 - (torch.exp(s_star / d) / (torch.sum(torch.exp(m_star_knn / d))))
    return float(w * s_star)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_image_score_matches_reference_code(backend):
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss not installed")
    bank = MemoryBank(coreset_ratio=0.25, backend=backend).fit(_features(2000, 64, 11, 15))
    for seed in range(3):
        patches = _features(300, 64, seed=100 + seed, clusters=15)
        want = _reference_score(torch.from_numpy(patches).double(),
                                torch.from_numpy(bank.features).double(), 3)
        assert bank.image_score(patches) == pytest.approx(want, rel=1e-4)
        d2, idx = bank.query(patches)
        brute = patchcore_image_score(patches, d2, idx, bank.features, n_reweight=5)
        assert brute == pytest.approx(_reference_score(
            torch.from_numpy(patches).double(), torch.from_numpy(bank.features).double(), 5),
            rel=1e-4)


# ----------------------------------------------------------------------------- bank


def test_memory_bank_fit_score_save_load(tmp_path):
    train = _features(3000, 40, seed=12, clusters=8)
    bank = MemoryBank(coreset_ratio=0.1, seed=1, backend="torch").fit(train)
    assert len(bank) == 300 and bank.dim == 40
    assert np.array_equal(bank.features, train[bank.indices])
    assert np.array_equal(bank.indices, greedy_coreset(train, ratio=0.1, seed=1))
    test = np.vstack([train[bank.indices[:5]], train[:5] + 20])
    s = bank.score(test)
    assert s.shape == (10,) and s.dtype == np.float32
    np.testing.assert_allclose(s[:5], 0, atol=1e-2)
    assert s[5:].min() > s[:5].max()
    path = tmp_path / "bank"  # no extension: written as given
    bank.save(path)
    again = MemoryBank.load(path)
    assert np.array_equal(again.features, bank.features)
    assert np.array_equal(again.indices, bank.indices)
    assert again.config() == bank.config()
    np.testing.assert_array_equal(again.score(test), s)
    assert MemoryBank.load(path, backend="auto").image_score(test) == pytest.approx(
        bank.image_score(test), rel=1e-5)
    full = MemoryBank(coreset_ratio=1.0).fit(train[:100])
    assert np.array_equal(full.indices, np.arange(100))


def test_memory_bank_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="fit"):
        MemoryBank().score(np.zeros((2, 3)))
    with pytest.raises(InvalidInputError, match="coreset_ratio"):
        MemoryBank(coreset_ratio=0)
    bad = _features(50, 4)
    bad[3] = np.inf
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        MemoryBank(coreset_ratio=1.0).fit(bad)
    with pytest.raises(FileNotFoundError):
        MemoryBank.load(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    np.savez(junk, a=np.zeros(3))
    with pytest.raises(FileFormatError, match="not a pcad memory bank"):
        MemoryBank.load(junk)
