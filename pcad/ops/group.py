"""Gather per-point values by batched indices; group neighbourhoods (pure torch, any device).

Channels-last counterparts of pointnet2's ``gather_operation`` / ``grouping_operation``.
Negative indices (the ``-1`` padding of :func:`pcad.ops.knn`, :func:`pcad.ops.ball_query`)
give zeros. Both are differentiable with respect to the values.

Example:
    >>> import torch
    >>> from pcad.ops import gather
    >>> values = torch.arange(6.0).view(1, 3, 2)
    >>> gather(values, torch.tensor([[2, -1]])).tolist()
    [[[4.0, 5.0], [0.0, 0.0]]]
"""

from __future__ import annotations

import torch

from pcad.checks import check_index, check_tensor
from pcad.errors import InvalidInputError


def gather(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, ...] = values[b, idx[b, ...]]``, zeros where ``idx < 0``.

    Args:
        values: ``(B, N, C)`` tensor (any dtype).
        idx: ``(B, ...)`` integer tensor on the same device, entries in ``[-1, N)`` (any
            negative entry is padding).

    Returns:
        ``(B, ..., C)`` tensor of ``values``' dtype.

    Raises:
        InvalidInputError: wrong shapes, dtype, device, or an index ``>= N``.

    Example:
        >>> import torch
        >>> from pcad.ops import gather
        >>> feats = torch.arange(8.0).view(1, 4, 2)
        >>> gather(feats, torch.tensor([[[3, 0], [1, -1]]])).shape
        torch.Size([1, 2, 2, 2])
    """
    values = check_tensor(values, "values")
    if values.ndim != 3:
        raise InvalidInputError(f"values: expected shape (B, N, C), got {tuple(values.shape)}")
    batch, size, channels = values.shape
    idx = check_index(idx, "idx", batch, values.device)
    if idx.numel() and int(idx.max()) >= size:
        raise InvalidInputError(
            f"idx: entries must be < {size} (N of values), got {int(idx.max())}"
        )
    flat = idx.reshape(batch, -1)
    valid = flat >= 0
    picked = torch.gather(values, 1, flat.clamp(min=0)[..., None].expand(-1, -1, channels))
    picked = torch.where(valid[..., None], picked, torch.zeros_like(picked))
    return picked.view(*idx.shape, channels)


def group(
    points: torch.Tensor, idx: torch.Tensor, centers: torch.Tensor | None = None
) -> torch.Tensor:
    """Neighbourhoods of points: ``points[b, idx[b, m, j]]``, relative to ``centers`` if given.

    Args:
        points: ``(B, N, 3)`` tensor.
        idx: ``(B, M, K)`` integer tensor (e.g. from :func:`pcad.ops.knn` or
            :func:`pcad.ops.ball_query`), ``-1`` for padding.
        centers: optional ``(B, M, 3)``: subtracted from every neighbour of row ``m``
            (pointnet2's ``QueryAndGroup`` relative coordinates). Padded slots stay zero.

    Returns:
        ``(B, M, K, 3)`` tensor.

    Raises:
        InvalidInputError: wrong shapes, dtype, device, or an index ``>= N``.

    Example:
        >>> import torch
        >>> from pcad.ops import group, knn
        >>> pts = torch.rand(1, 100, 3, generator=torch.Generator().manual_seed(0))
        >>> _, idx = knn(pts[:, :10], pts, 8)
        >>> group(pts, idx, centers=pts[:, :10]).shape
        torch.Size([1, 10, 8, 3])
    """
    points = check_tensor(points, "points")
    if points.ndim != 3 or points.shape[2] != 3:
        raise InvalidInputError(f"points: expected shape (B, N, 3), got {tuple(points.shape)}")
    idx = check_index(idx, "idx", points.shape[0], points.device)
    if idx.ndim != 3:
        raise InvalidInputError(f"idx: expected shape (B, M, K), got {tuple(idx.shape)}")
    out = gather(points, idx)
    if centers is None:
        return out
    centers = check_tensor(centers, "centers")
    if centers.shape != (idx.shape[0], idx.shape[1], 3):
        raise InvalidInputError(
            f"centers: expected shape {(idx.shape[0], idx.shape[1], 3)}, "
            f"got {tuple(centers.shape)}"
        )
    valid = (idx >= 0)[..., None]
    return torch.where(valid, out - centers[:, :, None, :].to(out.dtype), torch.zeros_like(out))
