"""Triton kernels of :mod:`pcad.ops` (the ``triton`` backend): FPS, kNN and ball query.

Each kernel meets its op's contract exactly: the distances are ``dx * dx + dy * dy + dz * dz``
in the input's precision (float32, or float64) with fused multiply-adds disabled, so that they
equal the torch reference bit for bit, and ties go to the lower index as documented by each
op. On CUDA they are compiled by Triton; with ``TRITON_INTERPRET=1`` set before Triton is imported
the same kernels run on CPU tensors through Triton's interpreter, which is how the tests check
them without a GPU (slowly: small sizes only; ``tests/conftest.py`` sets it where CUDA is
absent).

- :func:`fps_triton`: each batch item is split into ``G`` chunks, one program per chunk, whose
  min-distances live in a scratch buffer; after each sample the programs of an item exchange
  their best candidate through a double-buffered partial array and a spin barrier on an
  atomic counter. All ``B * G`` programs must be resident at once for the barrier, so ``G`` is
  chosen so that ``B * G`` does not exceed the number of multiprocessors (one program per
  multiprocessor at most); the interpreter runs programs one after another, so there ``G`` is 1
  (no barrier). A barrier that waits too long (which would mean programs were not resident)
  sets an error flag and the call raises instead of hanging.
- :func:`knn_triton`: one program per block of queries scans the points in index order in
  tiles, keeps the ``k`` best ``(distance, index)`` pairs per query in registers and inserts a
  tile's candidates (those closer than the current k-th) smallest first; scanning in index
  order makes a strict ``<`` test equal to the lexicographic one. Rows are sorted on the host.
- :func:`ball_triton`: one program per block of queries scans the points in index order,
  ranks the points inside the ball by a prefix sum and stores the first ``k``; it stops once
  every query of the block has ``k``.

The block sizes and warp counts are keyword arguments of the host functions, so that
``benchmarks/triton_sweep.py`` can time alternatives on a GPU; the defaults are its winners.

Example:
    >>> import torch
    >>> from pcad.ops import fps
    >>> pts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.1, 0, 0], [0.5, 0, 0]]])
    >>> dev = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: TRITON_INTERPRET=1
    >>> fps(pts.to(dev), 3, backend="triton").tolist()
    [[0, 1, 3]]
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from pcad.ops.backends import triton_interpreted
from pcad.ops.knn import empty_neighbours

INTERPRET = triton_interpreted()  # as Triton read it when the kernels below were decorated
FPS_BLOCK = 1024
MAX_REGISTER_CHUNK = 8192  # points a program of the register FPS kernel holds (16 warps)
BIG = 1 << 30  # index of an empty kNN slot (plus the slot number): above every real index
NONE = 2147483647  # "no candidate" in an index reduction
BIG_C = tl.constexpr(BIG)  # kernels read module globals only as constexprs
NONE_C = tl.constexpr(NONE)
SPIN_LIMIT = 1 << 24  # barrier polls before giving up (seconds of spinning on a GPU)


class TritonKernelError(RuntimeError):
    """A kernel reported that its cross-program barrier timed out (programs not resident)."""


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _launcher(kernel, device: torch.device, num_warps: int = 4):  # noqa: ANN001, ANN202
    """``kernel[grid](*args, **launch)``: compiled on CUDA without FMA contraction (so that
    distances are exact) and with ``num_warps``; interpreted under ``TRITON_INTERPRET=1``."""
    if INTERPRET:
        return lambda grid, *args, **kw: kernel[grid](*args, **kw)
    if device.type != "cuda":
        raise RuntimeError("pcad.ops: the triton backend runs CPU tensors only when "
                           "TRITON_INTERPRET=1 was set before Triton was imported")
    return lambda grid, *args, **kw: kernel[grid](*args, **kw, num_warps=num_warps,
                                                  enable_fp_fusion=False)


@triton.jit
def _load_xyz(base, rows, mask):
    """The coordinates of points ``rows`` of a ``(n, 3)`` block (0 where masked)."""
    x = tl.load(base + rows * 3, mask=mask, other=0.0)
    y = tl.load(base + rows * 3 + 1, mask=mask, other=0.0)
    z = tl.load(base + rows * 3 + 2, mask=mask, other=0.0)
    return x, y, z


@triton.jit
def _tile_sq_dists(pbase, cols, cm, qx, qy, qz):
    """``(BQ, BP)`` squared distances from queries ``(qx, qy, qz)`` to points ``cols`` of
    ``pbase``, as the reference computes them: ``dx * dx + dy * dy + dz * dz``."""
    px, py, pz = _load_xyz(pbase, cols, cm)
    dx = qx[:, None] - px[None, :]
    dy = qy[:, None] - py[None, :]
    dz = qz[:, None] - pz[None, :]
    return dx * dx + dy * dy + dz * dz


@triton.jit
def _item_barrier(cnt_ptr, target, spin, err_ptr):
    """Arrive at an item's barrier (its counter) and wait until ``target`` programs arrived.

    Returns the spin budget: 0 after a timeout (the error flag is then set), so that a kernel
    whose programs are not all resident finishes quickly with a reported error."""
    tl.debug_barrier()  # this program's partial stores happen before its arrival
    tl.atomic_add(cnt_ptr, 1, sem="release")
    c = tl.load(cnt_ptr, volatile=True)
    tries = 0
    while (c < target) & (tries < spin):  # poll with plain loads: no atomic traffic
        c = tl.load(cnt_ptr, volatile=True)
        tries += 1
    c = tl.atomic_add(cnt_ptr, 0, sem="acquire")  # then one acquire
    tl.store(err_ptr, 1, mask=c < target)
    tl.debug_barrier()
    return tl.where(c < target, 0, spin)


@triton.jit
def _fps_chunk(pts_ptr, len_ptr, N, G, CHUNK):
    """This program's item ``b``, chunk ``g``, its point range ``[lo, hi)`` and the item's
    points."""
    pid = tl.program_id(0)
    b = pid // G
    g = pid % G
    lo = g * CHUNK
    hi = tl.minimum(lo + CHUNK, tl.load(len_ptr + b).to(tl.int32))
    return b, g, lo, hi, pts_ptr + b.to(tl.int64) * N * 3


@triton.jit
def _fps_kernel_registers(pts_ptr, len_ptr, start_ptr, out_ptr, pval_ptr, pidx_ptr, pxyz_ptr,
                          cnt_ptr, err_ptr, B, N, S, G, CHUNK, SPIN,
                          BLOCK: tl.constexpr, GP: tl.constexpr, MULTI: tl.constexpr):
    """FPS when each program's chunk fits one tile: points and min-distances stay in
    registers, and the programs exchange the coordinates of their best point with its score,
    so that no sample waits for a load of the chosen point."""
    b, g, lo, hi, base = _fps_chunk(pts_ptr, len_ptr, N, G, CHUNK)
    offs = lo + tl.arange(0, BLOCK)
    m = offs < hi
    x, y, z = _load_xyz(base, offs, m)
    md = tl.where(m, x * 0.0 + float("inf"), float("-inf"))  # -inf: never sampled
    cur = tl.load(start_ptr + b).to(tl.int32)
    qx = tl.load(base + cur * 3)
    qy = tl.load(base + cur * 3 + 1)
    qz = tl.load(base + cur * 3 + 2)
    spin = SPIN + cur * 0
    gl = tl.arange(0, GP)
    gm = gl < G
    for s in range(0, S):
        tl.store(out_ptr + b.to(tl.int64) * S + s, cur.to(tl.int64), mask=g == 0)
        dx = x - qx
        dy = y - qy
        dz = z - qz
        d = dx * dx + dy * dy + dz * dz
        md = tl.minimum(md, d)
        md = tl.where(offs == cur, -1.0, md)  # selected: below every distance
        tv = tl.max(md, axis=0)
        ti = tl.min(tl.where(md == tv, offs, NONE_C), axis=0)
        hit = offs == ti
        bx = tl.sum(tl.where(hit, x, 0.0), axis=0)  # one lane: exact
        by = tl.sum(tl.where(hit, y, 0.0), axis=0)
        bz = tl.sum(tl.where(hit, z, 0.0), axis=0)
        if MULTI:
            slot = ((s % 2) * B + b) * G
            tl.store(pval_ptr + slot + g, tv)
            tl.store(pidx_ptr + slot + g, ti)
            tl.store(pxyz_ptr + (slot + g) * 3, bx)
            tl.store(pxyz_ptr + (slot + g) * 3 + 1, by)
            tl.store(pxyz_ptr + (slot + g) * 3 + 2, bz)
            spin = _item_barrier(cnt_ptr + b, G * (s + 1), spin, err_ptr)
            pv = tl.load(pval_ptr + slot + gl, mask=gm, other=float("-inf"), volatile=True)
            pi = tl.load(pidx_ptr + slot + gl, mask=gm, other=NONE_C, volatile=True)
            px = tl.load(pxyz_ptr + (slot + gl) * 3, mask=gm, other=0.0, volatile=True)
            py = tl.load(pxyz_ptr + (slot + gl) * 3 + 1, mask=gm, other=0.0, volatile=True)
            pz = tl.load(pxyz_ptr + (slot + gl) * 3 + 2, mask=gm, other=0.0, volatile=True)
            gv = tl.max(pv, axis=0)
            cur = tl.min(tl.where(pv == gv, pi, NONE_C), axis=0)
            sel = gm & (pi == cur)
            qx = tl.sum(tl.where(sel, px, 0.0), axis=0)
            qy = tl.sum(tl.where(sel, py, 0.0), axis=0)
            qz = tl.sum(tl.where(sel, pz, 0.0), axis=0)
        else:
            cur = ti
            qx = bx
            qy = by
            qz = bz


@triton.jit
def _fps_kernel(pts_ptr, len_ptr, start_ptr, out_ptr, mind_ptr, pval_ptr, pidx_ptr, cnt_ptr,
                err_ptr, B, N, S, G, CHUNK, SPIN,
                BLOCK: tl.constexpr, GP: tl.constexpr, MULTI: tl.constexpr):
    b, g, lo, hi, base = _fps_chunk(pts_ptr, len_ptr, N, G, CHUNK)
    mbase = mind_ptr + b.to(tl.int64) * N
    cur = tl.load(start_ptr + b).to(tl.int32)
    lanes = tl.arange(0, BLOCK)
    spin = SPIN + cur * 0
    for s in range(0, S):
        tl.store(out_ptr + b.to(tl.int64) * S + s, cur.to(tl.int64), mask=g == 0)
        qx = tl.load(base + cur * 3)
        qy = tl.load(base + cur * 3 + 1)
        qz = tl.load(base + cur * 3 + 2)
        best_v = qx * 0.0 - 2.0  # below every score: -1 marks selected points
        best_i = cur * 0 + NONE_C
        for t in range(lo, hi, BLOCK):
            offs = t + lanes
            m = offs < hi
            x, y, z = _load_xyz(base, offs, m)
            md = tl.load(mbase + offs, mask=m, other=0.0)
            dx = x - qx
            dy = y - qy
            dz = z - qz
            d = dx * dx + dy * dy + dz * dz
            md = tl.minimum(md, d)
            md = tl.where(offs == cur, -1.0, md)
            tl.store(mbase + offs, md, mask=m)
            md = tl.where(m, md, float("-inf"))
            tv = tl.max(md, axis=0)
            ti = tl.min(tl.where(md == tv, offs, NONE_C), axis=0)
            better = tv > best_v  # tiles in index order: a tie keeps the lower index
            best_i = tl.where(better, ti, best_i)
            best_v = tl.where(better, tv, best_v)
        if MULTI:
            slot = ((s % 2) * B + b) * G
            tl.store(pval_ptr + slot + g, best_v)
            tl.store(pidx_ptr + slot + g, best_i)
            spin = _item_barrier(cnt_ptr + b, G * (s + 1), spin, err_ptr)
            gl = tl.arange(0, GP)
            gm = gl < G
            pv = tl.load(pval_ptr + slot + gl, mask=gm, other=float("-inf"), volatile=True)
            pi = tl.load(pidx_ptr + slot + gl, mask=gm, other=NONE_C, volatile=True)
            gv = tl.max(pv, axis=0)
            cur = tl.min(tl.where(pv == gv, pi, NONE_C), axis=0)
        else:
            cur = best_i


def fps_triton(points: torch.Tensor, n_samples: int, lengths: torch.Tensor,
               starts: torch.Tensor, *, block: int = FPS_BLOCK, num_warps: int = 4,
               max_groups: int | None = None, registers: bool = True) -> torch.Tensor:
    """``(B, N, 3)`` float32/float64 points -> ``(B, n_samples)`` int64 FPS indices.

    ``lengths`` and ``starts`` are ``(B,)`` int64 CPU tensors (already checked by
    :func:`pcad.ops.fps`). ``block``: points per tile (a power of 2); each item is split over
    up to ``min(max_groups, multiprocessors // B)`` programs of about ``block`` points each.
    ``registers``: a program whose chunk fits :data:`MAX_REGISTER_CHUNK` points keeps it in
    registers (one tile); otherwise (or with ``False``) it loops over tiles with its
    min-distances in a scratch buffer.
    """
    batch, size = points.shape[:2]
    dev = points.device
    pts = points.contiguous()
    n_max = int(lengths.max())
    groups = 1
    if not INTERPRET:
        sms = _multiprocessors(dev.index if dev.index is not None else torch.cuda.current_device())
        groups = max(1, min(math.ceil(n_max / block), sms // batch, max_groups or sms))
    chunk = math.ceil(n_max / groups)
    chunk = math.ceil(chunk / block) * block if groups > 1 else max(chunk, 1)
    out = torch.empty(batch, n_samples, dtype=torch.int64, device=dev)
    pval = torch.empty(2 * batch * groups, dtype=pts.dtype, device=dev)
    pidx = torch.empty(2 * batch * groups, dtype=torch.int32, device=dev)
    cnt = torch.zeros(batch, dtype=torch.int32, device=dev)
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    lens, firsts = lengths.to(dev), starts.to(dev)
    tile = triton.next_power_of_2(chunk)
    common = dict(GP=triton.next_power_of_2(groups), MULTI=groups > 1)
    if registers and tile <= MAX_REGISTER_CHUNK:
        pxyz = torch.empty(2 * batch * groups * 3, dtype=pts.dtype, device=dev)
        warps = max(num_warps, min(16, tile // 512))  # at most 16 points per thread
        _launcher(_fps_kernel_registers, dev, warps)(
            (batch * groups,), pts, lens, firsts, out, pval, pidx, pxyz, cnt, err,
            batch, size, n_samples, groups, chunk, SPIN_LIMIT, BLOCK=tile, **common)
    else:
        mind = torch.full((batch, size), math.inf, dtype=pts.dtype, device=dev)
        _launcher(_fps_kernel, dev, num_warps)(
            (batch * groups,), pts, lens, firsts, out, mind, pval, pidx, cnt, err,
            batch, size, n_samples, groups, chunk, SPIN_LIMIT, BLOCK=block, **common)
    if groups > 1 and int(err.item()):
        raise TritonKernelError("pcad.ops.fps: the triton kernel's barrier timed out "
                                "(its programs were not all resident); use backend='torch'")
    return out


@triton.jit
def _knn_kernel(q_ptr, p_ptr, qlen_ptr, plen_ptr, od_ptr, oi_ptr, M, N, K,
                BQ: tl.constexpr, BP: tl.constexpr, KP: tl.constexpr):
    qb = tl.program_id(0)
    b = tl.program_id(1)
    m = tl.load(qlen_ptr + b).to(tl.int32)
    n = tl.load(plen_ptr + b).to(tl.int32)
    rows = qb * BQ + tl.arange(0, BQ)
    rm = rows < m
    pbase = p_ptr + b.to(tl.int64) * N * 3
    qx, qy, qz = _load_xyz(q_ptr + b.to(tl.int64) * M * 3, rows, rm)
    slots = tl.arange(0, KP)
    zero = tl.zeros((BQ, KP), dtype=q_ptr.dtype.element_ty)
    # slots >= K hold -inf: never the worst, never replaced, never written
    kd = zero + tl.where(slots[None, :] < K, float("inf"), float("-inf"))
    ki = tl.zeros((BQ, KP), dtype=tl.int32) + BIG_C + slots[None, :]
    wd = tl.max(kd, axis=1)  # the worst (lexicographically largest) (distance, index)
    wi = tl.max(tl.where(kd == wd[:, None], ki, -1), axis=1)
    stop = tl.where(qb * BQ < m, n, 0)
    for t in range(0, stop, BP):
        cols = t + tl.arange(0, BP)
        cm = cols < n
        d = _tile_sq_dists(pbase, cols, cm, qx, qy, qz)
        cand = (rm[:, None] & cm[None, :]) & (d < wd[:, None])
        while tl.max(tl.max(cand.to(tl.int32), axis=1), axis=0) > 0:
            dc = tl.where(cand, d, float("inf"))
            dm = tl.min(dc, axis=1)
            im = tl.min(tl.where(cand & (dc == dm[:, None]), cols[None, :], NONE_C), axis=1)
            has = im < NONE_C
            repl = has[:, None] & (kd == wd[:, None]) & (ki == wi[:, None])
            kd = tl.where(repl, dm[:, None], kd)
            ki = tl.where(repl, im[:, None], ki)
            wd = tl.max(kd, axis=1)
            wi = tl.max(tl.where(kd == wd[:, None], ki, -1), axis=1)
            cand = cand & (cols[None, :] != im[:, None]) & (d < wd[:, None])
    keep = rm[:, None] & (slots[None, :] < K)
    found = ki < BIG_C
    obase = (b.to(tl.int64) * M + rows)[:, None] * K + slots[None, :]
    tl.store(od_ptr + obase, tl.where(found, kd, float("inf")), mask=keep)
    tl.store(oi_ptr + obase, tl.where(found, ki, -1).to(tl.int64), mask=keep)


def knn_triton(q: torch.Tensor, p: torch.Tensor, k: int, q_len: torch.Tensor,
               p_len: torch.Tensor, *, bq: int | None = None, bp: int = 32,
               num_warps: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, M, 3)`` queries, ``(B, N, 3)`` points (same dtype) -> ``(B, M, k)`` squared
    distances ascending and int64 indices, ties to the lower index, ``inf`` / ``-1`` padding
    (the contract of :func:`pcad.ops.knn`). ``bq`` queries and ``bp`` points per tile; ``bq``
    None: 16 rows for ``k <= 32``, else 4 rows with one warp (``num_warps`` ignored)."""
    (batch, rows), size, dev = q.shape[:2], p.shape[1], q.device
    out_d, out_i = empty_neighbours(batch, rows, k, q.dtype, dev)
    if rows == 0 or size == 0:
        return out_d, out_i
    kp = triton.next_power_of_2(k)
    if bq is None:  # H200 sweep (benchmarks/results): few rows per program, more so for big k
        bq, num_warps = (16, num_warps) if kp <= 32 else (4, 1)
    grid = (triton.cdiv(rows, bq), batch)
    _launcher(_knn_kernel, dev, num_warps)(grid, q.contiguous(), p.contiguous(), q_len.to(dev),
                                p_len.to(dev), out_d, out_i, rows, size, k, BQ=bq, BP=bp, KP=kp)
    return sort_neighbours(out_d, out_i)


def sort_neighbours(d: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``(..., k)`` neighbours sorted by (distance, index); ``-1`` padding (``inf``)
    last.

    Example:
        >>> import torch
        >>> d, i = sort_neighbours(torch.tensor([[2.0, 1.0, 1.0, float("inf")]]),
        ...                        torch.tensor([[0, 5, 3, -1]]))
        >>> d.tolist(), i.tolist()
        ([[1.0, 1.0, 2.0, inf]], [[3, 5, 0, -1]])
    """
    key = torch.where(i < 0, torch.iinfo(torch.int64).max, i)
    order = key.argsort(dim=-1)
    d, i = d.gather(-1, order), i.gather(-1, order)
    order = d.argsort(dim=-1, stable=True)
    return d.gather(-1, order), i.gather(-1, order)


@triton.jit
def _ball_kernel(q_ptr, p_ptr, qlen_ptr, plen_ptr, r2_ptr, od_ptr, oi_ptr, M, N, K,
                 BQ: tl.constexpr, BP: tl.constexpr):
    qb = tl.program_id(0)
    b = tl.program_id(1)
    m = tl.load(qlen_ptr + b).to(tl.int32)
    n = tl.load(plen_ptr + b).to(tl.int32)
    r2 = tl.load(r2_ptr)
    rows = qb * BQ + tl.arange(0, BQ)
    rm = rows < m
    pbase = p_ptr + b.to(tl.int64) * N * 3
    qx, qy, qz = _load_xyz(q_ptr + b.to(tl.int64) * M * 3, rows, rm)
    obase = (b.to(tl.int64) * M + rows)[:, None] * K
    count = tl.zeros((BQ,), dtype=tl.int32)
    t = 0
    while (t < n) & (tl.min(tl.where(rm, count, K), axis=0) < K):
        cols = t + tl.arange(0, BP)
        cm = cols < n
        d = _tile_sq_dists(pbase, cols, cm, qx, qy, qz)
        inside = (rm[:, None] & cm[None, :]) & (d < r2)
        flag = inside.to(tl.int32)
        rank = tl.cumsum(flag, axis=1) + count[:, None]  # 1-based slot
        take = inside & (rank <= K)
        tl.store(od_ptr + obase + rank - 1, d, mask=take)
        tl.store(oi_ptr + obase + rank - 1, (cols[None, :] + rank * 0).to(tl.int64), mask=take)
        count += tl.sum(flag, axis=1)
        t += BP


def ball_triton(q: torch.Tensor, p: torch.Tensor, r2: torch.Tensor, k: int,
                q_len: torch.Tensor, p_len: torch.Tensor, *, bq: int = 32, bp: int = 128,
                num_warps: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` points (index order) with squared distance ``< r2`` of every query:
    ``(B, M, k)`` distances and int64 indices, ``inf`` / ``-1`` where fewer are found.
    ``r2`` is a 0-d tensor in the compute dtype."""
    (batch, rows), size, dev = q.shape[:2], p.shape[1], q.device
    out_d, out_i = empty_neighbours(batch, rows, k, q.dtype, dev)
    if rows == 0 or size == 0:
        return out_d, out_i
    grid = (triton.cdiv(rows, bq), batch)
    _launcher(_ball_kernel, dev, num_warps)(grid, q.contiguous(), p.contiguous(), q_len.to(dev),
                                 p_len.to(dev), r2.to(device=dev, dtype=q.dtype).reshape(1),
                                 out_d, out_i, rows, size, k, BQ=bq, BP=bp)
    return out_d, out_i
