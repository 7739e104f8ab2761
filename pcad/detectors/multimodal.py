"""What the multimodal memory-bank detectors ``m3dm`` and ``lsfa`` share.

Both detectors take the same frozen patch features, learn a small network on the good training
samples (M3DM: the UFF fusion layers; LSFA: one adapter block per modality), put the
(transformed) patch features in several PatchCore memory banks and fuse the banks' scores with
M3DM's decision-layer fusion (DLF). This module holds the pieces they have in common:

- :class:`MultimodalFeatures`: per sample, ``(rgb (n, C_rgb), pts (n, C_pts), fg (n,))`` on the
  ``n = (image_size / 8) ** 2`` patch grid. RGB: :class:`~pcad.detectors.memory_bank.RGBFeatures`
  (``rgb_backbone``, default ``effnet-lite0``; ``dino-vitb8`` with ``weights=PATH`` gives M3DM's
  DINO ViT-B/8). Points (``point_backbone``): ``"pointmae"`` (default), the Point-MAE encoder of
  :mod:`pcad.features.pointmae` (``point_weights``: a checkpoint path, None for the small one
  shipped with pcad; ``num_group`` / ``group_size``: its FPS groups and kNN group size), whose
  group features are interpolated to every measured pixel and pooled to the patch grid as M3DM
  does (:func:`pcad.features.point_grid.point_patch_features`); or ``"fpfh"``, FPFH averaged
  per patch (:func:`~pcad.detectors.memory_bank.fpfh_patches`) with the foreground of
  :func:`~pcad.detectors.cfm.foreground_patches` (fast, no weights; what the tests use).
  ``fg`` marks the patches with measured points on the part; a sample without any is an error.
- :func:`info_nce`: the MoCo-v3 style InfoNCE of M3DM's and LSFA's code.
- :func:`nearest_distance`: distance to the nearest row of a (large) feature queue, chunked,
  differentiable (LSFA's compactness).
- :func:`run_training`: the seeded, data-parallel training loop (AdamW, per-iteration linear
  warm-up + half-cycle cosine learning rate, MAE style) of UFF and of the LSFA adapters.
- :class:`MultiBankDetector`: per-bank PatchCore scoring and DLF, fit / predict / save / load.

Banks and decision-layer fusion (M3DM's ``TripleFeatures`` / LSFA's double lib, with fixes):

- every bank holds the patches of every training sample (part and background) after a scalar
  standardisation ``(x - mean) / std`` with the mean and std of *that bank's* training features
  (M3DM and LSFA compute the point bank's std from the RGB bank and the RGB bank's mean from the
  point bank, and normalise the fused bank with those swapped statistics: fixed), reduced by
  pcad's greedy coreset (``coreset_ratio``, 10 % as M3DM; each bank's own size: M3DM computes
  the RGB and fused coreset sizes from the already reduced point bank). Banks live on the CPU.
- a test patch scores its distance to the nearest bank feature; per bank an image score
  (``bank_score``): ``"foreground-max"`` (default), the maximum of the bank's map over the
  part (pcad's convention for detectors that see xyz,
  :func:`~pcad.detectors.memory_bank.foreground_max`, which ignores the background), or
  ``"reweighted"``, PatchCore's re-weighted maximum over all patches (M3DM). On pcad's
  synthetic parts on a textured mat the former scored higher (I-AUROC 0.78 vs 0.72 for m3dm,
  0.80 vs 0.76 for lsfa, 3 categories at 128 px).
- DLF: the per-bank scores, weighted by ``bank_weights`` (M3DM's ``lambda``: 1 for the point
  and fused banks, 0.1 for RGB), go through a linear one-class SVM, sklearn's
  ``SGDOneClassSVM(nu=ocsvm_nu=0.5, max_iter=1000, random_state=seed)`` as M3DM, whose
  ``score_samples`` (``w . x``) is the fused score: one SVM on image-score vectors
  (``fusion``), one on patch-score vectors (``map_fusion``). M3DM fits both on a second pass
  over the *training* samples scored against banks that contain those very samples (their own
  patches are at distance ~0, so the SVMs learn from near-zero scores). pcad scores each
  training sample **leave-one-out**: against each bank minus the coreset features that came
  from that sample (no coreset is recomputed; a bank left empty falls back to all the other
  samples' features). M3DM fits the segmentation SVM on per-pixel vectors of the 224 x 224
  blurred maps of every pixel; pcad on the patch-grid vectors (``svm_patches``: ``"all"``
  patches as M3DM, or the ``"foreground"`` ones); the SVM is linear without intercept, so
  fusing patch scores and then upsampling and blurring equals fusing the upsampled, blurred
  maps. ``"sum"`` for ``fusion`` / ``map_fusion`` skips that SVM (weights 1: the
  ``bank_weights``-weighted sum, M3DM's "add" variant). A degenerate SVM (all-zero or
  non-finite weights) falls back to weights 1.

  Caveat, measured: a linear one-class SVM's ``w`` is the point of the (reduced) convex hull
  of the training vectors nearest the origin, so it gives little weight to a bank whose
  scores are often near zero - on pcad's synthetic data, the point bank, where the geometric
  defects are (effective weights about 0.06 point / 0.04 RGB / 1.6 fused for m3dm). With
  ``map_fusion="sum"`` the AUPRO@0.3 rose from 0.60 to 0.78 (m3dm) and 0.71 to 0.82 (lsfa)
  on 3 synthetic categories at 128 px. The default stays M3DM's.
- map: the fused patch grid upsampled to the sample's size and blurred
  (:func:`~pcad.detectors.base.upsample_map`, ``sigma`` 4 at 224 as M3DM's blur, without its
  8-bit quantisation). Image score (``image_score``): ``"dlf"`` (default), the image SVM's
  score as M3DM; ``"foreground-max"``, the fused map's maximum over the part.
- every bank uses the one ``image_size / 8`` patch grid (M3DM: RGB at 28 x 28 and points at
  56 x 56 at 224; LSFA upsamples RGB to 56 x 56).

Example:
    >>> import torch
    >>> from pcad.detectors.multimodal import info_nce
    >>> q = torch.eye(3)
    >>> round(float(info_nce(q, q)), 4)  # T = 1: 2 T (log(e + 2) - 1)
    1.1029
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_fraction, check_int, check_positive
from pcad.detectors.base import Detector, upsample_map
from pcad.detectors.memory_bank import PATCH_STRIDE, RGBFeatures, check_image_size, foreground_max
from pcad.errors import InvalidInputError

__all__ = ["FEATURE_DEFAULTS", "MultiBankDetector", "MultimodalFeatures", "POINT_BACKBONES",
           "info_nce", "nearest_distance", "resolve_device", "run_training"]

POINT_BACKBONES = ("pointmae", "fpfh")
DEVICES = ("auto", "cpu", "cuda")

#: the feature options of both detectors
FEATURE_DEFAULTS: dict[str, Any] = {
    "image_size": 224, "rgb_backbone": "effnet-lite0", "weights": None,
    "point_backbone": "pointmae", "point_weights": None, "num_group": None, "group_size": None,
    "device": "auto",
}


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available: this process's ``cuda:LOCAL_RANK`` under torchrun),
    ``"cpu"`` or ``"cuda"`` (an error without CUDA) as a :class:`torch.device`."""
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


