"""Surface normals of point clouds (unorganized and organized) and their orientation.

Normals are the smallest principal axis of each point's k-nearest-neighbour neighbourhood
(scipy ``cKDTree`` + batched float64 PCA; deterministic, no random numbers). Large clouds are
processed in batches of :data:`QUERY_CHUNK` points (kNN queries, PCA, the orientation graph's
edges), so memory grows linearly in N, by about 150 bytes per point, with results
byte-identical to a single batch (``chunk_size`` selects the batch size). Orientation:

- ``"outward"``: signs are made consistent over the kNN graph (minimum spanning tree weighted
  by ``1 - |n_i . n_j|``, propagated from the root), then each connected component of the graph
  is flipped so that most normals point away from the component's centroid. A component where
  that vote is a tie (an open flat patch, e.g. a plate sampled on one face) is instead oriented
  so that the largest-magnitude coordinate of its mean normal is positive (a plate in the xy
  plane gets ``+z`` normals).
- ``"viewpoint"``: every normal points towards a sensor position.

Example:
    >>> import numpy as np
    >>> from pcad.geometry.normals import estimate_normals
    >>> rng = np.random.default_rng(0)
    >>> p = rng.normal(size=(500, 3))
    >>> p /= np.linalg.norm(p, axis=1, keepdims=True)
    >>> n = estimate_normals(p, k=20)
    >>> bool(((n * p).sum(axis=1) > 0.9).mean() > 0.99)
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree

from pcad.checks import check_choice, check_int, check_organized, check_points, valid_pixels
from pcad.errors import InvalidInputError
from pcad.geometry.frames import bbox_diagonal, check_not_degenerate

__all__ = [
    "DEFAULT_K",
    "QUERY_CHUNK",
    "estimate_normals",
    "knn_chunks",
    "orient_outward",
    "orient_towards",
    "organized_normals",
]

DEFAULT_K = 30
# Neighbours per point in the graph used to propagate a consistent orientation.
_ORIENT_K = 10
# Points per batch of the neighbourhood PCA (bounds memory to ~ _CHUNK * k * 24 bytes).
_CHUNK = 32768
#: Points per batch of kNN queries (a multiple of the PCA batch): a batch holds about
#: ``QUERY_CHUNK * (k + 1) * 16`` bytes of neighbour distances and indices.
QUERY_CHUNK = 6 * _CHUNK
# A component whose outward vote margin is below this fraction of its size is "flat/open".
_VOTE_MARGIN = 0.1
_ORIENTS = ("auto", "outward", "viewpoint", "none")


def _f32(normals: np.ndarray) -> np.ndarray:
    """float32 copy with negative zeros made positive (``-0.0 + 0.0 == +0.0``)."""
    return normals.astype(np.float32) + np.float32(0.0)


def _canonical_sign(normals: np.ndarray) -> np.ndarray:
    """Flip rows in place so that each row's largest-magnitude component is positive."""
    big = np.argmax(np.abs(normals), axis=1)
    neg = normals[np.arange(normals.shape[0]), big] < 0
    normals[neg] *= -1
    return normals


def _chunk_size(chunk_size: int | None) -> int:
    return QUERY_CHUNK if chunk_size is None else check_int(chunk_size, "chunk_size", minimum=1)


def _index_dtype(n: int) -> type[np.signedinteger]:
    """int32 when every index below ``n`` fits (as scipy.sparse chooses), else int64."""
    return np.int32 if n < 2**31 else np.int64


