"""Patch features every patch-based detector shares: RGB backbone, FPFH, Point-MAE, foreground.

Every detector of :mod:`pcad.detectors` scores a square grid of ``image_size / 8`` patches
(:data:`PATCH_STRIDE`; 28 x 28 at 224). This module turns a sample into per-patch features on
that grid:

- :class:`RGBFeatures`: an RGB backbone of :mod:`pcad.features` (stride 8) on the image resized
  to the input size (:func:`backbone_image`), ``(h * w, C)``;
- :func:`fpfh_patches`: FPFH of the organized cloud (resized with nearest neighbour,
  background plane removed) averaged per patch, ``(h * w, 33)``;
  :func:`foreground_patches`: the patches with measured points on the part, ``(h * w,)``;
- :class:`MultimodalFeatures`: both modalities of a sample, ``(rgb, pts, fg)``, with FPFH or
  Point-MAE point features (what ``m3dm``, ``lsfa`` and ``cfm`` use); :func:`extract_all` of a
  training set, sharded under torchrun;
- :func:`foreground_max`: a map's maximum over the part (the image score of the detectors that
  see xyz).

**The foreground of a sample is computed once.** The background-plane fit
(:func:`pcad.features.point_mask`) is the costly part of the foreground. A
:class:`SampleForeground` holds it for one cloud: the cloud resized to the input size and its
foreground (used by :func:`fpfh_patches`, :func:`foreground_patches` and ``synthsup``'s depth
statistics), and the foreground at the sample's resolution, dilated (used by
:func:`foreground_max`); each piece is computed on first use and then shared. A detector makes
one per sample and passes it to every function that needs the foreground (``foreground=``);
without one, each function computes its own (same result).

Example:
    >>> import numpy as np
    >>> from pcad.detectors.patches import SampleForeground, foreground_max, foreground_patches
    >>> yy, xx = np.mgrid[:64, :64].astype(np.float32)
    >>> xyz = np.stack([xx * 0.01, yy * 0.01, np.ones_like(xx)], -1)
    >>> xyz[24:40, 24:40, 2] -= 0.05                     # a block standing off the plane
    >>> fg = SampleForeground(xyz, image_size=32)
    >>> int(foreground_patches(xyz, 32, (4, 4), foreground=fg).sum())
    4
    >>> amap = np.zeros((64, 64), np.float32)
    >>> amap[0, 0], amap[30, 30] = 5.0, 1.0              # the corner is background
    >>> foreground_max(amap, xyz, foreground=fg)
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pcad.checks import check_int, check_positive
from pcad.errors import InvalidInputError

__all__ = ["DEVICES", "FEATURE_DEFAULTS", "MAX_IMAGE_SIZE", "MAX_SIGMA", "PATCH_STRIDE",
           "POINT_BACKBONES", "GridDeviceMixin", "MultimodalFeatures", "RGBFeatures",
           "SampleForeground",
           "backbone_image", "check_image_size", "check_sigma", "extract_all", "foreground_max",
           "foreground_patches", "fpfh_patches", "resolve_device"]

#: every backbone's stride: one patch is 8 x 8 input pixels
PATCH_STRIDE = 8
#: the largest detector input size (pixels per side) :func:`check_image_size` accepts
MAX_IMAGE_SIZE = 4096
#: the largest anomaly-map blur :func:`check_sigma` accepts (pixels at 224; default 4)
MAX_SIGMA = 64.0
POINT_BACKBONES = ("pointmae", "fpfh")
DEVICES = ("auto", "cpu", "cuda")
#: pixels the part's foreground is dilated by for :func:`foreground_max`
PART_DILATE = 3

#: the feature options of the detectors built on :class:`MultimodalFeatures` (m3dm, lsfa).
#: ``point_backbone`` is FPFH: on the built-in procedural parts its point bank separates
#: defective patches far better than the shipped Point-MAE's
#: (``benchmarks/bench_point_features.py``); Point-MAE stays available as
#: ``point_backbone="pointmae"``.
FEATURE_DEFAULTS: dict[str, Any] = {
    "image_size": 224, "rgb_backbone": "effnet-lite0", "weights": None,
    "point_backbone": "fpfh", "point_weights": None, "num_group": None, "group_size": None,
    "device": "auto",
}


def check_image_size(value: Any) -> int:
    """The detector input size as an int: a multiple of the patch stride 8 in
    ``[32, MAX_IMAGE_SIZE]`` (4096; a larger size, e.g. from an edited run, would allocate
    terabytes).

    Example:
        >>> check_image_size(64.0)
        64
    """
    size = check_int(value, "image_size", minimum=32, maximum=MAX_IMAGE_SIZE)
    if size % PATCH_STRIDE:
        raise InvalidInputError(f"image_size: must be a multiple of {PATCH_STRIDE}, got {size}")
    return size


def check_sigma(value: Any) -> float:
    """The anomaly-map blur ``sigma`` (pixels at 224, scaled to the map's size) as a float in
    ``[0, MAX_SIGMA]`` (64: a larger blur flattens the map and its kernel grows with it).

    Example:
        >>> check_sigma(4)
        4.0
    """
    sigma = check_positive(value, "sigma", allow_zero=True)
    if sigma > MAX_SIGMA:
        raise InvalidInputError(f"sigma: must be <= {MAX_SIGMA:g}, got {sigma:g}")
    return sigma


class GridDeviceMixin:
    """``grid`` and ``device`` of a detector whose ``config`` holds ``image_size`` and
    ``device`` (cfm, synthsup).

    Example:
        >>> class D(GridDeviceMixin):
        ...     config = {"image_size": 224, "device": "cpu"}
        >>> D().grid, D().device
        ((28, 28), device(type='cpu'))
    """

    config: dict[str, Any]

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the patch grid: ``image_size // PATCH_STRIDE`` each."""
        return (self.config["image_size"] // PATCH_STRIDE,) * 2

    @property
    def device(self) -> torch.device:
        """``device`` resolved (``"auto"``: this rank's CUDA device when available)."""
        return resolve_device(self.config["device"])


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available: this process's ``cuda:LOCAL_RANK`` under torchrun),
    ``"cpu"`` or ``"cuda"`` (an error without CUDA) as a :class:`torch.device`.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name not in DEVICES:
        raise InvalidInputError(f"device: expected one of {DEVICES}, got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if name == "cuda":
            raise InvalidInputError("device: 'cuda' asked for, but no CUDA device is available")
        return torch.device("cpu")
    from pcad.distributed import get_context

    dev = get_context().device
    return dev if dev.type == "cuda" else torch.device("cuda")


# --------------------------------------------------------------------------------- foreground


class SampleForeground:
    """The foreground of one organized cloud, each piece computed once, on first use.

    Args:
        xyz: ``(H, W, 3) float32`` organized cloud, zeros = no measurement.
        image_size: the detector's input size ``S`` (the resized pieces are ``(S, S)``), or
            None when only :attr:`mask` and :meth:`part` are used.

    Example:
        >>> import numpy as np
        >>> xyz = np.zeros((40, 40, 3), np.float32)
        >>> fg = SampleForeground(xyz, 32)
        >>> fg.resized.shape, int(fg.resized_mask.sum()), bool(fg.part().any())
        ((32, 32, 3), 0, False)
    """

    def __init__(self, xyz: np.ndarray, image_size: int | None = None) -> None:
        self.xyz = xyz
        self.image_size = None if image_size is None else int(image_size)
        self._resized: np.ndarray | None = None
        self._resized_mask: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._parts: dict[int, np.ndarray] = {}

    @property
    def resized(self) -> np.ndarray:
        """``(S, S, 3) float32``: the cloud resized with nearest neighbour to the input size."""
        if self._resized is None:
            from pcad.data.preprocess import resize_organized

            if self.image_size is None:
                raise InvalidInputError("SampleForeground: no image_size for the resized cloud")

            self._resized = resize_organized(self.xyz, self.image_size)
        return self._resized

    @property
    def resized_mask(self) -> np.ndarray:
        """``(S, S) bool``: measured pixels of :attr:`resized` off its background plane."""
        if self._resized_mask is None:
            from pcad.features import point_mask

            self._resized_mask = point_mask(self.resized)
        return self._resized_mask

    @property
    def mask(self) -> np.ndarray:
        """``(H, W) bool``: measured pixels of the cloud off its background plane."""
        if self._mask is None:
            from pcad.features import point_mask

            self._mask = point_mask(self.xyz)
        return self._mask

    def part(self, dilate: int = PART_DILATE) -> np.ndarray:
        """``(H, W) bool``: :attr:`mask` dilated by ``dilate`` pixels (so that holes at the
        part's edge still count)."""
        if dilate not in self._parts:
            from scipy.ndimage import binary_dilation

            self._parts[dilate] = binary_dilation(self.mask, iterations=dilate)
        return self._parts[dilate]


def _foreground(xyz: np.ndarray, image_size: int,
                foreground: SampleForeground | None) -> SampleForeground:
    if foreground is None:
        return SampleForeground(xyz, image_size)
    if foreground.xyz is not xyz or foreground.image_size != image_size:
        raise InvalidInputError("foreground: made for another cloud or input size")
    return foreground


def foreground_max(amap: np.ndarray, xyz: np.ndarray | None, dilate: int = PART_DILATE, *,
                   foreground: SampleForeground | None = None) -> float:
    """Largest map value over the part: measured pixels off the background plane, dilated by
    ``dilate`` pixels (so holes at the part's edge still count); the whole map if none, and
    the whole map when there is no cloud (``xyz`` None: an RGB-only sample has no foreground,
    so every pixel counts).

    Args:
        amap: ``(H, W)`` anomaly map at the cloud's resolution.
        xyz: ``(H, W, 3)`` organized cloud, or None (RGB-only sample).
        dilate: dilation of the foreground, in pixels.
        foreground: ``xyz``'s :class:`SampleForeground` (shares the plane fit), or None.

    Example:
        >>> import numpy as np
        >>> amap = np.zeros((8, 8), np.float32)
        >>> amap[0, 0] = 2.0
        >>> foreground_max(amap, None)                      # no cloud: the whole map
        2.0
    """
    if xyz is None:
        if foreground is not None:
            raise InvalidInputError("foreground: given without its cloud (xyz is None)")
        return float(np.max(amap))
    if foreground is None:
        foreground = SampleForeground(xyz)
    elif foreground.xyz is not xyz:
        raise InvalidInputError("foreground: made for another cloud")
    fg = foreground.part(dilate)
    return float(amap[fg].max()) if fg.any() else float(amap.max())


def fpfh_patches(xyz: np.ndarray, image_size: int, grid: tuple[int, int], *,
                 foreground: SampleForeground | None = None) -> np.ndarray:
    """``(h * w, 33) float32``: FPFH averaged per patch of the cloud resized (nearest) to the
    input size, background plane removed (zeros when fewer than 5 foreground points).

    ``foreground``: ``xyz``'s :class:`SampleForeground` for ``image_size``, or None.
    """
    from pcad.features import fpfh_map, to_patch_grid

    fg = _foreground(xyz, image_size, foreground)
    mask = fg.resized_mask
    if mask.sum() < 5:
        return np.zeros((grid[0] * grid[1], 33), np.float32)
    # the background is already removed: the mask is its own restriction
    fmap = fpfh_map(fg.resized, remove_background=False, valid=mask)
    return to_patch_grid(fmap, mask, grid).reshape(-1, 33)


def foreground_patches(xyz: np.ndarray, image_size: int, grid: tuple[int, int], *,
                       foreground: SampleForeground | None = None) -> np.ndarray:
    """``(h * w,) bool``: the patches with at least one measured, non-background point of the
    cloud resized (nearest) to the input size (all False when fewer than 5 such points, where
    :func:`fpfh_patches` returns zeros).

    ``foreground``: ``xyz``'s :class:`SampleForeground` for ``image_size``, or None.
    """
    from pcad.features import to_patch_grid

    mask = _foreground(xyz, image_size, foreground).resized_mask
    if mask.sum() < 5:
        return np.zeros(grid[0] * grid[1], bool)
    _, coverage = to_patch_grid(mask[..., None].astype(np.float32), mask, grid,
                                return_coverage=True)
    return (coverage > 0).reshape(-1)


# ------------------------------------------------------------------------------------- RGB


def backbone_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """``(size, size, 3) uint8``: the image as the RGB backbone sees it (torch bilinear,
    antialiased; unlike :func:`pcad.data.resize_rgb`, which resizes with PIL).

    Example:
        >>> import numpy as np
        >>> backbone_image(np.zeros((50, 70, 3), np.uint8), 32).shape
        (32, 32, 3)
    """
    t = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class RGBFeatures:
    """Backbone patch features of an RGB image, ``(h * w, C) float32`` (the backbone is built
    on first use).

    Args:
        backbone: a name of :func:`pcad.features.create_backbone` with stride 8.
        weights: its weights (a local path), or None for the packaged ones.
        image_size: the input size (multiple of 8).
        layers: the backbone's feature layers (``effnet-lite0``: block indices, default
            ``(4, 10)``; plug-in backbones: module names), or None for the backbone's
            default.
        aggregate_kernel: PatchCore's local aggregation (``k x k`` average of each layer's
            map; 1 turns it off), or None for the backbone's default (3).

    Example:
        >>> RGBFeatures("effnet-lite0", None, 64, layers=(4,), aggregate_kernel=1).build_kwargs
        {'layers': (4,), 'aggregate_kernel': 1}
    """

    def __init__(self, backbone: str, weights: str | None, image_size: int,
                 layers: Sequence[int] | None = None, aggregate_kernel: int | None = None
                 ) -> None:
        self.backbone_name, self.weights, self.image_size = backbone, weights, image_size
        #: the factory keywords beyond the defaults (none by default: plug-in backbones
        #: need not accept them)
        self.build_kwargs: dict[str, Any] = {}
        if layers is not None:
            self.build_kwargs["layers"] = tuple(layers)
        if aggregate_kernel is not None:
            self.build_kwargs["aggregate_kernel"] = int(aggregate_kernel)
        self._net = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from pcad.features import create_backbone

        if self._net is None:
            try:
                self._net = create_backbone(self.backbone_name, weights=self.weights,
                                            **self.build_kwargs)
            except TypeError as exc:
                raise InvalidInputError(f"rgb backbone {self.backbone_name!r} does not take "
                                        f"{sorted(self.build_kwargs)}: {exc}") from None
            if getattr(self._net, "stride", PATCH_STRIDE) != PATCH_STRIDE:
                raise InvalidInputError(f"rgb backbone {self.backbone_name!r}: stride "
                                        f"{self._net.stride}, pcad's detectors need 8")
        with torch.no_grad():
            f = self._net(backbone_image(rgb, self.image_size))[0]  # (C, h, w)
        return f.permute(1, 2, 0).reshape(-1, f.shape[0]).numpy().astype(np.float32)


# ------------------------------------------------------------------------------ multimodal


class MultimodalFeatures:
    """Frozen per-patch features of a sample: ``(rgb (n, C_rgb), pts (n, C_pts), fg (n,))``.

    RGB: :class:`RGBFeatures`. Points (``point_backbone``): ``"pointmae"``, the Point-MAE
    encoder of :mod:`pcad.features.pointmae` (``point_weights``: a checkpoint path, None for
    the small one shipped with pcad; ``num_group`` / ``group_size``: its FPS groups and kNN
    group size), whose group features are interpolated to every measured pixel and pooled to
    the patch grid as M3DM does (:func:`pcad.features.point_grid.point_patch_features`); or
    ``"fpfh"``, :func:`fpfh_patches` with the foreground of :func:`foreground_patches` (fast,
    no weights). ``fg`` marks the patches with measured points on the part.

    Args:
        owner: the detector's name (for error messages).
        image_size: backbone input size (multiple of 8); the grid is ``image_size / 8`` square.
        rgb_backbone, weights: :class:`RGBFeatures` arguments.
        point_backbone: ``"fpfh"`` (default, as the detectors') or ``"pointmae"``.
        point_weights, num_group, group_size: Point-MAE checkpoint (None: the one shipped with
            pcad) and grouping (None: the checkpoint's); ignored by ``"fpfh"``.
        device: where the Point-MAE encoder runs.

    Example:
        >>> from pcad.detectors.patches import MultimodalFeatures
        >>> f = MultimodalFeatures("m3dm", image_size=64)
        >>> f.grid
        (8, 8)
    """

    def __init__(self, owner: str, image_size: int = 224, rgb_backbone: str = "effnet-lite0",
                 weights: str | None = None,
                 point_backbone: str = FEATURE_DEFAULTS["point_backbone"],
                 point_weights: str | None = None, num_group: int | None = None,
                 group_size: int | None = None, device: torch.device | str = "cpu") -> None:
        if point_backbone not in POINT_BACKBONES:
            raise InvalidInputError(f"point_backbone: expected one of {POINT_BACKBONES}, got "
                                    f"{point_backbone!r}")
        self.owner, self.image_size = owner, image_size
        self.point_backbone, self.point_weights = point_backbone, point_weights
        self.num_group, self.group_size = num_group, group_size
        self.device = torch.device(device)
        self._rgb = RGBFeatures(rgb_backbone, weights, image_size)
        self._encoder = None

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // PATCH_STRIDE
        return (g, g)

    def rgb(self, image: np.ndarray) -> np.ndarray:
        """``(n, C_rgb) float32`` backbone patch features of an ``(H, W, 3) uint8`` image."""
        return self._rgb(image)

    def encoder(self):
        """The Point-MAE encoder (loaded on first use)."""
        if self._encoder is None:
            try:
                from pcad.features.pointmae import load_point_encoder
            except ImportError as exc:  # pragma: no cover - depends on the installed pcad
                raise InvalidInputError(
                    f"detector {self.owner!r}: point_backbone 'pointmae' needs "
                    f"pcad.features.pointmae ({exc}); use point_backbone='fpfh'") from None
            self._encoder = load_point_encoder(self.point_weights, num_group=self.num_group,
                                               group_size=self.group_size, device=self.device)
        return self._encoder

    def points(self, xyz: np.ndarray, foreground: SampleForeground | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(pts (n, C_pts) float32, fg (n,) bool)`` of an organized cloud (``foreground``:
        its :class:`SampleForeground` for this input size, or None)."""
        if self.point_backbone == "fpfh":
            fg = _foreground(xyz, self.image_size, foreground)
            return (fpfh_patches(xyz, self.image_size, self.grid, foreground=fg),
                    foreground_patches(xyz, self.image_size, self.grid, foreground=fg))
        from pcad.features.point_grid import point_patch_features

        return point_patch_features(xyz, self.image_size, self.grid, self.encoder())

    def __call__(self, sample: Any, where: str = "sample",
                 foreground: SampleForeground | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rgb (n, C_rgb), pts (n, C_pts), fg (n,) bool)`` of ``sample`` (``foreground``:
        its cloud's :class:`SampleForeground`, or None); a sample without foreground patch is
        an error."""
        path = getattr(sample, "path", None) or "?"
        try:
            pts, fg = self.points(sample.xyz, foreground)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: detector {self.owner!r}, sample {path}: "
                                    f"{exc}") from None
        fg = np.asarray(fg, dtype=bool).reshape(-1)
        if not fg.any():
            raise InvalidInputError(
                f"{where}: detector {self.owner!r}, sample {path}: no foreground (no measured "
                "point off the background plane), so there is no patch to align or score")
        rgb = self.rgb(sample.rgb)
        pts = np.ascontiguousarray(pts, dtype=np.float32).reshape(len(fg), -1)
        if rgb.shape[0] != pts.shape[0]:  # pragma: no cover - both on the stride-8 grid
            raise InvalidInputError(f"detector {self.owner!r}: {rgb.shape[0]} RGB patches but "
                                    f"{pts.shape[0]} point patches")
        return rgb, pts, fg


def extract_all(features: MultimodalFeatures, items: Sequence[Any], where: str,
                progress: bool = False, desc: str = "features"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of every sample, ``(rgb (N, n, C_rgb), pts (N, n, C_pts), fg (N, n))``.

    Each rank of a distributed run extracts its :func:`~pcad.distributed.shard` and the
    blocks are gathered in rank order: every rank gets the single-process arrays.
    """
    from tqdm import tqdm

    from pcad import distributed as dist

    start, stop = dist.shard_range(len(items))
    rgbs, ptss, fgs = [], [], []
    for s in tqdm(items[start:stop], disable=not (progress and dist.is_main()), desc=desc,
                  unit="sample"):
        r, p, f = features(s, where)
        rgbs.append(r)
        ptss.append(p)
        fgs.append(f)
    n = features.grid[0] * features.grid[1]

    # channel counts from the ranks that have samples (a rank may have none: more ranks
    # than samples), so that every rank's block has the same trailing shape
    widths = (np.array([[rgbs[0].shape[1], ptss[0].shape[1]]], np.int64) if rgbs
              else np.zeros((0, 2), np.int64))
    c_rgb, c_pts = (int(v) for v in dist.all_gather_arrays(widths)[0])

    def gather(parts: list[np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
        local = np.stack(parts) if parts else np.zeros((0, *shape), dtype)
        return dist.all_gather_arrays(local)

    return (gather(rgbs, (n, c_rgb), np.float32), gather(ptss, (n, c_pts), np.float32),
            gather(fgs, (n,), bool))
