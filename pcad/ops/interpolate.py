"""Three-nearest-neighbour feature interpolation (PointNet++ feature propagation).

- :func:`three_nn`: the 3 nearest known points of each unknown point, squared distances.
- :func:`three_interpolate`: weighted sum of the features of given neighbours.
- :func:`interpolate_features`: both, with inverse-distance weights.

Weights: ``w_j = 1 / (d_j ** power + eps)`` normalised to sum to 1 over the valid neighbours,
with ``d_j`` the Euclidean distance. The default ``power=2`` is inverse *squared* distance,
as the original PointNet++ (its TensorFlow ``three_nn`` returns squared distances and the
model uses ``1 / max(d2, 1e-10)``); ``power=1`` reproduces Pointnet2_PyTorch, whose
``three_nn`` returns square roots and whose model uses ``1 / (d + 1e-8)``. ``eps`` (default
``1e-8``) keeps a known point that coincides with the unknown one finite: it then takes
nearly all the weight. Neighbours that are padding (an item with fewer than 3 known points)
get weight 0.

Example:
    >>> import torch
    >>> from pcad.ops import interpolate_features
    >>> known = torch.rand(1, 64, 3, generator=torch.Generator().manual_seed(0))
    >>> feats = torch.ones(1, 64, 5)
    >>> out = interpolate_features(torch.rand(1, 10, 3), known, feats)
    >>> torch.allclose(out, torch.ones(1, 10, 5))
    True
"""

from __future__ import annotations

import torch

from pcad.checks import check_cloud, check_index, check_tensor
from pcad.errors import InvalidInputError
from pcad.ops.backends import compute_dtype, resolve_backend
from pcad.ops.group import gather
from pcad.ops.knn import check_knn_pair, empty_neighbours, run_knn, sq_dist

DEFAULT_EPS = 1e-8


def three_nn(
    unknown: torch.Tensor,
    known: torch.Tensor,
    unknown_lengths: torch.Tensor | None = None,
    known_lengths: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3 nearest ``known`` points of every ``unknown`` point (``knn`` with ``k=3``).

    Args:
        unknown: ``(B, M, 3)`` floating tensor (where features are wanted).
        known: ``(B, N, 3)`` floating tensor (where features are known).
        unknown_lengths: ``(B,)`` integer tensor, valid unknown points per item.
        known_lengths: ``(B,)`` integer tensor, valid known points per item.
        backend: ``"auto"``, one of :func:`pcad.ops.knn`'s backends, or ``"pointnet2_ops"``
            (CUDA, float32 selection; its square-rooted distances are recomputed as squared
            ones, and items with fewer than 3 known points use the reference).

    Returns:
        ``(dists2, idx)``: ``(B, M, 3)`` squared distances ascending and int64 indices
        (``inf`` / ``-1`` padding, as :func:`pcad.ops.knn`).

    Raises:
        InvalidInputError: a wrong shape, dtype or value (the message names the argument).
        BackendUnavailableError: the requested backend is not installed or not for this device.

    Example:
        >>> import torch
        >>> from pcad.ops import three_nn
        >>> known = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [9, 0, 0]]])
        >>> three_nn(torch.tensor([[[1.2, 0, 0]]]), known)[1].tolist()
        [[[1, 2, 0]]]
    """
    unknown, known, _, u_len, k_len = check_knn_pair(
        unknown, known, 3, unknown_lengths, known_lengths)
    name = resolve_backend("three_nn", backend, unknown.device)
    dtype = compute_dtype(unknown, known)
    u, kn = unknown.to(dtype), known.to(dtype)
    if name == "pointnet2_ops":
        return _three_nn_pointnet2(u, kn, u_len.cpu(), k_len.cpu())
    return run_knn(name, u, kn, 3, u_len, k_len)


def three_interpolate(
    features: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``out[b, m] = sum_j weights[b, m, j] * features[b, idx[b, m, j]]`` (``-1``: no term).

    Args:
        features: ``(B, N, C)`` floating tensor (channels last).
        idx: ``(B, M, K)`` integer tensor (``K`` is 3 for :func:`three_nn`), ``-1`` padding.
        weights: ``(B, M, K)`` floating tensor.

    Returns:
        ``(B, M, C)`` tensor, differentiable with respect to ``features`` and ``weights``.

    Raises:
        InvalidInputError: wrong shapes, dtypes or devices.

    Example:
        >>> import torch
        >>> from pcad.ops import three_interpolate
        >>> feats = torch.tensor([[[1.0], [3.0]]])
        >>> w = torch.tensor([[[0.5, 0.5, 0.0]]])
        >>> three_interpolate(feats, torch.tensor([[[0, 1, -1]]]), w).tolist()
        [[[2.0]]]
    """
    features = check_tensor(features, "features")
    if features.ndim != 3 or not features.is_floating_point():
        raise InvalidInputError(
            f"features: expected a floating (B, N, C) tensor, got {features.dtype} "
            f"{tuple(features.shape)}"
        )
    idx = check_index(idx, "idx", features.shape[0], features.device)
    weights = check_tensor(weights, "weights")
    if idx.ndim != 3 or weights.shape != idx.shape:
        raise InvalidInputError(
            f"weights: expected the shape of idx, (B, M, K) = {tuple(idx.shape)}, "
            f"got {tuple(weights.shape)}"
        )
    if not weights.is_floating_point() or weights.device != features.device:
        raise InvalidInputError(
            f"weights: expected a floating tensor on {features.device}, got {weights.dtype} "
            f"on {weights.device}"
        )
    picked = gather(features, idx)  # (B, M, K, C), zeros for -1
    return (picked * weights[..., None].to(picked.dtype)).sum(dim=2)


