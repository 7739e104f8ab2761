"""Surface parameterizations: where on the noise lattice each point reads its value.

- ``global``: 3D-PNAS as published: one PCA plane of the whole cloud; coordinates are the
  projections onto its two main axes.
- ``local``: a tangent frame fitted (PCA) to the points around the defect's centre, so the back
  of a closed object does not receive the same field as its front.
- ``volumetric``: no projection; 3D noise evaluated at the points themselves.

Coordinates are divided by the bounding-box diagonal, so a noise ``scale`` counts lattice cells
per object diagonal whatever the object's size.

Example:
    >>> import numpy as np
    >>> from synth.parameterize import surface_coords
    >>> p = np.random.default_rng(0).uniform(size=(200, 3)) * [1, 1, 0.01]
    >>> surface_coords(p, "global", centre=0, diag=1.0, radius=0.2).shape
    (200, 2)
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from pcad.errors import DegenerateGeometryError, InvalidInputError
from pcad.geometry import pca_frame

MODES = ("global", "local", "volumetric")
LOCAL_MIN_NEIGHBOURS = 64


def local_frame_points(points: np.ndarray, centre: int, radius: float) -> np.ndarray:
    """Indices of the points used to fit the local frame: within ``radius`` of the centre,
    and at least the ``LOCAL_MIN_NEIGHBOURS`` nearest ones."""
    tree = cKDTree(points)
    idx = np.asarray(tree.query_ball_point(points[centre], radius), dtype=np.int64)
    if idx.size < LOCAL_MIN_NEIGHBOURS:
        k = min(LOCAL_MIN_NEIGHBOURS, len(points))
        idx = np.asarray(tree.query(points[centre], k=k)[1], dtype=np.int64).reshape(-1)
    return np.sort(idx)


def local_axes(points: np.ndarray, centre: int, radius: float,
               centre_normal: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rows (u, v, n) of the tangent frame at the centre, n facing ``centre_normal``.

    Falls back to a frame built from the centre's normal where the neighbourhood is collinear.
    """
    nb = points[local_frame_points(points, centre, radius)]
    try:
        axes = pca_frame(nb).axes.copy()
    except DegenerateGeometryError:
        n = centre_normal / np.linalg.norm(centre_normal)
        helper = np.eye(3)[np.argmin(np.abs(n))]
        u = np.cross(n, helper)
        u /= np.linalg.norm(u)
        axes = np.stack([u, np.cross(n, u), n])
    if axes[2] @ centre_normal < 0:
        axes[1] = -axes[1]
        axes[2] = -axes[2]
    return axes


def surface_coords(points: np.ndarray, mode: str, centre: int, diag: float, radius: float,
                   centre_normal: np.ndarray | None = None) -> np.ndarray:
    """Noise-lattice coordinates of each point, in units of the bounding-box diagonal.

    Args:
        points: ``(N, 3)`` float array. mode: one of :data:`MODES`.
        centre: index of the defect's centre (origin of ``local`` coordinates).
        diag: bounding-box diagonal (> 0). radius: neighbourhood radius of the local frame.
        centre_normal: ``(3,)`` normal at the centre (orients the local frame).

    Returns:
        ``(N, 2)`` float64 for ``global`` and ``local``, ``(N, 3)`` for ``volumetric``.
    """
    p = np.asarray(points, dtype=np.float64)
    if mode == "global":
        frame = pca_frame(p)
        return ((p - frame.origin) @ frame.axes[:2].T) / diag
    if mode == "local":
        n = centre_normal if centre_normal is not None else np.array([0.0, 0.0, 1.0])
        axes = local_axes(p, centre, radius, n)
        return ((p - p[centre]) @ axes[:2].T) / diag
    if mode == "volumetric":
        return (p - p.min(axis=0)) / diag
    raise InvalidInputError(f"mode: expected one of {MODES}, got {mode!r}")
