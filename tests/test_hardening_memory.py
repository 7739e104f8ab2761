"""Issue 18, Must 8: normals and neighbour queries of large clouds run in batches.

The batched path must give exactly the bytes of the all-at-once computation (checked against
a copy of the former implementation and across batch sizes, on clouds that span many
batches), and its memory must grow by far less per point than the all-at-once (N, k, 3)
neighbour arrays did (tracemalloc: a behavioural memory test, no timing).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree

import pcad.geometry.normals as nm
from pcad.errors import InvalidInputError
from pcad.geometry import estimate_normals, organized_normals, orient_outward
from pcad.geometry.normals import knn_chunks
from synth import apply_defect

# ----------------------------------------------------------------------------- helpers


def sphere(n: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)


def box_with_ties(n: int, seed: int = 0) -> np.ndarray:
    """Points on a cube's faces rounded to a 0.02 grid: duplicates and equal distances."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-1, 1, size=(n, 3))
    face = rng.integers(3, size=n)
    p[np.arange(n), face] = np.sign(p[np.arange(n), face])
    return np.round(p, 2).astype(np.float32)


def plate(nx: int, ny: int) -> np.ndarray:
    """A flat grid: every normal is the same, every graph weight ties."""
    g = np.stack(np.meshgrid(np.arange(float(nx)), np.arange(float(ny))), -1).reshape(-1, 2)
    return np.column_stack([g, np.zeros(len(g))]).astype(np.float32)


def reference_propagate(normals: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """The former all-at-once ``_propagate`` (COO graph of every kNN edge, copied MST)."""
    n = normals.shape[0]
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    cols = nbrs.ravel()
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    dots = np.einsum("ij,ij->i", normals[rows], normals[cols])
    graph = coo_matrix((1.0 - np.abs(dots) + 1e-6, (rows, cols)), shape=(n, n)).tocsr()
    forest = minimum_spanning_tree(graph)
    n_comp, labels = connected_components(forest, directed=False)
    _, roots = np.unique(labels, return_index=True)
    forest = forest.tocoo()
    r = np.concatenate([forest.row, np.full(n_comp, n)])
    c = np.concatenate([forest.col, roots])
    tree = coo_matrix((np.ones(r.shape[0]), (r, c)), shape=(n + 1, n + 1)).tocsr()
    _, pred = breadth_first_order(tree, n, directed=False, return_predecessors=True)
    parent = pred[:n].copy()
    parent[roots] = roots
    sign = np.where(np.einsum("ij,ij->i", normals, normals[parent]) < 0, -1, 1).astype(np.int8)
    sign[roots] = 1
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        sign = sign * sign[parent]
        parent = grand
    normals *= sign[:, None]
    return labels


def reference_normals(points: np.ndarray, k: int = 30, orient: str = "outward",
                      viewpoint: list[float] | None = None) -> np.ndarray:
    """The former ``estimate_normals``: every point's neighbours queried at once."""
    pts = points.astype(np.float64)
    k = min(k, pts.shape[0] - 1)
    _, nbrs = cKDTree(pts).query(pts, k=k + 1, workers=-1)
    normals = nm._pca_normals(pts, nbrs)
    if orient == "outward":
        labels = reference_propagate(normals, nbrs[:, : min(k, nm._ORIENT_K) + 1])
        nm._outward_flip(pts, normals, labels)
    elif orient == "viewpoint":
        vp = np.asarray(viewpoint, np.float64)
        normals[np.einsum("ij,ij->i", normals, vp - pts) < 0] *= -1
    return nm._f32(normals)


# ----------------------------------------------------------------------------- exactness


def test_knn_chunks_equal_one_query() -> None:
    p = sphere(5000, 1).astype(np.float64)
    tree = cKDTree(p)
    dist, idx = tree.query(p, k=9)
    got = list(knn_chunks(tree, p, 9, chunk_size=700))
    assert [s for s, _, _ in got] == list(range(0, 5000, 700))
    assert np.array_equal(np.concatenate([d for _, d, _ in got]), dist)
    assert np.array_equal(np.concatenate([i for _, _, i in got]), idx)
    one = np.concatenate([d for _, d, _ in knn_chunks(tree, p, 1, chunk_size=999)])
    assert one.shape == (5000, 1) and np.array_equal(one[:, 0], tree.query(p, k=1)[0])


@pytest.mark.parametrize("bad", [0, -5, 2.5, "many"])
def test_chunk_size_is_checked(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="chunk_size"):
        estimate_normals(sphere(100), chunk_size=bad)  # type: ignore[arg-type]


def test_chunked_normals_equal_former_on_50k_points() -> None:
    """50k points in batches of 3000 (17 batches) == one batch == the former code."""
    p = sphere(50_000, 2)
    ref = reference_normals(p)
    small = estimate_normals(p, chunk_size=3000)
    one = estimate_normals(p, chunk_size=10**9)
    assert small.tobytes() == one.tobytes() == ref.tobytes()
    assert small.tobytes() == estimate_normals(p).tobytes()  # default batch size


@pytest.mark.parametrize("orient", ["outward", "none", "viewpoint"])
@pytest.mark.parametrize("cloud", ["box_with_ties", "plate"])
def test_chunked_normals_equal_former_with_ties(cloud: str, orient: str) -> None:
    """Duplicates and equal weights: the graph's edge order decides Kruskal's ties."""
    p = box_with_ties(20_000) if cloud == "box_with_ties" else plate(150, 120)
    vp = [0.0, 0.0, 5.0] if orient == "viewpoint" else None
    ref = reference_normals(p, orient=orient, viewpoint=vp)
    for chunk in (1111, 10**9):
        got = estimate_normals(p, orient=orient, viewpoint=vp, chunk_size=chunk)
        assert got.tobytes() == ref.tobytes(), chunk


def test_chunked_spanning_forest_equals_full_graph() -> None:
    """The graph without reverse duplicates has the former graph's minimum spanning forest."""
    p = box_with_ties(15_000, 3).astype(np.float64)
    normals = nm._pca_normals(p, cKDTree(p).query(p, k=31)[1])
    nbrs = cKDTree(p).query(p, k=11)[1]
    n = len(p)
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    cols = nbrs.ravel()
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    dots = np.einsum("ij,ij->i", normals[rows], normals[cols])
    full = coo_matrix((1.0 - np.abs(dots) + 1e-6, (rows, cols)), shape=(n, n)).tocsr()
    graph = nm._knn_graph(normals, nbrs.astype(np.int32), 997)
    assert graph.nnz < full.nnz  # mutual neighbours are stored once
    a = minimum_spanning_tree(full)
    b = minimum_spanning_tree(graph, overwrite=True)
    for attr in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(a, attr), getattr(b, attr)), attr


