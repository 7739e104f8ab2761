"""Pooling per-pixel feature maps of an organized cloud to a coarse patch grid.

Example:
    >>> import numpy as np
    >>> from pcad.features.grid import to_patch_grid
    >>> f = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    >>> valid = np.ones((4, 4), bool)
    >>> valid[0, 0] = False  # ignored: the top-left cell averages 1, 4 and 5
    >>> to_patch_grid(f, valid, (2, 2))[..., 0]
    array([[ 3.3333333,  4.5      ],
           [10.5      , 12.5      ]], dtype=float32)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pcad.checks import check_int, check_mask
from pcad.errors import InvalidInputError

__all__ = ["to_patch_grid"]


def to_patch_grid(
    feature_map: Any, valid: Any, grid: tuple[int, int], return_coverage: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Average a ``(H, W, C)`` feature map over the valid pixels of each cell of a grid.

    The cells are those of ``torch.nn.functional.adaptive_avg_pool2d`` (row bin ``i`` spans
    ``floor(i * H / h)`` to ``ceil((i + 1) * H / h)``), so the grid need not divide the image.

    Args:
        feature_map: ``(H, W, C)`` float array (e.g. :func:`~pcad.features.fpfh.fpfh_map`).
        valid: ``(H, W)`` bool, the pixels that count (measured, foreground).
        grid: ``(h, w)`` with ``1 <= h <= H`` and ``1 <= w <= W``.
        return_coverage: also return the ``(h, w) float32`` fraction of valid pixels per cell.

    Returns:
        ``(h, w, C) float32``; zero in cells without a valid pixel. With
        ``return_coverage``, ``(features, coverage)``.
    """
    fm = np.asarray(feature_map)
    if fm.ndim != 3 or fm.shape[0] == 0 or fm.shape[1] == 0 or fm.shape[2] == 0:
        raise InvalidInputError(f"feature_map: expected shape (H, W, C), got {fm.shape}")
    if not np.issubdtype(fm.dtype, np.number):
        raise InvalidInputError(f"feature_map: expected a numeric array, got dtype {fm.dtype}")
    h_img, w_img, _ = fm.shape
    mask = check_mask(valid, (h_img, w_img), "valid")
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise InvalidInputError(f"grid: expected (h, w), got {grid!r}")
    gh = check_int(grid[0], "grid[0]", 1, h_img)
    gw = check_int(grid[1], "grid[1]", 1, w_img)
    f = torch.from_numpy(np.ascontiguousarray(fm, dtype=np.float32)).permute(2, 0, 1)
    if not bool(torch.isfinite(f).all()):
        raise InvalidInputError("feature_map: NaN or infinite values")
    v = torch.from_numpy(mask.astype(np.float32))[None]
    num = F.adaptive_avg_pool2d((f * v)[None].double(), (gh, gw))[0]
    den = F.adaptive_avg_pool2d(v[None].double(), (gh, gw))[0]
    out = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros(()))
    feats = out.permute(1, 2, 0).float().numpy()
    if return_coverage:
        return feats, den[0].float().numpy()
    return feats