def knn_chunks(
    tree: cKDTree, query: np.ndarray, k: int, chunk_size: int | None = None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``tree.query(query, k)`` in batches of rows, one batch of results in memory at a time.

    Every query is answered on its own, so the rows are exactly those of one call on all the
    queries (same distances, same neighbours in the same order).

    Args:
        tree: a scipy ``cKDTree``.
        query: ``(M, 3)`` points.
        k: neighbours per query, ``1 <= k <= tree.n``.
        chunk_size: queries per batch (default :data:`QUERY_CHUNK`).

    Yields:
        ``(start, dist, idx)``: the results of ``query[start : start + len(idx)]``,
        ``dist (m, k) float64`` ascending and ``idx (m, k) int64``.

    Example:
        >>> import numpy as np
        >>> from scipy.spatial import cKDTree
        >>> p = np.random.default_rng(0).normal(size=(1000, 3))
        >>> tree = cKDTree(p)
        >>> rows = [idx for _, _, idx in knn_chunks(tree, p, 8, chunk_size=300)]
        >>> [len(r) for r in rows], bool((np.concatenate(rows) == tree.query(p, 8)[1]).all())
        ([300, 300, 300, 100], True)
    """
    step = _chunk_size(chunk_size)
    for start in range(0, query.shape[0], step):
        q = query[start : start + step]
        dist, idx = tree.query(q, k=k, workers=-1)
        yield start, dist.reshape(q.shape[0], k), idx.reshape(q.shape[0], k)


def _pca_normals(points: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Unit normals ``(M, 3) float64`` from neighbourhoods ``points[idx]`` (``idx`` is (M, K)).

    Each normal is the eigenvector of the smallest eigenvalue of the neighbourhood covariance,
    with the canonical sign (largest-magnitude component positive).
    """
    out = np.empty((idx.shape[0], 3), dtype=np.float64)
    for start in range(0, idx.shape[0], _CHUNK):
        nb = points[idx[start : start + _CHUNK]]  # (m, K, 3)
        nb = nb - nb.mean(axis=1, keepdims=True)
        cov = np.matmul(nb.transpose(0, 2, 1), nb)
        _, vecs = np.linalg.eigh(cov)
        out[start : start + _CHUNK] = vecs[:, :, 0]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return _canonical_sign(out)


def _check_viewpoint(viewpoint: Any) -> np.ndarray:
    vp = np.asarray(viewpoint)
    if vp.shape != (3,) or not (
        np.issubdtype(vp.dtype, np.floating) or np.issubdtype(vp.dtype, np.integer)
    ):
        raise InvalidInputError(
            f"viewpoint: expected a numeric (3,) position, got shape {vp.shape}, dtype {vp.dtype}"
        )
    vp = vp.astype(np.float64)
    if not np.isfinite(vp).all():
        raise InvalidInputError(f"viewpoint: must be finite, got {vp.tolist()}")
    return vp


def orient_towards(normals: Any, points: Any, viewpoint: Any) -> np.ndarray:
    """Flip each normal so that it points towards ``viewpoint``: ``n . (viewpoint - p) >= 0``.

    Args:
        normals: ``(N, 3)`` numeric array.
        points: ``(N, 3)`` numeric array (same N).
        viewpoint: ``(3,)`` sensor position.

    Returns:
        ``(N, 3) float32`` normals (a new array; rows with ``n . (v - p) == 0`` are unchanged).

    Example:
        >>> import numpy as np
        >>> orient_towards([[0, 0, 1.0]], [[0, 0, 0.0]], [0, 0, -5]).tolist()
        [[0.0, 0.0, -1.0]]
    """
    n = check_points(normals, "normals", min_points=1).copy()
    p = check_points(points, "points", min_points=1)
    if n.shape != p.shape:
        raise InvalidInputError(
            f"normals: expected the shape of points {p.shape}, got {n.shape}"
        )
    vp = _check_viewpoint(viewpoint)
    dots = np.einsum("ij,ij->i", n.astype(np.float64), vp - p.astype(np.float64))
    n[dots < 0] *= -1
    return _f32(n)


def _knn_graph(normals: np.ndarray, nbrs: np.ndarray, chunk: int) -> csr_matrix:
    """The kNN graph ``i -> nbrs[i, j]`` (no self loops), weights ``1 - |n_i . n_j|``, as CSR.

    Built ``chunk`` rows at a time in canonical form (columns ascending in each row, int32
    indices below 2**31), as ``coo_matrix(...).tocsr()`` would. ``nbrs`` (N, K) is sorted
    along its rows in place. An edge ``j -> i`` with ``j > i`` whose reverse ``i -> j`` exists
    is left out: both have the same weight (``n_i . n_j`` is symmetric), Kruskal's stable
    order meets ``i -> j`` first (row ``i``) and the reverse can then never join two
    components, so the minimum spanning forest is exactly that of the full graph, from about
    two thirds of the edges.
    """
    n, kk = nbrs.shape
    keep = np.empty((n, kk), bool)
    for s in range(0, n, chunk):
        blk = nbrs[s : s + chunk]
        blk.sort(axis=1)
        rows = np.arange(s, s + blk.shape[0])[:, None]
        kp = blk != rows
        below = kp & (blk < rows)  # j -> i with i < j: drop when i -> j exists
        i, j = blk[below], np.broadcast_to(rows, blk.shape)[below]
        kp[below] = ~(nbrs[i] == j[:, None]).any(axis=1)
        keep[s : s + blk.shape[0]] = kp
    counts = keep.sum(axis=1)
    n_edges = int(counts.sum())
    itype = _index_dtype(max(n, n_edges) + 1)
    indptr = np.zeros(n + 1, itype)
    np.cumsum(counts, out=indptr[1:])
    del counts
    indices = np.empty(n_edges, itype)
    data = np.empty(n_edges, np.float64)
    for s in range(0, n, chunk):
        blk, kp = nbrs[s : s + chunk], keep[s : s + chunk]
        rows = np.broadcast_to(np.arange(s, s + blk.shape[0])[:, None], blk.shape)[kp]
        cols = blk[kp]
        dots = np.einsum("ij,ij->i", normals[rows], normals[cols])
        a, b = indptr[s], indptr[s + blk.shape[0]]
        indices[a:b] = cols
        # +1e-6 keeps parallel-normal edges (weight 0 would mean "no edge" for scipy.sparse).
        data[a:b] = 1.0 - np.abs(dots) + 1e-6
    return csr_matrix((data, indices, indptr), shape=(n, n))


def _spanning_forest(normals: np.ndarray, nbrs: list[np.ndarray], chunk: int) -> csr_matrix:
    """Minimum spanning forest of the kNN graph (:func:`_knn_graph`) of ``nbrs[0]``.

    ``nbrs`` is a one-element list that is emptied, so that the neighbours, then the graph,
    are freed as soon as they are used (they and the spanning tree's sort are the peak of
    memory of the orientation).
    """
    graph = _knn_graph(normals, nbrs.pop(), chunk)
    # overwrite: Kruskal works in the graph's own arrays instead of a copy of every edge
    return minimum_spanning_tree(graph, overwrite=True)


def _propagate(normals: np.ndarray, forest: csr_matrix) -> np.ndarray:
    """Make normal signs consistent over the kNN graph; return the component labels ``(N,)``.

    ``normals`` (N, 3) float64 is flipped in place. ``forest`` is the minimum spanning forest
    of the kNN graph (weights ``1 - |n_i . n_j|``, :func:`_spanning_forest`); it is walked
    breadth-first from the lowest index of each component and the sign of each edge is
    accumulated from the root by pointer jumping.
    """
    n = normals.shape[0]
    n_comp, labels = connected_components(forest, directed=False)
    _, roots = np.unique(labels, return_index=True)

    # One breadth-first walk from a virtual node joined to every component root.
    forest = forest.tocoo()
    r = np.concatenate([forest.row, np.full(n_comp, n)])
    c = np.concatenate([forest.col, roots])
    tree = coo_matrix((np.ones(r.shape[0]), (r, c)), shape=(n + 1, n + 1)).tocsr()
    _, pred = breadth_first_order(tree, n, directed=False, return_predecessors=True)
    parent = pred[:n].copy()
    parent[roots] = roots
    sign = np.where(np.einsum("ij,ij->i", normals, normals[parent]) < 0, -1, 1).astype(np.int8)
    sign[roots] = 1
    while True:  # pointer jumping: sign becomes the product of edge signs up to the root
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        sign = sign * sign[parent]
        parent = grand
    normals *= sign[:, None]
    return labels


def _outward_flip(points: np.ndarray, normals: np.ndarray, labels: np.ndarray) -> None:
    """Flip whole components of consistently oriented ``normals`` (in place) to face outward."""
    n_comp = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=n_comp).astype(np.float64)
    centroids = np.stack(
        [np.bincount(labels, weights=points[:, d], minlength=n_comp) for d in range(3)], axis=1
    ) / counts[:, None]
    d = np.einsum("ij,ij->i", points - centroids[labels], normals)
    diag = bbox_diagonal(points)
    tol = 1e-5 * diag + 1e-6 * float(np.abs(points).max())
    votes = np.where(np.abs(d) <= tol, 0.0, np.sign(d))
    vote = np.bincount(labels, weights=votes, minlength=n_comp)
    flip = vote < 0
    open_flat = np.abs(vote) <= _VOTE_MARGIN * counts
    if open_flat.any():
        mean_n = np.stack(
            [np.bincount(labels, weights=normals[:, k], minlength=n_comp) for k in range(3)],
            axis=1,
        )
        big = np.argmax(np.abs(mean_n), axis=1)
        flip = np.where(open_flat, mean_n[np.arange(n_comp), big] < 0, flip)
    normals[flip[labels]] *= -1


