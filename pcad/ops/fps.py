"""Farthest point sampling on dense batched clouds, with an exact count and a seeded start.

Semantics (every exact backend): the first index is the start; each next index is the
unselected point whose squared distance to the selected set is largest, ties to the lowest
index. Distances are ``dx * dx + dy * dy + dz * dz`` in float32 (float64 for float64 input).
Selected points are never picked again, so the indices of an item are distinct even when the
cloud has duplicate points.

Backends (``backend=``, see :mod:`pcad.ops.backends`):

- ``"torch"``: the reference, a loop of min-distance update + argmax vectorized over the
  batch (CPU and CUDA).
- ``"numba"``: exact CPU kernel on a bucket kd-tree (a node whose box is farther from the new
  point than its points' current min-distances is skipped), parallel over the batch. Equal to
  the reference index for index.
- ``"fpsample"``: ``fpsample.bucket_fps_kdline_sampling`` (QuickFPS), CPU. Not exact in this
  sense, so never picked by ``"auto"``: fpsample 1.0.2 maps ``start_idx`` through its internal
  kd-tree order, so the first index is generally *not* the start asked for (the rest is the
  standard FPS sequence from whatever point it started at); its ties go to another index; and
  on a cloud with fewer distinct points than ``n_samples`` it repeats indices, in which case
  that item is recomputed by the exact kernel (with a warning).
- ``"torch_cluster"``: ``torch_cluster.fps`` (CPU, CUDA) when importable. Its ratio is set to
  ``(n_samples - 0.5) / length`` so that ``ceil(length * ratio)`` is exactly ``n_samples``
  (extra samples would be trimmed), ``random_start=False``, and the start is applied by
  rolling each item so that it comes first (torch_cluster's own random start uses C ``rand()``
  on the CPU, which no seed reaches).
- ``"triton"``: pcad's Triton kernel (CUDA; CPU tensors only under ``TRITON_INTERPRET=1``),
  exact: equal to the reference index for index. The items are split into chunks processed
  by cooperating programs (see :mod:`pcad.ops._triton`).
- ``"pointnet2_ops"``: ``furthest_point_sample`` (CUDA only) when importable. It always starts
  at index 0 (the start is applied by rolling) and skips points with ``|p|^2 <= 1e-3``, so an
  item with a point that close to the origin is translated first (FPS is translation
  invariant, the float rounding of the translated distances is not: results may then differ
  from the reference in near-ties). It computes in float32 whatever the input dtype; its
  indices are int32 and cast to int64.

Rolling an item changes which index wins an exact tie, so the torch_cluster and pointnet2_ops
backends match the reference exactly only on tie-free clouds with ``start="first"``.

Example:
    >>> import torch
    >>> from pcad.ops import fps
    >>> pts = torch.rand(2, 1000, 3, generator=torch.Generator().manual_seed(0))
    >>> idx = fps(pts, 64, start="random", seed=7)
    >>> idx.shape, idx.dtype
    (torch.Size([2, 64]), torch.int64)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from pcad.checks import check_cloud, check_int, check_lengths, check_tensor
from pcad.errors import InvalidInputError
from pcad.ops.backends import compute_dtype, resolve_backend

Start = str | int | Sequence[int] | torch.Tensor


def fps(
    points: torch.Tensor,
    n_samples: int,
    lengths: torch.Tensor | None = None,
    start: Start = "first",
    seed: int | torch.Generator | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Farthest point sampling: ``n_samples`` indices per batch item.

    Args:
        points: ``(B, N, 3)`` floating tensor (CPU or CUDA), finite.
        n_samples: samples per item, ``1 <= n_samples <= lengths[b]`` for every item.
        lengths: ``(B,)`` integer tensor, the number of valid points of each item (the first
            ``lengths[b]`` rows; the others are padding and never sampled). None: all ``N``.
        start: ``"first"`` (index 0), ``"random"`` (uniform over each item's valid points,
            drawn from ``seed``), an int (the same start for every item) or ``B`` ints.
        seed: an int or a ``torch.Generator``; required by ``start="random"``, ignored
            otherwise. The draw is made on the generator's device (CPU for an int), so a
            seed gives the same starts whatever the points' device.
        backend: ``"auto"`` or a name of :mod:`pcad.ops.backends` (``"torch"``, ``"numba"``,
            ``"fpsample"``, ``"torch_cluster"``, ``"pointnet2_ops"``, ``"triton"``).

    Returns:
        ``(B, n_samples)`` int64 indices into dim 1 of ``points``, on the points' device.

    Raises:
        InvalidInputError: a wrong shape, dtype or value (the message names the argument).
        BackendUnavailableError: the requested backend is not installed or not for this device.

    Example:
        >>> import torch
        >>> from pcad.ops import fps
        >>> pts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.1, 0, 0], [0.5, 0, 0]]])
        >>> fps(pts, 3).tolist()
        [[0, 1, 3]]
    """
    points = check_cloud(points, "points")
    n_samples = check_int(n_samples, "n_samples", 1, whole_floats=False)
    batch, size = points.shape[:2]
    if n_samples > size:
        raise InvalidInputError(
            f"n_samples: {n_samples} is more than the {size} points per item of points"
        )
    lengths = check_lengths(lengths, "lengths", batch, size, points.device)
    lengths_cpu = lengths.cpu()
    short = int(lengths_cpu.min())
    if short < n_samples:
        b = int(lengths_cpu.argmin())
        raise InvalidInputError(
            f"lengths: item {b} has {short} points, fewer than n_samples={n_samples}"
        )
    starts = _starts(start, seed, lengths_cpu)
    name = resolve_backend("fps", backend, points.device)
    dtype = compute_dtype(points)
    pts = points.to(dtype)
    if name == "numba":
        out = _fps_numba(pts, n_samples, lengths_cpu, starts)
    elif name == "fpsample":
        out = _fps_fpsample(pts, n_samples, lengths_cpu, starts)
    elif name == "torch_cluster":
        out = _fps_torch_cluster(pts, n_samples, lengths_cpu, starts)
    elif name == "pointnet2_ops":
        out = _fps_pointnet2(pts, n_samples, lengths_cpu, starts)
    elif name == "triton":
        from pcad.ops._triton import fps_triton

        out = fps_triton(pts, n_samples, lengths_cpu, starts)
    else:
        out = fps_reference(pts, n_samples, lengths, starts.to(points.device))
    return out.to(points.device)


