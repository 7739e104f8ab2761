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

import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from pcad.checks import check_int, check_positive
from pcad.devices import DEVICES, check_device
from pcad.errors import InvalidInputError
from pcad.features.base import full_float32_convolutions

__all__ = ["DEVICES", "FEATURE_DEFAULTS", "FPFH_DEFAULT_NEIGHBOURS", "FPFH_NEIGHBOURS",
           "FPFHOption", "MAX_IMAGE_SIZE", "MAX_SIGMA",
           "PATCH_STRIDE", "POINT_BACKBONES", "GridDeviceMixin", "MultimodalFeatures",
           "RGBFeatures", "SampleForeground", "host_workers", "parallel_map", "prepare_foregrounds",
           "prepare_foregrounds_torch",
           "backbone_image", "check_device", "check_image_size", "check_sigma", "extract_all",
           "foreground_max", "foreground_mean",
           "foreground_patches", "fpfh_patches", "resolve_device"]

#: every backbone's stride: one patch is 8 x 8 input pixels
PATCH_STRIDE = 8
#: the largest detector input size (pixels per side) :func:`check_image_size` accepts
MAX_IMAGE_SIZE = 4096
#: the largest anomaly-map blur :func:`check_sigma` accepts (pixels at 224; default 4)
MAX_SIGMA = 64.0
POINT_BACKBONES = ("pointmae", "fpfh")
#: pixels the part's foreground is dilated by for :func:`foreground_max`
PART_DILATE = 3
#: BTF's neighbour cap of the FPFH histograms (:func:`fpfh_patches`)
FPFH_NEIGHBOURS = 100
#: ``fpfh_neighbours`` of the detectors with :class:`FPFHOption` (btf, fpfh, m3dm, lsfa, cfm;
#: see :mod:`pcad.detectors.btf` for why)
FPFH_DEFAULT_NEIGHBOURS = 200

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