# ----------------------------------------------------------------------------------- features


class MultimodalFeatures:
    """Frozen per-patch features of a sample: ``(rgb (n, C_rgb), pts (n, C_pts), fg (n,))``.

    Args:
        owner: the detector's name (for error messages).
        image_size: backbone input size (multiple of 8); the grid is ``image_size / 8`` square.
        rgb_backbone, weights: :class:`~pcad.detectors.memory_bank.RGBFeatures` arguments.
        point_backbone: ``"pointmae"`` or ``"fpfh"`` (see the module docstring).
        point_weights, num_group, group_size: Point-MAE checkpoint (None: the one shipped with
            pcad) and grouping (None: the checkpoint's); ignored by ``"fpfh"``.
        device: where the Point-MAE encoder runs.

    Example:
        >>> from pcad.detectors.multimodal import MultimodalFeatures
        >>> f = MultimodalFeatures("m3dm", image_size=64, point_backbone="fpfh")
        >>> f.grid
        (8, 8)
    """

    def __init__(self, owner: str, image_size: int = 224, rgb_backbone: str = "effnet-lite0",
                 weights: str | None = None, point_backbone: str = "pointmae",
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

    def points(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(pts (n, C_pts) float32, fg (n,) bool)`` of an organized cloud."""
        if self.point_backbone == "fpfh":
            from pcad.detectors.cfm import foreground_patches
            from pcad.detectors.memory_bank import fpfh_patches

            return (fpfh_patches(xyz, self.image_size, self.grid),
                    foreground_patches(xyz, self.image_size, self.grid))
        from pcad.features.point_grid import point_patch_features

        return point_patch_features(xyz, self.image_size, self.grid, self.encoder())

    def __call__(self, sample: Any, where: str = "sample") -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
        path = getattr(sample, "path", None) or "?"
        try:
            pts, fg = self.points(sample.xyz)
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


# ----------------------------------------------------------------------------------- losses


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE of paired rows as in M3DM's and LSFA's ``contrastive_loss`` (MoCo v3).

    ``q, k``: ``(m, d)``; row ``i`` of ``q`` and of ``k`` form the positive pair, every other
    row of ``k`` is a negative. Both are L2-normalised, ``logits = q k^T / T``, and the loss is
    the cross-entropy towards the diagonal, times ``2 T``. Fewer than two rows give 0 (no
    negative), still connected to the graph.
    """
    if q.shape != k.shape or q.ndim != 2:
        raise InvalidInputError(f"info_nce: q and k must be (m, d) of one shape, got "
                                f"{tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[0] < 2:
        return (q.sum() + k.sum()) * 0.0
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = qn @ kn.T / temperature
    labels = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, labels) * (2.0 * temperature)


def nearest_distance(x: torch.Tensor, bank: torch.Tensor, chunk_bytes: float = 64 * 2**20
                     ) -> torch.Tensor:
    """``(m,)`` Euclidean distance from each row of ``x (m, C)`` to its nearest row of
    ``bank (M, C)``, differentiable with respect to ``x``.

    The nearest row is found without gradient in chunks of ``chunk_bytes`` (the ``m x M``
    distance matrix is never held whole, nor kept for the backward pass); the distance to it
    is then recomputed with gradient as ``sqrt(clamp(|x - b|^2, 1e-12))``. The gradient is the
    one of ``min_b |x - b|`` (a minimum's gradient flows to its argmin only).
    """
    if x.ndim != 2 or bank.ndim != 2 or x.shape[1] != bank.shape[1] or len(bank) == 0:
        raise InvalidInputError(f"nearest_distance: expected x (m, C) and a non-empty bank "
                                f"(M, C), got {tuple(x.shape)} and {tuple(bank.shape)}")
    with torch.no_grad():
        xd, bd = x.detach(), bank.detach()
        b_sq = (bd * bd).sum(1)
        rows = max(1, int(chunk_bytes // (4 * len(bank))))
        idx = torch.empty(len(x), dtype=torch.long, device=x.device)
        for s in range(0, len(x), rows):
            d2 = torch.addmm(b_sq[None], xd[s:s + rows], bd.T, alpha=-2.0)
            idx[s:s + rows] = d2.argmin(dim=1)
    diff = x - bank[idx]
    return (diff * diff).sum(1).clamp_min(1e-12).sqrt()


# ----------------------------------------------------------------------------------- training


def warmup_cosine_lr(epoch: float, epochs: int, warmup_epochs: float, lr: float,
                     min_lr: float = 0.0) -> float:
    """MAE's per-iteration schedule (``util/lr_sched.py``, used by M3DM and LSFA): linear
    warm-up from 0 over ``warmup_epochs``, then a half-cycle cosine to ``min_lr`` at
    ``epochs``; ``epoch`` is fractional (iteration / iterations per epoch)."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs)
                                                           / span))


def zero_loss(module: nn.Module) -> torch.Tensor:
    """A zero that depends on every parameter (a rank with nothing to do still joins DDP's
    gradient average)."""
    return sum(p.sum() * 0.0 for p in module.parameters())


def run_training(module: nn.Module, n_items: int,
                 step_loss: Callable[[nn.Module, int, int, torch.Tensor], torch.Tensor], *,
                 epochs: int, batch_size: int, lr: float, weight_decay: float,
                 warmup_epochs: float, seed: int, progress: bool = False, desc: str = "training",
                 epoch_start: Callable[[int], None] | None = None) -> list[float]:
    """Train ``module`` (already on its device) and return the mean loss of each epoch.

    Every epoch walks a seeded permutation of the ``n_items`` items (a CPU
    ``torch.Generator(seed)``, identical on every rank) in global batches of ``batch_size``
    (the last one shorter; none dropped). ``step_loss(model, epoch, step, local_indices)``
    returns the mean loss over this rank's :func:`~pcad.distributed.batch_slice` of the batch;
    it is weighted by ``len(slice) * world / len(batch)`` so that DDP's gradient average
    (``model`` is :func:`~pcad.distributed.wrap_module` of ``module``) is the gradient of the
    mean over the global batch; for one process the weight is 1. AdamW(betas 0.9, 0.95) with
    :func:`warmup_cosine_lr` set before every step. ``epoch_start(epoch)`` runs first in each
    epoch.
    """
    from tqdm import tqdm

    from pcad import distributed as dist

    model = dist.wrap_module(module)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, betas=(0.9, 0.95),
                            weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    steps = max(1, math.ceil(n_items / batch_size))
    history: list[float] = []
    world = dist.get_context().world_size
    module.train()
    for epoch in tqdm(range(epochs), disable=not (progress and dist.is_main()), desc=desc,
                      unit="epoch"):
        if epoch_start is not None:
            epoch_start(epoch)
        order = torch.randperm(n_items, generator=gen)
        total = 0.0
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = warmup_cosine_lr(epoch + step / steps, epochs, warmup_epochs, lr)
            batch = order[step * batch_size:(step + 1) * batch_size]
            local = dist.batch_slice(batch)
            loss = step_loss(model, epoch, epoch * steps + step, local)
            loss = loss * (len(local) * world / len(batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        history.append(dist.all_reduce_mean(total) / n_items)
    module.eval()
    return history


# ----------------------------------------------------------------------------------- detector


class MultiBankDetector(Detector):
    """Shared base of ``m3dm`` and ``lsfa`` (see the module docstring).

    Subclasses set :attr:`BANKS` and implement :meth:`train_networks` (learn from the frozen
    features of the training set), :meth:`transform` (frozen features -> one ``(n, C)`` array
    per bank) and the persistence of their networks.
    """

    modalities = ("rgb", "xyz")
    supports_distributed: ClassVar[bool] = True
    BANKS: ClassVar[tuple[str, ...]] = ()
    BANK_WEIGHTS: ClassVar[dict[str, float]] = {}
    defaults: ClassVar[dict[str, Any]] = {
        **FEATURE_DEFAULTS, "coreset_ratio": 0.1, "seed": 0, "sigma": 4.0, "n_reweight": 3,
        "bank_score": "foreground-max", "fusion": "ocsvm", "map_fusion": "ocsvm",
        "ocsvm_nu": 0.5, "ocsvm_max_iter": 1000, "svm_patches": "all", "bank_weights": None,
        "image_score": "dlf",
    }
    BANK_SCORES = ("reweighted", "foreground-max")
    FUSIONS = ("ocsvm", "sum")
    IMAGE_SCORES = ("dlf", "foreground-max")
    SVM_PATCHES = ("all", "foreground")

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        size = check_image_size(c["image_size"])
        c["image_size"] = size
        c["coreset_ratio"] = check_fraction(c["coreset_ratio"], "coreset_ratio",
                                            inclusive_zero=False)
        c["seed"] = check_int(c["seed"], "seed", minimum=0)
        c["sigma"] = check_positive(c["sigma"], "sigma", allow_zero=True)
        c["n_reweight"] = check_int(c["n_reweight"], "n_reweight", minimum=1)
        c["ocsvm_nu"] = check_fraction(c["ocsvm_nu"], "ocsvm_nu", inclusive_zero=False)
        c["ocsvm_max_iter"] = check_int(c["ocsvm_max_iter"], "ocsvm_max_iter", minimum=1)
        for key in ("num_group", "group_size"):
            if c[key] is not None:
                c[key] = check_int(c[key], key, minimum=1)
        for key, choices in (("bank_score", self.BANK_SCORES), ("fusion", self.FUSIONS),
                             ("map_fusion", self.FUSIONS),
                             ("image_score", self.IMAGE_SCORES),
                             ("svm_patches", self.SVM_PATCHES),
                             ("point_backbone", POINT_BACKBONES), ("device", DEVICES)):
            if c[key] not in choices:
                raise InvalidInputError(f"{key}: expected one of {choices}, got {c[key]!r}")
        weights = c["bank_weights"] or {}
        if not isinstance(weights, dict) or set(weights) - set(self.BANKS):
            raise InvalidInputError(f"bank_weights: expected a dict with keys among "
                                    f"{list(self.BANKS)}, got {weights!r}")
        c["bank_weights"] = {b: check_positive(weights.get(b, self.BANK_WEIGHTS[b]),
                                               f"bank_weights[{b!r}]", allow_zero=True)
                             for b in self.BANKS}
        self.features = MultimodalFeatures(
            self.name, size, c["rgb_backbone"], c["weights"], c["point_backbone"],
            c["point_weights"], c["num_group"], c["group_size"], "cpu")
        self.banks: dict[str, Any] = {}
        self.stats: dict[str, tuple[float, float]] = {}
        self.w_image = np.ones(len(self.BANKS))
        self.w_patch = np.ones(len(self.BANKS))
        self.history: list[float] = []

    # --- to implement ---------------------------------------------------------------------

    def train_networks(self, rgb: np.ndarray, pts: np.ndarray, fg: np.ndarray,
                       items: Sequence[Any], progress: bool) -> None:  # pragma: no cover
        """Learn the subclass's networks from ``(N, n, C)`` frozen features."""
        raise NotImplementedError

    def transform(self, rgb: np.ndarray, pts: np.ndarray, fg: np.ndarray
                  ) -> dict[str, np.ndarray]:  # pragma: no cover
        """``(B, n, C)`` frozen features -> ``{bank: (B, n, C_bank) float32}``."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------

    @property
    def grid(self) -> tuple[int, int]:
        return self.features.grid

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config["device"])

    def patch_features(self, sample: Any, where: str = "test sample"
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rgb (n, C_rgb), pts (n, C_pts), fg (n,) bool)``, the frozen features."""
        self.features.device = self.device
        return self.features(sample, where)

    def fit(self, samples, progress: bool = False) -> MultiBankDetector:
        items = self._train_list(samples)
        self.features.device = self.device
        rgb, pts, fg = extract_all(self.features, items, "training set", progress,
                                   f"{self.name} features")
        return self.fit_features(rgb, pts, fg, items, progress=progress)

    def fit_features(self, rgb: np.ndarray, pts: np.ndarray, fg: np.ndarray,
                     items: Sequence[Any] | None = None, progress: bool = False
                     ) -> MultiBankDetector:
        """Everything :meth:`fit` does after feature extraction, from ``(N, n, C)`` frozen
        features and ``(N, n)`` foregrounds (``items``, the samples, are needed by
        ``bank_score="foreground-max"`` and by LSFA's rotation term)."""
        from pcad.memory import MemoryBank

        if rgb.ndim != 3 or pts.shape[:2] != rgb.shape[:2] or fg.shape != rgb.shape[:2]:
            raise InvalidInputError(f"detector {self.name!r}: features must be (N, n, C) with "
                                    f"one (N, n) foreground, got {rgb.shape}, {pts.shape}, "
                                    f"{fg.shape}")
        n_samples = rgb.shape[0]
        if "ocsvm" in (self.config["fusion"], self.config["map_fusion"]) and n_samples < 2:
            raise InvalidInputError(
                f"detector {self.name!r}: decision-layer fusion needs at least 2 training "
                f"samples (each is scored by the banks without it), got {n_samples}; or use "
                "fusion='sum' and map_fusion='sum'")
        if self.config["bank_score"] == "foreground-max" and items is None:
            raise InvalidInputError("bank_score='foreground-max' needs the training samples")
        self.train_networks(rgb, pts, fg, items, progress)
        feats = self._transform_all(rgb, pts, fg)
        n_patch = rgb.shape[1]
        self.banks, self.stats = {}, {}
        per_bank: dict[str, np.ndarray] = {}
        for b in self.BANKS:
            x = feats[b].reshape(n_samples * n_patch, -1)
            x64 = x.astype(np.float64)
            mean, std = float(x64.mean()), float(x64.std(ddof=1)) if x.size > 1 else 1.0
            std = std if std > 0 and math.isfinite(std) else 1.0
            self.stats[b] = (mean, std)
            per_bank[b] = ((x - mean) / std).astype(np.float32)
            self.banks[b] = MemoryBank(coreset_ratio=self.config["coreset_ratio"],
                                       seed=self.config["seed"]).fit(per_bank[b])
        self._fit_fusion(per_bank, n_samples, n_patch, items, fg)
        self.fitted = True
        return self

    def _transform_all(self, rgb: np.ndarray, pts: np.ndarray, fg: np.ndarray,
                       chunk: int = 16) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {b: [] for b in self.BANKS}
        for s in range(0, len(rgb), chunk):
            for b, v in self.transform(rgb[s:s + chunk], pts[s:s + chunk],
                                       fg[s:s + chunk]).items():
                out[b].append(v)
        return {b: np.concatenate(v) for b, v in out.items()}

    def _bank_image_score(self, bank, feats: np.ndarray, sample: Any | None
                          ) -> tuple[np.ndarray, float]:
        if self.config["bank_score"] == "reweighted":
            return bank.score_image(feats, n_reweight=self.config["n_reweight"])
        patch = bank.score(feats)
        amap = upsample_map(patch.reshape(self.grid), sample.shape, self.config["sigma"])
        return patch, foreground_max(amap, sample.xyz)

    def _fit_fusion(self, per_bank: dict[str, np.ndarray], n_samples: int, n_patch: int,
                    items: Sequence[Any] | None, fg: np.ndarray) -> None:
        """Leave-one-out per-bank scores of the training samples, then the two SVMs."""
        from pcad.memory import MemoryBank

        k = len(self.BANKS)
        lam = np.array([self.config["bank_weights"][b] for b in self.BANKS])
        self.w_image, self.w_patch = np.ones(k), np.ones(k)
        if self.config["fusion"] == "sum" and self.config["map_fusion"] == "sum":
            return
        img = np.zeros((n_samples, k))
        pix = np.zeros((n_samples, n_patch, k))
        for j, b in enumerate(self.BANKS):
            bank = self.banks[b]
            owner = bank.indices // n_patch
            for i in range(n_samples):
                keep = owner != i
                if keep.all():
                    sub = bank
                elif keep.any():
                    sub = MemoryBank(coreset_ratio=1.0).fit(bank.features[keep])
                else:  # every kept feature came from sample i: use the other samples' all
                    rows = np.ones(n_samples * n_patch, bool)
                    rows[i * n_patch:(i + 1) * n_patch] = False
                    sub = MemoryBank(coreset_ratio=1.0).fit(per_bank[b][rows])
                feats = per_bank[b][i * n_patch:(i + 1) * n_patch]
                pix[i, :, j], img[i, j] = self._bank_image_score(
                    sub, feats, None if items is None else items[i])
        if self.config["fusion"] == "ocsvm":
            self.w_image = self._ocsvm(img * lam)
        if self.config["map_fusion"] == "ocsvm":
            rows = fg.reshape(-1) if self.config["svm_patches"] == "foreground" else slice(None)
            self.w_patch = self._ocsvm(pix.reshape(-1, k)[rows] * lam)

    def _ocsvm(self, x: np.ndarray) -> np.ndarray:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import SGDOneClassSVM

        svm = SGDOneClassSVM(nu=self.config["ocsvm_nu"], max_iter=self.config["ocsvm_max_iter"],
                             random_state=self.config["seed"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm.fit(x)
        w = np.asarray(svm.coef_, dtype=np.float64).reshape(-1)
        if not np.isfinite(w).all() or not w.any():
            return np.ones(x.shape[1])
        return w

    def bank_scores(self, sample: Any) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Per bank: the ``(h, w)`` patch distances and the image score of ``sample``."""
        self._require_fit()
        self.check_sample(sample, "test sample")
        rgb, pts, fg = self.patch_features(sample)
        feats = self.transform(rgb[None], pts[None], fg[None])
        patches, scores = {}, {}
        for b in self.BANKS:
            mean, std = self.stats[b]
            x = ((feats[b][0] - mean) / std).astype(np.float32)
            patch, s = self._bank_image_score(self.banks[b], x, sample)
            patches[b], scores[b] = patch.reshape(self.grid).astype(np.float32), float(s)
        return patches, scores

    def predict(self, sample: Any) -> tuple[float, np.ndarray]:
        patches, scores = self.bank_scores(sample)
        lam = np.array([self.config["bank_weights"][b] for b in self.BANKS])
        wp, wi = self.w_patch * lam, self.w_image * lam
        fused = sum(wp[j] * patches[b].astype(np.float64) for j, b in enumerate(self.BANKS))
        amap = upsample_map(fused, sample.shape, self.config["sigma"])
        if self.config["image_score"] == "foreground-max":
            return foreground_max(amap, sample.xyz), amap
        return float(sum(wi[j] * scores[b] for j, b in enumerate(self.BANKS))), amap

    # --- persistence ----------------------------------------------------------------------

    def _save_state(self, folder: Path) -> None:
        for b in self.BANKS:
            self.banks[b].save(folder / f"bank_{b}.npz")
        self._save_networks(folder)

    def _state_record(self) -> dict[str, Any]:
        return {"stats": {b: list(v) for b, v in self.stats.items()},
                "w_image": [float(v) for v in self.w_image],
                "w_patch": [float(v) for v in self.w_patch],
                "bank_sizes": {b: len(self.banks[b]) for b in self.BANKS},
                "history": self.history, **self._networks_record()}

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:
        from pcad.memory import MemoryBank

        for b in self.BANKS:
            path = folder / f"bank_{b}.npz"
            if not path.is_file():
                raise InvalidInputError(f"{folder}: incomplete {self.name} run (no {path.name})")
            self.banks[b] = MemoryBank.load(path)
        self.stats = {b: (float(v[0]), float(v[1])) for b, v in state["stats"].items()}
        self.w_image = np.asarray(state["w_image"], dtype=np.float64)
        self.w_patch = np.asarray(state["w_patch"], dtype=np.float64)
        self.history = [float(x) for x in state.get("history", [])]
        self._load_networks(folder, state)

    def _save_networks(self, folder: Path) -> None:  # pragma: no cover
        raise NotImplementedError

    def _networks_record(self) -> dict[str, Any]:
        return {}

    def _load_networks(self, folder: Path, state: dict[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError
