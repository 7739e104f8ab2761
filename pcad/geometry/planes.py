"""Background plane of an organized scan and the foreground above it.

The object of an MVTec 3D-AD style scan sits in the middle of the image on a supporting
plane that fills the border. :func:`foreground_mask` fits that plane by least squares to the
valid pixels of a border band, refits it to the inliers, and marks as foreground every valid
pixel farther from it than a threshold (a multiple of the robust residual, at least a
fraction of the scene's size).

Example:
    >>> import numpy as np
    >>> from pcad.geometry.planes import foreground_mask
    >>> yy, xx = np.mgrid[:40, :40].astype(np.float32)
    >>> xyz = np.stack([xx * 0.01, yy * 0.01, np.full_like(xx, 1.0)], -1)
    >>> xyz[15:25, 15:25, 2] -= 0.05  # a box standing on the plane, towards the camera
    >>> int(foreground_mask(xyz).sum())
    100
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcad.checks import check_organized, valid_pixels
from pcad.geometry.frames import bbox_diagonal


def _fit(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    return centre, vt[2]


def foreground_mask(xyz: Any, border: float = 0.1, min_height: float = 0.004) -> np.ndarray:
    """``(H, W) bool``: valid pixels off the background plane.

    Args:
        xyz: ``(H, W, 3)`` organized cloud, zeros = no measurement.
        border: width of the border band used to fit the plane (fraction of H and W).
        min_height: smallest distance to the plane counted as foreground, as a fraction of
            the valid cloud's bounding-box diagonal.

    Returns all valid pixels when the border holds fewer than 3 valid pixels.
    """
    grid = check_organized(xyz, "xyz").astype(np.float64)
    valid = valid_pixels(grid)
    h, w = valid.shape
    band = np.zeros_like(valid)
    bh, bw = max(1, int(h * border)), max(1, int(w * border))
    band[:bh], band[-bh:], band[:, :bw], band[:, -bw:] = True, True, True, True
    ring = grid[band & valid]
    if len(ring) < 3:
        return valid
    diag = bbox_diagonal(grid[valid], "xyz")
    centre, normal = _fit(ring)
    res = np.abs((ring - centre) @ normal)
    inliers = ring[res <= max(3.0 * np.median(res), 1e-12)]
    if len(inliers) >= 3:
        centre, normal = _fit(inliers)
        res = np.abs((inliers - centre) @ normal)
    sigma = 1.4826 * float(np.median(res))
    thr = max(5.0 * sigma, min_height * diag)
    dist = np.abs((grid - centre) @ normal)
    return valid & (dist > thr)
