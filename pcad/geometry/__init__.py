"""Geometry helpers: bounding boxes, PCA frames, degeneracy checks and surface normals.

Example:
    >>> import numpy as np
    >>> from pcad.geometry import estimate_normals, pca_frame
    >>> rng = np.random.default_rng(0)
    >>> p = rng.normal(size=(300, 3))
    >>> p /= np.linalg.norm(p, axis=1, keepdims=True)
    >>> estimate_normals(p, k=15).shape
    (300, 3)
"""

from pcad.geometry.frames import (
    Frame,
    bbox_diagonal,
    check_not_degenerate,
    pca_frame,
    project_to_plane,
    to_local,
)
from pcad.geometry.normals import (
    DEFAULT_K,
    estimate_normals,
    organized_normals,
    orient_outward,
    orient_towards,
)
from pcad.geometry.planes import foreground_mask

__all__ = [
    "DEFAULT_K",
    "Frame",
    "bbox_diagonal",
    "check_not_degenerate",
    "estimate_normals",
    "foreground_mask",
    "orient_outward",
    "orient_towards",
    "organized_normals",
    "pca_frame",
    "project_to_plane",
    "to_local",
]