def resolve_device(name: Any) -> torch.device:
    """``"auto"`` (CUDA when available: this process's ``cuda:LOCAL_RANK`` under torchrun),
    ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a :class:`torch.device`; ``"cuda"`` or
    ``"cuda:N"`` without CUDA, or ``N`` beyond the devices present, is a one-line error.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    name = check_device(name)
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if name != "auto":
            raise InvalidInputError(f"device: {name!r} asked for, but no CUDA device is "
                                    "available (use --device cpu or auto)")
        return torch.device("cpu")
    if name.startswith("cuda:"):
        index, count = int(name[5:]), torch.cuda.device_count()
        if index >= count:
            raise InvalidInputError(f"device: {name!r} asked for, but this machine has {count} "
                                    f"CUDA device(s) (cuda:0 to cuda:{count - 1})")
        return torch.device("cuda", index)
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


def host_workers(device: torch.device | str, n: int) -> int:
    """Threads for the per-sample host work of a batch of ``n`` samples computed on
    ``device``: on CUDA up to the CPU count (16 at most: the device waits for the host), on
    the CPU 1 (torch already uses the cores).

    Example:
        >>> host_workers("cpu", 32)
        1
    """
    if torch.device(device).type != "cuda":
        return 1
    return max(1, min(n, os.cpu_count() or 1, 16))


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int = 1) -> list[Any]:
    """``[fn(x) for x in items]``, on ``workers`` threads when more than 1 (numpy, scipy and
    torch release the GIL in their kernels); the results are the serial ones, in order.

    Example:
        >>> parallel_map(abs, [-1, 2, -3], workers=2)
        [1, 2, 3]
    """
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def prepare_foregrounds(foregrounds: Sequence[SampleForeground | None], workers: int = 1,
                        part: bool = True, device: torch.device | str | None = None) -> None:
    """Compute each :class:`SampleForeground`'s pieces now (:attr:`~SampleForeground.
    resized_mask` when it has an input size, and with ``part`` its dilated full-size
    :meth:`~SampleForeground.part`), on ``workers`` threads (:func:`parallel_map`): the
    background-plane fits of a batch in parallel, with the serial results. None entries are
    skipped.

    ``device`` CUDA: the whole batch at once on that device instead
    (:func:`pcad.geometry.planes_torch.foreground_masks_groups`: the resize, both plane fits
    and the dilation in torch, no Open3D; the same masks as the numpy path, see that
    module); a cloud that is not a finite ``(H, W, 3)`` array is left to the numpy path,
    whose first use raises the one-line error.

    Example:
        >>> import numpy as np
        >>> fg = SampleForeground(np.zeros((16, 16, 3), np.float32), 16)
        >>> prepare_foregrounds([fg, None], workers=2)
        >>> fg._resized_mask is not None and PART_DILATE in fg._parts
        True
    """
    if device is not None and torch.device(device).type == "cuda":
        prepare_foregrounds_torch(list(foregrounds), part, device)

    def warm(f: SampleForeground | None) -> None:
        if f is None:
            return
        if f.image_size is not None:
            _ = f.resized_mask
        if part:
            f.part()

    parallel_map(warm, list(foregrounds), workers)


def prepare_foregrounds_torch(foregrounds: Sequence[SampleForeground | None], part: bool = True,
                              device: torch.device | str = "cpu") -> None:
    """The pieces :func:`prepare_foregrounds` computes, for the whole batch in torch on
    ``device`` (what :func:`prepare_foregrounds` runs on CUDA; on the CPU it is slower than
    the numpy path and only serves the tests): the clouds grouped by shape, each group
    uploaded once; the resize, the plane fits of the resized clouds and, with ``part``, of
    the full-size ones (one pass, :func:`pcad.geometry.planes_torch.foreground_masks_groups`)
    and the dilation run there; the results come back in one copy per group and piece (no
    other device-host synchronisation but ``eigh``'s error check, one per fit). Pieces
    already computed are kept; a cloud that is not a finite ``(H, W, 3)`` array is skipped
    (the numpy path raises its error on first use).

    Example:
        >>> import numpy as np
        >>> yy, xx = np.mgrid[:32, :32].astype(np.float32)
        >>> xyz = np.stack([xx * 0.01, yy * 0.01, np.ones_like(xx)], -1)
        >>> xyz[12:20, 12:20, 2] -= 0.05
        >>> fg = SampleForeground(xyz, 16)
        >>> prepare_foregrounds_torch([fg, None])
        >>> bool((fg.resized_mask == SampleForeground(xyz, 16).resized_mask).all())
        True
    """
    device = torch.device(device)
    from pcad.data.preprocess import nearest_indices
    from pcad.geometry.planes_torch import dilate_masks, foreground_masks_groups

    todo: dict[tuple[tuple[int, int], int | None], list[tuple[SampleForeground, np.ndarray]]]
    todo = {}
    for f in foregrounds:
        if f is None:
            continue
        need_resized = f.image_size is not None and f._resized_mask is None
        if not (need_resized or (part and PART_DILATE not in f._parts)):
            continue
        x = np.asarray(f.xyz)
        if x.ndim != 3 or x.shape[2] != 3 or 0 in x.shape or x.dtype.kind not in "iuf":
            continue  # the numpy path raises its error on first use
        key = (x.shape[:2], f.image_size if need_resized else None)
        todo.setdefault(key, []).append((f, np.ascontiguousarray(x, dtype=np.float32)))
    for ((h, w), size), items in todo.items():
        with torch.no_grad():
            full = torch.stack([torch.from_numpy(x).to(device) for _, x in items])
            finite = torch.isfinite(full).flatten(1).all(1)
            full = torch.where(finite[:, None, None, None], full, torch.zeros_like(full))
            small = None
            if size is not None:
                rows = torch.as_tensor(nearest_indices(h, size), device=device)
                cols = torch.as_tensor(nearest_indices(w, size), device=device)
                small = full[:, rows][:, :, cols].contiguous()
            # the full-size fit only for the dilated part (as the lazy numpy path)
            masks = foreground_masks_groups([g for g in ((full if part else None), small)
                                             if g is not None])
            full_masks = parts = resized = resized_masks = None
            if part:  # one copy for both full-size masks (the first copy waits for the device)
                both = torch.stack([masks[0], dilate_masks(masks[0], PART_DILATE)]).cpu().numpy()
                full_masks, parts = both[0], both[1]
            if small is not None:
                resized, resized_masks = small.cpu().numpy(), masks[-1].cpu().numpy()
            ok = finite.cpu().numpy()
        for i, (f, _) in enumerate(items):
            if not ok[i]:
                continue  # NaN or inf: the numpy path raises its error on first use
            if parts is not None:
                if f._mask is None:
                    f._mask = full_masks[i]
                if PART_DILATE not in f._parts:
                    f._parts[PART_DILATE] = parts[i]
            if resized is not None and f._resized_mask is None:
                if f._resized is None:
                    f._resized = resized[i]
                f._resized_mask = resized_masks[i]


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
    return float(_part_values(amap, xyz, dilate, foreground).max())


def foreground_mean(amap: np.ndarray, xyz: np.ndarray | None, dilate: int = PART_DILATE, *,
                    foreground: SampleForeground | None = None) -> float:
    """Mean map value over the part (the pixels of :func:`foreground_max`): non-decreasing in
    every pixel's score, and it pools evidence that spreads over the part where the maximum
    lands on noise (``cfm``'s ``image_score="foreground-mean"``).

    Example:
        >>> import numpy as np
        >>> foreground_mean(np.arange(4, dtype=np.float32).reshape(2, 2), None)
        1.5
    """
    return float(_part_values(amap, xyz, dilate, foreground).mean())


def _part_values(amap: np.ndarray, xyz: np.ndarray | None, dilate: int,
                 foreground: SampleForeground | None) -> np.ndarray:
    """The map's values over the dilated part (every value without a cloud or a part)."""
    amap = np.asarray(amap)
    if xyz is None:
        if foreground is not None:
            raise InvalidInputError("foreground: given without its cloud (xyz is None)")
        return amap.reshape(-1)
    if foreground is None:
        foreground = SampleForeground(xyz)
    elif foreground.xyz is not xyz:
        raise InvalidInputError("foreground: made for another cloud")
    fg = foreground.part(dilate)
    return amap[fg] if fg.any() else amap.reshape(-1)


def fpfh_patches(xyz: np.ndarray, image_size: int, grid: tuple[int, int], *,
                 foreground: SampleForeground | None = None,
                 neighbours: int = FPFH_NEIGHBOURS) -> np.ndarray:
    """``(h * w, 33) float32``: FPFH averaged per patch of the cloud resized (nearest) to the
    input size, background plane removed (zeros when fewer than 5 foreground points).

    ``foreground``: ``xyz``'s :class:`SampleForeground` for ``image_size``, or None.
    ``neighbours``: the most neighbours of each point's histogram (within 10 point spacings,
    :func:`~pcad.features.fpfh.fpfh_map`'s ``fpfh_max_nn``; BTF's 100 by default).
    """
    from pcad.features import fpfh_map, to_patch_grid

    fg = _foreground(xyz, image_size, foreground)
    mask = fg.resized_mask
    if mask.sum() < 5:
        return np.zeros((grid[0] * grid[1], 33), np.float32)
    # the background is already removed: the mask is its own restriction
    fmap = fpfh_map(fg.resized, remove_background=False, valid=mask,
                    fpfh_max_nn=check_int(neighbours, "fpfh_neighbours", minimum=1))
    return to_patch_grid(fmap, mask, grid).reshape(-1, 33)


class FPFHOption:
    """The ``fpfh_neighbours`` option of the detectors that read FPFH patches: the most
    neighbours of each point's histogram (:func:`fpfh_patches`); runs saved before it existed
    load with BTF's 100 (:data:`FPFH_NEIGHBOURS`, ``legacy_options``).

    Example:
        >>> from pcad.detectors import create_detector
        >>> create_detector("m3dm").config["fpfh_neighbours"]
        200
    """

    config: dict[str, Any]
    grid: tuple[int, int]
    FPFH_DEFAULTS: ClassVar[dict[str, Any]] = {"fpfh_neighbours": FPFH_DEFAULT_NEIGHBOURS}
    legacy_options: ClassVar[dict[str, Any]] = {"fpfh_neighbours": FPFH_NEIGHBOURS}

    def check_fpfh_option(self) -> None:
        self.config["fpfh_neighbours"] = check_int(self.config["fpfh_neighbours"],
                                                   "fpfh_neighbours", minimum=5)

    def fpfh(self, sample: Any, foreground: SampleForeground | None) -> np.ndarray:
        """``(h * w, 33)`` FPFH patches of ``sample`` with this detector's neighbours."""
        return fpfh_patches(sample.xyz, self.config["image_size"], self.grid,
                            foreground=foreground, neighbours=self.config["fpfh_neighbours"])


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
                 layers: Sequence[int] | None = None, aggregate_kernel: int | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.backbone_name, self.weights, self.image_size = backbone, weights, image_size
        #: the factory keywords beyond the defaults (none by default: plug-in backbones
        #: need not accept them)
        self.build_kwargs: dict[str, Any] = {}
        if layers is not None:
            self.build_kwargs["layers"] = tuple(layers)
        if aggregate_kernel is not None:
            self.build_kwargs["aggregate_kernel"] = int(aggregate_kernel)
        self._net = None
        self.device = torch.device(device)

    def _network(self):
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
        if isinstance(self._net, torch.nn.Module):  # a plug-in may be a plain callable
            self._net.to(self.device)
        return self._net

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.batch([rgb])[0]

    def batch(self, images: Sequence[np.ndarray], chunk: int | None = None) -> np.ndarray:
        """``(B, h * w, C) float32`` features of ``B`` images, ``chunk`` at a time through the
        backbone on :attr:`device` (each image resized first, so sizes may differ).

        ``chunk`` None: 16 on CUDA, 1 on the CPU, where batching gains little and would make
        an image's features depend, in the last bits, on the images batched with it (a fit
        would then differ from :meth:`__call__` per sample, and with the torchrun sharding).

        Example:
            >>> import numpy as np
            >>> f = RGBFeatures("effnet-lite0", None, 32, layers=(4,))
            >>> f.batch([np.zeros((40, 40, 3), np.uint8)] * 3).shape
            (3, 16, 40)
        """
        net = self._network()
        if chunk is None:
            chunk = 16 if self.device.type == "cuda" else 1
        chunk = max(1, int(chunk))
        # the resizes on host threads on CUDA (the same function: the same pixels)
        resized = parallel_map(lambda im: backbone_image(im, self.image_size), list(images),
                               host_workers(self.device, len(images)))
        out = []
        for s in range(0, len(images), chunk):
            # C order: backbone_image's arrays are transposed views, and the memory layout of
            # the input picks the convolution's algorithm (its last bits)
            x = np.ascontiguousarray(np.stack(resized[s:s + chunk]))
            with torch.no_grad(), full_float32_convolutions():  # batch-independent features
                f = net(torch.from_numpy(x).to(self.device))  # (b, C, h, w)
            out.append(f.flatten(2).transpose(1, 2).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)


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
        fpfh_neighbours: ``"fpfh"``'s neighbour cap (:func:`fpfh_patches`' ``neighbours``;
            the default is m3dm / lsfa / cfm's, the learned detectors pass BTF's 100).

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
                 group_size: int | None = None, device: torch.device | str = "cpu", *,
                 fpfh_neighbours: int = FPFH_DEFAULT_NEIGHBOURS) -> None:
        if point_backbone not in POINT_BACKBONES:
            raise InvalidInputError(f"point_backbone: expected one of {POINT_BACKBONES}, got "
                                    f"{point_backbone!r}")
        self.owner, self.image_size = owner, image_size
        self.point_backbone, self.point_weights = point_backbone, point_weights
        self.num_group, self.group_size = num_group, group_size
        self.fpfh_neighbours = check_int(fpfh_neighbours, "fpfh_neighbours", minimum=1)
        self._rgb = RGBFeatures(rgb_backbone, weights, image_size)
        self._encoder = None
        self.device = device

    @property
    def device(self) -> torch.device:
        """Where the RGB backbone and the Point-MAE encoder run (setting it moves them)."""
        return self._device

    @device.setter
    def device(self, value: torch.device | str) -> None:
        self._device = torch.device(value)
        self._rgb.device = self._device
        if self._encoder is not None:
            self._encoder.to(self._device)

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // PATCH_STRIDE
        return (g, g)

    def rgb(self, image: np.ndarray) -> np.ndarray:
        """``(n, C_rgb) float32`` backbone patch features of an ``(H, W, 3) uint8`` image."""
        return self._rgb(image)

    def rgb_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(B, n, C_rgb) float32``: :meth:`rgb` of several images, the backbone run on them
        as one batch on :attr:`device` (:meth:`RGBFeatures.batch`)."""
        return self._rgb.batch(images)

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
            return (fpfh_patches(xyz, self.image_size, self.grid, foreground=fg,
                                 neighbours=self.fpfh_neighbours),
                    foreground_patches(xyz, self.image_size, self.grid, foreground=fg))
        from pcad.features.point_grid import point_patch_features

        return point_patch_features(xyz, self.image_size, self.grid, self.encoder())

    def points_batch(self, clouds: Sequence[np.ndarray],
                     foregrounds: Sequence[SampleForeground | None] | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`points` of several clouds; Point-MAE runs on them as ragged batches on
        :attr:`device` (:func:`~pcad.features.point_grid.point_patch_features_batch`: on the
        CPU one cloud at a time, bitwise :meth:`points`; on CUDA 16 at a time), FPFH per cloud.
        """
        fores = list(foregrounds) if foregrounds is not None else [None] * len(clouds)
        if self.point_backbone == "fpfh" or len(clouds) < 2:
            return [self.points(x, f) for x, f in zip(clouds, fores, strict=True)]
        from pcad.features.point_grid import point_patch_features_batch

        prepared = [None if f is None else (_foreground(x, self.image_size, f).resized,
                                            f.resized_mask)
                    for x, f in zip(clouds, fores, strict=True)]
        return point_patch_features_batch(clouds, self.image_size, self.grid, self.encoder(),
                                          prepared=prepared)

    def points_checked(self, sample: Any, where: str,
                        foreground: SampleForeground | None) -> tuple[np.ndarray, np.ndarray]:
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
        return np.ascontiguousarray(pts, dtype=np.float32).reshape(len(fg), -1), fg

    def __call__(self, sample: Any, where: str = "sample",
                 foreground: SampleForeground | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rgb (n, C_rgb), pts (n, C_pts), fg (n,) bool)`` of ``sample`` (``foreground``:
        its cloud's :class:`SampleForeground`, or None); a sample without foreground patch is
        an error."""
        return self.batch([sample], where, [foreground])[0]

    def batch(self, samples: Sequence[Any], where: str = "sample",
              foregrounds: Sequence[SampleForeground | None] | None = None
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """:meth:`__call__` of several samples, the RGB backbone run on them as one batch on
        :attr:`device` (the point features are per sample)."""
        fores = (list(foregrounds) if foregrounds is not None
                 else [SampleForeground(s.xyz, self.image_size) for s in samples])
        # the plane fits of the batch on the device on CUDA (serial on the CPU)
        prepare_foregrounds(fores, host_workers(self.device, len(samples)), part=False,
                            device=self.device)
        points = None
        if self.point_backbone != "fpfh" and len(samples) > 1:
            try:  # one batch; a failure is redone per sample, for the message naming it
                batched = self.points_batch([s.xyz for s in samples], fores)
                points = [(np.ascontiguousarray(p, dtype=np.float32).reshape(len(f), -1),
                           np.asarray(f, dtype=bool).reshape(-1)) for p, f in batched]
                if not all(f.any() for _, f in points):
                    points = None
            except InvalidInputError:
                points = None
        if points is None:
            points = [self.points_checked(s, where, f)
                      for s, f in zip(samples, fores, strict=True)]
        rgbs = self._rgb.batch([s.rgb for s in samples])
        out = []
        for rgb, (pts, fg) in zip(rgbs, points, strict=True):
            if rgb.shape[0] != pts.shape[0]:  # pragma: no cover - both on the stride-8 grid
                raise InvalidInputError(f"detector {self.owner!r}: {rgb.shape[0]} RGB patches "
                                        f"but {pts.shape[0]} point patches")
            out.append((rgb, pts, fg))
        return out


def extract_all(features: MultimodalFeatures, items: Sequence[Any], where: str,
                progress: bool = False, desc: str = "features", batch_size: int = 16
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of every sample, ``(rgb (N, n, C_rgb), pts (N, n, C_pts), fg (N, n))``; on
    CUDA the RGB backbone sees ``batch_size`` images at a time (:meth:`RGBFeatures.batch`).

    Each rank of a distributed run extracts its :func:`~pcad.distributed.shard` and the
    blocks are gathered in rank order: every rank gets the single-process arrays.
    """
    from tqdm import tqdm

    from pcad import distributed as dist

    start, stop = dist.shard_range(len(items))
    rgbs, ptss, fgs = [], [], []
    mine = items[start:stop]
    with tqdm(total=len(mine), disable=not (progress and dist.is_main()), desc=desc,
              unit="sample") as bar:
        for lo in range(0, len(mine), batch_size):
            for r, p, f in features.batch(mine[lo:lo + batch_size], where):
                rgbs.append(r)
                ptss.append(p)
                fgs.append(f)
            bar.update(len(mine[lo:lo + batch_size]))
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
