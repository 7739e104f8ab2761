"""Point features on an organized cloud: FPFH (Open3D) and raw xyz, as ``(H, W, C)`` maps.

BTF (Horwitz & Hoshen, 3D-ADS) computes Open3D FPFH on the measured points of the
organized cloud after background removal: normals from a hybrid search (radius
``2 v``, 30 neighbours), FPFH from a hybrid search (radius ``5 v``, 100 neighbours), with
``v = 0.05`` in its units. Absolute radii do not carry over between datasets, so pcad states
them in units of the **point spacing** ``s`` (median distance between measured neighbouring
pixels): normals within ``4 s`` (max 30 neighbours), FPFH within ``10 s`` (max 100
neighbours). At those radii the neighbour caps decide, as in BTF (about ``pi * 10**2``
points lie within 10 spacings on a surface). Normals point towards the camera (the origin,
MVTec 3D-AD convention).

Background removal uses :func:`pcad.geometry.foreground_mask` (the supporting plane fitted
to the image border). Features are zero on invalid and background pixels.

Example:
    >>> import numpy as np
    >>> from pcad.features.fpfh import fpfh_map
    >>> yy, xx = np.mgrid[:20, :20].astype(np.float32)
    >>> xyz = np.stack([xx * 0.01, yy * 0.01, 1 + 0.02 * np.sin(xx / 3)], -1)
    >>> xyz[:2] = 0  # two rows with no measurement
    >>> f = fpfh_map(xyz, remove_background=False)
    >>> f.shape, f.dtype, bool((f[:2] == 0).all())
    ((20, 20, 33), dtype('float32'), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pcad.checks import check_mask, check_organized, check_positive, valid_pixels
from pcad.errors import DegenerateGeometryError, InvalidInputError
from pcad.features.registry import register_backbone

__all__ = [
    "FPFH_DIM",
    "FPFHExtractor",
    "RawXYZExtractor",
    "fpfh_map",
    "point_mask",
    "point_spacing",
    "raw_xyz_map",
]

FPFH_DIM = 33
MIN_VALID = 5


def point_mask(xyz: Any, remove_background: bool = True, valid: Any = None) -> np.ndarray:
    """``(H, W) bool``: measured pixels, minus the background plane when asked.

    ``valid`` optionally restricts the pixels further (e.g. an ROI).
    """
    grid = check_organized(xyz, "xyz")
    mask = valid_pixels(grid)
    if remove_background:
        from pcad.geometry.planes import foreground_mask

        mask &= foreground_mask(grid)
    if valid is not None:
        mask &= check_mask(valid, mask.shape, "valid")
    return mask


def point_spacing(xyz: Any, mask: Any = None) -> float:
    """Median distance between horizontally or vertically adjacent pixels of ``mask``.

    Falls back to the median nearest-neighbour distance (Open3D) when no two selected
    pixels touch. Raises DegenerateGeometryError when it is 0 (all points coincide).
    """
    grid = check_organized(xyz, "xyz")
    m = valid_pixels(grid) if mask is None else check_mask(mask, grid.shape[:2], "mask")
    gaps = []
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        pair = m[tuple(a)] & m[tuple(b)]
        if pair.any():
            d = grid[tuple(a)][pair] - grid[tuple(b)][pair]
            gaps.append(np.linalg.norm(d.astype(np.float64), axis=1))
    gaps_all = np.concatenate(gaps) if gaps else np.empty(0)
    gaps_all = gaps_all[gaps_all > 0]
    if gaps_all.size:
        return float(np.median(gaps_all))
    pts = grid[m].astype(np.float64)
    if len(pts) >= 2:
        import open3d as o3d

        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        nn = np.asarray(pcd.compute_nearest_neighbor_distance())
        nn = nn[nn > 0]
        if nn.size:
            return float(np.median(nn))
    raise DegenerateGeometryError("xyz: cannot measure the point spacing (fewer than 2 "
                                  "distinct points)")


def fpfh_map(
    xyz: Any,
    remove_background: bool = True,
    valid: Any = None,
    normal_radius: float = 4.0,
    normal_max_nn: int = 30,
    fpfh_radius: float = 10.0,
    fpfh_max_nn: int = 100,
    spacing: float | None = None,
    viewpoint: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """FPFH of every selected pixel of an organized cloud.

    Args:
        xyz: ``(H, W, 3)`` organized cloud, zeros = no measurement.
        remove_background: drop the background plane first (:func:`point_mask`).
        valid: optional ``(H, W)`` bool restricting the pixels used.
        normal_radius, fpfh_radius: search radii in units of the point spacing.
        normal_max_nn, fpfh_max_nn: neighbour caps of the hybrid searches (BTF: 30, 100).
        spacing: the point spacing in xyz units; measured with :func:`point_spacing` if None.
        viewpoint: normals are oriented towards this point (the camera).

    Returns:
        ``(H, W, 33) float32``, zero where no point was used. Raises InvalidInputError when
        fewer than 5 pixels remain.
    """
    import open3d as o3d

    grid = check_organized(xyz, "xyz")
    mask = point_mask(grid, remove_background, valid)
    if int(mask.sum()) < MIN_VALID:
        raise InvalidInputError(f"xyz: {int(mask.sum())} valid points after background "
                                f"removal, at least {MIN_VALID} are needed for FPFH")
    r_n = check_positive(normal_radius, "normal_radius")
    r_f = check_positive(fpfh_radius, "fpfh_radius")
    s = point_spacing(grid, mask) if spacing is None else check_positive(spacing, "spacing")
    pts = grid[mask].astype(np.float64)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=r_n * s,
                                                              max_nn=int(normal_max_nn)))
    pcd.orient_normals_towards_camera_location(np.asarray(viewpoint, dtype=np.float64))
    feat = o3d.pipelines.registration.compute_fpfh_feature(
        pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=r_f * s, max_nn=int(fpfh_max_nn))
    )
    out = np.zeros((*grid.shape[:2], FPFH_DIM), np.float32)
    out[mask] = np.asarray(feat.data).T
    return out


def raw_xyz_map(xyz: Any, remove_background: bool = True, valid: Any = None) -> np.ndarray:
    """``(H, W, 3) float32``: the coordinates themselves, zero off the selected pixels."""
    grid = check_organized(xyz, "xyz")
    mask = point_mask(grid, remove_background, valid)
    return np.where(mask[..., None], grid, np.float32(0)).astype(np.float32)


@dataclass
class FPFHExtractor:
    """Callable ``(H, W, 3) -> (H, W, 33)``: :func:`fpfh_map` with fixed settings."""

    remove_background: bool = True
    normal_radius: float = 4.0
    normal_max_nn: int = 30
    fpfh_radius: float = 10.0
    fpfh_max_nn: int = 100
    out_channels: int = FPFH_DIM

    def mask(self, xyz: Any) -> np.ndarray:
        """The ``(H, W) bool`` pixels that get a feature."""
        return point_mask(xyz, self.remove_background)

    def __call__(self, xyz: Any, valid: Any = None) -> np.ndarray:
        return fpfh_map(xyz, self.remove_background, valid, self.normal_radius,
                        self.normal_max_nn, self.fpfh_radius, self.fpfh_max_nn)


@dataclass
class RawXYZExtractor:
    """Callable ``(H, W, 3) -> (H, W, 3)``: :func:`raw_xyz_map`."""

    remove_background: bool = True
    out_channels: int = 3

    def mask(self, xyz: Any) -> np.ndarray:
        """The ``(H, W) bool`` pixels that get a feature."""
        return point_mask(xyz, self.remove_background)

    def __call__(self, xyz: Any, valid: Any = None) -> np.ndarray:
        return raw_xyz_map(xyz, self.remove_background, valid)


def _no_weights(name: str, weights: Any) -> None:
    if weights is not None:
        raise InvalidInputError(f"{name}: a handcrafted feature has no weights, got {weights!r}")


@register_backbone("fpfh", kind="points",
                   description="Open3D FPFH (33-d) per measured pixel, radii relative to the "
                               "point spacing (BTF)")
def create_fpfh(weights: Any = None, **kwargs: Any) -> FPFHExtractor:
    """FPFH point features (:class:`FPFHExtractor`)."""
    _no_weights("fpfh", weights)
    return FPFHExtractor(**kwargs)


@register_backbone("raw_xyz", kind="points",
                   description="the xyz coordinates themselves (BTF 'raw')")
def create_raw_xyz(weights: Any = None, **kwargs: Any) -> RawXYZExtractor:
    """Raw xyz point features (:class:`RawXYZExtractor`)."""
    _no_weights("raw_xyz", weights)
    return RawXYZExtractor(**kwargs)
