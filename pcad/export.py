"""A run as one TorchScript file: neural parts, memory bank and preprocessing (``pcad export``).

Exportable detectors (:data:`EXPORTABLE`): ``patchcore-rgb``, ``btf`` (the multimodal
RGB + FPFH bank), and ``cfm``, ``m3dm``, ``lsfa`` (below). For the first two, with
``image_score`` ``"auto"``, ``"map-max"``, ``"patch-max"`` or ``"foreground-max"``: the file
(``torch.jit.load(FILE)``) is a scripted module whose RGB backbone is traced at the run's input
size and whose bank is a buffer; its ``forward`` reproduces the detector's ``predict``:

    score, amap = module(rgb, xyz_features, part)

- ``rgb``: ``(H, W, 3) uint8`` tensor, resized inside (bilinear, antialiased, rounded to uint8:
  :func:`pcad.detectors.patches.backbone_image`) to ``image_size`` and ImageNet-normalized;
- ``xyz_features``: ``btf`` only, the FPFH patch features ``(h * w, 33) float32``
  (:func:`pcad.detectors.patches.fpfh_patches`; FPFH is geometry, not a network, so it stays
  outside the file); None for ``patchcore-rgb``;
- ``part``: ``(H, W) bool`` part mask for ``foreground-max``
  (:meth:`pcad.detectors.patches.SampleForeground.part`), or None (the whole map);
- returns the raw image score (0-d float32) and the ``(H, W) float32`` map: the nearest-bank
  distances on the ``image_size / 8`` grid, upsampled bilinearly and blurred as
  :func:`pcad.detectors.base.upsample_map` does (scipy's ``gaussian_filter``, ``mode="nearest"``,
  ``truncate=4``). For ``btf`` with ``fusion`` ``"zsum"`` / ``"zmax"`` (its default) the image
  score is that fusion of the RGB and FPFH banks' scores, each normalised by its leave-one-out
  ``[mean, std]`` (the banks and statistics are buffers); the map is the joint bank's.

The file's extra file ``pcad_export.json`` (``torch.jit.load(FILE, _extra_files=...)``) records
the detector, its options, the per-modality scales, the inputs and the run's calibration
(threshold and sigmoid normalization, :mod:`pcad.calibration`); the module's ``threshold`` and
``scale`` attributes hold the latter (NaN without one).

``cfm``, ``m3dm`` and ``lsfa`` (:class:`ExportedCFM`, :class:`ExportedMultiBank`) hold the
traced RGB backbone and the detector's networks (cfm: the per-channel standardisation and the
two mapping MLPs; m3dm: UFF; lsfa: the two adapter blocks) and, for m3dm / lsfa, the
standardised memory banks and the bank fusion with its recorded statistics (``zsum`` /
``zmax`` with the leave-one-out ``[mean, std]`` per bank, or the fitted linear weights of
``sum`` / ``ocsvm``); the maps are upsampled and blurred inside as above. Their point features
are inputs, computed by pcad: FPFH is geometry, not a network, and Point-MAE (a network) groups
the cloud with :mod:`pcad.ops` farthest-point sampling and kNN, so its patch features are
passed in as well:

    score, amap = module(rgb, xyz_features, part)             # m3dm, lsfa
    score, amap = module(rgb, xyz_features, part, patch_fg)   # cfm

- ``xyz_features``: ``(h * w, C_pts) float32``, the run's point patch features
  (:meth:`pcad.detectors.patches.MultimodalFeatures.points`: FPFH or Point-MAE);
- ``patch_fg`` (cfm): ``(h * w,) bool`` foreground patches (the same call), scores 0 elsewhere;
- :func:`sample_inputs` computes all of them from a sample's cloud:
  ``module(rgb, **sample_inputs(info, xyz))``.

Not exportable yet (a one-line error): ``fpfh`` (no neural part: a bank of FPFH features),
``synthsup`` (a learned head on Point-MAE groupings), ``image_score="reweighted"`` and
``bank_score="reweighted"`` (PatchCore's re-weighting searches the bank's own neighbours).

Example:
    >>> sorted(EXPORTABLE)
    ['btf', 'cfm', 'lsfa', 'm3dm', 'patchcore-rgb']
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.errors import InvalidInputError

__all__ = ["EXPORTABLE", "EXPORT_INFO", "ExportedCFM", "ExportedMultiBank", "ExportedPatchCore",
           "export_run", "load_export", "sample_inputs"]

#: detectors :func:`export_run` writes
EXPORTABLE = ("patchcore-rgb", "btf", "cfm", "m3dm", "lsfa")
#: the name of the record stored beside the module in the TorchScript file
EXPORT_INFO = "pcad_export.json"
_SCORES = {"map-max": 0, "patch-max": 1, "foreground-max": 2}
_MULTIMODAL = ("cfm", "m3dm", "lsfa")


class _Backbone(nn.Module):
    """The RGB backbone on ``(1, 3, S, S)`` floats in ``[0, 1]`` (traced)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ExportedPatchCore(nn.Module):
    """The scripted scorer of a memory-bank run (module docstring for ``forward``).

    Args:
        backbone: the traced RGB backbone (``(1, 3, S, S)`` in ``[0, 1]`` ->
            ``(1, C, S/8, S/8)``).
        bank: ``(K, C_rgb [+ C_xyz]) float32`` memory bank.
        image_size: ``S``.
        sigma: the map's blur at 224 pixels.
        score_mode: 0 map-max, 1 patch-max, 2 foreground-max.
        rgb_scale, xyz_scale: each modality's divisor (1.0 for one modality).
        threshold, scale: the run's calibration (NaN without one).
        fusion: btf's image score: 0 the bank's (``"joint"``), 1 ``"zsum"``, 2 ``"zmax"`` of
            the per-modality banks ``rgb_bank`` / ``xyz_bank`` (raw features) normalised by
            the ``(2, 2)`` leave-one-out ``[mean, std]`` of ``z_image``.
    """

    def __init__(self, backbone: nn.Module, bank: torch.Tensor, image_size: int, sigma: float,
                 score_mode: int, rgb_scale: float, xyz_scale: float, threshold: float,
                 scale: float, fusion: int = 0, rgb_bank: torch.Tensor | None = None,
                 xyz_bank: torch.Tensor | None = None,
                 z_image: torch.Tensor | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("bank", bank.float().contiguous())
        empty = torch.zeros(0, 1)
        self.fusion = int(fusion)
        self.register_buffer("rgb_bank", (empty if rgb_bank is None else rgb_bank).float())
        self.register_buffer("xyz_bank", (empty if xyz_bank is None else xyz_bank).float())
        self.register_buffer("z_image", (torch.ones(2, 2) if z_image is None
                                         else z_image).double())
        self.image_size = int(image_size)
        self.sigma = float(sigma)
        self.score_mode = int(score_mode)
        self.rgb_scale = float(rgb_scale)
        self.xyz_scale = float(xyz_scale)
        self.threshold = float(threshold)
        self.scale = float(scale)

    def _blur(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """scipy ``gaussian_filter(x, sigma, mode="nearest")`` of ``(H, W)`` ``x``."""
        radius = int(4.0 * sigma + 0.5)
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = (k / k.sum()).to(x.dtype)
        y = x[None, None]
        y = F.pad(y, [radius, radius, 0, 0], mode="replicate")
        y = F.conv2d(y, k.view(1, 1, 1, -1))
        y = F.pad(y, [0, 0, radius, radius], mode="replicate")
        y = F.conv2d(y, k.view(1, 1, -1, 1))
        return y[0, 0]

    def forward(self, rgb: torch.Tensor, xyz_features: torch.Tensor | None = None,
                part: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = int(rgb.shape[0]), int(rgb.shape[1])
        s = self.image_size
        x = rgb.to(torch.float32).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=[s, s], mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0.0, 255.0) / 255.0
        f = self.backbone(x)[0]  # (C, g, g)
        g, g2 = int(f.shape[1]), int(f.shape[2])
        rgb_feats = f.permute(1, 2, 0).reshape(g * g2, int(f.shape[0]))
        feats = rgb_feats / self.rgb_scale
        if xyz_features is not None:
            feats = torch.cat([feats, xyz_features.to(torch.float32) / self.xyz_scale], dim=1)
        score, up = self._scored(feats, self.bank, g, g2, h, w, part)
        if self.fusion > 0 and xyz_features is not None:
            s_rgb = self._scored(rgb_feats, self.rgb_bank, g, g2, h, w, part)[0]
            s_xyz = self._scored(xyz_features.to(torch.float32), self.xyz_bank, g, g2, h, w,
                                 part)[0]
            score = _fuse(torch.stack([s_rgb, s_xyz]), self.z_image,
                          torch.ones(2, dtype=torch.float64), self.fusion - 1).to(torch.float32)
        return score, up

    def _scored(self, feats: torch.Tensor, bank: torch.Tensor, g: int, g2: int, h: int,
                w: int, part: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The image score and ``(h, w)`` map of ``(g * g2, C)`` patch features in ``bank``."""
        d2 = (feats * feats).sum(1, keepdim=True) - 2.0 * feats @ bank.t() \
            + (bank * bank).sum(1)[None]
        patch = d2.min(dim=1).values.clamp_min(0.0).sqrt()
        grid = patch.reshape(1, 1, g, g2)
        up = F.interpolate(grid, size=[h, w], mode="bilinear", align_corners=False)[0, 0]
        if self.sigma > 0:
            up = self._blur(up, self.sigma * float(max(h, w)) / 224.0)
        if self.score_mode == 1:
            score = patch.max()
        elif self.score_mode == 2 and part is not None and bool(part.any()):
            score = up[part].max()
        else:
            score = up.max()
        return score, up


# ----------------------------------------------------------------- cfm, m3dm, lsfa (multimodal)


def _backbone_input(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(1, 3, size, size)`` floats in ``[0, 1]`` as
    :func:`pcad.detectors.patches.backbone_image` resizes (bilinear, antialiased, rounded)."""
    x = rgb.to(torch.float32).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=[size, size], mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0.0, 255.0) / 255.0


def _blur_map(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """scipy ``gaussian_filter(x, sigma, mode="nearest")`` of ``(H, W)`` ``x``."""
    radius = int(4.0 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    y = x[None, None]
    h, w = int(x.shape[0]), int(x.shape[1])
    if radius < w:
        y = F.pad(y, [radius, radius, 0, 0], mode="replicate")
    else:  # a side shorter than the radius: repeat the edge (scipy's "nearest")
        y = torch.cat([y[:, :, :, :1].expand(1, 1, h, radius), y,
                       y[:, :, :, -1:].expand(1, 1, h, radius)], 3)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    if radius < h:
        y = F.pad(y, [0, 0, radius, radius], mode="replicate")
    else:
        y = torch.cat([y[:, :, :1, :].expand(1, 1, radius, w), y,
                       y[:, :, -1:, :].expand(1, 1, radius, w)], 2)
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y[0, 0]


def _patch_map(grid: torch.Tensor, h: int, w: int, sigma: float) -> torch.Tensor:
    """A ``(g, g)`` patch grid to the ``(h, w) float32`` map of
    :func:`pcad.detectors.base.upsample_map` (bilinear, then the blur scaled from 224 px)."""
    up = F.interpolate(grid.to(torch.float32)[None, None], size=[h, w], mode="bilinear",
                       align_corners=False)[0, 0]
    if sigma > 0:
        up = _blur_map(up, sigma * float(max(h, w)) / 224.0)
    return up


def _fuse(scores: torch.Tensor, stats: torch.Tensor, weights: torch.Tensor,
          how: int) -> torch.Tensor:
    """:func:`pcad.detectors.fusion.fuse_normalized` of ``(..., k)`` scores (``how``: 0
    ``"zsum"``, 1 ``"zmax"``; ``stats`` ``(k, 2)`` float64)."""
    z = (scores.double() - stats[:, 0]) / stats[:, 1]
    if how == 1:
        keep = torch.nonzero(weights > 0).reshape(-1)
        return z.index_select(-1, keep).max(dim=-1).values
    return (z * weights).sum(-1)


def _part_max(amap: torch.Tensor, part: torch.Tensor | None) -> torch.Tensor:
    """:func:`pcad.detectors.patches.foreground_max`: the maximum over ``part``, the whole map
    when there is none (or it is empty)."""
    if part is not None:
        if bool(part.any()):
            return amap[part].max()
    return amap.max()


class ExportedCFM(nn.Module):
    """The scripted scorer of a ``cfm`` run: ``score, amap = module(rgb, xyz_features, part,
    patch_fg)``.

    Args:
        backbone: the traced RGB backbone (``(1, 3, S, S)`` in ``[0, 1]`` -> ``(1, C, g, g)``).
        f_2d3d, f_3d2d: the two mapping MLPs.
        rgb_mean, rgb_std, xyz_mean, xyz_std: ``(C,)`` per-channel standardisation.
        image_size: ``S``; sigma: the map's blur at 224 pixels.
        foreground_max: the image score is the map's maximum over ``part`` (else the whole map).
        threshold, scale: the run's calibration (NaN without one).
    """

    def __init__(self, backbone: nn.Module, f_2d3d: nn.Module, f_3d2d: nn.Module,
                 stats: dict[str, torch.Tensor], image_size: int, sigma: float,
                 foreground_max: bool, threshold: float, scale: float) -> None:
        super().__init__()
        self.backbone, self.f_2d3d, self.f_3d2d = backbone, f_2d3d, f_3d2d
        for key in ("rgb_mean", "rgb_std", "xyz_mean", "xyz_std"):
            self.register_buffer(key, stats[key].float().contiguous())
        self.image_size = int(image_size)
        self.sigma = float(sigma)
        self.foreground_max = bool(foreground_max)
        self.threshold = float(threshold)
        self.scale = float(scale)

    def forward(self, rgb: torch.Tensor, xyz_features: torch.Tensor,
                part: torch.Tensor | None = None, patch_fg: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = int(rgb.shape[0]), int(rgb.shape[1])
        f = self.backbone(_backbone_input(rgb, self.image_size))[0]  # (C, g, g)
        g0, g1 = int(f.shape[1]), int(f.shape[2])
        r = f.permute(1, 2, 0).reshape(g0 * g1, int(f.shape[0]))
        r = (r - self.rgb_mean) / self.rgb_std
        p = (xyz_features.to(torch.float32) - self.xyz_mean) / self.xyz_std
        d_3d = (F.normalize(self.f_2d3d(r), dim=1) - F.normalize(p, dim=1)).norm(2.0, 1)
        d_2d = (F.normalize(self.f_3d2d(p), dim=1) - F.normalize(r, dim=1)).norm(2.0, 1)
        scores = d_3d * d_2d
        if patch_fg is not None:
            scores = torch.where(patch_fg.reshape(-1), scores, torch.zeros_like(scores))
        amap = _patch_map(scores.reshape(g0, g1), h, w, self.sigma)
        if self.foreground_max:
            return _part_max(amap, part), amap
        return amap.max(), amap


class _Bank(nn.Module):
    """One standardised memory bank: ``(n, C)`` features (the bank's columns ``start:stop``)
    -> ``(n,)`` nearest distances."""

    def __init__(self, bank: torch.Tensor, mean: float, std: float, start: int,
                 stop: int) -> None:
        super().__init__()
        self.register_buffer("bank", bank.float().contiguous())
        self.register_buffer("bank_sq", (self.bank * self.bank).sum(1))
        self.mean, self.std = float(mean), float(std)
        self.start, self.stop = int(start), int(stop)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = (feats[:, self.start:self.stop] - self.mean) / self.std
        # |x|^2 - 2 x.b + |b|^2 without the constant |x|^2 picks candidates; their exact
        # distances decide (the expansion cannot order neighbours closer than its rounding,
        # ~1e-6 |b|^2, and sqrt magnifies that near 0)
        d2 = torch.addmm(self.bank_sq[None], x, self.bank.t(), beta=1.0, alpha=-2.0)
        k = min(8, int(self.bank.shape[0]))
        idx = torch.topk(d2, k, dim=1, largest=False).indices  # (n, k)
        diff = self.bank[idx] - x[:, None, :]
        return (diff * diff).sum(2).min(dim=1).values.sqrt()


class _Transform(nn.Module):
    """The detector's networks on one sample's frozen patches: ``(rgb (n, C_rgb), pts (n,
    C_pts)) -> (n, sum of the banks' widths)``, the banks' features side by side in
    ``BANKS`` order (traced)."""

    def __init__(self, kind: str, net: nn.Module | None, norms: tuple[float, float],
                 banks: tuple[str, ...]) -> None:
        from pcad.detectors.lsfa import bank_features

        super().__init__()
        self.kind, self.net, self.norms, self.banks = kind, net, norms, banks
        self.bank_features = bank_features

    def forward(self, rgb: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        if self.kind == "m3dm":
            return torch.cat([pts, rgb, self.net.fuse(rgb, pts, self.norms)], dim=1)
        if self.net is not None:  # lsfa with epochs=0: the frozen features
            a_rgb, a_pts = self.net.adapt(rgb[None], pts[None])
            rgb, pts = a_rgb[0], a_pts[0]
        return torch.cat(self.bank_features(rgb, pts, self.banks, self.norms), dim=1)


class ExportedMultiBank(nn.Module):
    """The scripted scorer of an ``m3dm`` or ``lsfa`` run: ``score, amap = module(rgb,
    xyz_features, part)``.

    Args:
        backbone: the traced RGB backbone.
        transform: the traced :class:`_Transform` (UFF or the adapters).
        banks: one :class:`_Bank` per bank, in the detector's ``BANKS`` order.
        image_size, sigma: as :class:`ExportedCFM`.
        image_fusion, map_fusion: 0 a weighted sum, 1 the maximum over the banks with a
            positive weight (``zmax``); the scores are first normalised ``(s - mean) / std``.
        image_stats, patch_stats: ``(k, 2) float64`` ``[mean, std]`` per bank (``[0, 1]`` for
            ``sum`` / ``ocsvm``).
        image_weights, patch_weights: ``(k,) float64`` weights.
        fused_image: the image score is the fused per-bank scores (``"dlf"``); else the fused
            map's maximum over ``part``.
        threshold, scale: the run's calibration (NaN without one).
    """

    def __init__(self, backbone: nn.Module, transform: nn.Module, banks: list[_Bank],
                 image_size: int, sigma: float, image_fusion: int, map_fusion: int,
                 image_stats: torch.Tensor, patch_stats: torch.Tensor,
                 image_weights: torch.Tensor, patch_weights: torch.Tensor, fused_image: bool,
                 threshold: float, scale: float) -> None:
        super().__init__()
        self.backbone, self.transform = backbone, transform
        self.banks = nn.ModuleList(banks)
        self.image_size = int(image_size)
        self.sigma = float(sigma)
        self.image_fusion, self.map_fusion = int(image_fusion), int(map_fusion)
        self.register_buffer("image_stats", image_stats.double())
        self.register_buffer("patch_stats", patch_stats.double())
        self.register_buffer("image_weights", image_weights.double())
        self.register_buffer("patch_weights", patch_weights.double())
        self.fused_image = bool(fused_image)
        self.threshold = float(threshold)
        self.scale = float(scale)

    def forward(self, rgb: torch.Tensor, xyz_features: torch.Tensor,
                part: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = int(rgb.shape[0]), int(rgb.shape[1])
        f = self.backbone(_backbone_input(rgb, self.image_size))[0]  # (C, g, g)
        g0, g1 = int(f.shape[1]), int(f.shape[2])
        r = f.permute(1, 2, 0).reshape(g0 * g1, int(f.shape[0]))
        feats = self.transform(r, xyz_features.to(torch.float32))
        dists: list[torch.Tensor] = []
        images: list[torch.Tensor] = []
        for bank in self.banks:
            d = bank(feats)
            dists.append(d)
            if self.fused_image:
                images.append(_part_max(_patch_map(d.reshape(g0, g1), h, w, self.sigma), part))
        grid = _fuse(torch.stack(dists, dim=1), self.patch_stats, self.patch_weights,
                          self.map_fusion)
        amap = _patch_map(grid.to(torch.float32).reshape(g0, g1), h, w, self.sigma)
        if self.fused_image:
            score = _fuse(torch.stack(images), self.image_stats, self.image_weights,
                               self.image_fusion).to(torch.float32)
        else:
            score = _part_max(amap, part)
        return score, amap


def _trace(module: nn.Module, *example: torch.Tensor) -> torch.jit.ScriptModule:
    """``module`` traced on ``example`` (eval mode, without gradients; the Python branches of
    the networks' input checks are fixed for these shapes)."""
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export but still what the file holds
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.trace(module.eval(), example, check_trace=False)


def _traced_backbone(cfg: dict[str, Any]) -> torch.jit.ScriptModule:
    """The run's RGB backbone traced on a ``(1, 3, S, S)`` input."""
    from pcad.detectors.patches import RGBFeatures
    from pcad.features import create_backbone

    size = int(cfg["image_size"])
    kernel = cfg.get("aggregate_kernel", 3)
    feats = RGBFeatures(cfg["rgb_backbone"], cfg["weights"], size, layers=cfg.get("layers"),
                        aggregate_kernel=None if kernel == 3 else kernel)
    net = create_backbone(cfg["rgb_backbone"], weights=cfg["weights"], **feats.build_kwargs)
    return _trace(_Backbone(net.cpu()), torch.rand(1, 3, size, size))


def _multimodal_module(det: Any, thr: float, sc: float) -> tuple[nn.Module, str]:
    """The :class:`ExportedCFM` / :class:`ExportedMultiBank` of a fitted ``cfm``, ``m3dm`` or
    ``lsfa`` detector and its image score's name."""
    import copy

    from pcad.detectors.fusion import Z_FUSIONS

    cfg = det.config
    backbone = _traced_backbone(cfg)
    n = det.grid[0] * det.grid[1]
    if det.name == "cfm":
        mode = cfg["image_score"]
        if mode not in ("foreground-max", "max"):
            raise InvalidInputError(f"pcad export: image_score {mode!r} of this cfm run cannot "
                                    "be exported yet (exportable: foreground-max, max)")
        f_2d3d = copy.deepcopy(det.f_2d3d).cpu().eval()
        f_3d2d = copy.deepcopy(det.f_3d2d).cpu().eval()
        module = ExportedCFM(
            backbone, _trace(f_2d3d, torch.rand(n, f_2d3d[0].in_features)),
            _trace(f_3d2d, torch.rand(n, f_3d2d[0].in_features)),
            {k: v.cpu() for k, v in det.stats.items()}, cfg["image_size"], cfg["sigma"],
            mode == "foreground-max", thr, sc)
        return module, mode
    if cfg["bank_score"] == "reweighted":
        raise InvalidInputError(f"pcad export: bank_score 'reweighted' of this {det.name} run "
                                "cannot be exported yet (exportable: foreground-max)")
    net = copy.deepcopy(det.uff if det.name == "m3dm" else det.adapters)
    transform = _Transform(det.name, None if net is None else net.cpu().eval(),
                           det.part_norms, det.BANKS)
    d_rgb, d_pts = det.banks["rgb"].dim, det.banks["xyz"].dim
    transform = _trace(transform, torch.rand(n, d_rgb), torch.rand(n, d_pts))
    banks, start = [], 0
    for b in det.BANKS:
        width = det.banks[b].dim
        mean, std = det.stats[b]
        banks.append(_Bank(torch.from_numpy(det.banks[b].features), mean, std, start,
                           start + width))
        start += width
    unit = np.tile([0.0, 1.0], (len(det.BANKS), 1))

    def fusion(use: str, how: str, stats: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        # "sum" (fitted weights 1) and "ocsvm" are linear: zsum on unit statistics
        z = how in Z_FUSIONS
        return (Z_FUSIONS.index(how) if z else 0, stats if z else unit,
                det.fusion_weights(use, how))

    i_how, i_stats, i_w = fusion("image", cfg["fusion"], det.z_image)
    p_how, p_stats, p_w = fusion("map", cfg["map_fusion"], det.z_patch)
    module = ExportedMultiBank(
        backbone, transform, banks, cfg["image_size"], cfg["sigma"], i_how, p_how,
        torch.from_numpy(np.asarray(i_stats, np.float64)),
        torch.from_numpy(np.asarray(p_stats, np.float64)),
        torch.from_numpy(np.asarray(i_w, np.float64)),
        torch.from_numpy(np.asarray(p_w, np.float64)), cfg["image_score"] == "dlf", thr, sc)
    return module, cfg["image_score"]


def sample_inputs(info: dict[str, Any], xyz: np.ndarray | None
                  ) -> dict[str, torch.Tensor | None]:
    """The inputs besides ``rgb`` that pcad computes for an exported module from a sample's
    ``(H, W, 3)`` organized cloud, by its record ``info`` (:func:`load_export`):
    ``xyz_features`` (FPFH or Point-MAE patch features, None for ``patchcore-rgb``), ``part``
    (the ``(H, W) bool`` part mask, None without a cloud) and, for ``cfm``, ``patch_fg`` (the
    ``(g * g,) bool`` foreground patches). Call ``module(rgb, **sample_inputs(info, xyz))``.

    Example:
        >>> sample_inputs({"detector": "patchcore-rgb", "config": {"image_size": 64}}, None)
        {'xyz_features': None, 'part': None}
    """
    from pcad.detectors.patches import (
        FPFH_NEIGHBOURS,
        PATCH_STRIDE,
        MultimodalFeatures,
        SampleForeground,
        fpfh_patches,
    )
    from pcad.detectors.registry import detector_info

    name, cfg = info["detector"], info["config"]
    out: dict[str, torch.Tensor | None] = {"xyz_features": None, "part": None}
    if name == "cfm":
        out["patch_fg"] = None
    if xyz is None:
        return out
    size = int(cfg["image_size"])
    fg = SampleForeground(xyz, size)
    out["part"] = torch.from_numpy(fg.part())
    g = size // PATCH_STRIDE
    # an export made before the option: what its run was fitted with
    n = int(detector_info(name).obj.saved_config(cfg).get("fpfh_neighbours", FPFH_NEIGHBOURS))
    if name == "btf":
        out["xyz_features"] = torch.from_numpy(fpfh_patches(xyz, size, (g, g), foreground=fg,
                                                            neighbours=n))
    elif name in ("cfm", "m3dm", "lsfa"):
        feats = MultimodalFeatures(name, size, cfg["rgb_backbone"], cfg["weights"],
                                   cfg["point_backbone"], cfg["point_weights"],
                                   cfg["num_group"], cfg["group_size"], fpfh_neighbours=n)
        pts, patch_fg = feats.points(xyz, fg)
        out["xyz_features"] = torch.from_numpy(
            np.ascontiguousarray(pts, dtype=np.float32).reshape(g * g, -1))
        if name == "cfm":
            out["patch_fg"] = torch.from_numpy(np.asarray(patch_fg, bool).reshape(-1))
    return out


def _export_error(name: str) -> InvalidInputError:
    return InvalidInputError(
        f"pcad export: detector {name!r} cannot be exported yet; exportable: "
        f"{', '.join(EXPORTABLE)} (not yet: fpfh, synthsup)")


def build_export(det: Any, calibration: Any = None) -> tuple[torch.jit.ScriptModule,
                                                               dict[str, Any]]:
    """The scripted module of the fitted ``det`` (``patchcore-rgb`` or ``btf``) and its
    ``pcad_export.json`` record."""
    from pcad.detectors.patches import PATCH_STRIDE, RGBFeatures
    from pcad.features import create_backbone

    if det.name not in EXPORTABLE:
        raise _export_error(det.name)
    if det.name in _MULTIMODAL:
        return _build_multimodal(det, calibration)
    cfg = det.config
    mode = cfg["image_score"]
    if mode == "auto":
        mode = "foreground-max" if "xyz" in det.modalities else "map-max"
    if mode not in _SCORES:
        raise InvalidInputError(f"pcad export: image_score {mode!r} of this {det.name} run "
                                f"cannot be exported yet (exportable: {', '.join(_SCORES)})")
    size = int(cfg["image_size"])
    kernel = cfg.get("aggregate_kernel", 3)
    feats = RGBFeatures(cfg["rgb_backbone"], cfg["weights"], size, layers=cfg.get("layers"),
                        aggregate_kernel=None if kernel == 3 else kernel)
    net = create_backbone(cfg["rgb_backbone"], weights=cfg["weights"], **feats.build_kwargs)
    net.eval()
    example = torch.rand(1, 3, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        # the backbone's input checks are Python branches: fixed for (1, 3, S, S) inputs;
        # TorchScript is deprecated in favour of torch.export but still what the file holds
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(_Backbone(net), example, check_trace=False)
    scales = dict(det.scales)
    thr = float("nan") if calibration is None else calibration.threshold
    sc = float("nan") if calibration is None else calibration.scale
    fusion = cfg.get("fusion", "joint")
    sources = getattr(det, "source_banks", {})
    z_image = getattr(det, "z_image", None)
    module = ExportedPatchCore(
        traced, torch.from_numpy(det.bank.features), size, float(cfg["sigma"]), _SCORES[mode],
        scales.get("rgb", 1.0), scales.get("xyz", 1.0), thr, sc,
        fusion=det.FUSIONS.index(fusion) if sources else 0,  # joint, zsum, zmax
        rgb_bank=torch.from_numpy(sources["rgb"].features) if sources else None,
        xyz_bank=torch.from_numpy(sources["xyz"].features) if sources else None,
        z_image=None if z_image is None else torch.from_numpy(z_image))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module.eval())
    inputs = ["rgb (H, W, 3) uint8"]
    if "xyz" in det.modalities:
        inputs.append(f"xyz_features ({(size // PATCH_STRIDE) ** 2}, 33) float32: "
                      "pcad.detectors.patches.fpfh_patches")
    if mode == "foreground-max":
        inputs.append("part (H, W) bool: SampleForeground(xyz, image_size).part()")
    info = {"format": "torchscript", "detector": det.name, "config": cfg, "scales": scales,
            "image_score": mode, "inputs": inputs,
            "fusion": None if z_image is None else {"how": fusion, "z_image": z_image.tolist()},
            "calibration": None if calibration is None else calibration.to_dict()}
    return scripted, info


def _build_multimodal(det: Any, calibration: Any) -> tuple[torch.jit.ScriptModule,
                                                          dict[str, Any]]:
    """:func:`build_export` of a ``cfm``, ``m3dm`` or ``lsfa`` detector."""
    from pcad.detectors.patches import PATCH_STRIDE

    thr = float("nan") if calibration is None else calibration.threshold
    sc = float("nan") if calibration is None else calibration.scale
    module, mode = _multimodal_module(det, thr, sc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module.eval())
    cfg = det.config
    n = (int(cfg["image_size"]) // PATCH_STRIDE) ** 2
    width = det.f_3d2d[0].in_features if det.name == "cfm" else det.banks["xyz"].dim
    source = ("pcad.detectors.patches.fpfh_patches" if cfg["point_backbone"] == "fpfh"
              else "Point-MAE patch features, pcad.features.point_grid.point_patch_features")
    inputs = ["rgb (H, W, 3) uint8", f"xyz_features ({n}, {width}) float32: {source}",
              "part (H, W) bool: SampleForeground(xyz, image_size).part()"]
    if det.name == "cfm":
        inputs.append(f"patch_fg ({n},) bool: the foreground patches "
                      "(MultimodalFeatures.points)")
    info = {"format": "torchscript", "detector": det.name, "config": cfg, "scales": {},
            "image_score": mode, "inputs": inputs,
            "calibration": None if calibration is None else calibration.to_dict()}
    if det.name != "cfm":
        info["fusion"] = {"image": cfg["fusion"], "map": cfg["map_fusion"],
                          "banks": list(det.BANKS)}
    return scripted, info


def export_run(run: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the run's TorchScript file to ``out`` (atomically); returns its record.

    Raises:
        InvalidInputError: a detector or image score that cannot be exported (naming it), a
            bad run.
    """
    from pcad.calibration import read_calibration
    from pcad.detectors import load_detector
    from pcad.detectors.base import read_run_record
    from pcad.io import atomic_save

    name = read_run_record(run)["detector"]
    if name not in EXPORTABLE:  # before loading (and building) anything
        raise _export_error(name)
    out = Path(out)
    if out.is_dir():
        raise InvalidInputError(f"-o: {out} is a folder; give the file to write (e.g. "
                                "model.pt)")
    det = load_detector(run)
    scripted, info = build_export(det, read_calibration(run))
    extra = {EXPORT_INFO: json.dumps(info, indent=2)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        atomic_save(out, lambda tmp: torch.jit.save(scripted, str(tmp), _extra_files=extra))
    return info


def load_export(path: str | os.PathLike[str]) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The module and record (``pcad_export.json``) of a file :func:`export_run` wrote."""
    extra = {EXPORT_INFO: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    info = json.loads(extra[EXPORT_INFO]) if extra[EXPORT_INFO] else {}
    if not isinstance(info, dict):
        raise InvalidInputError(f"{path}: not a pcad export (no {EXPORT_INFO})")
    return module, info

