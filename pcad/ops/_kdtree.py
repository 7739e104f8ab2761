"""Compiled CPU kernels (numba): a bucket kd-tree and exact FPS, kNN and ball query on it.

The tree is implicit and complete: node ``1`` is the root, node ``i`` has children ``2i`` and
``2i + 1``, and the ``L`` leaves (a power of two) are nodes ``L .. 2L - 1``. Every node splits its
range of the reordered points near the middle (a sampled median) along the longest side of its
cell, so the leaves hold contiguous slices of about ``leaf_size / 2`` to ``leaf_size`` points.
Each node keeps the exact bounding box of its points. Queries run in parallel chunks, visited
along a Morton curve so that consecutive queries reuse the same nodes.

The queries prune a node only when a lower bound of the squared distance to its box, computed
in float64 and shrunk by a relative margin of 1e-6, is larger than what could still change the
answer. That margin covers the rounding of the float32 (or float64) point distances, which are
computed exactly as the torch reference does (``dx * dx + dy * dy + dz * dz``, left to right, no
fused multiply-add, ``fastmath`` off). The results therefore equal the reference bit for bit,
ties included: ties are broken by the lower original index everywhere.

Example:
    >>> import numpy as np
    >>> from pcad.ops._kdtree import fps_batch
    >>> pts = np.random.default_rng(0).random((1, 500, 3)).astype(np.float32)
    >>> out = np.empty((1, 8), np.int64)
    >>> fps_batch(pts, np.array([500]), np.array([0]), out)
    >>> int(out[0, 0])
    0
"""

from __future__ import annotations

import numba
import numpy as np

# OpenMP first: numba otherwise tries TBB and warns when the installed TBB is too old.
numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

_JIT = dict(cache=True, error_model="numpy")
_SHRINK = 1.0 - 1e-6  # relative margin of the box lower bounds (see the module docstring)
FPS_LEAF = 256
QUERY_LEAF = 16
_CHUNK = 64  # queries per parallel task


# --- tree construction -------------------------------------------------------------------------


