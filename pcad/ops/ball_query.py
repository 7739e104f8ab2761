"""Ball query with pointnet2's semantics: the first ``k`` points (in index order) within a radius.

Semantics (every backend): for each valid query, the valid points with squared distance
``dx * dx + dy * dy + dz * dz < radius * radius`` (strictly; ``radius * radius`` rounded to
float32, float64 for float64 input, as pointnet2 computes it), the ``k`` lowest indices
first, ascending by index. These are *not* the nearest ``k`` points: for those use
:func:`pcad.ops.knn` and mask ``dists2 < radius ** 2``.

Padding when fewer than ``k`` points lie within the radius:

- ``pad="first"`` (default, pointnet2's behaviour): the remaining slots repeat the first
  (lowest) index found and its distance. pointnet2 leaves a row with no neighbour at all
  filled with index 0, a real point that is not in the ball; pcad returns ``-1`` / ``inf``
  there instead, so that :func:`pcad.ops.gather` yields zeros.
- ``pad="-1"``: the remaining slots hold ``-1`` / ``inf``.

Rows of padded queries (beyond ``query_lengths``) are all ``-1`` / ``inf``.

Backends:

- ``"torch"``: the reference, chunked brute force (CPU, CUDA).
- ``"numba"``: exact kd-tree kernel (CPU), equal to the reference.
- ``"triton"``: pcad's Triton kernel (CUDA; CPU tensors only under ``TRITON_INTERPRET=1``),
  exact: equal to the reference (no fused multiply-adds in its distances).
- ``"pointnet2_ops"``: ``ball_query`` (CUDA only) when importable. It selects in float32
  whatever the input dtype; its int32 indices become int64, the distances are recomputed and
  its empty rows (index 0) become ``-1``. Its CUDA distance may be contracted into fused
  multiply-adds, so a point within an ulp of the sphere can fall on the other side than in
  the reference.

Example:
    >>> import torch
    >>> from pcad.ops import ball_query
    >>> pts = torch.rand(1, 2000, 3, generator=torch.Generator().manual_seed(0))
    >>> d2, idx = ball_query(pts[:, :8], pts, radius=0.1, k=16)
    >>> bool((d2 < 0.1 ** 2).all()), idx.shape
    (True, torch.Size([1, 8, 16]))
"""

from __future__ import annotations

import numpy as np
import torch

from pcad.checks import check_choice, check_radius
from pcad.ops.backends import compute_dtype, resolve_backend
from pcad.ops.knn import check_knn_pair, chunk_rows, empty_neighbours, pairwise_sq_dist, sq_dist

PADS = ("first", "-1")


