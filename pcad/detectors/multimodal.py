"""The multi-bank detector base of ``m3dm`` and ``lsfa``: :class:`MultiBankDetector`.

Both detectors take the same frozen patch features
(:class:`~pcad.detectors.patches.MultimodalFeatures`: per sample, ``(rgb (n, C_rgb), pts (n,
C_pts), fg (n,))`` on the ``n = (image_size / 8) ** 2`` patch grid; RGB from ``rgb_backbone``,
default ``effnet-lite0``, ``dino-vitb8`` with ``weights=PATH`` for M3DM's DINO ViT-B/8; points
from ``point_backbone``, ``"pointmae"`` (default) or ``"fpfh"``, fast and without weights, what
the tests use; ``fg`` marks the patches with measured points on the part, a sample without any
is an error), learn a small network on the good training samples (M3DM: the UFF fusion layers;
LSFA: one adapter block per modality; both with :func:`~pcad.detectors.training.run_training`),
put the (transformed) patch features in several PatchCore memory banks and fuse the banks'
scores with M3DM's decision-layer fusion (DLF). :class:`MultiBankDetector` holds what they have
in common: per-bank PatchCore scoring and DLF, fit / predict / save / load.

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
  :func:`~pcad.detectors.patches.foreground_max`, which ignores the background), or
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
    >>> from pcad.detectors import create_detector
    >>> from pcad.detectors.multimodal import MultiBankDetector
    >>> det = create_detector("lsfa", image_size=64, point_backbone="fpfh")
    >>> isinstance(det, MultiBankDetector), det.grid, det.config["fusion"]
    (True, (8, 8), 'ocsvm')
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pcad.checks import check_fraction, check_int, check_positive
from pcad.detectors.base import RUN_FILE, Detector, check_run_number, upsample_map
from pcad.detectors.patches import (
    DEVICES,
    FEATURE_DEFAULTS,
    POINT_BACKBONES,
    MultimodalFeatures,
    SampleForeground,
    check_image_size,
    check_sigma,
    extract_all,
    foreground_max,
    resolve_device,
)
from pcad.errors import FileFormatError, InvalidInputError

__all__ = ["MultiBankDetector"]


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
        c["sigma"] = check_sigma(c["sigma"])
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

    def patch_features(self, sample: Any, where: str = "test sample",
                       foreground: SampleForeground | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rgb (n, C_rgb), pts (n, C_pts), fg (n,) bool)``, the frozen features
        (``foreground``: the sample's :class:`~pcad.detectors.patches.SampleForeground`, or
        None)."""
        self.features.device = self.device
        return self.features(sample, where, foreground)

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

    def _bank_image_score(self, bank, feats: np.ndarray, sample: Any | None,
                          foreground: SampleForeground | None) -> tuple[np.ndarray, float]:
        if self.config["bank_score"] == "reweighted":
            return bank.score_image(feats, n_reweight=self.config["n_reweight"])
        patch = bank.score(feats)
        amap = upsample_map(patch.reshape(self.grid), sample.shape, self.config["sigma"])
        return patch, foreground_max(amap, sample.xyz, foreground=foreground)

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
        owners = {b: self.banks[b].indices // n_patch for b in self.BANKS}
        # sample by sample, so that each sample's foreground is computed once for all banks
        for i in range(n_samples):
            sample = None if items is None else items[i]
            fore = None if sample is None else SampleForeground(sample.xyz)
            for j, b in enumerate(self.BANKS):
                bank = self.banks[b]
                keep = owners[b] != i
                if keep.all():
                    sub = bank
                elif keep.any():
                    sub = MemoryBank(coreset_ratio=1.0).fit(bank.features[keep])
                else:  # every kept feature came from sample i: use the other samples' all
                    rows = np.ones(n_samples * n_patch, bool)
                    rows[i * n_patch:(i + 1) * n_patch] = False
                    sub = MemoryBank(coreset_ratio=1.0).fit(per_bank[b][rows])
                feats = per_bank[b][i * n_patch:(i + 1) * n_patch]
                pix[i, :, j], img[i, j] = self._bank_image_score(sub, feats, sample, fore)
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

    def bank_scores(self, sample: Any, foreground: SampleForeground | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Per bank: the ``(h, w)`` patch distances and the image score of ``sample``
        (``foreground``: its :class:`~pcad.detectors.patches.SampleForeground` for
        ``image_size``, shared by the features and every bank's score; None: made here)."""
        self._require_fit()
        self.check_sample(sample, "test sample")
        if foreground is None:
            foreground = SampleForeground(sample.xyz, self.config["image_size"])
        rgb, pts, fg = self.patch_features(sample, foreground=foreground)
        self.check_width(rgb.shape[-1], self.banks["rgb"].dim, "its RGB bank (bank_rgb.npz)")
        self.check_width(pts.shape[-1], self.banks["xyz"].dim, "its point bank (bank_xyz.npz)")
        feats = self.transform(rgb[None], pts[None], fg[None])
        patches, scores = {}, {}
        for b in self.BANKS:
            self.check_width(feats[b].shape[-1], self.banks[b].dim, f"bank_{b}.npz")
            mean, std = self.stats[b]
            x = ((feats[b][0] - mean) / std).astype(np.float32)
            patch, s = self._bank_image_score(self.banks[b], x, sample, foreground)
            patches[b], scores[b] = patch.reshape(self.grid).astype(np.float32), float(s)
        return patches, scores

    def predict(self, sample: Any) -> tuple[float, np.ndarray]:
        self._require_fit()
        self.check_sample(sample, "test sample")
        foreground = SampleForeground(sample.xyz, self.config["image_size"])
        patches, scores = self.bank_scores(sample, foreground)
        lam = np.array([self.config["bank_weights"][b] for b in self.BANKS])
        wp, wi = self.w_patch * lam, self.w_image * lam
        fused = sum(wp[j] * patches[b].astype(np.float64) for j, b in enumerate(self.BANKS))
        amap = upsample_map(fused, sample.shape, self.config["sigma"])
        if self.config["image_score"] == "foreground-max":
            return foreground_max(amap, sample.xyz, foreground=foreground), amap
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
        source = str(folder / RUN_FILE)
        stats = state.get("stats")
        if not (isinstance(stats, dict) and set(stats) == set(self.BANKS) and all(
                isinstance(v, list) and len(v) == 2 for v in stats.values())):
            raise FileFormatError(f"{source}: 'state.stats' must map the banks "
                                  f"{list(self.BANKS)} to [mean, std], got {stats!r:.80}")
        self.stats = {b: (check_run_number(v[0], f"'state.stats.{b}' mean", source),
                          check_run_number(v[1], f"'state.stats.{b}' std", source,
                                           positive=True)) for b, v in stats.items()}
        for key in ("w_image", "w_patch"):
            w = state.get(key)
            if not (isinstance(w, list) and len(w) == len(self.BANKS)):
                raise FileFormatError(f"{source}: 'state.{key}' must be a list of "
                                      f"{len(self.BANKS)} numbers (one per bank), got {w!r:.80}")
            setattr(self, key, np.array([check_run_number(v, f"'state.{key}'", source)
                                         for v in w], dtype=np.float64))
        self.history = [float(x) for x in state.get("history", [])]
        self._load_networks(folder, state)

    def _save_networks(self, folder: Path) -> None:  # pragma: no cover
        raise NotImplementedError

    def _networks_record(self) -> dict[str, Any]:
        return {}

    def _load_networks(self, folder: Path, state: dict[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError
