"""Point-MAE features of an organized cloud on a 2D patch grid (M3DM's point feature path).

:func:`point_patch_features` does what M3DM does per sample:

1. resize the organized cloud to ``image_size`` with nearest neighbour
   (:func:`~pcad.data.preprocess.resize_organized`, so no invalid pixel becomes valid);
2. take the measured foreground pixels (:func:`~pcad.features.fpfh.point_mask`, background
   plane removed unless ``remove_background=False``) and run the encoder on their points;
3. spread the group features to every foreground pixel by inverse squared distance over the
   3 nearest group centres (``w = 1 / (d**2 + 1e-8)``, M3DM's ``interpolating_points``;
   :func:`pcad.ops.three_nn`);
4. average the pixel features over each cell of the patch grid, counting only foreground
   pixels (the cells and weights of :func:`~pcad.features.grid.to_patch_grid`); a patch is
   foreground when it holds at least one foreground pixel.

M3DM instead scatters the pixel features into a zero image and applies ``AvgPool2d(3, 1)``
and ``AdaptiveAvgPool2d(56)``, so its patches are diluted by the background; pcad averages
over the foreground only.

Steps 3 and 4 are linear in the group features, so by default the patch features are
computed as ``A @ F`` with ``A`` the ``(h * w, G)`` matrix of pooled interpolation weights,
without building the ``(H, W, C)`` pixel map. ``dense=True`` builds that map and calls
:func:`~pcad.features.grid.to_patch_grid` (the reference; same result up to float
rounding, slower and ``H * W * C`` floats of memory).

Example:
    >>> import numpy as np
    >>> from pcad.features.pointmae import PointMAEEncoder
    >>> from pcad.features.point_grid import point_patch_features
    >>> enc = PointMAEEncoder(trans_dim=32, depth=2, num_heads=2, num_group=32,
    ...                       group_size=8).freeze()
    >>> yy, xx = np.mgrid[:64, :64].astype(np.float32)
    >>> xyz = np.stack([xx, yy, 5 + np.sin(xx / 6)], -1) * 0.01
    >>> xyz[:, :16] = 0  # no measurement on the left quarter
    >>> feats, fg = point_patch_features(xyz, 32, (8, 8), enc, remove_background=False)
    >>> feats.shape, feats.dtype, fg.shape, int(fg.sum())
    ((64, 64), dtype('float32'), (64,), 48)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pcad.checks import check_int, check_organized
from pcad.errors import InvalidInputError
from pcad.features.base import full_float32_convolutions
from pcad.features.fpfh import point_mask
from pcad.features.grid import to_patch_grid
from pcad.features.pointmae import PointMAEEncoder
from pcad.ops import three_nn
from pcad.ops.interpolate import inverse_distance_weights, three_interpolate

__all__ = ["patch_cells", "point_patch_features", "point_patch_features_batch"]

#: ``eps`` of the inverse-distance weights (M3DM: ``1 / (d**2 + 1e-8)``).
IDW_EPS = 1e-8


def patch_cells(n_in: int, n_out: int) -> np.ndarray:
    """``(n_in, m) int64``: the cells of ``adaptive_avg_pool`` (``n_in -> n_out``) holding
    each input index, ``-1`` padded (``m`` is 1 when ``n_out`` divides ``n_in``, else 2).

    Cell ``i`` spans ``floor(i * n_in / n_out)`` to ``ceil((i + 1) * n_in / n_out)``.

    Example:
        >>> patch_cells(4, 2).tolist(), patch_cells(5, 4)[2].tolist()
        ([[0], [0], [1], [1]], [1, 2])
    """
    i = np.arange(n_out, dtype=np.int64)
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)
    pos = np.arange(n_in, dtype=np.int64)[:, None]
    member = (pos >= start[None]) & (pos < end[None])  # (n_in, n_out)
    m = int(member.sum(1).max())
    order = np.argsort(~member, axis=1, kind="stable")[:, :m]
    return np.where(np.take_along_axis(member, order, 1), order, -1)


def _check_grid(grid: Any, shape: tuple[int, int]) -> tuple[int, int]:
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise InvalidInputError(f"grid: expected (h, w), got {grid!r}")
    return (check_int(grid[0], "grid[0]", 1, shape[0]), check_int(grid[1], "grid[1]", 1, shape[1]))


def _pooled_weights(rows: np.ndarray, cols: np.ndarray, idx: np.ndarray, w: np.ndarray,
                    shape: tuple[int, int], grid: tuple[int, int], n_known: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``A (h * w, G) float32`` (rows normalised by the foreground count) and the counts."""
    rc = patch_cells(shape[0], grid[0])[rows]  # (P, m1)
    cc = patch_cells(shape[1], grid[1])[cols]  # (P, m2)
    cell = rc[:, :, None] * grid[1] + cc[:, None, :]  # (P, m1, m2)
    ok = (rc[:, :, None] >= 0) & (cc[:, None, :] >= 0)
    p_idx = np.broadcast_to(np.arange(len(rows))[:, None, None], cell.shape)[ok]
    cell = cell[ok]
    n_cells = grid[0] * grid[1]
    counts = np.bincount(cell, minlength=n_cells).astype(np.float64)
    known = idx[p_idx]  # (E, 3)
    weight = w[p_idx]
    flat = np.repeat(cell, known.shape[1]) * n_known + known.reshape(-1)
    keep = known.reshape(-1) >= 0
    a = np.bincount(flat[keep], weights=weight.reshape(-1)[keep],
                    minlength=n_cells * n_known).reshape(n_cells, n_known)
    a /= np.maximum(counts, 1.0)[:, None]
    return a.astype(np.float32), counts