def test_chunked_orient_outward_equals_one_batch() -> None:
    p = sphere(30_000, 4)
    rough = np.random.default_rng(5).normal(size=p.shape)
    ref_n = rough.astype(np.float32).astype(np.float64)  # as orient_outward reads it
    _, nbrs = cKDTree(p.astype(np.float64)).query(p.astype(np.float64), k=11, workers=-1)
    labels = reference_propagate(ref_n, nbrs)
    nm._outward_flip(p.astype(np.float64), ref_n, labels)
    got = orient_outward(p, rough, chunk_size=2500)
    assert got.tobytes() == nm._f32(ref_n).tobytes()
    assert got.tobytes() == orient_outward(p, rough).tobytes()


def test_organized_fallback_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pixels without a usable pair of neighbours take kNN normals, batch after batch."""
    v, u = np.mgrid[0:120, 0:120].astype(np.float32)
    xyz = np.stack([u, v, 50 + 0.01 * u * v], -1)
    xyz[(np.add.outer(np.arange(120), np.arange(120)) % 2) == 1] = 0  # checkerboard holes
    one = organized_normals(xyz)
    monkeypatch.setattr(nm, "QUERY_CHUNK", 333)
    assert organized_normals(xyz).tobytes() == one.tobytes()


@pytest.mark.parametrize("defect", ["hole", "crack", "bump"])
def test_apply_defect_identical_in_batches(defect: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Normals and the rim queries of removed structure give the same result in batches."""
    p = sphere(20_000, 6)
    one = apply_defect(p, defect, seed=1)
    monkeypatch.setattr(nm, "QUERY_CHUNK", 1500)
    got = apply_defect(p, defect, seed=1)
    for attr in ("points", "mask", "offsets", "normals", "removed"):
        assert getattr(got, attr).tobytes() == getattr(one, attr).tobytes(), attr
    assert got.params == one.params


# ----------------------------------------------------------------------------- memory


def _traced_peak(points: np.ndarray, chunk: int) -> int:
    tracemalloc.start()
    try:
        estimate_normals(points, chunk_size=chunk)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_normals_memory_bounded_and_linear() -> None:
    """Peak traced memory of batched normals on 200k points stays far below the former
    all-at-once (N, k + 1, 3) float64 neighbourhood gather (149 MB), and grows by far less
    per point than that gather's 744 bytes (about 130 bytes measured)."""
    k1, chunk = 31, 10_000
    small, big = sphere(100_000, 7), sphere(200_000, 8)
    peak_small = _traced_peak(small, chunk)
    peak_big = _traced_peak(big, chunk)
    gather = len(big) * k1 * 3 * 8
    assert peak_big < 0.4 * gather, (peak_big, gather)
    per_point = (peak_big - peak_small) / (len(big) - len(small))
    assert per_point < 300, per_point