def ball_query(
    query: torch.Tensor,
    points: torch.Tensor,
    radius: float,
    k: int,
    query_lengths: torch.Tensor | None = None,
    point_lengths: torch.Tensor | None = None,
    pad: str = "first",
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` points (lowest indices) within ``radius`` of every query.

    Args:
        query: ``(B, M, 3)`` floating tensor (the ball centres).
        points: ``(B, N, 3)`` floating tensor on the same device.
        radius: ball radius, ``> 0`` (a point at exactly ``radius`` is outside).
        k: slots per query, ``>= 1``.
        query_lengths: ``(B,)`` integer tensor, valid queries per item.
        point_lengths: ``(B,)`` integer tensor, valid points per item.
        pad: ``"first"`` (repeat the first index found, pointnet2) or ``"-1"``.
        backend: ``"auto"``, ``"torch"``, ``"numba"``, ``"pointnet2_ops"`` or ``"triton"``.

    Returns:
        ``(dists2, idx)``: ``(B, M, k)`` squared distances and int64 indices, ascending by
        index (padding as described in the module docstring).

    Raises:
        InvalidInputError: a wrong shape, dtype or value (the message names the argument).
        BackendUnavailableError: the requested backend is not installed or not for this device.

    Example:
        >>> import torch
        >>> from pcad.ops import ball_query
        >>> pts = torch.tensor([[[0.0, 0, 0], [5, 0, 0], [0.5, 0, 0]]])
        >>> ball_query(pts[:, :1], pts, 1.0, 3)[1].tolist()
        [[[0, 2, 0]]]
    """
    query, points, k, q_len, p_len = check_knn_pair(
        query, points, k, query_lengths, point_lengths)
    radius = check_radius(radius)
    check_choice(pad, "pad", PADS)
    name = resolve_backend("ball_query", backend, query.device)
    dtype = compute_dtype(query, points)
    q, p = query.to(dtype), points.to(dtype)
    r2 = torch.tensor(radius, dtype=dtype) ** 2  # rounded as pointnet2 does (float32)
    if name == "numba":
        return _ball_numba(q, p, r2, k, q_len.cpu(), p_len.cpu(), pad == "first")
    if name == "pointnet2_ops":
        return _ball_pointnet2(q, p, radius, r2, k, q_len.cpu(), p_len.cpu(), pad == "first")
    if name == "triton":
        from pcad.ops._triton import ball_triton

        d, i = ball_triton(q, p, r2, k, q_len, p_len)
        if pad == "first":
            _pad_first(d, i)
        return d, i
    return ball_query_reference(q, p, r2, k, q_len, p_len, pad == "first")


def ball_query_reference(
    q: torch.Tensor,
    p: torch.Tensor,
    r2: torch.Tensor,
    k: int,
    q_len: torch.Tensor,
    p_len: torch.Tensor,
    pad_first: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pure-torch reference (any device, no checks); ``r2`` a 0-d tensor."""
    batch, rows = q.shape[:2]
    out_d, out_i = empty_neighbours(batch, rows, k, q.dtype, q.device)
    r2 = r2.to(q.device)
    q_len_c, p_len_c = q_len.tolist(), p_len.tolist()
    for b in range(batch):
        n, m = p_len_c[b], q_len_c[b]
        if n == 0 or m == 0:
            continue
        pts = p[b, :n]
        step = chunk_rows(n)
        for lo in range(0, m, step):
            hi = min(m, lo + step)
            dist = pairwise_sq_dist(q[b, lo:hi], pts)
            inside = dist < r2
            rank = inside.cumsum(1, dtype=torch.int32)
            take = inside & (rank <= k)
            r, c = take.nonzero(as_tuple=True)  # row-major: ascending columns per row
            slot = rank[r, c].long() - 1
            d_blk, i_blk = empty_neighbours(1, hi - lo, k, q.dtype, q.device)
            d_blk, i_blk = d_blk[0], i_blk[0]
            d_blk[r, slot] = dist[r, c]
            i_blk[r, slot] = c
            if pad_first:
                _pad_first(d_blk, i_blk)
            out_d[b, lo:hi] = d_blk
            out_i[b, lo:hi] = i_blk
    return out_d, out_i


def _pad_first(d: torch.Tensor, i: torch.Tensor) -> None:
    """In place: ``-1`` slots of rows that found something take the row's first entry."""
    hole = (i < 0) & (i[..., :1] >= 0)
    d.copy_(torch.where(hole, d[..., :1].expand_as(d), d))
    i.copy_(torch.where(hole, i[..., :1].expand_as(i), i))


def _ball_numba(q, p, r2, k, q_len, p_len, pad_first):
    from pcad.ops._kdtree import ball_batch

    qn = np.ascontiguousarray(q.detach().cpu().numpy())
    pn = np.ascontiguousarray(p.detach().cpu().numpy())
    out_d = np.empty(qn.shape[:2] + (k,), qn.dtype)
    out_i = np.empty(qn.shape[:2] + (k,), np.int64)
    ball_batch(qn, q_len.numpy(), pn, p_len.numpy(), r2.numpy().astype(qn.dtype)[()],
               pad_first, out_d, out_i)
    return torch.from_numpy(out_d).to(q.device), torch.from_numpy(out_i).to(q.device)


def _ball_pointnet2(q, p, radius, r2, k, q_len, p_len, pad_first):
    from pointnet2_ops import pointnet2_utils

    batch, rows = q.shape[:2]
    out_d, out_i = empty_neighbours(batch, rows, k, q.dtype, q.device)
    r2 = r2.to(q.device)
    for b in range(batch):
        n, m = int(p_len[b]), int(q_len[b])
        if n == 0 or m == 0:
            continue
        qb = q[b, :m].float()[None].contiguous()
        pb = p[b, :n].float()[None].contiguous()
        idx = pointnet2_utils.ball_query(float(radius), k, pb, qb)[0].long()  # (m, k)
        d = sq_dist(q[b, :m, None, :], p[b][idx])
        found = d[:, :1] < r2  # pointnet2 leaves index 0 in rows that found nothing
        real = torch.ones_like(idx, dtype=torch.bool)
        real[:, 1:] = idx[:, 1:] != idx[:, :1]  # pointnet2 pads with the first index
        keep = found & (real | pad_first)
        out_d[b, :m] = torch.where(keep, d, torch.full_like(d, float("inf")))
        out_i[b, :m] = torch.where(keep, idx, torch.full_like(idx, -1))
    return out_d, out_i