def _starts(
    start: Start, seed: int | torch.Generator | None, lengths: torch.Tensor
) -> torch.Tensor:
    """The ``(B,)`` int64 CPU tensor of start indices."""
    batch = lengths.shape[0]
    if isinstance(start, str):
        if start == "first":
            return torch.zeros(batch, dtype=torch.int64)
        if start != "random":
            raise InvalidInputError(
                f"start: expected 'first', 'random', an int or {batch} ints, got {start!r}"
            )
        if isinstance(seed, torch.Generator):
            gen = seed
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            gen = torch.Generator().manual_seed(int(seed))
        else:
            raise InvalidInputError(
                f"seed: start='random' needs an int seed or a torch.Generator, got {seed!r}"
            )
        u = torch.rand(batch, generator=gen, dtype=torch.float64, device=gen.device).cpu()
        return torch.minimum((u * lengths).floor().to(torch.int64), lengths - 1)
    if isinstance(start, bool):
        raise InvalidInputError(f"start: expected 'first', 'random' or ints, got {start!r}")
    if isinstance(start, (int, np.integer)):
        starts = torch.full((batch,), int(start), dtype=torch.int64)
    else:
        if not isinstance(start, torch.Tensor):
            try:
                start = torch.as_tensor(list(start))
            except (TypeError, ValueError, RuntimeError):
                raise InvalidInputError(
                    f"start: expected 'first', 'random', an int or {batch} ints, got {start!r}"
                ) from None
        check_tensor(start, "start")
        if start.shape != (batch,) or start.is_floating_point() or start.dtype == torch.bool:
            raise InvalidInputError(
                f"start: expected {batch} integers, got a {start.dtype} tensor of shape "
                f"{tuple(start.shape)}"
            )
        starts = start.to(device="cpu", dtype=torch.int64)
    bad = (starts < 0) | (starts >= lengths)
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        raise InvalidInputError(
            f"start: index {int(starts[b])} of item {b} is outside [0, {int(lengths[b])})"
        )
    return starts


def fps_reference(
    points: torch.Tensor, n_samples: int, lengths: torch.Tensor, starts: torch.Tensor
) -> torch.Tensor:
    """The pure-torch reference (any device, no checks): ``(B, n_samples)`` int64."""
    batch, size = points.shape[:2]
    rows = torch.arange(batch, device=points.device)
    x, y, z = points.unbind(-1)
    padded = torch.arange(size, device=points.device)[None, :] >= lengths[:, None]
    mind = torch.full((batch, size), math.inf, dtype=points.dtype, device=points.device)
    mind.masked_fill_(padded, -math.inf)  # never sampled
    out = torch.empty(batch, n_samples, dtype=torch.int64, device=points.device)
    cur = starts.to(points.device)
    for s in range(n_samples):
        out[:, s] = cur
        if s == n_samples - 1:
            break
        q = points[rows, cur]  # (B, 3)
        dx = x - q[:, 0:1]
        dy = y - q[:, 1:2]
        dz = z - q[:, 2:3]
        d = dx * dx + dy * dy + dz * dz
        mind = torch.minimum(mind, d)
        mind[rows, cur] = -1.0  # selected: below every distance, above the padding
        cur = mind.argmax(dim=1)  # the first maximal index
    return out


