"""The multi-bank detector base of ``m3dm`` and ``lsfa``: :class:`MultiBankDetector`.

Both detectors take the same frozen patch features
(:class:`~pcad.detectors.patches.MultimodalFeatures`: per sample, ``(rgb (n, C_rgb), pts (n,
C_pts), fg (n,))`` on the ``n = (image_size / 8) ** 2`` patch grid; RGB from ``rgb_backbone``,
default ``effnet-lite0``, ``dino-vitb8`` with ``weights=PATH`` for M3DM's DINO ViT-B/8; points
from ``point_backbone``, ``"fpfh"`` (default: fast, without weights, and the point feature
that sees pcad's defects, ``benchmarks/bench_point_features.py``; each point's histogram over
at most ``fpfh_neighbours`` neighbours, 200 by default as ``btf``'s, runs saved before the
option load with 100) or ``"pointmae"``; ``fg``
marks the patches with measured points on the part, a sample without any is an error), learn
a small network on the good training samples (M3DM: the UFF fusion layers;
LSFA: one adapter block per modality; both with :func:`~pcad.detectors.training.run_training`),
put the (transformed) patch features in several PatchCore memory banks and fuse the banks'
scores: by default with leave-one-out-normalised sums (``"zsum"``, below), optionally with
M3DM's decision-layer fusion (DLF, ``"ocsvm"``). :class:`MultiBankDetector` holds what they
have in common: per-bank PatchCore scoring and fusion, fit / predict / save / load.

Fusion (``fusion`` for the image score, ``map_fusion`` for the map; default ``"zsum"`` for
both): ``"zsum"`` normalises each bank's score as ``(s - mean) / std`` with the mean and std
(``ddof=1``) of the training samples' own leave-one-out scores of that bank (computed as for the
SVMs, below; per image for ``fusion``, per patch for ``map_fusion``) and sums the banks with
equal weights (0 for a bank whose ``bank_weights`` is 0; any other raw-score scale cancels in
the normalisation), :func:`~pcad.detectors.fusion.fuse_normalized`; ``"zmax"`` takes the maximum
of the normalised scores instead. Both are non-decreasing in every bank's evidence: more
evidence in one bank can never lower the score, which the SVM's learned weights cannot promise
(nor can it know which bank carries defect evidence: on an unseen part it gave the blind point
and fused banks 5-10x the weight of the informative RGB bank,
``shared/research/generalization.md``). They need at least :data:`MIN_LOO_SAMPLES` (3) training
samples, checked before anything is fitted.
Measured on the built-in parts (gear, potato, bracket x seeds 0, 1; 128 px, 10 training
samples, 6 good + 12 defective test samples; mean +- std over the 6 runs), zsum vs ocsvm:
with FPFH point features (the default), I-AUROC m3dm 0.681 +- 0.105 vs 0.671 +- 0.064, lsfa
0.711 +- 0.144 vs 0.725 +- 0.209 (ties; zmax 0.727 / 0.727), AUPRO@0.3 m3dm 0.694 +- 0.038 vs
0.576 +- 0.043 (higher in all 6 runs), lsfa 0.740 +- 0.059 vs 0.714 +- 0.046; with the shipped
Point-MAE, I-AUROC m3dm 0.588 +- 0.146 vs 0.567 +- 0.163, lsfa 0.618 +- 0.155 vs
0.630 +- 0.163, AUPRO@0.3 m3dm 0.711 +- 0.068 vs 0.598 +- 0.054, lsfa 0.662 +- 0.041 vs
0.663 +- 0.020. The SVMs did not win, so ``"zsum"`` is the default of both. ``"ocsvm"`` /
``"sum"`` are M3DM's fusions, kept unchanged.

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
- DLF (``fusion="ocsvm"``): the per-bank scores, weighted by ``bank_weights`` (M3DM's ``lambda``: 1
for the point and fused banks, 0.1 for RGB), go through a linear one-class SVM, sklearn's
  ``SGDOneClassSVM(nu=ocsvm_nu=0.5, max_iter=1000, random_state=seed)`` as M3DM, whose
  ``score_samples`` (``w . x``) is the fused score: one SVM on image-score vectors
  (``fusion``), one on patch-score vectors (``map_fusion``). M3DM fits both on a second pass
  over the *training* samples scored against banks that contain those very samples (their own
  patches are at distance ~0, so the SVMs learn from near-zero scores). pcad scores each
  training sample **leave-one-out**: against every patch of the other samples (what the
  coreset stands for at test time). It used to be each bank minus the coreset features that
  came from that sample, which leaves the sample's patches without a near neighbour where the
  coreset is sparse: on the flat plate the point bank's LOO scores were 0.47 +- 1.99 while good
  test samples scored 0.018 +- 0.005, so ``zsum`` divided the point evidence by 100x its
  spread. Measured on the built-in parts (gear, plate, bracket, potato x seeds 0, 1; 20
  training samples, 8 good and 4 of each default defect type, 224 px), the change took m3dm
  from I-AUROC 0.807 to 0.835 and AUPRO@0.3 0.897 to 0.925, lsfa from 0.832 to 0.842 and 0.897
  to 0.907 (P-AUROC +0.003 / +0.001). M3DM fits the segmentation SVM on per-pixel vectors of
  the 224 x 224 blurred maps of every pixel; pcad on the patch-grid vectors (``svm_patches``:
  ``"all"`` patches as M3DM, or the ``"foreground"`` ones); the SVM is linear without
  intercept, so fusing patch scores and then upsampling and blurring equals fusing the
  upsampled, blurred maps. ``"sum"`` for ``fusion`` / ``map_fusion`` skips that SVM (weights
  1: the ``bank_weights``-weighted sum, M3DM's "add" variant). A degenerate SVM (all-zero or
  non-finite weights) falls back to weights 1.

  Caveat, measured: a linear one-class SVM's ``w`` is the point of the (reduced) convex hull
  of the training vectors nearest the origin, so it gives little weight to a bank whose
  scores are often near zero - on pcad's synthetic data, the point bank, where the geometric
  defects are (effective weights about 0.06 point / 0.04 RGB / 1.6 fused for m3dm). With
  ``map_fusion="sum"`` the AUPRO@0.3 rose from 0.60 to 0.78 (m3dm) and 0.71 to 0.82 (lsfa)
  on 3 synthetic categories at 128 px. (Why ``"zsum"`` is now the default of both.)
- map: the fused patch grid (``map_fusion``) upsampled to the sample's size and blurred
  (:func:`~pcad.detectors.base.upsample_map`, ``sigma`` 4 at 224 as M3DM's blur, without its
  8-bit quantisation). Image score (``image_score``): ``"dlf"`` (default), the ``fusion`` of
  the per-bank image scores (the image SVM's score as M3DM with ``fusion="ocsvm"``);
  ``"foreground-max"``, the fused map's maximum over the part. - every bank uses the one
  ``image_size / 8`` patch grid (M3DM: RGB at 28 x 28 and points at
  56 x 56 at 224; LSFA upsamples RGB to 56 x 56).

**Default changed: ``fpfh_neighbours=200``** (both detectors; before: 100, BTF's): the FPFH
point features gather up to 200 neighbours per histogram, as ``btf``'s since its own change
(:mod:`pcad.detectors.btf` says why: on a dense scan the cap sets the feature's support).
Chosen on the built-in parts (gear, plate, bracket, potato; 20 training samples, 8 good and 4
of each default defect type, 224 px; dataset seeds 0, 1, 2, 12 runs each): m3dm I-AUROC 0.839
-> 0.855 (paired standard error 0.009; 7 runs better, 3 worse), lsfa 0.842 -> 0.852 (0.009; 7
better, 4 worse); seeds 0-1 gained (m3dm +0.028, lsfa +0.020), seed 2, rendered afterwards,
lost a little (m3dm 0.850 -> 0.844, lsfa 0.841 -> 0.832). Checked on the real meshes afterwards
(``benchmarks/bench_generalization.py``, three seeds): m3dm 0.871 -> 0.883, AUPRO@0.3 0.941 ->
0.944, 16 of 24 runs better and 4 worse; lsfa 0.860 -> 0.870, 0.931 -> 0.935, 15 better and 4
worse; bump, dent and hole +0.02-0.03, crack -0.02 to -0.03 (the thin defect, as for btf); the
fused banks' own image AUROC rose most (m3dm 0.78 -> 0.81). The cost: the point features take
about 1.8 times as long (alone on one thread: 179 -> 332 ms per gear sample, 153 -> 276 ms per
potato sample). Runs saved before the option existed load with 100.

Example:
    >>> from pcad.detectors import create_detector
    >>> from pcad.detectors.multimodal import MultiBankDetector
    >>> det = create_detector("lsfa", image_size=64, point_backbone="fpfh")
    >>> isinstance(det, MultiBankDetector), det.grid, det.config["fusion"]
    (True, (8, 8), 'zsum')
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
from pcad.detectors.base import (
    RUN_FILE,
    Detector,
    check_run_number,
    upsample_map,
    upsample_maps,
)
from pcad.detectors.fusion import (
    LOO_DEFAULTS,
    LOO_HELP,
    LOO_LEGACY,
    MIN_LOO_SAMPLES,
    Z_FUSIONS,
    check_loo_samples,
    fuse_normalized,
    loo_indices,
    loo_stats,
    others_bank,
    read_loo_stats,
)
from pcad.detectors.patches import (
    FEATURE_DEFAULTS,
    POINT_BACKBONES,
    FPFHOption,
    MultimodalFeatures,
    SampleForeground,
    check_device,
    check_image_size,
    check_sigma,
    extract_all,
    foreground_max,
    host_workers,
    prepare_foregrounds,
    resolve_device,
)
from pcad.errors import FileFormatError, InvalidInputError

__all__ = ["MultiBankDetector", "balanced_concat", "mean_norms", "read_part_norms"]


def mean_norms(*parts: torch.Tensor) -> tuple[float, ...]:
    """The mean row norm of each ``(m, C)`` part (1.0 where it is not finite and positive):
    the divisors of :func:`balanced_concat`.

    >>> mean_norms(torch.tensor([[3.0, 4.0], [0.0, 1.0]]), torch.zeros(2, 3))
    (3.0, 1.0)
    """
    out = []
    for x in parts:
        v = float(x.norm(dim=-1).mean()) if x.numel() else 1.0
        out.append(v if math.isfinite(v) and v > 0 else 1.0)
    return tuple(out)


def balanced_concat(parts: Sequence[torch.Tensor], norms: Sequence[float]) -> torch.Tensor:
    """``concat(part_i / norms[i])`` along the last axis: each modality's features divided by
    their mean training norm (:func:`mean_norms`), so that neither dominates a fused distance
    by its width and units alone (``btf`` does the same with its two halves).

    >>> balanced_concat([torch.ones(1, 2), torch.ones(1, 1)], (2.0, 4.0)).tolist()
    [[0.5, 0.5, 0.25]]
    """
    return torch.cat([p / float(n) for p, n in zip(parts, norms, strict=True)], dim=-1)


def read_part_norms(state: dict[str, Any], where: str) -> tuple[float, float]:
    """``state["part_norms"]`` of a saved run as two positive floats (``(1, 1)`` when the run
    predates it: a plain concatenation), else a one-line FileFormatError naming ``where``."""
    norms = state.get("part_norms", [1.0, 1.0])
    if not (isinstance(norms, list) and len(norms) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) and v > 0 for v in norms)):
        raise FileFormatError(f"{where}: 'state.part_norms' must be two positive numbers, "
                              f"got {norms!r:.80}")
    return float(norms[0]), float(norms[1])


# ----------------------------------------------------------------------------------- detector


class MultiBankDetector(FPFHOption, Detector):
    """Shared base of ``m3dm`` and ``lsfa`` (see the module docstring).

    Subclasses set :attr:`BANKS` and implement :meth:`train_networks` (learn from the frozen
    features of the training set), :meth:`transform` (frozen features -> one ``(n, C)`` array
    per bank) and the persistence of their networks.
    """

    modalities = ("rgb", "xyz")
    supports_distributed: ClassVar[bool] = True
    BANKS: ClassVar[tuple[str, ...]] = ()
    #: the banks that the image score / the anomaly map fuse (None: every bank)
    IMAGE_BANKS: ClassVar[tuple[str, ...] | None] = None
    MAP_BANKS: ClassVar[tuple[str, ...] | None] = None
    BANK_WEIGHTS: ClassVar[dict[str, float]] = {}
    defaults: ClassVar[dict[str, Any]] = {
        **FEATURE_DEFAULTS, "coreset_ratio": 0.1, "seed": 0, "sigma": 4.0, "n_reweight": 3,
        "bank_score": "foreground-max", "fusion": "zsum", "map_fusion": "zsum",
        "ocsvm_nu": 0.5, "ocsvm_max_iter": 1000, "svm_patches": "all", "bank_weights": None,
        "image_score": "dlf", **LOO_DEFAULTS, **FPFHOption.FPFH_DEFAULTS,
    }
    legacy_options: ClassVar[dict[str, Any]] = {**FPFHOption.legacy_options, **LOO_LEGACY}
    BANK_SCORES = ("reweighted", "foreground-max")
    FUSIONS = ("ocsvm", "sum", *Z_FUSIONS)
    IMAGE_SCORES = ("dlf", "foreground-max")
    SVM_PATCHES = ("all", "foreground")
    option_help: ClassVar[dict[str, str]] = {
        "bank_score": "per-bank image score: foreground-max or reweighted (M3DM)",
        "fusion": "image-score fusion of the banks: zsum, zmax, ocsvm (M3DM's DLF) or sum",
        "map_fusion": "anomaly-map fusion of the banks: zsum, zmax, ocsvm or sum",
        "ocsvm_nu": "nu of the one-class SVMs (fusion ocsvm)",
        "ocsvm_max_iter": "iterations of the one-class SVM solver",
        "svm_patches": "patches the map SVM is fitted on: all or foreground",
        "bank_weights": "weight per bank, e.g. {\"xyz\": 1, \"rgb\": 0.1}; null: the "
                        "detector's",
        "image_score": "dlf (fused bank scores) or foreground-max (fused map over the part)",
        "batch_size": "training batch size in samples", **LOO_HELP,
    }

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
        c["loo_samples"] = check_loo_samples(c["loo_samples"])
        c["device"] = check_device(c["device"])
        self.check_fpfh_option()
        for key in ("num_group", "group_size"):
            if c[key] is not None:
                c[key] = check_int(c[key], key, minimum=1)
        for key, choices in (("bank_score", self.BANK_SCORES), ("fusion", self.FUSIONS),
                             ("map_fusion", self.FUSIONS),
                             ("image_score", self.IMAGE_SCORES),
                             ("svm_patches", self.SVM_PATCHES),
                             ("point_backbone", POINT_BACKBONES)):
            if c[key] not in choices:
                raise InvalidInputError(f"{key}: expected one of {choices}, got {c[key]!r}")
        if c["point_weights"] is not None and c["point_backbone"] != "pointmae":
            raise InvalidInputError(  # FPFH is the default: the checkpoint would be ignored
                f"point_weights is a Point-MAE checkpoint, but point_backbone is "
                f"{c['point_backbone']!r}: add point_backbone='pointmae' to use it")
        weights = c["bank_weights"] or {}
        if not isinstance(weights, dict) or set(weights) - set(self.BANKS):
            raise InvalidInputError(f"bank_weights: expected a dict with keys among "
                                    f"{list(self.BANKS)}, got {weights!r}")
        c["bank_weights"] = {b: check_positive(weights.get(b, self.BANK_WEIGHTS[b]),
                                               f"bank_weights[{b!r}]", allow_zero=True)
                             for b in self.BANKS}
        self.features = MultimodalFeatures(
            self.name, size, c["rgb_backbone"], c["weights"], c["point_backbone"],
            c["point_weights"], c["num_group"], c["group_size"], "cpu",
            fpfh_neighbours=c["fpfh_neighbours"])
        self.banks: dict[str, Any] = {}
        self.stats: dict[str, tuple[float, float]] = {}
        self.w_image = np.ones(len(self.BANKS))
        self.w_patch = np.ones(len(self.BANKS))
        # per bank [mean, std] of the leave-one-out training scores (image / patch)
        self.z_image = np.tile([0.0, 1.0], (len(self.BANKS), 1))
        self.z_patch = np.tile([0.0, 1.0], (len(self.BANKS), 1))
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
        for key in ("fusion", "map_fusion"):
            if self.config[key] in Z_FUSIONS and n_samples < MIN_LOO_SAMPLES:
                raise InvalidInputError(
                    f"detector {self.name!r}: {key}={self.config[key]!r} normalises each bank "
                    f"by the leave-one-out scores of the training samples and needs at least "
                    f"{MIN_LOO_SAMPLES} training samples, got {n_samples}; or use {key}='sum'")
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
                                       seed=self.config["seed"],
                                       device=self.device).fit(per_bank[b])
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
        """Leave-one-out per-bank scores of the training samples (``loo_samples`` of them at
        most, :func:`~pcad.detectors.fusion.loo_indices`), then the two SVMs."""

        k = len(self.BANKS)
        lam = np.array([self.config["bank_weights"][b] for b in self.BANKS])
        self.w_image, self.w_patch = np.ones(k), np.ones(k)
        if self.config["fusion"] == "sum" and self.config["map_fusion"] == "sum":
            return  # no leave-one-out scores needed
        chosen = loo_indices(n_samples, self.config["loo_samples"], self.config["seed"])
        img = np.zeros((len(chosen), k))
        pix = np.zeros((len(chosen), n_patch, k))
        # sample by sample, so that each sample's foreground is computed once for all banks
        for row, i in enumerate(chosen.tolist()):
            sample = None if items is None else items[i]
            fore = None if sample is None else SampleForeground(sample.xyz)
            for j, b in enumerate(self.BANKS):
                sub = others_bank(per_bank[b], i, n_samples, self.banks[b].device)
                feats = per_bank[b][i * n_patch:(i + 1) * n_patch]
                pix[row, :, j], img[row, j] = self._bank_image_score(sub, feats, sample, fore)
        rows = (fg.reshape(n_samples, n_patch)[chosen].reshape(-1)
                if self.config["svm_patches"] == "foreground" else slice(None))
        # the LOO statistics are kept whatever the fusion (cheap; lets a run compare fusions)
        self.z_image, self.z_patch = loo_stats(img), loo_stats(pix.reshape(-1, k)[rows])
        if self.config["fusion"] == "ocsvm":
            self.w_image = self._ocsvm(img * lam * self.bank_mask("image"))
        if self.config["map_fusion"] == "ocsvm":
            self.w_patch = self._ocsvm(pix.reshape(-1, k)[rows] * lam * self.bank_mask("map"))

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

    def bank_scores(self, sample: Any, foreground: SampleForeground | None = None,
                    scored: Sequence[str] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Per bank: the ``(h, w)`` patch distances and the image score of ``sample``
        (``foreground``: its :class:`~pcad.detectors.patches.SampleForeground` for
        ``image_size``, shared by the features and every bank's score; None: made here).
        ``scored``: the banks whose image score is computed (None: every bank; the others get
        NaN, which :meth:`fuse` ignores where their image weight is 0; see
        :meth:`scored_banks`)."""
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
            if scored is None or b in scored:
                patch, s = self._bank_image_score(self.banks[b], x, sample, foreground)
            else:
                patch, s = self.banks[b].score(x), np.nan
            patches[b], scores[b] = patch.reshape(self.grid).astype(np.float32), float(s)
        return patches, scores

    def scored_banks(self, fusion: str | None = None) -> tuple[str, ...]:
        """The banks whose own image score the image ``fusion`` (default
        ``config["fusion"]``) uses: those with a positive image weight, none when the image
        score is the fused map's maximum (``image_score="foreground-max"``).

        >>> from pcad.detectors import create_detector
        >>> create_detector("lsfa", banks="split-double").scored_banks()
        ('xyz', 'rgb')
        >>> create_detector("m3dm", image_score="foreground-max").scored_banks()
        ()
        """
        if self.config["image_score"] == "foreground-max":
            return ()
        w = self.fusion_weights("image", fusion or self.config["fusion"])
        return tuple(b for j, b in enumerate(self.BANKS) if w[j] > 0)

    def predict(self, sample: Any) -> tuple[float, np.ndarray]:
        self._require_fit()
        self.check_sample(sample, "test sample")
        foreground = SampleForeground(sample.xyz, self.config["image_size"])
        patches, scores = self.bank_scores(sample, foreground, self.scored_banks())
        return self.fuse(patches, scores, sample, foreground)

    @property
    def z_weights(self) -> np.ndarray:
        """``(k,)`` weights of the LOO-normalised fusions: 1 per bank, 0 where ``bank_weights``
        is 0 (a raw-score scale cancels in the normalisation; a zero still removes a bank)."""
        return np.array([float(self.config["bank_weights"][b] > 0) for b in self.BANKS])

    def bank_mask(self, use: str) -> np.ndarray:
        """``(k,)`` 1.0 for the banks that the image score (``use="image"``) or the map
        (``"map"``) fuses (:attr:`IMAGE_BANKS`, :attr:`MAP_BANKS`; all by default), else 0."""
        chosen = self.IMAGE_BANKS if use == "image" else self.MAP_BANKS
        return np.array([float(chosen is None or b in chosen) for b in self.BANKS])

    def fusion_weights(self, use: str, how: str) -> np.ndarray:
        """``(k,)`` weights of the image (``use="image"``) or map fusion ``how``: the z-weights
        of a LOO-normalised fusion, else the fitted SVM weights times ``bank_weights``; both
        times :meth:`bank_mask`."""
        if how in Z_FUSIONS:
            return self.z_weights * self.bank_mask(use)
        lam = np.array([self.config["bank_weights"][b] for b in self.BANKS])
        return (self.w_image if use == "image" else self.w_patch) * lam * self.bank_mask(use)

    def fuse(self, patches: dict[str, np.ndarray], scores: dict[str, float], sample: Any,
             foreground: SampleForeground | None = None,
             fusion: str | None = None) -> tuple[float, np.ndarray]:
        """``(image score, (H, W) map)`` of ``sample`` from its :meth:`bank_scores` output
        (``fusion``: the image fusion to use, default ``config["fusion"]``; a ``"ocsvm"`` other
        than the fitted one uses the fitted weights, i.e. weights 1 when fitted without)."""
        amap = upsample_map(self._fused_grid(patches), sample.shape, self.config["sigma"])
        return self._fused_score(amap, scores, sample, foreground, fusion), amap

    def _fused_grid(self, patches: dict[str, np.ndarray]) -> np.ndarray:
        """The ``(h, w) float64`` fused patch grid (``map_fusion``) of the banks' grids."""
        how = self.config["map_fusion"]
        wp = self.fusion_weights("map", how)
        if how in Z_FUSIONS:
            stack = np.stack([patches[b].astype(np.float64) for b in self.BANKS], axis=-1)
            return fuse_normalized(stack, self.z_patch, wp, how)
        return sum(wp[j] * patches[b].astype(np.float64) for j, b in enumerate(self.BANKS))

    def _fused_score(self, amap: np.ndarray, scores: dict[str, float], sample: Any,
                     foreground: SampleForeground | None, fusion: str | None) -> float:
        """The image score of :meth:`fuse` from the fused ``amap`` and per-bank scores."""
        fusion = fusion or self.config["fusion"]
        if self.config["image_score"] == "foreground-max":
            return foreground_max(amap, sample.xyz, foreground=foreground)
        wi = self.fusion_weights("image", fusion)
        # a bank of weight 0 adds nothing (its score may be NaN: not computed)
        vec = np.array([scores[b] if wi[j] > 0 else 0.0 for j, b in enumerate(self.BANKS)],
                       dtype=np.float64)
        if fusion in Z_FUSIONS:
            return float(fuse_normalized(vec, self.z_image, wi, fusion))
        return float(sum(wi[j] * vec[j] for j in range(len(self.BANKS))))

    def predict_batch(self, samples: Sequence[Any]) -> list[tuple[float, np.ndarray]]:
        """``[predict(s) for s in samples]`` with the work batched: the RGB backbone sees the
        batch at once (:meth:`~pcad.detectors.patches.MultimodalFeatures.batch`; the point
        features are per sample), the networks transform the batch in one call on CUDA, each
        bank is searched for every patch of the batch in one call
        (:meth:`~pcad.memory.MemoryBank.score_images`) and the maps are upsampled and blurred
        together on the device (:func:`~pcad.detectors.base.upsample_maps`). On the CPU the
        results equal :meth:`predict`'s bitwise (the networks run per sample there, as the
        backbone does: a batched matrix product may round differently); on CUDA the blur is
        float32 on the device (about 1e-6 relative to scipy's)."""
        items = self.batch_items(samples)
        if not items:
            return []
        dev, size = self.device, self.config["image_size"]
        fores = [SampleForeground(s.xyz, size) for s in items]
        # the background-plane fits of the batch on the device on CUDA (serial on the CPU)
        prepare_foregrounds(fores, host_workers(dev, len(items)), device=dev)
        self.features.device = dev
        frozen = self.features.batch(items, "test sample", fores)
        rgb = np.stack([f[0] for f in frozen])
        pts = np.stack([f[1] for f in frozen])
        fg = np.stack([f[2] for f in frozen])
        self.check_width(rgb.shape[-1], self.banks["rgb"].dim, "its RGB bank (bank_rgb.npz)")
        self.check_width(pts.shape[-1], self.banks["xyz"].dim, "its point bank (bank_xyz.npz)")
        feats = self._transform_all(rgb, pts, fg, chunk=len(items) if dev.type == "cuda" else 1)
        shapes = [s.shape for s in items]
        patches: list[dict[str, np.ndarray]] = [{} for _ in items]
        scores: list[dict[str, float]] = [{} for _ in items]
        needed = self.scored_banks()
        for b in self.BANKS:
            self.check_width(feats[b].shape[-1], self.banks[b].dim, f"bank_{b}.npz")
            mean, std = self.stats[b]
            xs = [((x - mean) / std).astype(np.float32) for x in feats[b]]
            reweighted = self.config["bank_score"] == "reweighted"
            wanted = b in needed
            dists, image = self.banks[b].score_images(
                xs, n_reweight=self.config["n_reweight"] if reweighted and wanted else None)
            if not wanted:
                image = [np.nan] * len(items)
            elif not reweighted:
                maps = upsample_maps([d.reshape(self.grid) for d in dists], shapes,
                                     self.config["sigma"], dev)
                image = [foreground_max(m, s.xyz, foreground=f)
                         for m, s, f in zip(maps, items, fores, strict=True)]
            for i, (d, v) in enumerate(zip(dists, image, strict=True)):
                patches[i][b], scores[i][b] = d.reshape(self.grid).astype(np.float32), float(v)
        amaps = upsample_maps([self._fused_grid(p) for p in patches], shapes,
                              self.config["sigma"], dev)
        return [(self._fused_score(a, sc, s, f, None), a)
                for a, sc, s, f in zip(amaps, scores, items, fores, strict=True)]

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
                "z_image": self.z_image.tolist(), "z_patch": self.z_patch.tolist(),
                "history": self.history, **self._networks_record()}

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:
        from pcad.memory import MemoryBank

        for b in self.BANKS:
            path = folder / f"bank_{b}.npz"
            if not path.is_file():
                raise InvalidInputError(f"{folder}: incomplete {self.name} run (no {path.name})")
            self.banks[b] = MemoryBank.load(path, device=self.device)
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
        for key in ("z_image", "z_patch"):
            z = state.get(key)
            if z is None:
                needed = self.config["fusion" if key == "z_image" else "map_fusion"]
                if needed in Z_FUSIONS:
                    raise FileFormatError(f"{source}: 'state.{key}' missing, needed by "
                                          f"{needed!r} fusion")
                continue  # a run saved before the LOO-normalised fusions existed
            setattr(self, key, read_loo_stats(z, self.BANKS, key, source))
        self.history = [float(x) for x in state.get("history", [])]
        self._load_networks(folder, state)

    def _save_networks(self, folder: Path) -> None:  # pragma: no cover
        raise NotImplementedError

    def _networks_record(self) -> dict[str, Any]:
        return {}

    def _load_networks(self, folder: Path, state: dict[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError
