"""Background-plane foreground of a batch of organized scans in torch, on any device.

The batched twin of :func:`pcad.geometry.planes.foreground_mask` for the detectors' CUDA
path: the same least-squares plane fit to the valid pixels of a border band, the same refit
to the inliers (residual at most 3 medians), the same threshold (5 robust sigmas, at least
``min_height`` of the valid cloud's bounding-box diagonal), computed in float64 for every
scan of a batch at once. Medians are taken as numpy does (the mean of the two middle values
for an even count). The normal is the eigenvector of the smallest eigenvalue of the band's
3 x 3 scatter matrix (numpy takes the last right singular vector of the centred points: the
same vector up to sign and rounding); sums run in another order than numpy's, so a pixel
whose distance to the plane equals the threshold to the last bits could differ; the tests
compare the masks with numpy's and find none.

:func:`dilate_masks` is :func:`scipy.ndimage.binary_dilation` with its default (cross)
structure and zero border, batched.

Example:
    >>> import torch
    >>> from pcad.geometry.planes_torch import foreground_masks
    >>> yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    >>> xyz = torch.stack([xx * 0.01, yy * 0.01, torch.ones_like(xx)], -1)
    >>> xyz[15:25, 15:25, 2] -= 0.05  # a box standing on the plane, towards the camera
    >>> int(foreground_masks(xyz[None]).sum())
    100
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pcad.errors import InvalidInputError

__all__ = ["dilate_masks", "foreground_masks", "foreground_masks_groups"]


def _band_indices(h: int, w: int, border: float) -> np.ndarray:
    """Flat indices of the border band of an ``(h, w)`` grid (as ``foreground_mask``'s)."""
    band = np.zeros((h, w), bool)
    bh, bw = max(1, int(h * border)), max(1, int(w * border))
    band[:bh], band[-bh:], band[:, :bw], band[:, -bw:] = True, True, True, True
    return np.flatnonzero(band)


def _masked_median(values: torch.Tensor, weight: torch.Tensor, count: torch.Tensor
                   ) -> torch.Tensor:
    """``(B,)`` median of ``values[b][weight[b]]`` as :func:`numpy.median` (mean of the two
    middle values for an even count); anything where the count is 0."""
    big = torch.where(weight, values, torch.full_like(values, float("inf")))
    ordered = big.sort(dim=1).values
    lo = ((count - 1).clamp(min=0) // 2)[:, None]
    hi = (count // 2).clamp(max=values.shape[1] - 1)[:, None]
    a, b = ordered.gather(1, lo)[:, 0], ordered.gather(1, hi)[:, 0]
    return torch.where(count % 2 == 1, a, (a + b) / 2)


def _fit(points: torch.Tensor, weight: torch.Tensor, count: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centre (B, 3), normal (B, 3))``: least-squares plane of the weighted points."""
    wf = weight.to(points.dtype)[..., None]
    centre = (points * wf).sum(1) / count.clamp(min=1).to(points.dtype)[:, None]
    d = (points - centre[:, None]) * wf
    scatter = d.transpose(1, 2) @ d
    _, vecs = torch.linalg.eigh(scatter)
    return centre, vecs[..., 0]


def _residuals(points: torch.Tensor, centre: torch.Tensor, normal: torch.Tensor
               ) -> torch.Tensor:
    return ((points - centre[:, None]) * normal[:, None]).sum(-1).abs()


def foreground_masks_groups(groups: Sequence[torch.Tensor], border: float = 0.1,
                            min_height: float = 0.004) -> list[torch.Tensor]:
    """:func:`foreground_masks` of several batches of scans (each its own ``(H, W)``), with
    the plane fits of all of them in one pass (one ``eigh`` call per fit).

    Args:
        groups: ``(B_i, H_i, W_i, 3)`` float tensors on one device, zeros = no measurement,
            finite.
        border, min_height: as :func:`pcad.geometry.planes.foreground_mask`.

    Returns:
        ``(B_i, H_i, W_i) bool`` per group, on the groups' device.

    Example:
        >>> import torch
        >>> a, b = torch.zeros(2, 16, 16, 3), torch.zeros(1, 8, 12, 3)
        >>> [tuple(m.shape) for m in foreground_masks_groups([a, b])]
        [(2, 16, 16), (1, 8, 12)]
    """
    grids, valids, rings, rweights, los, his = [], [], [], [], [], []
    for g in groups:
        if g.ndim != 4 or g.shape[-1] != 3 or 0 in g.shape[1:3]:
            raise InvalidInputError(f"xyz: expected a (B, H, W, 3) batch of organized clouds, "
                                    f"got {tuple(g.shape)}")
        grid = g.to(torch.float64)
        b, h, w, _ = grid.shape
        valid = (grid != 0).any(-1)
        flat, vflat = grid.reshape(b, h * w, 3), valid.reshape(b, h * w)
        idx = torch.as_tensor(_band_indices(h, w, border), device=grid.device)
        grids.append(grid)
        valids.append(valid)
        rings.append(flat[:, idx])
        rweights.append(vflat[:, idx])
        inf = torch.full_like(flat, float("inf"))
        los.append(torch.where(vflat[..., None], flat, inf).amin(1))
        his.append(torch.where(vflat[..., None], flat, -inf).amax(1))
    if not grids:
        return []
    n_max = max(r.shape[1] for r in rings)
    ring = torch.cat([torch.nn.functional.pad(r, (0, 0, 0, n_max - r.shape[1])) for r in rings])
    weight = torch.cat([torch.nn.functional.pad(r, (0, n_max - r.shape[1])) for r in rweights])
    diag = (torch.cat(his) - torch.cat(los)).square().sum(-1).sqrt()
    count = weight.sum(1)

    centre, normal = _fit(ring, weight, count)
    res = _residuals(ring, centre, normal)
    med = _masked_median(res, weight, count)
    inl = weight & (res <= torch.clamp(3.0 * med, min=1e-12)[:, None])
    n_in = inl.sum(1)
    centre2, normal2 = _fit(ring, inl, n_in)
    med2 = _masked_median(_residuals(ring, centre2, normal2), inl, n_in)
    refit = n_in >= 3
    centre = torch.where(refit[:, None], centre2, centre)
    normal = torch.where(refit[:, None], normal2, normal)
    sigma = 1.4826 * torch.where(refit, med2, med)
    thr = torch.maximum(5.0 * sigma, min_height * diag)
    enough = count >= 3

    out, start = [], 0
    for grid, valid in zip(grids, valids, strict=True):
        sl = slice(start, start + len(grid))
        start += len(grid)
        c, n, t, ok = centre[sl], normal[sl], thr[sl], enough[sl]
        dist = ((grid - c[:, None, None]) * n[:, None, None]).sum(-1).abs()
        fg = valid & (dist > t[:, None, None])
        out.append(torch.where(ok[:, None, None], fg, valid))
    return out


def foreground_masks(xyz: torch.Tensor, border: float = 0.1, min_height: float = 0.004
                     ) -> torch.Tensor:
    """``(B, H, W) bool``: :func:`pcad.geometry.planes.foreground_mask` of each scan of a
    batch, on the batch's device.

    Args:
        xyz: ``(B, H, W, 3)`` float tensor of organized clouds, zeros = no measurement,
            finite (the caller checks: NaN would only propagate).
        border, min_height: as :func:`~pcad.geometry.planes.foreground_mask`.

    A scan whose border holds fewer than 3 valid pixels gets all its valid pixels.

    Example:
        >>> import torch
        >>> foreground_masks(torch.zeros(3, 8, 8, 3)).shape
        torch.Size([3, 8, 8])
    """
    return foreground_masks_groups([xyz], border, min_height)[0]


def dilate_masks(masks: torch.Tensor, iterations: int) -> torch.Tensor:
    """``(B, H, W) bool``: each mask dilated ``iterations`` times by the 4-neighbour cross,
    as :func:`scipy.ndimage.binary_dilation` (default structure, zero border).

    Example:
        >>> import torch
        >>> m = torch.zeros(1, 5, 5, dtype=torch.bool)
        >>> m[0, 2, 2] = True
        >>> int(dilate_masks(m, 2).sum())
        13
    """
    m = masks
    for _ in range(int(iterations)):
        grown = m.clone()
        grown[:, 1:] |= m[:, :-1]
        grown[:, :-1] |= m[:, 1:]
        grown[:, :, 1:] |= m[:, :, :-1]
        grown[:, :, :-1] |= m[:, :, 1:]
        m = grown
    return m
