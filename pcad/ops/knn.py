"""k nearest neighbours between dense batched clouds, with squared distances.

Semantics (every backend): for each valid query, the ``k`` valid points with the smallest
squared distance ``dx * dx + dy * dy + dz * dz`` (float32; float64 for float64 input), sorted
ascending, ties to the lower index. Padding: an item with fewer than ``k`` valid points fills
its last slots with index ``-1`` and distance ``inf``; rows of padded queries (beyond
``query_lengths``) are all ``-1`` / ``inf``.

Backends (``backend=``, see :mod:`pcad.ops.backends`):

- ``"torch"``: the reference (CPU, CUDA), brute force over chunks of queries so that memory
  stays near ``chunk x N`` elements (about 4M), exact tie-breaking.
- ``"numba"``: exact CPU kd-tree search, parallel over queries; equal to the reference.
- ``"scipy"``: ``scipy.spatial.cKDTree`` (``workers=-1``); the distances are recomputed from
  the float coordinates as above and each row re-sorted by (distance, index), so the
  distances equal the reference. cKDTree selects in float64, so when two candidates tie (in
  float32) at the k-th distance, the index it keeps may differ.
- ``"triton"``: pcad's Triton kernel (CUDA; CPU tensors only under ``TRITON_INTERPRET=1``),
  exact: equal to the reference, ties included.
- ``"torch_cluster"``: ``torch_cluster.knn`` (CPU, CUDA; CUDA needs ``k <= 100``, and
  ``"auto"`` passes over it for larger ``k``), whose
  ``[2, E]`` edge list is scattered back to a dense ``(B, M, k)``, distances recomputed and
  rows sorted as above; the same caveat on ties at the k-th distance applies.

Example:
    >>> import torch
    >>> from pcad.ops import knn
    >>> pts = torch.rand(2, 500, 3, generator=torch.Generator().manual_seed(0))
    >>> d2, idx = knn(pts, pts, 4)
    >>> bool((idx[..., 0] == torch.arange(500)).all()), d2.shape
    (True, torch.Size([2, 500, 4]))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pcad.checks import check_cloud, check_int, check_lengths, check_same_batch
from pcad.errors import InvalidInputError
from pcad.ops.backends import compute_dtype, resolve_backend

CHUNK_ELEMENTS = 1 << 22  # distance-matrix elements per chunk of the reference


def knn(
    query: torch.Tensor,
    points: torch.Tensor,
    k: int,
    query_lengths: torch.Tensor | None = None,
    point_lengths: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest ``points`` of every query, nearest first.

    Args:
        query: ``(B, M, 3)`` floating tensor.
        points: ``(B, N, 3)`` floating tensor on the same device.
        k: neighbours per query, ``>= 1`` (may exceed ``N``: the extra slots are padding).
        query_lengths: ``(B,)`` integer tensor, valid queries per item (the first ones).
        point_lengths: ``(B,)`` integer tensor, valid points per item (the first ones).
        backend: ``"auto"``, ``"torch"``, ``"numba"``, ``"scipy"``, ``"torch_cluster"`` or
            ``"triton"``.

    Returns:
        ``(dists2, idx)``: ``(B, M, k)`` squared distances (float32, float64 for float64
        input) ascending, and ``(B, M, k)`` int64 indices into dim 1 of ``points``; padding
        is ``inf`` / ``-1``.

    Raises:
        InvalidInputError: a wrong shape, dtype or value (the message names the argument).
        BackendUnavailableError: the requested backend is not installed or not for this device.

    Example:
        >>> import torch
        >>> from pcad.ops import knn
        >>> pts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0]]])
        >>> knn(torch.tensor([[[0.9, 0, 0]]]), pts, 2)[1].tolist()
        [[[1, 0]]]
    """
    query, points, k, q_len, p_len = check_knn_pair(
        query, points, k, query_lengths, point_lengths)
    dev = query.device
    big_k = dev.type == "cuda" and k > 100
    name = resolve_backend("knn", backend, dev, skip=("torch_cluster",) if big_k else ())
    if name == "torch_cluster" and big_k:
        raise InvalidInputError(f"k: torch_cluster's CUDA knn supports k <= 100, got {k}")
    dtype = compute_dtype(query, points)
    q, p = query.to(dtype), points.to(dtype)
    return run_knn(name, q, p, k, q_len, p_len)


