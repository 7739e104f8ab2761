"""Preprocessing of organized scans as BTF (3D-ADS) and M3DM do it, without their crashes.

M3DM / 3D-ADS ``utils/preprocessing.py`` runs, per MVTec 3D-AD sample:

1. **Plane removal**: fit a plane with Open3D RANSAC (``segment_plane(distance_threshold=0.004,
   ransac_n=50, num_iterations=1000)``) to the valid points of a 10-pixel border, then zero
   every point closer than 0.005 to it (and its RGB pixel).
2. **Pad to square**: zero-pad xyz, RGB and gt to a square whose side is the larger side
   rounded up to the next multiple of 100 (an earlier M3DM commit, and CFM, rewrite only the
   TIFF).
3. **Cleaning**: Open3D DBSCAN (``eps=0.006, min_points=30``), keep the largest cluster.

Here each step is a function (:func:`remove_background_plane`, :func:`pad_to_square`,
:func:`largest_cluster`) and :func:`preprocess_scan` chains them like M3DM. Their settings are
one :class:`PreprocessOptions` (M3DM's values by default). Differences from the original code,
on purpose:

- Fewer than ``ransac_n`` valid border points do not crash (M3DM issues #23/#28, Shape-Guided
  #21): RANSAC runs with ``min(ransac_n, n)`` points, and with fewer than 3 valid points (an
  all-zero scan) the input comes back unchanged. A degenerate fit (collinear border) also
  leaves the input unchanged.
- A valid pixel is any pixel that is not ``(0, 0, 0)`` (pcad's convention); M3DM's border
  selection drops every point with *any* zero coordinate.
- The RANSAC is Open3D's ``segment_plane`` algorithm run in numpy with a seeded
  ``numpy.random.Generator``: Open3D's own (parallel) loop gave different planes from run to
  run even after ``open3d.utility.random.seed`` (Open3D 0.20).
- DBSCAN runs in Open3D (``cluster_dbscan``) when it is installed, else in scipy
  (:func:`dbscan_labels`, ``cKDTree`` pairs + connected components), which reproduces Open3D's
  labels (its cluster order and border-point assignment); ``cluster_backend`` picks one.
- DBSCAN noise (label -1) is never "the largest cluster"; when DBSCAN finds no cluster at all
  the input comes back unchanged (M3DM would keep whichever of noise or a cluster is larger).
- RGB and gt are padded with xyz, always together (CFM pads only the TIFF, misaligning them).
- Distances are in the cloud's units (metres for MVTec 3D-AD, as in M3DM) by default;
  ``relative=True`` reads them as fractions of the valid points' bounding-box diagonal, for
  data whose scale differs (pcad's synthetic datasets are in the mesh's units).

Resizing keeps organized grids organized: :func:`resize_organized` and :func:`resize_mask`
use nearest neighbour only (so no invalid pixel becomes valid, and every output value is a
source value) with pixel-centre alignment, ``src = floor((i + 0.5) * in / out)``, the same
alignment as PIL's bilinear resize used by :func:`resize_rgb`. (M3DM resizes xyz with torch's
legacy ``nearest``, ``src = floor(i * in / out)``, up to half a source pixel off the RGB.)

Example:
    >>> import numpy as np
    >>> from pcad.data.preprocess import remove_background_plane
    >>> yy, xx = np.mgrid[:40, :40].astype(np.float32)
    >>> xyz = np.stack([xx * 0.01, yy * 0.01, np.full_like(xx, 1.0)], -1)
    >>> xyz[15:25, 15:25, 2] -= 0.05                     # a box on the table, towards the camera
    >>> out = remove_background_plane(xyz)
    >>> int(np.any(out != 0, axis=-1).sum())             # only the box is left
    100
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from pcad.checks import check_choice, check_int, check_organized, check_positive, valid_pixels
from pcad.errors import InvalidInputError
from pcad.geometry import bbox_diagonal

__all__ = [
    "PaddedScan",
    "PreprocessOptions",
    "background_plane_mask",
    "border_mask",
    "dbscan_labels",
    "largest_cluster",
    "largest_cluster_mask",
    "nearest_indices",
    "pad_to_square",
    "preprocess_scan",
    "remove_background_plane",
    "resize_mask",
    "resize_organized",
    "resize_rgb",
]


#: DBSCAN implementations of the largest-cluster step (:class:`PreprocessOptions`)
CLUSTER_BACKENDS = ("auto", "open3d", "scipy")


@dataclass(frozen=True)
class PreprocessOptions:
    """Settings of M3DM's preprocessing steps; the defaults are M3DM's (distances in metres).

    Attributes:
        plane_distance: a valid pixel closer than this to the background plane is background
            (M3DM: 0.005), ``> 0``.
        fit_distance: RANSAC inlier threshold of the plane fit (M3DM: 0.004), ``> 0``.
        ransac_n: points per RANSAC hypothesis (M3DM: 50), ``>= 3``; lowered to the number of
            valid fitting points when there are fewer.
        iterations: RANSAC iterations (M3DM: 1000), ``>= 1``.
        border: width in pixels of the frame whose valid points the plane is fitted to
            (M3DM: 10), ``>= 1``; None fits all valid points.
        eps: DBSCAN neighbourhood radius of the largest-cluster step (M3DM: 0.006), ``> 0``.
        min_points: DBSCAN core-point threshold (M3DM: 30), ``>= 1``.
        multiple: :func:`preprocess_scan` pads to a square whose side is a multiple of this
            (M3DM: 100), ``>= 1``.
        relative: read ``plane_distance``, ``fit_distance`` and ``eps`` as fractions of the
            valid points' bounding-box diagonal instead of absolute units.
        seed: seed of the RANSAC (a ``numpy.random.Generator``).
        cluster_backend: DBSCAN of the largest-cluster step: ``"auto"`` (Open3D when it is
            importable, else scipy), ``"open3d"`` or ``"scipy"`` (:func:`dbscan_labels`).

    The constructor checks every value (InvalidInputError naming the field).

    Example:
        >>> PreprocessOptions().ransac_n, PreprocessOptions(eps=0.01, min_points=5).eps
        (50, 0.01)
        >>> PreprocessOptions(ransac_n=2)
        Traceback (most recent call last):
        ...
        pcad.errors.InvalidInputError: ransac_n: must be >= 3, got 2
    """

    plane_distance: float = 0.005
    fit_distance: float = 0.004
    ransac_n: int = 50
    iterations: int = 1000
    border: int | None = 10
    eps: float = 0.006
    min_points: int = 30
    multiple: int = 100
    relative: bool = False
    seed: int = 0
    cluster_backend: str = "auto"

    def __post_init__(self) -> None:
        checked = {
            "plane_distance": check_positive(self.plane_distance, "plane_distance"),
            "fit_distance": check_positive(self.fit_distance, "fit_distance"),
            "ransac_n": check_int(self.ransac_n, "ransac_n", minimum=3),
            "iterations": check_int(self.iterations, "iterations", minimum=1),
            "border": None if self.border is None else check_int(self.border, "border"),
            "eps": check_positive(self.eps, "eps"),
            "min_points": check_int(self.min_points, "min_points", minimum=1),
            "multiple": check_int(self.multiple, "multiple", minimum=1),
            "cluster_backend": check_choice(self.cluster_backend, "cluster_backend",
                                            CLUSTER_BACKENDS),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)


def _options(options: PreprocessOptions | None) -> PreprocessOptions:
    if options is None:
        return PreprocessOptions()
    if not isinstance(options, PreprocessOptions):
        raise InvalidInputError(
            f"options: expected a PreprocessOptions or None, got {type(options).__name__}"
        )
    return options


def border_mask(shape: tuple[int, int], width: int = 10) -> np.ndarray:
    """``(H, W) bool``: True on the ``width``-pixel frame of an ``H x W`` image (M3DM: 10).

    Example:
        >>> int(border_mask((5, 6), 1).sum())
        18
    """
    h, w = (check_int(s, "shape", minimum=1) for s in shape)
    b = check_int(width, "width", minimum=1)
    m = np.zeros((h, w), dtype=bool)
    m[:b], m[-b:], m[:, :b], m[:, -b:] = True, True, True, True
    return m


# --------------------------------------------------------------------------------------------
# plane removal
# --------------------------------------------------------------------------------------------


def _plane_through(points: np.ndarray) -> np.ndarray | None:
    """Least-squares plane ``(a, b, c, d)`` with unit normal; None for collinear points."""
    centre = points.mean(axis=0)
    _, s, vt = np.linalg.svd(points - centre, full_matrices=False)
    if s[0] <= 0 or s[1] <= 1e-6 * s[0]:
        return None
    normal = vt[2]
    return np.append(normal, -normal @ centre)


def _ransac_plane(
    points: np.ndarray, fit_distance: float, ransac_n: int, iterations: int, seed: int,
    chunk: int = 64,
) -> np.ndarray | None:
    """RANSAC plane ``(a, b, c, d)`` (unit normal) of ``points (N, 3) float64``, or None.

    The algorithm of Open3D's ``segment_plane``: each iteration fits a plane to ``ransac_n``
    random points (least squares), the plane with most points within ``fit_distance`` wins
    (ties: lower inlier RMSE), and the result is refitted to its inliers. It runs here with a
    ``numpy.random.Generator`` because Open3D's parallel loop did not give reproducible planes
    even after ``open3d.utility.random.seed`` (observed with Open3D 0.20).
    """
    n_pts = len(points)
    n = min(ransac_n, n_pts)
    if n < 3 or _plane_through(points) is None:  # collinear points: the plane is undetermined
        return None
    rng = np.random.default_rng(seed)
    samples = np.stack([rng.choice(n_pts, n, replace=False) for _ in range(iterations)])
    origin = points.mean(axis=0)
    centred = points - origin  # float32 distances stay precise far from the origin
    centred32 = centred.astype(np.float32)
    best_count, best_rmse = -1, np.inf
    best_plane: np.ndarray | None = None
    for lo in range(0, iterations, chunk):
        sub = centred[samples[lo : lo + chunk]]  # (k, n, 3)
        centre = sub.mean(axis=1)
        _, sv, vt = np.linalg.svd(sub - centre[:, None, :], full_matrices=False)
        normals = vt[:, 2, :]  # (k, 3), unit
        offsets = -np.einsum("kj,kj->k", normals, centre)
        ok = sv[:, 1] > 1e-9 * np.maximum(sv[:, 0], 1e-300)  # skip collinear samples
        dist = centred32 @ normals.T.astype(np.float32)
        dist += offsets.astype(np.float32)
        np.abs(dist, out=dist)
        inl = dist < fit_distance
        counts = np.where(ok, inl.sum(axis=0), -1)
        top = int(counts.max())
        if top < best_count:
            continue
        np.multiply(dist, dist, out=dist)
        dist *= inl
        rmse = np.sqrt(dist.sum(axis=0, dtype=np.float64) / max(top, 1))
        rmse[counts != top] = np.inf
        j = int(np.argmin(rmse))  # the first of the lowest RMSE among the most inliers
        if top > best_count or rmse[j] < best_rmse:
            best_count, best_rmse = top, float(rmse[j])
            best_plane = np.append(normals[j], offsets[j] - normals[j] @ origin)
    if best_plane is None or best_count < 3:
        return None
    inliers = points[np.abs(points @ best_plane[:3] + best_plane[3]) < fit_distance]
    refit = _plane_through(inliers) if len(inliers) >= 3 else None
    return best_plane if refit is None else refit


def background_plane_mask(xyz: Any, options: PreprocessOptions | None = None) -> np.ndarray:
    """``(H, W) bool``: valid pixels on the background plane (M3DM's plane removal step).

    Args:
        xyz: ``(H, W, 3)`` organized cloud, ``(0, 0, 0)`` = no measurement.
        options: ``plane_distance``, ``fit_distance``, ``ransac_n``, ``iterations``,
            ``border``, ``relative`` and ``seed`` of :class:`PreprocessOptions` are used
            (default: M3DM's).

    Returns an all-False mask when the fit is impossible (fewer than 3 valid fitting points,
    an all-zero scan, collinear points).

    Example:
        >>> z = np.zeros((20, 20, 3), np.float32)
        >>> int(background_plane_mask(z).sum())
        0
    """
    grid = check_organized(xyz, "xyz")
    opts = _options(options)
    dist, fit = opts.plane_distance, opts.fit_distance
    valid = valid_pixels(grid)
    empty = np.zeros(valid.shape, dtype=bool)
    if not valid.any():
        return empty
    select = valid if opts.border is None else valid & border_mask(valid.shape, opts.border)
    fit_points = grid[select].astype(np.float64)
    if opts.relative:
        diag = bbox_diagonal(grid[valid], "xyz")
        if diag <= 0:
            return empty
        dist, fit = dist * diag, fit * diag
    plane = _ransac_plane(fit_points, fit, opts.ransac_n, opts.iterations, opts.seed)
    if plane is None:
        return empty
    d = np.abs(grid.astype(np.float64) @ plane[:3] + plane[3])
    return valid & (d < dist)


def remove_background_plane(xyz: Any, options: PreprocessOptions | None = None) -> np.ndarray:
    """Copy of ``xyz`` with the background-plane pixels set to ``(0, 0, 0)``.

    Arguments as :func:`background_plane_mask`; an all-zero or too small scan comes back
    unchanged (a copy), never an error. To zero the RGB pixels too, use
    :func:`background_plane_mask` or :func:`preprocess_scan`.
    """
    grid = check_organized(xyz, "xyz")
    plane = background_plane_mask(grid, options)
    out = grid.copy()
    out[plane] = 0.0
    return out


# --------------------------------------------------------------------------------------------
# largest cluster
# --------------------------------------------------------------------------------------------


def largest_cluster_mask(xyz: Any, options: PreprocessOptions | None = None) -> np.ndarray:
    """Points (or valid pixels) of the largest DBSCAN cluster (Open3D ``cluster_dbscan``).

    Args:
        xyz: an ``(H, W, 3)`` organized cloud (zeros = no measurement) or ``(N, 3)`` points.
        options: ``eps``, ``min_points`` and ``relative`` of :class:`PreprocessOptions` are
            used (default: M3DM's).

    Returns:
        ``(H, W) bool`` or ``(N,) bool``: True for the points kept. Noise is never a cluster;
        ties go to the cluster found first. When there is no cluster at all (or no valid
        point), every valid point is kept.

    Example:
        >>> p = np.concatenate([np.zeros((40, 3)), np.full((5, 3), 9.0)]) + 0.0
        >>> p[:40, 0] = np.linspace(0, 0.04, 40)
        >>> int(largest_cluster_mask(p, PreprocessOptions(eps=0.01, min_points=3)).sum())
        40
    """
    arr = np.asarray(xyz)
    if arr.ndim == 3:
        grid = check_organized(arr, "xyz")
        valid = valid_pixels(grid)
        points = grid[valid]
    elif arr.ndim == 2 and arr.shape[1:] == (3,):
        points = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(points).all():
            raise InvalidInputError("xyz: NaN or infinite coordinates")
        valid = np.ones(len(points), dtype=bool)
    else:
        raise InvalidInputError(f"xyz: expected (H, W, 3) or (N, 3), got shape {arr.shape}")
    opts = _options(options)
    radius, k = opts.eps, opts.min_points
    if len(points) == 0:
        return valid
    if opts.relative:
        diag = bbox_diagonal(points, "xyz")
        if diag <= 0:
            return valid
        radius *= diag
    labels = dbscan_labels(points, radius, k, opts.cluster_backend)
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        return valid
    best = int(np.argmax(np.bincount(clustered)))
    keep = valid.copy()
    keep[valid] = labels == best
    return keep


def _open3d_available() -> bool:
    try:
        import open3d  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or a broken build: use scipy
        return False
    return True


def dbscan_labels(points: np.ndarray, eps: float, min_points: int,
                  backend: str = "auto") -> np.ndarray:
    """DBSCAN cluster labels of ``points (N, 3)`` as Open3D's ``cluster_dbscan`` gives them.

    A point is a core point when at least ``min_points`` points (itself included) lie closer
    than ``eps``; clusters are the connected core points plus the non-core points next to them,
    numbered by their lowest core index; a non-core point next to several clusters joins the
    lowest-numbered one; the rest is noise, ``-1``. This is Open3D's loop, so the two backends
    agree except for pairs at a distance of ``eps`` up to rounding.

    Args:
        points: ``(N, 3)`` finite coordinates.
        eps: neighbourhood radius, ``> 0``.
        min_points: core-point threshold, ``>= 1``.
        backend: ``"auto"`` (Open3D when importable, else scipy), ``"open3d"`` or ``"scipy"``.

    Returns:
        ``(N,) int64`` labels, ``-1`` for noise.

    Example:
        >>> p = np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [5, 0, 0]], float)
        >>> dbscan_labels(p, 0.15, 2, backend="scipy").tolist()
        [0, 0, 0, -1]
    """
    pts = np.ascontiguousarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1:] != (3,):
        raise InvalidInputError(f"points: expected shape (N, 3), got {pts.shape}")
    eps = check_positive(eps, "eps")
    min_points = check_int(min_points, "min_points", minimum=1)
    backend = check_choice(backend, "backend", CLUSTER_BACKENDS)
    if backend == "auto":
        backend = "open3d" if _open3d_available() else "scipy"
    if backend == "open3d":
        import open3d as o3d

        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        return np.asarray(cloud.cluster_dbscan(eps=eps, min_points=min_points,
                                               print_progress=False), dtype=np.int64)
    return _dbscan_scipy(pts, eps, min_points)


def _dbscan_scipy(pts: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(pts)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    # Open3D's radius search keeps distances strictly below eps; cKDTree's keeps <= r
    pairs = cKDTree(pts).query_pairs(np.nextafter(eps, 0.0), output_type="ndarray")
    core = np.bincount(pairs.ravel(), minlength=n) + 1 >= min_points
    if not core.any():
        return labels
    both = core[pairs[:, 0]] & core[pairs[:, 1]]
    cc = pairs[both]
    graph = coo_matrix((np.ones(len(cc), np.int8), (cc[:, 0], cc[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    core_idx = np.flatnonzero(core)  # ascending: a component's first entry is its lowest core
    comps, first = np.unique(comp[core_idx], return_index=True)
    rank = np.empty(int(comp.max()) + 1, dtype=np.int64)
    rank[comps[np.argsort(first)]] = np.arange(len(comps))
    labels[core_idx] = rank[comp[core_idx]]
    one = core[pairs[:, 0]] ^ core[pairs[:, 1]]  # a core point and a non-core one
    mixed = pairs[one]
    if len(mixed):
        first_core = core[mixed[:, 0]]
        core_pt = np.where(first_core, mixed[:, 0], mixed[:, 1])
        border = np.where(first_core, mixed[:, 1], mixed[:, 0])
        best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, border, labels[core_pt])
        hit = best != np.iinfo(np.int64).max
        labels[hit] = best[hit]
    return labels


def largest_cluster(xyz: Any, options: PreprocessOptions | None = None) -> np.ndarray:
    """Copy of an ``(H, W, 3)`` organized cloud with every pixel outside the largest DBSCAN
    cluster set to ``(0, 0, 0)``; arguments as :func:`largest_cluster_mask`."""
    grid = check_organized(xyz, "xyz")
    keep = largest_cluster_mask(grid, options)
    out = grid.copy()
    out[~keep] = 0.0
    return out


# --------------------------------------------------------------------------------------------
# resizing
# --------------------------------------------------------------------------------------------


def _size(size: Any) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        s = check_int(size, "size", minimum=1)
        return s, s
    try:
        h, w = size
    except (TypeError, ValueError):
        raise InvalidInputError(f"size: expected an int or (height, width), got {size!r}") from None
    return check_int(h, "size[0]", minimum=1), check_int(w, "size[1]", minimum=1)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out,) int64`` source index of each output index, pixel-centre aligned:
    ``floor((i + 0.5) * n_in / n_out)``.

    Example:
        >>> nearest_indices(4, 2).tolist(), nearest_indices(2, 4).tolist()
        ([1, 3], [0, 0, 1, 1])
    """
    i = np.arange(n_out, dtype=np.int64)
    return np.minimum(((2 * i + 1) * n_in) // (2 * n_out), n_in - 1)


def _resize_nearest(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rows = nearest_indices(img.shape[0], size[0])
    cols = nearest_indices(img.shape[1], size[1])
    return np.ascontiguousarray(img[rows[:, None], cols[None, :]])


def resize_organized(xyz: Any, size: Any) -> np.ndarray:
    """Nearest-neighbour resize of an ``(H, W, 3)`` organized cloud to ``size`` (int or (H, W)).

    Every output pixel is a copy of one source pixel, so no invalid pixel becomes valid and no
    coordinate is invented (no interpolation between the object and the background).

    Example:
        >>> x = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
        >>> resize_organized(x, 4)[:, :, 0].tolist()
        [[0.0, 0.0, 3.0, 3.0], [0.0, 0.0, 3.0, 3.0], [6.0, 6.0, 9.0, 9.0], [6.0, 6.0, 9.0, 9.0]]
    """
    return _resize_nearest(check_organized(xyz, "xyz"), _size(size))


def resize_mask(mask: Any, size: Any) -> np.ndarray:
    """Nearest-neighbour resize of an ``(H, W)`` mask to ``size``; returns ``bool``."""
    arr = np.asarray(mask)
    if arr.ndim != 2 or 0 in arr.shape:
        raise InvalidInputError(f"mask: expected a non-empty (H, W) array, got shape {arr.shape}")
    return _resize_nearest(arr.astype(bool), _size(size))


_RGB_METHODS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def _check_rgb(rgb: Any) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise InvalidInputError(f"rgb: expected shape (H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise InvalidInputError(f"rgb: expected dtype uint8, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def resize_rgb(rgb: Any, size: Any, method: str = "bilinear") -> np.ndarray:
    """Resize an ``(H, W, 3) uint8`` image to ``size`` (int or (H, W)).

    ``method``: ``"bilinear"`` (default; PIL, which also low-pass filters when shrinking),
    ``"bicubic"`` (what M3DM uses for its 224 px RGB input) or ``"nearest"`` (the same pixel
    mapping as :func:`resize_organized`).
    """
    arr = _check_rgb(rgb)
    h, w = _size(size)
    if method == "nearest":
        return _resize_nearest(arr, (h, w))
    if method not in _RGB_METHODS:
        raise InvalidInputError(
            f"method: expected one of {('nearest', *_RGB_METHODS)}, got {method!r}"
        )
    img = Image.fromarray(arr).resize((w, h), _RGB_METHODS[method])
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


# --------------------------------------------------------------------------------------------
# padding
# --------------------------------------------------------------------------------------------


class PaddedScan(NamedTuple):
    """Result of :func:`pad_to_square` / :func:`preprocess_scan`: the arrays (None where none
    was given) and ``offset = (top, left)``, the position of the input's pixel (0, 0)."""

    rgb: np.ndarray | None
    xyz: np.ndarray | None
    gt: np.ndarray | None
    offset: tuple[int, int]


def pad_to_square(
    rgb: Any = None,
    xyz: Any = None,
    gt: Any = None,
    *,
    multiple: int = 1,
    rgb_fill: int = 0,
) -> PaddedScan:
    """Pad RGB, xyz and gt together to one square, centred as M3DM does.

    The side is ``max(H, W)`` rounded up to a multiple of ``multiple`` (M3DM: 100); the input
    goes at ``top = (side - H) // 2``, ``left = (side - W) // 2``. xyz and gt are padded with
    zeros (no measurement, not anomalous), RGB with ``rgb_fill``.

    Args:
        rgb: ``(H, W, 3) uint8`` or None.
        xyz: ``(H, W, 3)`` organized cloud or None.
        gt: ``(H, W)`` mask or None.
        multiple: round the side up to this multiple.
        rgb_fill: grey value of the RGB padding, ``0..255``.

    Raises:
        InvalidInputError: nothing given, or arrays of different ``(H, W)``.

    Example:
        >>> r = pad_to_square(xyz=np.ones((2, 4, 3)), gt=np.ones((2, 4), bool))
        >>> r.xyz.shape, r.gt.shape, r.offset, int(r.gt.sum())
        ((4, 4, 3), (4, 4), (1, 0), 8)
    """
    arrays: dict[str, np.ndarray] = {}
    if rgb is not None:
        arrays["rgb"] = _check_rgb(rgb)
    if xyz is not None:
        arrays["xyz"] = check_organized(xyz, "xyz")
    if gt is not None:
        g = np.asarray(gt)
        if g.ndim != 2 or 0 in g.shape:
            raise InvalidInputError(f"gt: expected a non-empty (H, W) mask, got shape {g.shape}")
        arrays["gt"] = g.astype(bool)
    if not arrays:
        raise InvalidInputError("pad_to_square: give at least one of rgb, xyz, gt")
    shapes = {k: a.shape[:2] for k, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k} {s[0]}x{s[1]}" for k, s in shapes.items())
        raise InvalidInputError(f"pad_to_square: sizes differ ({desc})")
    step = check_int(multiple, "multiple", minimum=1)
    fill = check_int(rgb_fill, "rgb_fill", minimum=0, maximum=255)
    h, w = next(iter(shapes.values()))
    side = -(-max(h, w) // step) * step
    top, left = (side - h) // 2, (side - w) // 2
    out: dict[str, np.ndarray | None] = {"rgb": None, "xyz": None, "gt": None}
    for key, a in arrays.items():
        canvas = np.full((side, side) + a.shape[2:], fill if key == "rgb" else 0, dtype=a.dtype)
        canvas[top : top + h, left : left + w] = a
        out[key] = canvas
    return PaddedScan(out["rgb"], out["xyz"], out["gt"], (top, left))


# --------------------------------------------------------------------------------------------
# the whole M3DM chain
# --------------------------------------------------------------------------------------------


def preprocess_scan(
    xyz: Any,
    rgb: Any = None,
    gt: Any = None,
    options: PreprocessOptions | None = None,
) -> PaddedScan:
    """M3DM's preprocessing of one scan: plane removal, padding to a square, largest cluster.

    Pixels removed from xyz are also zeroed in RGB (as M3DM does); gt is only padded, never
    cleared (a defect may sit where there is no 3D point).

    Args:
        xyz: ``(H, W, 3)`` organized cloud, ``(0, 0, 0)`` = no measurement.
        rgb: ``(H, W, 3) uint8`` or None.
        gt: ``(H, W)`` mask or None.
        options: every setting of :class:`PreprocessOptions` (default: M3DM's); ``multiple``
            is that of :func:`pad_to_square`.

    Example:
        >>> yy, xx = np.mgrid[:30, :50].astype(np.float32)
        >>> xyz = np.stack([xx * 0.002, yy * 0.002, np.full_like(xx, 0.5)], -1)
        >>> xyz[10:20, 20:30, 2] -= 0.02
        >>> out = preprocess_scan(xyz, options=PreprocessOptions(multiple=10))
        >>> out.xyz.shape, out.offset, int(np.any(out.xyz != 0, axis=-1).sum())
        ((50, 50, 3), (10, 0), 100)
    """
    grid = check_organized(xyz, "xyz")
    opts = _options(options)
    colour = None if rgb is None else _check_rgb(rgb).copy()
    if colour is not None and colour.shape[:2] != grid.shape[:2]:
        raise InvalidInputError(
            f"rgb: size {colour.shape[0]}x{colour.shape[1]} differs from xyz "
            f"{grid.shape[0]}x{grid.shape[1]}"
        )
    plane = background_plane_mask(grid, opts)
    grid = grid.copy()
    grid[plane] = 0.0
    if colour is not None:
        colour[plane] = 0
    padded = pad_to_square(colour, grid, gt, multiple=opts.multiple)
    assert padded.xyz is not None
    keep = largest_cluster_mask(padded.xyz, opts)
    removed = valid_pixels(padded.xyz) & ~keep
    out_xyz = padded.xyz.copy()
    out_xyz[removed] = 0.0
    out_rgb = padded.rgb
    if out_rgb is not None:
        out_rgb = out_rgb.copy()
        out_rgb[removed] = 0
    return PaddedScan(out_rgb, out_xyz, padded.gt, padded.offset)