def orient_outward(
    points: Any, normals: Any, k: int = _ORIENT_K, *, chunk_size: int | None = None
) -> np.ndarray:
    """Orient unoriented normals consistently and outward (see the module docstring).

    Args:
        points: ``(N, 3)`` numeric array, N >= 3.
        normals: ``(N, 3)`` unit normals with arbitrary signs.
        k: neighbours per point in the propagation graph (clipped to N - 1).
        chunk_size: points per batch of kNN queries and graph edges (default
            :data:`QUERY_CHUNK`); the result does not depend on it.

    Returns:
        ``(N, 3) float32`` normals, each equal to the input up to sign.

    Example:
        >>> import numpy as np
        >>> p = np.array([[x, y, 0.0] for x in range(4) for y in range(4)])
        >>> n = np.tile([0, 0, -1.0], (16, 1))
        >>> orient_outward(p, n)[0].tolist()
        [0.0, 0.0, 1.0]
    """
    pts = check_points(points, "points", min_points=3).astype(np.float64)
    nrm = check_points(normals, "normals", min_points=3).astype(np.float64)
    if nrm.shape != pts.shape:
        raise InvalidInputError(
            f"normals: expected the shape of points {pts.shape}, got {nrm.shape}"
        )
    k = min(check_int(k, "k", minimum=1), pts.shape[0] - 1)
    chunk = _chunk_size(chunk_size)
    nbrs = np.empty((pts.shape[0], k + 1), _index_dtype(pts.shape[0]))
    for start, _, idx in knn_chunks(cKDTree(pts), pts, k + 1, chunk):
        nbrs[start : start + idx.shape[0]] = idx
    del _, idx  # the last batch
    held = [nbrs]
    del nbrs
    labels = _propagate(nrm, _spanning_forest(nrm, held, chunk))
    _outward_flip(pts, nrm, labels)
    return _f32(nrm)