def check_knn_pair(query: Any, points: Any, k: Any, query_lengths: Any, point_lengths: Any
                   ) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """Check a query/points pair of batched clouds ``(B, M, 3)`` / ``(B, N, 3)``, ``k >= 1`` and
    the optional ``(B,)`` lengths; return ``query, points, k, q_len, p_len`` (lengths filled
    in). Shared by the neighbour ops (knn, ball query, interpolation)."""
    query = check_cloud(query, "query")
    points = check_cloud(points, "points")
    check_same_batch(query, "query", points, "points")
    k = check_int(k, "k", 1, whole_floats=False)
    batch = query.shape[0]
    q_len = check_lengths(query_lengths, "query_lengths", batch, query.shape[1], query.device)
    p_len = check_lengths(point_lengths, "point_lengths", batch, points.shape[1], query.device)
    return query, points, k, q_len, p_len


def run_knn(
    name: str, q: torch.Tensor, p: torch.Tensor, k: int, q_len: torch.Tensor, p_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to a resolved backend (no checks; ``q`` and ``p`` in the compute dtype)."""
    if name == "numba":
        return _knn_numba(q, p, k, q_len.cpu(), p_len.cpu())
    if name == "scipy":
        return _knn_scipy(q, p, k, q_len.cpu(), p_len.cpu())
    if name == "torch_cluster":
        return _knn_torch_cluster(q, p, k, q_len, p_len)
    if name == "triton":
        from pcad.ops._triton import knn_triton

        return knn_triton(q, p, k, q_len, p_len)
    return knn_reference(q, p, k, q_len, p_len)


def empty_neighbours(batch: int, rows: int, k: int, dtype: torch.dtype, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, rows, k)`` distances (inf) and indices (-1): "no neighbour" everywhere."""
    d = torch.full((batch, rows, k), math.inf, dtype=dtype, device=device)
    i = torch.full((batch, rows, k), -1, dtype=torch.int64, device=device)
    return d, i


def sq_dist(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` x ``(..., 3)`` -> squared distances, ``dx * dx + dy * dy + dz * dz``."""
    dx = q[..., 0] - p[..., 0]
    dy = q[..., 1] - p[..., 1]
    dz = q[..., 2] - p[..., 2]
    return dx * dx + dy * dy + dz * dz


def pairwise_sq_dist(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``(M, 3)`` x ``(N, 3)`` -> ``(M, N)`` squared distances (exact, not ``|q|^2 - 2qp``)."""
    return sq_dist(q[:, None, :], p[None, :, :])


def chunk_rows(n: int) -> int:
    """Query rows per block so that a block's ``rows x n`` distances stay within
    ``CHUNK_ELEMENTS`` (at least 1)."""
    return max(1, CHUNK_ELEMENTS // max(n, 1))


def knn_reference(
    q: torch.Tensor, p: torch.Tensor, k: int, q_len: torch.Tensor, p_len: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pure-torch reference (any device, no checks)."""
    batch, rows = q.shape[:2]
    out_d, out_i = empty_neighbours(batch, rows, k, q.dtype, q.device)
    q_len_c, p_len_c = q_len.tolist(), p_len.tolist()
    for b in range(batch):
        n, m = p_len_c[b], q_len_c[b]
        kk = min(k, n)
        if kk == 0 or m == 0:
            continue
        pts = p[b, :n]
        step = chunk_rows(n)
        for lo in range(0, m, step):
            hi = min(m, lo + step)
            dist = pairwise_sq_dist(q[b, lo:hi], pts)
            d, i = _smallest_k(dist, kk)
            out_d[b, lo:hi, :kk] = d
            out_i[b, lo:hi, :kk] = i
    return out_d, out_i


def _smallest_k(dist: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of each row, ascending by (value, column)."""
    kth = dist.topk(k, dim=1, largest=False, sorted=True).values[:, -1:]
    take = dist <= kth
    over = take.sum(1) > k  # rows with ties at the k-th value: keep the lowest columns
    if bool(over.any()):
        rows = over.nonzero()[:, 0]
        sub = dist[rows]
        less = sub < kth[rows]
        equal = sub == kth[rows]
        need = k - less.sum(1, keepdim=True)
        take[rows] = less | (equal & (equal.cumsum(1, dtype=torch.int32) <= need))
    cols = take.nonzero()[:, 1].view(-1, k)  # ascending columns per row
    d = dist.gather(1, cols)
    d, order = d.sort(dim=1, stable=True)
    return d, cols.gather(1, order)


def _knn_numba(q, p, k, q_len, p_len):
    from pcad.ops._kdtree import knn_batch

    qn = np.ascontiguousarray(q.detach().cpu().numpy())
    pn = np.ascontiguousarray(p.detach().cpu().numpy())
    out_d = np.empty(qn.shape[:2] + (k,), qn.dtype)
    out_i = np.empty(qn.shape[:2] + (k,), np.int64)
    knn_batch(qn, q_len.numpy(), pn, p_len.numpy(), out_d, out_i)
    return torch.from_numpy(out_d).to(q.device), torch.from_numpy(out_i).to(q.device)


def _sort_rows(d: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by (distance, index); -1 padding (inf) stays last."""
    order = np.lexsort((i, d), axis=-1)
    return np.take_along_axis(d, order, -1), np.take_along_axis(i, order, -1)


def _knn_scipy(q, p, k, q_len, p_len):
    from scipy.spatial import cKDTree

    qn = q.detach().cpu().numpy()
    pn = p.detach().cpu().numpy()
    batch, rows = qn.shape[:2]
    out_d = np.full((batch, rows, k), np.inf, qn.dtype)
    out_i = np.full((batch, rows, k), -1, np.int64)
    for b in range(batch):
        n, m = int(p_len[b]), int(q_len[b])
        kk = min(k, n)
        if kk == 0 or m == 0:
            continue
        tree = cKDTree(pn[b, :n], balanced_tree=False, compact_nodes=False)
        _, idx = tree.query(qn[b, :m], k=kk, workers=-1)
        idx = idx.reshape(m, kk).astype(np.int64, copy=False)
        diff = pn[b][idx] - qn[b, :m, None, :]
        d = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]
        out_d[b, :m, :kk], out_i[b, :m, :kk] = _sort_rows(d, idx)
    return torch.from_numpy(out_d).to(q.device), torch.from_numpy(out_i).to(q.device)


def _packed(x: torch.Tensor, lengths: torch.Tensor):
    """Padded ``(B, N, 3)`` -> packed ``(sum lengths, 3)``, batch vector and ``ptr``."""
    mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    batch = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(mask)[mask]
    ptr = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    return x[mask].contiguous(), batch, ptr


def _knn_torch_cluster(q, p, k, q_len, p_len):
    import torch_cluster

    batch, rows = q.shape[:2]
    out_d, out_i = empty_neighbours(batch, rows, k, q.dtype, q.device)
    keep = p_len > 0  # torch_cluster needs points in every example it sees
    q_len = torch.where(keep, q_len, torch.zeros_like(q_len))
    if int(q_len.sum()) == 0:
        return out_d, out_i
    xq, bq, ptr_q = _packed(q, q_len)
    xp, bp, ptr_p = _packed(p, p_len)
    edge = torch_cluster.knn(xp, xq, k, bp, bq)
    row, col = edge[0], edge[1]
    d = sq_dist(xq[row], xp[col])
    order = torch.argsort(col, stable=True)  # sort by (row, distance, column)
    order = order[torch.argsort(d[order], stable=True)]
    order = order[torch.argsort(row[order], stable=True)]
    row, col, d = row[order], col[order], d[order]
    counts = torch.bincount(row, minlength=xq.shape[0])
    first = torch.cumsum(counts, 0) - counts
    slot = torch.arange(row.numel(), device=q.device) - first[row]
    b = bq[row]
    local_q = row - ptr_q[b]
    out_d[b, local_q, slot] = d
    out_i[b, local_q, slot] = col - ptr_p[b]
    return out_d, out_i