def _numpy_points(points: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(points.detach().cpu().numpy())


def _fps_numba(
    points: torch.Tensor, n_samples: int, lengths: torch.Tensor, starts: torch.Tensor
) -> torch.Tensor:
    from pcad.ops._kdtree import fps_batch

    out = np.empty((points.shape[0], n_samples), np.int64)
    fps_batch(_numpy_points(points), lengths.numpy(), starts.numpy(), out)
    return torch.from_numpy(out)


def _fpsample_height(n: int) -> int:
    """KD-line height for fpsample (the paper: 3 small, 5-7 medium, 9 large; 2**h <= n)."""
    return max(1, min(7, int(math.log2(n)) - 4))


def _fps_fpsample(
    points: torch.Tensor, n_samples: int, lengths: torch.Tensor, starts: torch.Tensor
) -> torch.Tensor:
    import fpsample

    from pcad.ops._kdtree import fps_one

    pts = _numpy_points(points).astype(np.float32, copy=False)
    out = np.empty((points.shape[0], n_samples), np.int64)
    for b in range(points.shape[0]):
        n, s0 = int(lengths[b]), int(starts[b])
        if n_samples == 1 or n < 2:
            out[b] = s0
            continue
        cloud = pts[b, :n]
        idx = fpsample.bucket_fps_kdline_sampling(cloud, n_samples, _fpsample_height(n),
                                                  start_idx=s0).astype(np.int64)
        if np.unique(idx).size != n_samples:
            warnings.warn(
                f"pcad.ops.fps: fpsample repeated indices on item {b} (fewer distinct points "
                "than n_samples); that item was recomputed by the exact numba kernel",
                RuntimeWarning, stacklevel=3)
            fps_one(cloud, n, s0, out[b])
            continue
        out[b] = idx
    return torch.from_numpy(out)


def _roll_back(idx: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """Indices into an item rolled by ``-start`` -> indices into the item."""
    return (idx + start) % n if start else idx


def _fps_torch_cluster(
    points: torch.Tensor, n_samples: int, lengths: torch.Tensor, starts: torch.Tensor
) -> torch.Tensor:
    import torch_cluster

    dev = points.device
    items = []
    for b in range(points.shape[0]):
        n, s0 = int(lengths[b]), int(starts[b])
        item = points[b, :n]
        items.append(torch.roll(item, -s0, 0) if s0 else item)
    src = torch.cat(items).contiguous()
    batch = torch.repeat_interleave(torch.arange(len(items), device=dev), lengths.to(dev))
    ratio = ((n_samples - 0.5) / lengths.to(torch.float64)).to(torch.float32).to(dev)
    if n_samples == 1:  # ratio must be > 0: ask for one point per item
        ratio = (0.5 / lengths.to(torch.float64)).to(torch.float32).to(dev)
    if bool((lengths == lengths[0]).all()):
        ratio_arg: float | torch.Tensor = float(ratio[0])
    else:
        ratio_arg = ratio
    idx = torch_cluster.fps(src, batch, ratio_arg, False)
    ptr = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(dev)
    owner = torch.bucketize(idx, ptr, right=True) - 1
    out = torch.empty(points.shape[0], n_samples, dtype=torch.int64, device=dev)
    for b in range(points.shape[0]):
        local = idx[owner == b][:n_samples] - ptr[b]
        if local.numel() != n_samples:
            raise RuntimeError(
                f"torch_cluster.fps returned {local.numel()} samples for item {b}, "
                f"expected {n_samples}"
            )
        out[b] = _roll_back(local, int(starts[b]), int(lengths[b]))
    return out


def _fps_pointnet2(
    points: torch.Tensor, n_samples: int, lengths: torch.Tensor, starts: torch.Tensor
) -> torch.Tensor:
    from pointnet2_ops import pointnet2_utils

    out = torch.empty(points.shape[0], n_samples, dtype=torch.int64, device=points.device)
    for b in range(points.shape[0]):
        n, s0 = int(lengths[b]), int(starts[b])
        item = points[b, :n].float()
        if s0:
            item = torch.roll(item, -s0, 0)
        if bool(((item * item).sum(-1) <= 1e-3).any()):  # pointnet2 skips these points
            item = item - item.min(0).values + 1.0
        idx = pointnet2_utils.furthest_point_sample(item[None].contiguous(), n_samples)[0]
        out[b] = _roll_back(idx.long(), s0, n)
    return out
