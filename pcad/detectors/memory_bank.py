"""Memory-bank detectors: ``patchcore-rgb``, ``fpfh`` (BTF's 3D-only variant), ``btf``.

All three follow PatchCore: per-patch features of the training images go into one memory bank
(reduced by the greedy coreset); a test patch scores its distance to the nearest bank feature;
the anomaly map is the patch grid upsampled to the sample's size and blurred. The image score
(``image_score="auto"``) is PatchCore's re-weighted maximum for RGB-only detectors, and for the
detectors that see xyz the map's maximum over the part (measured pixels off the background
plane, dilated by 3 pixels), which ignores the background mat.

- ``patchcore-rgb``: RGB backbone features (default ``effnet-lite0``, stride 8) on the image
  resized to ``image_size``.
- ``fpfh``: FPFH of the organized cloud (background plane removed, resized with nearest
  neighbour to ``image_size``) averaged over the same patch grid (BTF).
- ``btf``: both, concatenated per patch in one bank (BTF's RGB + FPFH). Each modality is divided
  by its mean feature norm on the training set, so that neither dominates the distance by its
  units alone (BTF concatenates raw features; the scaling is pcad's).

Example:
    >>> from pcad.detectors import create
    >>> det = create("btf", image_size=112)
    >>> det.modalities
    ('rgb', 'xyz')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pcad.checks import check_fraction, check_int
from pcad.detectors.base import Detector, resize_rgb, upsample_map
from pcad.detectors.registry import register_detector
from pcad.errors import InvalidInputError

PATCH_STRIDE = 8


def check_image_size(value: Any) -> int:
    """The detector input size as an int: at least 32 and a multiple of the patch stride 8."""
    size = check_int(value, "image_size", minimum=32)
    if size % PATCH_STRIDE:
        raise InvalidInputError(f"image_size: must be a multiple of {PATCH_STRIDE}, got {size}")
    return size


class PatchMemoryDetector(Detector):
    """Shared fit/predict of the memory-bank detectors; subclasses give patch features."""

    #: under torchrun, feature extraction is sharded over the ranks (pcad.distributed)
    supports_distributed = True

    defaults = {"image_size": 224, "coreset_ratio": 0.1, "seed": 0, "sigma": 4.0,
                "n_reweight": 3, "image_score": "auto"}
    SCORES = ("auto", "reweighted", "foreground-max")

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        size = check_image_size(self.config["image_size"])
        # the checked values (plain int / float: 64.0 or np.int64(64) work and save as JSON)
        self.config["image_size"] = size
        self.config["coreset_ratio"] = check_fraction(self.config["coreset_ratio"],
                                                      "coreset_ratio", inclusive_zero=False)
        if self.config["image_score"] not in self.SCORES:
            raise InvalidInputError(f"image_score: expected one of {self.SCORES}, got "
                                    f"{self.config['image_score']!r}")
        self.bank = None
        self.scales: dict[str, float] = {}

    @property
    def grid(self) -> tuple[int, int]:
        g = self.config["image_size"] // PATCH_STRIDE
        return (g, g)

    def patch_features(self, sample: Any) -> dict[str, np.ndarray]:  # pragma: no cover
        """Per-modality ``(h * w, C) float32`` patch features."""
        raise NotImplementedError

    def _combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([parts[m] / self.scales.get(m, 1.0) for m in sorted(parts)],
                              axis=1).astype(np.float32)

    def fit(self, samples, progress: bool = False) -> PatchMemoryDetector:
        from tqdm import tqdm

        from pcad import distributed as dist
        from pcad.memory import MemoryBank

        items = self._train_list(samples)
        # under torchrun: each rank extracts its block of samples; the gather restores the
        # single-process order, so every rank builds the same bank (rank 0 saves it)
        mine = dist.shard(items)
        feats: dict[str, list[np.ndarray]] = {}
        for s in tqdm(mine, disable=not progress, desc=f"{self.name} features", unit="sample"):
            for m, f in self.patch_features(s).items():
                feats.setdefault(m, []).append(f)
        if not mine:  # more ranks than samples: an empty block of the right width
            feats = {m: [f[:0]] for m, f in self.patch_features(items[0]).items()}
        stacked = {m: dist.all_gather_arrays(np.concatenate(v)) for m, v in feats.items()}
        if len(stacked) > 1:
            self.scales = {m: float(np.linalg.norm(v, axis=1).mean()) or 1.0
                           for m, v in stacked.items()}
        bank = MemoryBank(coreset_ratio=self.config["coreset_ratio"], seed=self.config["seed"])
        self.bank = bank.fit(self._combine(stacked))
        self.fitted = True
        return self

    def predict(self, sample: Any) -> tuple[float, np.ndarray]:
        self._require_fit()
        self.check_sample(sample, "test sample")
        feats = self._combine(self.patch_features(sample))
        mode = self.config["image_score"]
        if mode == "auto":
            mode = "foreground-max" if "xyz" in self.modalities else "reweighted"
        if mode == "foreground-max" and sample.xyz is not None:
            patch = self.bank.score(feats)
            amap = upsample_map(patch.reshape(self.grid), sample.shape, self.config["sigma"])
            return foreground_max(amap, sample.xyz), amap
        patch, score = self.bank.score_image(feats, n_reweight=self.config["n_reweight"])
        return score, upsample_map(patch.reshape(self.grid), sample.shape, self.config["sigma"])

    def _save_state(self, folder: Path) -> None:
        self.bank.save(folder / "bank.npz")

    def _state_record(self) -> dict[str, Any]:
        return {"scales": self.scales, "bank_size": len(self.bank)}

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:
        from pcad.memory import MemoryBank

        self.bank = MemoryBank.load(folder / "bank.npz")
        self.scales = {k: float(v) for k, v in state.get("scales", {}).items()}


class RGBFeatures:
    """Backbone patch features of an RGB image (lazy backbone construction)."""

    def __init__(self, backbone: str, weights: str | None, image_size: int) -> None:
        self.backbone_name, self.weights, self.image_size = backbone, weights, image_size
        self._net = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import torch

        from pcad.features import create_backbone

        if self._net is None:
            self._net = create_backbone(self.backbone_name, weights=self.weights)
            if getattr(self._net, "stride", PATCH_STRIDE) != PATCH_STRIDE:
                raise InvalidInputError(f"rgb backbone {self.backbone_name!r}: stride "
                                        f"{self._net.stride}, pcad's detectors need 8")
        with torch.no_grad():
            f = self._net(resize_rgb(rgb, self.image_size))[0]  # (C, h, w)
        return f.permute(1, 2, 0).reshape(-1, f.shape[0]).numpy().astype(np.float32)


def foreground_max(amap: np.ndarray, xyz: np.ndarray, dilate: int = 3) -> float:
    """Largest map value over the part: measured pixels off the background plane, dilated by
    ``dilate`` pixels (so holes at the part's edge still count); the whole map if none."""
    from scipy.ndimage import binary_dilation

    from pcad.features import point_mask

    fg = binary_dilation(point_mask(xyz), iterations=dilate)
    return float(amap[fg].max()) if fg.any() else float(amap.max())


def fpfh_patches(xyz: np.ndarray, image_size: int, grid: tuple[int, int]) -> np.ndarray:
    """``(h * w, 33)`` FPFH averaged per patch of the cloud resized (nearest) to the input
    size, background plane removed."""
    from pcad.data.preprocess import resize_organized
    from pcad.features import fpfh_map, point_mask, to_patch_grid

    small = resize_organized(xyz, image_size)
    mask = point_mask(small)
    if mask.sum() < 5:
        return np.zeros((grid[0] * grid[1], 33), np.float32)
    fmap = fpfh_map(small, valid=mask)
    return to_patch_grid(fmap, mask, grid).reshape(-1, 33)


@register_detector("patchcore-rgb")
class PatchCoreRGB(PatchMemoryDetector):
    """PatchCore on RGB backbone features."""

    modalities = ("rgb",)
    defaults = {**PatchMemoryDetector.defaults, "rgb_backbone": "effnet-lite0", "weights": None}

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._rgb = RGBFeatures(self.config["rgb_backbone"], self.config["weights"],
                                self.config["image_size"])

    def patch_features(self, sample: Any) -> dict[str, np.ndarray]:
        return {"rgb": self._rgb(sample.rgb)}


@register_detector("fpfh")
class FPFHDetector(PatchMemoryDetector):
    """BTF's 3D-only detector: FPFH patch features in a PatchCore bank."""

    modalities = ("xyz",)

    def patch_features(self, sample: Any) -> dict[str, np.ndarray]:
        return {"xyz": fpfh_patches(sample.xyz, self.config["image_size"], self.grid)}


@register_detector("btf")
class BTFDetector(PatchCoreRGB):
    """BTF's multimodal detector: RGB backbone + FPFH patch features in one bank."""

    modalities = ("rgb", "xyz")

    def patch_features(self, sample: Any) -> dict[str, np.ndarray]:
        return {"rgb": self._rgb(sample.rgb),
                "xyz": fpfh_patches(sample.xyz, self.config["image_size"], self.grid)}
