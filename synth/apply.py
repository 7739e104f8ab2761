"""Apply a defect to a point cloud, an organized grid, a scan's foreground or a mesh, with
exact ground truth.

Example:
    >>> import numpy as np
    >>> from synth import apply_defect
    >>> rng = np.random.default_rng(0)
    >>> p = rng.normal(size=(2000, 3)).astype(np.float32)
    >>> p /= np.linalg.norm(p, axis=1, keepdims=True)
    >>> r = apply_defect(p, "bump", seed=3, strength=0.05, radius=0.2)
    >>> r.points.shape, r.mask.dtype, r.n_anomalous > 0
    ((2000, 3), dtype('bool'), True)
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from pcad.checks import (
    MAX_SAMPLE_POINTS,
    MIN_POINTS,
    check_int,
    check_mask,
    check_organized,
    check_points,
    valid_pixels,
)
from pcad.errors import InvalidInputError, PcadWarning
from pcad.geometry import (
    bbox_diagonal,
    check_not_degenerate,
    estimate_normals,
    foreground_mask,
    organized_normals,
)
from pcad.geometry.normals import knn_chunks
from synth.defects import Defect, Displacement, SurfaceContext, create_defect
from synth.result import DefectResult, gt_rule

#: A cloud whose bounding-box centre lies more than this many bounding-box diagonals from the
#: origin is moved to that centre in float64 before its float32 work (normals, noise,
#: neighbours) and its result is moved back: float32 at +1e5 rounds a part of radius 1 by up
#: to 0.008 (11 % of a default defect's height) and at +1e6 makes it "a single point". Nearer
#: clouds are used as given (float32 holds them to 4e-6 of their diagonal, and their results
#: stay byte for byte what they were).
CENTRE_BEYOND_DIAGONALS = 64.0


def _far_origin(arr: np.ndarray) -> np.ndarray | None:
    """``(3,) float64`` bounding-box centre of a cloud far from the origin, else None."""
    lo = arr.min(axis=0).astype(np.float64)
    hi = arr.max(axis=0).astype(np.float64)
    centre = (lo + hi) / 2
    if float(np.abs(centre).max()) > CENTRE_BEYOND_DIAGONALS * float(np.linalg.norm(hi - lo)):
        return centre
    return None


def _to_input_frame(p64: np.ndarray, offsets: np.ndarray, keep: np.ndarray,
                    origin: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """``(M, 3) float32`` displaced points of a centred cloud in the input's frame (the sum in
    float64, one rounding); ``info`` gets the input-frame ``centre`` and ``centred_at``.
    Warns when float32 cannot hold the defect at the input's position."""
    out = (p64[keep] + offsets[keep]).astype(np.float32)
    info["centred_at"] = origin.tolist()
    if "centre_index" in info:
        info["centre"] = p64[info["centre_index"]].tolist()
    step = float(np.spacing(np.float32(np.abs(out).max())))
    peak = float(info.get("peak_abs", 0.0))
    if peak > 0 and step > 0.01 * peak:
        warnings.warn(
            f"points: the cloud lies {float(np.abs(origin).max()):.4g} from the origin, where "
            f"float32 output points are rounded to steps of {step:.3g} ({100 * step / peak:.0f}% "
            "of the defect's peak); offsets and mask are exact relative to the part; move the "
            "cloud near the origin to keep its points exact too",
            PcadWarning, stacklevel=3)
    return out


def _defect(defect: str | Defect, params: dict[str, Any]) -> Defect:
    if isinstance(defect, Defect):
        if params:
            raise InvalidInputError("pass parameters either to create_defect or here, not both")
        return defect
    return create_defect(defect, **params)


def _check_seed(seed: Any) -> int:
    return check_int(seed, "seed", minimum=0)


def _unit_normals(normals: Any, n: int) -> np.ndarray:
    nr = np.asarray(normals, dtype=np.float64)
    if nr.shape != (n, 3):
        raise InvalidInputError(f"normals: expected shape ({n}, 3), got {nr.shape}")
    if not np.isfinite(nr).all():
        raise InvalidInputError("normals: NaN or infinite values")
    length = np.linalg.norm(nr, axis=1)
    if (length < 1e-12).any():
        raise InvalidInputError(f"normals: {int((length < 1e-12).sum())} normals have zero length")
    return nr / length[:, None]


def _candidates(centre_candidates: Any, n: int) -> np.ndarray | None:
    if centre_candidates is None:
        return None
    c = np.asarray(centre_candidates)
    if c.ndim != 1 or c.size == 0 or not np.issubdtype(c.dtype, np.integer):
        raise InvalidInputError("centre_candidates: expected a non-empty 1D array of indices")
    if c.min() < 0 or c.max() >= n:
        raise InvalidInputError(f"centre_candidates: indices must lie in [0, {n})")
    return c.astype(np.int64)


def _displace(points: np.ndarray, normals: np.ndarray, defect: Defect, seed: int,
              organized: bool, candidates: np.ndarray | None = None
              ) -> tuple[Displacement, np.ndarray, float, dict[str, Any]]:
    p64 = points.astype(np.float64)
    diag = bbox_diagonal(p64)
    ctx = SurfaceContext(p64, normals, diag, np.random.default_rng(seed), organized, candidates)
    disp = defect.displace(ctx)
    offsets = (disp.magnitude[:, None] * normals).astype(np.float32)
    offsets[disp.removed] = 0.0
    threshold = defect.gt_threshold * disp.peak
    params = {**defect.params(), "seed": seed, "diag": diag, "peak_abs": disp.peak,
              "threshold_abs": threshold, **disp.info}
    return disp, offsets, threshold, params


def apply_defect(points: Any, defect: str | Defect = "perlin", *, normals: Any = None,
                 seed: int = 0, centre_candidates: Any = None, **params: Any) -> DefectResult:
    """Apply one defect and return the new geometry with its exact ground truth.

    Args:
        points: ``(N, 3)`` cloud, or ``(H, W, 3)`` organized grid with ``(0, 0, 0)`` for
            pixels with no measurement (MVTec 3D-AD ``xyz`` convention). A scan of a part on
            a background should go through :func:`apply_to_scan` (the defect on the part):
            here the centre is drawn among all measured pixels, the table included.
        defect: a registered geometric name (``synth.list_defects(kind="geometric")``) or a
            :class:`Defect`.
        normals: ``(N, 3)`` normals (for example from a mesh); estimated and oriented outward
            when omitted. Organized grids always use grid normals facing the sensor.
        seed: int >= 0; the same input, parameters and seed give byte-identical output.
        centre_candidates: where the defect's centre may be drawn: point indices for a cloud
            (for example the points a camera sees), an ``(H, W) bool`` mask for a grid (for
            example the foreground).
        **params: parameters of the defect type (see its class).

    A cloud lying more than :data:`CENTRE_BEYOND_DIAGONALS` bounding-box diagonals from the
    origin is centred in float64 before any float32 work, so that the defect relative to the
    part (mask, offsets) is what it is at the origin; its points are returned in the input's
    frame (float32: a :class:`~pcad.errors.PcadWarning` says when that rounding exceeds 1 % of
    the defect) and ``params["centred_at"]`` records the centre used.

    Returns:
        :class:`DefectResult` (shapes in its docstring). The mask follows the rule in
        :mod:`synth.result`.
    """
    d = _defect(defect, params)
    seed = _check_seed(seed)
    arr = np.asarray(points)
    if arr.ndim == 3:
        if normals is not None:
            raise InvalidInputError("normals: not accepted for organized grids (computed from "
                                    "the grid, facing the sensor)")
        return _apply_organized(arr, d, seed, centre_candidates)
    pts = check_points(arr, "points")
    origin = _far_origin(arr)
    p64 = None
    if origin is not None:  # centre in float64 before the float32 work
        p64 = np.asarray(arr, dtype=np.float64)
        pts = np.ascontiguousarray(p64 - origin, dtype=np.float32)
    check_not_degenerate(pts, "points")
    nrm = (_unit_normals(normals, len(pts)) if normals is not None
           else estimate_normals(pts, orient="outward").astype(np.float64))
    cand = _candidates(centre_candidates, len(pts))
    disp, offsets, threshold, info = _displace(pts, nrm, d, seed, False, cand)
    keep = ~disp.removed
    if keep.sum() < MIN_POINTS:
        raise InvalidInputError(
            f"{d.name}: the defect would leave {int(keep.sum())} points; use a smaller size")
    mask = gt_rule(offsets, threshold)
    removed_idx = np.flatnonzero(disp.removed).astype(np.int64)
    if removed_idx.size:
        rim = _rim(pts, keep, disp.removed, info)
        mask |= rim
    if p64 is None:
        out = (pts + offsets)[keep]
    else:
        out = _to_input_frame(p64, offsets, keep, origin, info)
    return DefectResult(out, mask[keep], offsets[keep], nrm[keep].astype(np.float32),
                        removed_idx, info)


def _rim(points: np.ndarray, keep: np.ndarray, removed: np.ndarray,
         info: dict[str, Any]) -> np.ndarray:
    """Kept points within ``rim`` mean spacings of a removed point; records ``rim_abs`` in info."""
    kept = points[keep].astype(np.float64)
    k = min(7, len(kept))
    # mean spacing ~ sqrt(area per point): pi * r6^2 holds about 6 points; the queries run in
    # batches (knn_chunks) so that a large cloud never holds all (N, k) neighbours at once
    kth = np.empty(len(kept))
    for start, dist, _ in knn_chunks(cKDTree(kept), kept, k):
        kth[start : start + dist.shape[0]] = dist[:, -1]
    spacing = float(np.median(kth) * np.sqrt(np.pi / 6))
    rim_abs = float(info.get("rim", 0.0)) * spacing
    info["rim_abs"] = rim_abs
    out = np.zeros(len(points), bool)
    if rim_abs > 0:
        near = np.empty(len(kept), bool)
        for start, dist, _ in knn_chunks(cKDTree(points[removed].astype(np.float64)), kept, 1):
            near[start : start + dist.shape[0]] = dist[:, 0] <= rim_abs
        out[np.flatnonzero(keep)] = near
    return out


def _apply_organized(xyz: Any, defect: Defect, seed: int,
                     centre_mask: Any = None) -> DefectResult:
    grid = check_organized(xyz, "xyz")
    valid = valid_pixels(grid)
    candidates = None
    if centre_mask is not None:
        cm = np.asarray(centre_mask)
        if cm.shape != valid.shape or cm.dtype != bool:
            raise InvalidInputError(f"centre_candidates: for an organized grid, expected a "
                                    f"bool mask of shape {valid.shape}, got {cm.dtype} {cm.shape}")
        candidates = np.flatnonzero(cm[valid])
        if candidates.size == 0:
            raise InvalidInputError("centre_candidates: no valid pixel in the mask")
    n_valid = int(valid.sum())
    if n_valid < MIN_POINTS:
        raise InvalidInputError(
            f"xyz: {n_valid} valid pixels (non-zero points), at least {MIN_POINTS} are needed")
    pts = grid[valid]
    check_not_degenerate(pts, "xyz")
    nrm_grid = organized_normals(grid)
    nrm = nrm_grid[valid].astype(np.float64)
    bad = np.linalg.norm(nrm, axis=1) < 0.5
    if bad.any():  # isolated pixels without a usable neighbourhood: face the sensor
        toward = -pts[bad].astype(np.float64)
        nrm[bad] = toward / np.linalg.norm(toward, axis=1, keepdims=True)
    disp, offsets, threshold, info = _displace(pts, nrm, defect, seed, True, candidates)
    info["n_valid"] = n_valid
    h, w, _ = grid.shape
    out = grid.copy()
    off_grid = np.zeros_like(grid)
    off_grid[valid] = offsets
    out[valid] = pts + offsets
    mask = np.zeros((h, w), bool)
    mask[valid] = gt_rule(offsets, threshold) | disp.removed
    flat_valid = np.flatnonzero(valid.ravel())
    removed_idx = flat_valid[disp.removed].astype(np.int64)
    out.reshape(-1, 3)[removed_idx] = 0.0
    normals_out = np.zeros_like(grid)
    normals_out[valid] = nrm.astype(np.float32)
    normals_out.reshape(-1, 3)[removed_idx] = 0.0
    return DefectResult(out, mask, off_grid, normals_out, removed_idx, info)


#: fewest foreground pixels :func:`apply_to_scan` accepts
MIN_SCAN_FOREGROUND = 10