def estimate_normals(
    points: Any,
    k: int | None = None,
    orient: str = "auto",
    viewpoint: Any = None,
    *,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Unit normals of an unorganized cloud from the PCA of each point's k nearest neighbours.

    Args:
        points: ``(N, 3)`` numeric array, N >= 3, finite, not collinear.
        k: neighbours per point besides the point itself (default 30, clipped to N - 1).
        orient: ``"outward"`` (consistent, pointing out of closed objects; open flat patches
            get the sign that makes the largest-magnitude coordinate of their mean normal
            positive), ``"viewpoint"`` (towards ``viewpoint``), ``"none"`` (each normal's
            largest-magnitude component positive, no consistency), or ``"auto"``:
            ``"viewpoint"`` when a viewpoint is given, ``"outward"`` otherwise.
        viewpoint: ``(3,)`` sensor position, required by ``orient="viewpoint"``.
        chunk_size: points per batch of kNN queries, PCA and orientation-graph edges (default
            :data:`QUERY_CHUNK`): the memory is about 150 bytes per point plus about
            ``chunk_size * (k + 1) * 40`` bytes; the result does not depend on it.

    Returns:
        ``(N, 3) float32`` unit normals. Deterministic (identical bytes across calls and
        batch sizes).

    Raises:
        InvalidInputError: bad shape, NaN/inf, fewer than 3 points, unknown ``orient``,
            missing or bad ``viewpoint``.
        DegenerateGeometryError: the cloud is a single point or collinear.

    Example:
        >>> import numpy as np
        >>> g = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2)
        >>> p = np.column_stack([g, np.zeros(25)])
        >>> estimate_normals(p, k=8, viewpoint=[0, 0, -1])[0].tolist()
        [0.0, 0.0, -1.0]
    """
    pts32 = check_points(points, "points", min_points=3)
    check_choice(orient, "orient", _ORIENTS)
    if orient == "auto":
        orient = "outward" if viewpoint is None else "viewpoint"
    if orient == "viewpoint" and viewpoint is None:
        raise InvalidInputError('viewpoint: required with orient="viewpoint"')
    vp = _check_viewpoint(viewpoint) if viewpoint is not None else None
    k = DEFAULT_K if k is None else check_int(k, "k", minimum=2)
    chunk = _chunk_size(chunk_size)
    check_not_degenerate(pts32, "points")
    pts = pts32.astype(np.float64)
    n = pts.shape[0]
    k = min(k, n - 1)
    # only the orientation graph's neighbours outlive their batch
    k_orient = min(k, _ORIENT_K) + 1 if orient == "outward" else 0
    nbrs = np.empty((n, k_orient), _index_dtype(n))
    normals = np.empty((n, 3), np.float64)
    for start, _, idx in knn_chunks(cKDTree(pts), pts, k + 1, chunk):
        stop = start + idx.shape[0]
        normals[start:stop] = _pca_normals(pts, idx)
        nbrs[start:stop] = idx[:, :k_orient]
    del _, idx  # the last batch
    if orient == "outward":
        # the graph and its spanning forest are the peak of memory: hold no float64 copy then
        del pts
        held = [nbrs]
        del nbrs
        labels = _propagate(normals, _spanning_forest(normals, held, chunk))
        pts = pts32.astype(np.float64)
        _outward_flip(pts, normals, labels)
    elif orient == "viewpoint":
        dots = np.einsum("ij,ij->i", normals, vp - pts)
        normals[dots < 0] *= -1
    return _f32(normals)


def organized_normals(xyz: Any, k: int = DEFAULT_K) -> np.ndarray:
    """Normals of an organized cloud, oriented towards a sensor at the origin.

    The normal of a valid pixel is ``cross(d_col, d_row)`` of the differences of its valid
    neighbours along the columns and along the rows (central differences, or one-sided ones
    when one neighbour is missing). A valid pixel without a usable pair gets the PCA normal of
    its ``k`` nearest valid points (zero when fewer than 3 pixels are valid). Normals satisfy
    ``n . (0 - p) >= 0`` (MVTec 3D-AD: camera at the origin looking along +z).

    Args:
        xyz: ``(H, W, 3)`` numeric array; ``(0, 0, 0)`` marks a pixel with no measurement.
        k: neighbours of the kNN fallback (clipped to the number of valid pixels - 1).

    Returns:
        ``(H, W, 3) float32`` unit normals; ``(0, 0, 0)`` at invalid pixels.

    Example:
        >>> import numpy as np
        >>> v, u = np.mgrid[0:4, 0:5].astype(np.float32)
        >>> xyz = np.stack([u, v, np.full_like(u, 2.0)], -1)
        >>> organized_normals(xyz)[1, 1].tolist()
        [0.0, 0.0, -1.0]
    """
    arr = check_organized(xyz, "xyz")
    k = check_int(k, "k", minimum=2)
    valid = valid_pixels(arr)
    p = arr.astype(np.float64)
    h, w = valid.shape

    def diff(axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Differences along ``axis`` (0: rows, 1: columns) and where they exist."""
        pad_p = np.pad(p, [(1, 1) if a == axis else (0, 0) for a in range(2)] + [(0, 0)])
        pad_v = np.pad(valid, [(1, 1) if a == axis else (0, 0) for a in range(2)])
        sl = {-1: slice(0, -2), 0: slice(1, -1), 1: slice(2, None)}

        def take(arr_: np.ndarray, off: int) -> np.ndarray:
            return arr_[sl[off], :] if axis == 0 else arr_[:, sl[off]]

        nxt_p, prv_p = take(pad_p, 1), take(pad_p, -1)
        nxt_v, prv_v = take(pad_v, 1), take(pad_v, -1)
        central = nxt_v & prv_v
        fwd = nxt_v & ~prv_v
        bwd = prv_v & ~nxt_v
        d = np.zeros_like(p)
        d[central] = nxt_p[central] - prv_p[central]
        d[fwd] = nxt_p[fwd] - p[fwd]
        d[bwd] = p[bwd] - prv_p[bwd]
        return d, valid & (nxt_v | prv_v)

    d_row, ok_row = diff(0)
    d_col, ok_col = diff(1)
    n = np.cross(d_col, d_row)
    length = np.linalg.norm(n, axis=-1)
    scale = np.linalg.norm(d_col, axis=-1) * np.linalg.norm(d_row, axis=-1)
    good = ok_row & ok_col & (length > 1e-9 * np.maximum(scale, np.finfo(np.float64).tiny))
    out = np.zeros((h, w, 3), dtype=np.float64)
    out[good] = n[good] / length[good][:, None]

    fallback = valid & ~good
    n_valid = int(valid.sum())
    if fallback.any() and n_valid >= 3:
        pts = p[valid]
        kk = min(k, n_valid - 1)
        tree = cKDTree(pts)
        q = p[fallback]
        fb = np.empty((q.shape[0], 3), np.float64)
        for start, _, idx in knn_chunks(tree, q, kk + 1):
            fb[start : start + idx.shape[0]] = _pca_normals(pts, idx)
        out[fallback] = fb

    flip = np.einsum("hwi,hwi->hw", out, p) > 0  # n . (0 - p) < 0
    out[flip] *= -1
    out[~valid] = 0.0
    return _f32(out)