@numba.njit(**_JIT)
def _split(src, src_index, dst, dst_index, lo, hi, axis):
    """Stable partition of the columns ``lo:hi`` of ``src`` (``(3, n)``) and ``src_index`` into
    ``dst`` / ``dst_index`` along ``axis``, around the median of a strided sample of 31 values.

    Values below the pivot go left, values above go right, and values equal to it fill the left
    side up to the middle: the split is as near the middle as the sample allows. Branch-free
    (no misprediction per point). Returns ``(split position, pivot)``.
    """
    key = src[axis]
    n = hi - lo
    n_sample = min(n, 31)
    stride = n // n_sample
    sample = np.empty(n_sample, key.dtype)
    for s in range(n_sample):  # insertion sort of the sample
        v = key[lo + s * stride]
        j = s
        while j > 0 and sample[j - 1] > v:
            sample[j] = sample[j - 1]
            j -= 1
        sample[j] = v
    pivot = sample[n_sample // 2]
    n_less = 0
    n_equal = 0
    for t in range(lo, hi):
        n_less += key[t] < pivot
        n_equal += key[t] == pivot
    quota = min(max((lo + hi) // 2 - lo - n_less, 0), n_equal)  # equal values sent left
    left = lo
    right = lo + n_less + quota
    split = right
    seen = 0
    for t in range(lo, hi):
        v = key[t]
        eq = v == pivot
        go_left = (v < pivot) | (eq & (seen < quota))
        seen += eq
        d = left if go_left else right
        left += go_left
        right += 1 - go_left
        dst[0, d] = src[0, t]
        dst[1, d] = src[1, t]
        dst[2, d] = src[2, t]
        dst_index[d] = src_index[t]
    return split, pivot


@numba.njit(**_JIT)
def n_leaves_for(n, leaf_size):
    """The number of leaves (a power of two) so that a leaf holds at most ``leaf_size`` points."""
    n_leaves = 1
    while n_leaves * leaf_size < n:
        n_leaves *= 2
    return n_leaves


@numba.njit(**_JIT)
def build_tree(pts, n, leaf_size):
    """Bucket kd-tree over ``pts[:n]`` (``(N, 3)``).

    Returns ``(perm, xs, ys, zs, start, stop, box_lo, box_hi, min_index, n_leaves)``: the
    permutation (leaf order -> original index), the reordered coordinates, each node's range of
    positions, exact bounding box (float64) and smallest original index. The split axis is the
    longest side of the node's cell (the parent's cell cut at the split value), the split value
    a sampled median, so leaves are balanced only roughly (an empty leaf is harmless: its box
    is empty and every query skips it). One level moves every point once between two buffers.
    """
    n_leaves = n_leaves_for(n, leaf_size)
    n_nodes = 2 * n_leaves
    src = np.empty((3, n), pts.dtype)
    for t in range(n):
        src[0, t] = pts[t, 0]
        src[1, t] = pts[t, 1]
        src[2, t] = pts[t, 2]
    src_index = np.arange(n)
    dst = np.empty((3, n), pts.dtype)
    dst_index = np.empty(n, np.int64)
    start = np.zeros(n_nodes, np.int64)
    stop = np.zeros(n_nodes, np.int64)
    cell_lo = np.empty((n_nodes, 3))
    cell_hi = np.empty((n_nodes, 3))
    start[1] = 0
    stop[1] = n
    for ax in range(3):
        cell_lo[1, ax] = np.inf
        cell_hi[1, ax] = -np.inf
        for t in range(n):
            cell_lo[1, ax] = min(cell_lo[1, ax], src[ax, t])
            cell_hi[1, ax] = max(cell_hi[1, ax], src[ax, t])
    level_start = 1
    while level_start < n_leaves:
        for node in range(level_start, 2 * level_start):
            a = start[node]
            b = stop[node]
            axis = 0
            for ax in range(1, 3):
                wider = cell_hi[node, ax] - cell_lo[node, ax]
                if wider > cell_hi[node, axis] - cell_lo[node, axis]:
                    axis = ax
            for c in range(2 * node, 2 * node + 2):
                for ax in range(3):
                    cell_lo[c, ax] = cell_lo[node, ax]
                    cell_hi[c, ax] = cell_hi[node, ax]
            mid = a
            if b > a:
                mid, pivot = _split(src, src_index, dst, dst_index, a, b, axis)
                cell_hi[2 * node, axis] = pivot
                cell_lo[2 * node + 1, axis] = pivot
            start[2 * node] = a
            stop[2 * node] = mid
            start[2 * node + 1] = mid
            stop[2 * node + 1] = b
        src, dst = dst, src
        src_index, dst_index = dst_index, src_index
        level_start *= 2
    perm = src_index
    xs = src[0]
    ys = src[1]
    zs = src[2]
    box_lo = np.full((n_nodes, 3), np.inf)
    box_hi = np.full((n_nodes, 3), -np.inf)
    min_index = np.full(n_nodes, np.iinfo(np.int64).max, np.int64)
    for leaf in range(n_leaves, n_nodes):
        for t in range(start[leaf], stop[leaf]):
            box_lo[leaf, 0] = min(box_lo[leaf, 0], xs[t])
            box_lo[leaf, 1] = min(box_lo[leaf, 1], ys[t])
            box_lo[leaf, 2] = min(box_lo[leaf, 2], zs[t])
            box_hi[leaf, 0] = max(box_hi[leaf, 0], xs[t])
            box_hi[leaf, 1] = max(box_hi[leaf, 1], ys[t])
            box_hi[leaf, 2] = max(box_hi[leaf, 2], zs[t])
            min_index[leaf] = min(min_index[leaf], perm[t])
    for node in range(n_leaves - 1, 0, -1):
        for ax in range(3):
            box_lo[node, ax] = min(box_lo[2 * node, ax], box_lo[2 * node + 1, ax])
            box_hi[node, ax] = max(box_hi[2 * node, ax], box_hi[2 * node + 1, ax])
        min_index[node] = min(min_index[2 * node], min_index[2 * node + 1])
    return perm, xs, ys, zs, start, stop, box_lo, box_hi, min_index, n_leaves


@numba.njit(inline="always", **_JIT)
def _box_lower_bound(box_lo, box_hi, node, qx, qy, qz):
    """Squared distance (float64) from the query to the node's box, shrunk by the margin."""
    d = 0.0
    v = max(box_lo[node, 0] - qx, 0.0, qx - box_hi[node, 0])
    d += v * v
    v = max(box_lo[node, 1] - qy, 0.0, qy - box_hi[node, 1])
    d += v * v
    v = max(box_lo[node, 2] - qz, 0.0, qz - box_hi[node, 2])
    d += v * v
    return d * _SHRINK


# --- farthest point sampling -------------------------------------------------------------------


@numba.njit(**_JIT)
def _fps_leaf_update(xs, ys, zs, mind, lo, hi, qx, qy, qz):
    """Lower ``mind[lo:hi]`` to the squared distance from ``(qx, qy, qz)``; return its max."""
    best = -np.inf
    for t in range(lo, hi):
        dx = xs[t] - qx
        dy = ys[t] - qy
        dz = zs[t] - qz
        d = dx * dx + dy * dy + dz * dz
        m = mind[t]
        if d < m:
            m = d
        mind[t] = m
        if m > best:
            best = m
    return best


@numba.njit(**_JIT)
def fps_one(pts, n, start_index, out):
    """Exact FPS of ``pts[:n]`` from ``start_index`` into ``out`` (``(S,)`` int64).

    Next point: the unselected point with the largest squared distance to the selected set,
    ties to the lowest index. Each node keeps the largest min-distance below it; a node whose
    box is farther from the new point than that maximum cannot change and is skipped. The
    lowest index reaching the root's maximum is then found by descending the nodes that hold it.
    """
    n_samples = out.shape[0]
    perm, xs, ys, zs, start, stop, box_lo, box_hi, _, n_leaves = build_tree(pts, n, FPS_LEAF)
    n_nodes = 2 * n_leaves
    position = np.empty(n, np.int64)
    for t in range(n):
        position[perm[t]] = t
    mind = np.full(n, np.inf, pts.dtype)
    selected = pts.dtype.type(-1.0)  # below every distance: a selected point never comes back
    node_max = np.full(n_nodes, np.inf)
    for leaf in range(n_leaves, n_nodes):
        if stop[leaf] == start[leaf]:
            node_max[leaf] = -np.inf
    stack = np.empty(64, np.int64)
    visited = np.empty(n_nodes, np.int64)
    sel = start_index
    out[0] = sel
    for s in range(1, n_samples):
        pos = position[sel]
        qx = xs[pos]
        qy = ys[pos]
        qz = zs[pos]
        mind[pos] = selected
        n_visited = 0
        stack[0] = 1
        top = 1
        while top > 0:
            top -= 1
            node = stack[top]
            if _box_lower_bound(box_lo, box_hi, node, qx, qy, qz) > node_max[node]:
                continue  # the leaf holding ``sel`` is always visited: its bound is 0
            if node >= n_leaves:
                node_max[node] = _fps_leaf_update(xs, ys, zs, mind, start[node], stop[node],
                                                  qx, qy, qz)
            else:
                visited[n_visited] = node
                n_visited += 1
                stack[top] = 2 * node
                stack[top + 1] = 2 * node + 1
                top += 2
        for v in range(n_visited - 1, -1, -1):  # children were visited after their parents
            node = visited[v]
            node_max[node] = max(node_max[2 * node], node_max[2 * node + 1])
        target = node_max[1]
        arg = np.iinfo(np.int64).max
        stack[0] = 1
        top = 1
        while top > 0:  # usually a single path; every tied leaf is scanned
            top -= 1
            node = stack[top]
            if node_max[node] != target:
                continue
            if node >= n_leaves:
                for t in range(start[node], stop[node]):
                    if mind[t] == target and perm[t] < arg:
                        arg = perm[t]
            else:
                stack[top] = 2 * node
                stack[top + 1] = 2 * node + 1
                top += 2
        sel = arg
        out[s] = sel


@numba.njit(parallel=True, **_JIT)
def fps_batch(points, lengths, starts, out):
    """FPS of every batch item (parallel over the batch): ``points (B, N, 3)`` -> ``out (B, S)``."""
    for b in numba.prange(points.shape[0]):
        fps_one(points[b], lengths[b], starts[b], out[b])


# --- k nearest neighbours ----------------------------------------------------------------------


@numba.njit(**_JIT)
def _knn_one(perm, xs, ys, zs, start, stop, box_lo, box_hi, n_leaves, qx, qy, qz, k, bd, bi,
             stack, stack_lb):
    """The ``k`` nearest points to ``(qx, qy, qz)``, ascending by (distance, index).

    ``stack`` / ``stack_lb``: scratch arrays of 64 entries (more than twice the tree depth).
    """
    inf = bd.dtype.type(np.inf)
    for j in range(k):
        bd[j] = inf
        bi[j] = -1
    stack[0] = 1
    stack_lb[0] = 0.0
    top = 1
    while top > 0:
        top -= 1
        node = stack[top]
        if stack_lb[top] > bd[k - 1]:
            continue
        if node >= n_leaves:
            for t in range(start[node], stop[node]):
                dx = xs[t] - qx
                dy = ys[t] - qy
                dz = zs[t] - qz
                d = dx * dx + dy * dy + dz * dz
                idx = perm[t]
                if d < bd[k - 1] or (d == bd[k - 1] and (bi[k - 1] < 0 or idx < bi[k - 1])):
                    j = k - 1
                    while j > 0 and (bd[j - 1] > d or (bd[j - 1] == d and bi[j - 1] > idx)):
                        bd[j] = bd[j - 1]
                        bi[j] = bi[j - 1]
                        j -= 1
                    bd[j] = d
                    bi[j] = idx
        else:
            a = 2 * node
            lb_a = _box_lower_bound(box_lo, box_hi, a, qx, qy, qz)
            lb_b = _box_lower_bound(box_lo, box_hi, a + 1, qx, qy, qz)
            if lb_a <= lb_b:  # push the farther child first: the nearer one is popped next
                stack[top] = a + 1
                stack_lb[top] = lb_b
                stack[top + 1] = a
                stack_lb[top + 1] = lb_a
            else:
                stack[top] = a
                stack_lb[top] = lb_a
                stack[top + 1] = a + 1
                stack_lb[top + 1] = lb_b
            top += 2


@numba.njit(**_JIT)
def _spread_bits(v, bits):
    """The low ``bits`` bits of ``v`` moved to every third bit (Morton interleave)."""
    r = 0
    for b in range(bits):
        r |= ((v >> b) & 1) << (3 * b)
    return r


@numba.njit(**_JIT)
def query_order(query, m, bits=5):
    """An order of ``query[:m]`` along a Morton curve over a ``2**bits`` grid of its box.

    Counting sort, O(m). Neighbouring queries then walk the same tree nodes (cache reuse).
    """
    g = 1 << bits
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for i in range(m):
        for a in range(3):
            lo[a] = min(lo[a], query[i, a])
            hi[a] = max(hi[a], query[i, a])
    scale = np.zeros(3)
    for a in range(3):
        if hi[a] > lo[a]:
            scale[a] = g / (hi[a] - lo[a])
    n_cells = 1 << (3 * bits)
    code = np.empty(m, np.int64)
    first = np.zeros(n_cells + 1, np.int64)
    for i in range(m):
        c = 0
        for a in range(3):
            v = min(int((query[i, a] - lo[a]) * scale[a]), g - 1)
            c |= _spread_bits(v, bits) << a
        code[i] = c
        first[c + 1] += 1
    for c in range(n_cells):
        first[c + 1] += first[c]
    order = np.empty(m, np.int64)
    for i in range(m):
        order[first[code[i]]] = i
        first[code[i]] += 1
    return order


@numba.njit(**_JIT)
def _fill_padding(out_d, out_i, b, lo):
    inf = out_d.dtype.type(np.inf)
    for m in range(lo, out_d.shape[1]):
        for j in range(out_d.shape[2]):
            out_d[b, m, j] = inf
            out_i[b, m, j] = -1


@numba.njit(parallel=True, **_JIT)
def knn_batch(query, q_lengths, points, p_lengths, out_d, out_i):
    """kNN of every batch item; parallel over chunks of the queries of an item.

    ``query (B, M, 3)``, ``points (B, N, 3)``, ``out_d (B, M, k)``, ``out_i (B, M, k)``; rows
    of padded queries and slots beyond the item's point count hold ``inf`` / ``-1``.
    """
    k = out_d.shape[2]
    for b in range(query.shape[0]):
        n = p_lengths[b]
        mq = q_lengths[b] if n > 0 else 0
        _fill_padding(out_d, out_i, b, mq)
        if mq == 0:
            continue
        perm, xs, ys, zs, start, stop, box_lo, box_hi, _, n_leaves = build_tree(
            points[b], n, QUERY_LEAF)
        order = query_order(query[b], mq)
        n_chunks = (mq + _CHUNK - 1) // _CHUNK
        for c in numba.prange(n_chunks):
            stack = np.empty(64, np.int64)
            stack_lb = np.empty(64)
            for t in range(c * _CHUNK, min(mq, (c + 1) * _CHUNK)):
                m = order[t]
                _knn_one(perm, xs, ys, zs, start, stop, box_lo, box_hi, n_leaves,
                         query[b, m, 0], query[b, m, 1], query[b, m, 2], k,
                         out_d[b, m], out_i[b, m], stack, stack_lb)


# --- ball query --------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _ball_one(perm, xs, ys, zs, start, stop, box_lo, box_hi, min_index, n_leaves,
              qx, qy, qz, r2, bd, bi, stack):
    """The ``k`` lowest indices with squared distance ``< r2``, ascending by index.

    Returns how many were found (at most ``k``); the other slots are left untouched.
    """
    k = bi.shape[0]
    count = 0
    stack[0] = 1
    top = 1
    while top > 0:
        top -= 1
        node = stack[top]
        if _box_lower_bound(box_lo, box_hi, node, qx, qy, qz) > r2:
            continue
        if count == k and min_index[node] > bi[k - 1]:
            continue
        if node >= n_leaves:
            for t in range(start[node], stop[node]):
                dx = xs[t] - qx
                dy = ys[t] - qy
                dz = zs[t] - qz
                d = dx * dx + dy * dy + dz * dz
                if d < r2:
                    idx = perm[t]
                    if count == k and idx > bi[k - 1]:
                        continue
                    j = count if count < k else k - 1
                    while j > 0 and bi[j - 1] > idx:
                        bi[j] = bi[j - 1]
                        bd[j] = bd[j - 1]
                        j -= 1
                    bi[j] = idx
                    bd[j] = d
                    if count < k:
                        count += 1
        else:
            # lower indices first: visit the child holding the smaller index first
            a = 2 * node
            if min_index[a] <= min_index[a + 1]:
                stack[top] = a + 1
                stack[top + 1] = a
            else:
                stack[top] = a
                stack[top + 1] = a + 1
            top += 2
    return count


@numba.njit(parallel=True, **_JIT)
def ball_batch(query, q_lengths, points, p_lengths, r2, pad_first, out_d, out_i):
    """Ball query of every batch item (first ``k`` indices within the radius, ascending).

    Slots beyond the count hold the first index found and its distance when ``pad_first``,
    ``-1`` / ``inf`` otherwise; rows with no neighbour and padded queries hold ``-1`` / ``inf``.
    """
    k = out_d.shape[2]
    inf = out_d.dtype.type(np.inf)
    for b in range(query.shape[0]):
        n = p_lengths[b]
        mq = q_lengths[b] if n > 0 else 0
        _fill_padding(out_d, out_i, b, mq)
        if mq == 0:
            continue
        perm, xs, ys, zs, start, stop, box_lo, box_hi, min_index, n_leaves = build_tree(
            points[b], n, QUERY_LEAF)
        order = query_order(query[b], mq)
        n_chunks = (mq + _CHUNK - 1) // _CHUNK
        for c in numba.prange(n_chunks):
            stack = np.empty(64, np.int64)
            for t in range(c * _CHUNK, min(mq, (c + 1) * _CHUNK)):
                m = order[t]
                count = _ball_one(perm, xs, ys, zs, start, stop, box_lo, box_hi, min_index,
                                  n_leaves, query[b, m, 0], query[b, m, 1], query[b, m, 2], r2,
                                  out_d[b, m], out_i[b, m], stack)
                for j in range(count, k):
                    if pad_first and count > 0:
                        out_d[b, m, j] = out_d[b, m, 0]
                        out_i[b, m, j] = out_i[b, m, 0]
                    else:
                        out_d[b, m, j] = inf
                        out_i[b, m, j] = -1