def point_patch_features(
    xyz: Any,
    image_size: int | tuple[int, int],
    grid: tuple[int, int],
    encoder: PointMAEEncoder,
    *,
    remove_background: bool = True,
    dense: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Point-MAE features pooled to a patch grid (see the module docstring).

    Args:
        xyz: ``(H, W, 3)`` organized cloud, ``(0, 0, 0)`` = no measurement.
        image_size: side of the square the cloud is resized to (M3DM: 224), or ``(H, W)``.
        grid: ``(h, w)`` patch grid (M3DM: ``(56, 56)``), at most the resized size.
        encoder: a :class:`~pcad.features.pointmae.PointMAEEncoder`, e.g. from
            :func:`~pcad.features.pointmae.load_point_encoder`; run in eval mode without
            gradients.
        remove_background: drop the background plane (:func:`~pcad.features.fpfh.point_mask`).
        dense: build the per-pixel map and pool it with
            :func:`~pcad.features.grid.to_patch_grid` (reference path).

    Returns:
        ``feats (h * w, C) float32`` in row-major patch order (``C = encoder.out_channels``;
        zero rows where no foreground pixel falls) and ``fg (h * w,) bool``.

    Raises:
        InvalidInputError: a wrong shape or size, an image without any foreground point
            (the message gives the sample's shape), or fewer foreground points than the
            encoder's groups need (the counts are named).
    """
    from pcad.data.preprocess import resize_organized

    src = check_organized(xyz, "xyz")
    if not isinstance(encoder, PointMAEEncoder):
        raise InvalidInputError(
            f"encoder: expected a PointMAEEncoder (load_point_encoder()), got "
            f"{type(encoder).__name__}")
    img = resize_organized(src, image_size)
    shape = (int(img.shape[0]), int(img.shape[1]))
    gh, gw = _check_grid(grid, shape)
    mask = point_mask(img, remove_background)
    n_fg = int(mask.sum())
    if n_fg == 0:
        where = " after background removal" if remove_background else ""
        raise InvalidInputError(
            f"xyz: no foreground point in the sample of shape {src.shape} (resized to "
            f"{shape[0]}x{shape[1]}){where}")
    rows, cols = np.nonzero(mask)
    pts = torch.from_numpy(img[rows, cols])[None]
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode(), full_float32_convolutions():
            feats, centers = encoder(pts)
            d2, idx = three_nn(pts.to(centers.device), centers)
            w = inverse_distance_weights(d2, idx, eps=IDW_EPS)
            if dense:
                per_pixel = three_interpolate(feats, idx, w)[0].cpu().numpy()
                fmap = np.zeros((*shape, feats.shape[-1]), np.float32)
                fmap[rows, cols] = per_pixel
                out, cover = to_patch_grid(fmap, mask, (gh, gw), return_coverage=True)
                return (out.reshape(gh * gw, -1).astype(np.float32),
                        cover.reshape(-1) > 0)
            a, counts = _pooled_weights(rows, cols, idx[0].cpu().numpy(),
                                        w[0].double().cpu().numpy(), shape, (gh, gw),
                                        feats.shape[1])
            out = torch.from_numpy(a).to(feats.device) @ feats[0].float()
    finally:
        encoder.train(was_training)
    return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32), counts > 0


def point_patch_features_batch(
    clouds: Sequence[Any],
    image_size: int | tuple[int, int],
    grid: tuple[int, int],
    encoder: PointMAEEncoder,
    *,
    prepared: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
    chunk: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`point_patch_features` (background removed) of several clouds, the encoder and
    the 3-NN interpolation run on ``chunk`` of them at once as one ragged batch (``(B, N,
    3)`` with lengths).

    Args:
        clouds: ``(H, W, 3)`` organized clouds (sizes may differ).
        image_size, grid, encoder: as :func:`point_patch_features`.
        prepared: per cloud, ``(resized (S, S, 3), foreground (S, S) bool)`` already computed
            (the cloud resized with nearest neighbour and its :func:`point_mask`), or None.
        chunk: clouds per encoder call; None: 16 on CUDA, 1 on the CPU, where each cloud goes
            through :func:`point_patch_features` and the result is bitwise its (a batched
            matrix product may round differently in the last bits: within 1e-5 relative).

    Returns:
        per cloud ``(feats (h * w, C) float32, fg (h * w,) bool)``.

    Raises:
        InvalidInputError: as :func:`point_patch_features` (the message names the item).

    Example:
        >>> import numpy as np
        >>> from pcad.features.pointmae import PointMAEEncoder
        >>> enc = PointMAEEncoder(trans_dim=32, depth=1, num_heads=2, num_group=8,
        ...                       group_size=4, tokenizer_dims=(16, 32, 32), pos_hidden=16)
        >>> yy, xx = np.mgrid[:32, :32].astype(np.float32)
        >>> xyz = np.stack([xx * 0.01, yy * 0.01, np.ones_like(xx)], -1)
        >>> xyz[8:24, 8:24, 2] -= 0.05
        >>> [(f.shape, int(g.sum())) for f, g in point_patch_features_batch(
        ...     [xyz, xyz], 32, (4, 4), enc, chunk=2)]
        [((16, 32), 4), ((16, 32), 4)]
    """
    from pcad.data.preprocess import resize_organized

    if not isinstance(encoder, PointMAEEncoder):
        raise InvalidInputError(
            f"encoder: expected a PointMAEEncoder (load_point_encoder()), got "
            f"{type(encoder).__name__}")
    items = list(clouds)
    given = list(prepared) if prepared is not None else [None] * len(items)
    if len(given) != len(items):
        raise InvalidInputError(f"prepared: {len(given)} entries for {len(items)} clouds")
    if chunk is None:
        chunk = 16 if encoder.device.type == "cuda" else 1
    chunk = max(1, int(chunk))
    if chunk == 1:
        return [point_patch_features(x, image_size, grid, encoder) for x in items]
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for lo in range(0, len(items), chunk):
        out += _encode_chunk(items[lo:lo + chunk], given[lo:lo + chunk], lo, image_size, grid,
                             encoder, resize_organized)
    return out


def _encode_chunk(items: list[Any], given: list[Any], first: int,
                  image_size: int | tuple[int, int], grid: tuple[int, int],
                  encoder: PointMAEEncoder, resize) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`point_patch_features_batch` of one chunk (``first``: its first item's index)."""
    pixels, clouds, shapes = [], [], []
    gh = gw = 0
    for i, (x, prep) in enumerate(zip(items, given, strict=True)):
        src = check_organized(x, f"clouds[{first + i}]")
        if prep is None:
            img = resize(src, image_size)
            mask = point_mask(img, True)
        else:
            img, mask = prep
        shape = (int(img.shape[0]), int(img.shape[1]))
        gh, gw = _check_grid(grid, shape)
        if not mask.any():
            raise InvalidInputError(
                f"clouds[{first + i}]: no foreground point in the sample of shape {src.shape} "
                f"(resized to {shape[0]}x{shape[1]}) after background removal")
        rows, cols = np.nonzero(mask)
        pixels.append((rows, cols))
        clouds.append(torch.from_numpy(np.ascontiguousarray(img[rows, cols])))
        shapes.append(shape)
    lengths = torch.tensor([len(c) for c in clouds], dtype=torch.int64)
    pts = torch.nn.utils.rnn.pad_sequence(clouds, batch_first=True)
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        with torch.inference_mode(), full_float32_convolutions():
            feats, centers = encoder(pts, lengths)
            d2, idx = three_nn(pts.to(centers.device), centers,
                               unknown_lengths=lengths.to(centers.device))
            w = inverse_distance_weights(d2, idx, eps=IDW_EPS)
            idx_np, w_np = idx.cpu().numpy(), w.double().cpu().numpy()
            for b, ((rows, cols), shape) in enumerate(zip(pixels, shapes, strict=True)):
                n = len(rows)
                a, counts = _pooled_weights(rows, cols, idx_np[b, :n], w_np[b, :n], shape,
                                            (gh, gw), feats.shape[1])
                f = torch.from_numpy(a).to(feats.device) @ feats[b].float()
                out.append((np.ascontiguousarray(f.cpu().numpy(), dtype=np.float32),
                            counts > 0))
    finally:
        encoder.train(was_training)
    return out