def apply_to_scan(xyz: Any, defect: str | Defect = "perlin", *, seed: int = 0,
                  foreground: Any = None, anywhere: bool = False,
                  **params: Any) -> DefectResult:
    """Apply one defect to the foreground of an organized scan; the rest stays as it was.

    This is the function for scans with a background (an MVTec 3D-AD part on its table):
    :func:`apply_defect` on the whole grid draws the centre among all measured pixels, so it
    often lands on the table. ``anywhere=True`` opts out of the foreground and does exactly
    that (``pcad synth --anywhere``).

    The foreground (``foreground``, else :func:`pcad.geometry.foreground_mask`: measured pixels
    off the background plane) is cut out of the scan, so the defect's sizes are relative to the
    object and its centre lies on it; :func:`apply_defect` deforms that cut-out and the result
    is put back into the scan. This is what ``pcad make-dataset --from-mvtec3d``,
    ``pcad sensitivity`` and synthsup's :class:`~synth.supervision.DefectSource` do.

    Args:
        xyz: ``(H, W, 3)`` organized scan, ``(0, 0, 0)`` = no measurement.
        defect: a registered geometric name (:func:`synth.list_defects`) or a :class:`Defect`.
        seed: int >= 0; the same scan, foreground, parameters and seed give the same bytes.
        foreground: ``(H, W) bool`` precomputed foreground (e.g. reused across defects).
        anywhere: apply the defect to the whole grid (background included; sizes relative to
            the whole scan), as :func:`apply_defect` does; takes no ``foreground``.
        **params: parameters of the defect type.

    Returns:
        :class:`DefectResult` on the whole grid: ``points (H, W, 3) float32`` (background
        pixels unchanged), ``mask (H, W) bool`` (the synthesizer's ground truth, inside the
        foreground), ``offsets``, ``normals``, ``removed`` and ``params`` of the cut-out.

    Raises:
        InvalidInputError: the foreground has fewer than :data:`MIN_SCAN_FOREGROUND` pixels,
            or any error of :func:`apply_defect`.

    Example:
        >>> import numpy as np
        >>> from synth import apply_to_scan
        >>> yy, xx = np.mgrid[:40, :40].astype(np.float32) / 40
        >>> z = np.where((np.abs(xx - 0.5) < 0.25) & (np.abs(yy - 0.5) < 0.25), 0.9, 1.0)
        >>> scan = np.stack([xx, yy, z.astype(np.float32)], axis=-1)
        >>> r = apply_to_scan(scan, "dent", seed=0, strength=0.05, radius=0.2)
        >>> r.points.shape, bool(r.mask.any()), bool((r.points[0] == scan[0]).all())
        ((40, 40, 3), True, True)
    """
    grid = check_organized(xyz, "xyz")
    if not isinstance(anywhere, (bool, np.bool_)):
        raise InvalidInputError(f"anywhere: expected true or false, got {anywhere!r}")
    if anywhere:
        if foreground is not None:
            raise InvalidInputError("anywhere: takes no foreground (the whole grid is used)")
        return apply_defect(grid, defect, seed=seed, **params)
    fg = (foreground_mask(grid) if foreground is None
          else check_mask(foreground, grid.shape[:2], "foreground"))
    if fg.sum() < MIN_SCAN_FOREGROUND:
        raise InvalidInputError(f"scan: fewer than {MIN_SCAN_FOREGROUND} foreground pixels off "
                                "the background plane; anywhere=True puts the defect on any "
                                "measured pixel")
    obj = np.where(fg[..., None], grid, 0.0).astype(np.float32)
    res = apply_defect(obj, defect, seed=seed, **params)
    out = grid.copy()
    out[fg] = res.points[fg]
    return DefectResult(out, res.mask & fg, res.offsets, res.normals, res.removed, res.params)


def apply_defect_to_mesh(mesh: Any, n_points: int, defect: str | Defect = "perlin", *,
                         seed: int = 0, **params: Any) -> DefectResult:
    """Sample ``n_points`` on a mesh by area (seeded) and apply the defect with mesh normals.

    ``n_points`` lies in ``[MIN_POINTS, MAX_SAMPLE_POINTS]`` (10 to 50 million, checked before
    anything is allocated). The samples reach :func:`apply_defect` in float64, so a mesh far
    from the origin is centred before their float32 rounding.

    Example:
        >>> import trimesh
        >>> from synth import apply_defect_to_mesh
        >>> r = apply_defect_to_mesh(trimesh.creation.box(), 3000, "dent", seed=1)
        >>> r.points.shape
        (3000, 3)
    """
    from pcad.io import sample_mesh

    n_points = check_int(n_points, "n_points", minimum=MIN_POINTS, maximum=MAX_SAMPLE_POINTS)
    seed = _check_seed(seed)
    pts, nrm, _ = sample_mesh(mesh, n_points, seed, dtype=np.float64)
    result = apply_defect(pts, defect, normals=nrm, seed=seed, **params)
    result.params["n_points_sampled"] = n_points
    return result