def inverse_distance_weights(
    dists2: torch.Tensor, idx: torch.Tensor, power: float = 2.0, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """Normalised weights ``1 / (d ** power + eps)`` over valid neighbours (``idx >= 0``).

    Rows without any valid neighbour get all-zero weights.
    """
    dist = dists2 if power == 2 else dists2.clamp(min=0).sqrt() ** power
    w = torch.where(idx >= 0, 1.0 / (dist + eps), torch.zeros_like(dist))
    norm = w.sum(dim=-1, keepdim=True)
    return torch.where(norm > 0, w / norm.clamp(min=torch.finfo(w.dtype).tiny), w)


def interpolate_features(
    unknown: torch.Tensor,
    known: torch.Tensor,
    features: torch.Tensor,
    unknown_lengths: torch.Tensor | None = None,
    known_lengths: torch.Tensor | None = None,
    power: float = 2.0,
    eps: float = DEFAULT_EPS,
    backend: str = "auto",
) -> torch.Tensor:
    """Features at ``unknown`` from the 3 nearest ``known`` points, inverse-distance weighted.

    Args:
        unknown: ``(B, M, 3)`` floating tensor.
        known: ``(B, N, 3)`` floating tensor.
        features: ``(B, N, C)`` floating tensor, the features of ``known`` (channels last).
        unknown_lengths: ``(B,)`` integer tensor, valid unknown points per item (padded rows
            of the output are zeros).
        known_lengths: ``(B,)`` integer tensor, valid known points per item (``>= 1``).
        power: distance exponent of the weights (2: PointNet++, 1: Pointnet2_PyTorch).
        eps: added to ``d ** power`` before the reciprocal (see the module docstring).
        backend: the :func:`three_nn` backend.

    Returns:
        ``(B, M, C)`` tensor in ``features``' dtype, differentiable with respect to
        ``features`` (neighbour search and weights carry no gradient).

    Raises:
        InvalidInputError: a wrong shape, dtype or value (the message names the argument).

    Example:
        >>> import torch
        >>> from pcad.ops import interpolate_features
        >>> known = torch.tensor([[[0.0, 0, 0], [2, 0, 0], [10, 0, 0]]])
        >>> out = interpolate_features(torch.tensor([[[1.0, 0, 0]]]), known, known[..., :1])
        >>> round(out.item(), 4)  # (0 * 1 + 2 * 1 + 10 / 81) / (1 + 1 + 1 / 81)
        1.0552
    """
    known = check_cloud(known, "known")
    features = check_tensor(features, "features")
    if features.ndim != 3 or features.shape[:2] != known.shape[:2]:
        raise InvalidInputError(
            f"features: expected shape ({known.shape[0]}, {known.shape[1]}, C) to match known, "
            f"got {tuple(features.shape)}"
        )
    if not features.is_floating_point():
        raise InvalidInputError(f"features: expected a floating dtype, got {features.dtype}")
    if known_lengths is not None and isinstance(known_lengths, torch.Tensor) \
            and known_lengths.numel() and int(known_lengths.min()) < 1:
        raise InvalidInputError("known_lengths: every item needs at least 1 known point")
    if not (isinstance(power, (int, float)) and power > 0) or not (
            isinstance(eps, (int, float)) and eps >= 0):
        raise InvalidInputError(f"power, eps: expected power > 0 and eps >= 0, got {power}, {eps}")
    d2, idx = three_nn(unknown, known, unknown_lengths, known_lengths, backend=backend)
    w = inverse_distance_weights(d2, idx, power, eps)
    return three_interpolate(features, idx, w.to(features.dtype))


def _three_nn_pointnet2(u, kn, u_len, k_len):
    from pointnet2_ops import pointnet2_utils

    batch, rows = u.shape[:2]
    out_d, out_i = empty_neighbours(batch, rows, 3, u.dtype, u.device)
    for b in range(batch):
        n, m = int(k_len[b]), int(u_len[b])
        if m == 0 or n == 0:
            continue
        if n < 3:  # pointnet2's kernel assumes 3 known points: use the reference
            d, i = run_knn("torch", u[b:b + 1, :m], kn[b:b + 1, :n], 3,
                           u_len.new_tensor([m]), k_len.new_tensor([n]))
            out_d[b, :m], out_i[b, :m] = d[0], i[0]
            continue
        _, idx = pointnet2_utils.three_nn(u[b:b + 1, :m].float().contiguous(),
                                          kn[b:b + 1, :n].float().contiguous())
        idx = idx[0].long()
        d = sq_dist(u[b, :m, None, :], kn[b][idx])
        d, order = d.sort(dim=1, stable=True)
        out_d[b, :m], out_i[b, :m] = d, idx.gather(1, order)
    return out_d, out_i
