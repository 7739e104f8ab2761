"""``cfm``: Crossmodal Feature Mapping (Costanzino et al., CVPR 2024), on pcad's patch features.

CFM has no memory bank. Two small MLPs learn, on the good training samples only, to predict one
modality's patch feature from the other's:

- ``f_2d3d``: RGB feature -> point feature;
- ``f_3d2d``: point feature -> RGB feature.

On a good part each prediction agrees with the observed feature; on a defect the two modalities
stop being consistent and the predictions miss. The patch score is the product of the two
discrepancies, so a patch must look wrong *in both directions* to score high.

What pcad does (and where it departs from the paper):

- **Features, per patch** of a ``(image_size / 8)`` square grid (28 x 28 at 224), from
  :class:`~pcad.detectors.patches.MultimodalFeatures` (shared with ``m3dm`` and ``lsfa``):
  RGB = ``rgb_backbone`` (default ``effnet-lite0``, 152 channels, stride 8; ``dino-vitb8`` with
  ``weights=PATH`` is CFM's DINO ViT-B/8); points = ``point_backbone``: ``"fpfh"`` (default),
  FPFH averaged per patch with the background plane removed
  (:func:`~pcad.detectors.patches.fpfh_patches`, 33 channels; each point's histogram over at
  most ``fpfh_neighbours`` neighbours, below), or ``"pointmae"``, CFM's
  Point-MAE (the small checkpoint shipped with pcad, or the official one as ``point_weights``;
  group features interpolated to every measured pixel and pooled per patch). FPFH is the
  default because on pcad's generated data the shipped Point-MAE was both slower and less
  accurate (README, Measured). The mapping works on the patch grid rather than per pixel.
- **Foreground**: the patches with at least one measured, non-background point
  (:func:`~pcad.detectors.patches.foreground_patches`: :func:`pcad.features.point_mask` of the
  resized cloud, pooled with ``to_patch_grid`` coverage > 0; computed once per sample with the
  FPFH features and the image score, :class:`~pcad.detectors.patches.SampleForeground`).
  Training uses foreground patches only; the map is 0 elsewhere (CFM zeroes the
  pixels without a point).
- **Standardisation** (pcad's): each modality is standardised per channel with the mean / std
  of the training foreground patches before the MLPs (FPFH histograms and backbone activations
  have very different scales); the statistics are saved with the run.
- **MLPs**: Linear-GELU-Linear-GELU-Linear as CFM. CFM's hidden width is ``(in + out) // 2``
  (960 for 768 <-> 1152); with pcad's much smaller features (152 <-> 33) that rule gives 92,
  narrower than the RGB side, so pcad's default (``hidden=None``) is twice the larger feature
  dimension (304 with effnet-lite0); an int sets it.
- **Training**: loss ``1 - cos(pred, target)`` per direction (summed), Adam (``lr`` 1e-3),
  ``epochs`` passes over the shuffled foreground patches in batches of ``batch_size`` patches
  (CFM: batches of 4 whole images, 50-250 epochs). Initialisation and shuffling are seeded
  (``seed``), so a fit is reproducible on one device. The mean loss of each epoch is kept in
  :attr:`CFMDetector.history`. Under ``torchrun`` the fit is data-parallel
  (:mod:`pcad.distributed`): features of each rank's block of samples are gathered in order,
  each global batch is split over the ranks with DDP averaging the gradients, and the result
  matches a one-process fit to float rounding.
- **Map**: per patch ``||n(f_2d3d(rgb)) - n(pts)||_2 * ||n(f_3d2d(pts)) - n(rgb)||_2`` with
  ``n`` the L2 normalisation, exactly CFM's fusion. For unit vectors ``||a - b||_2 =
  sqrt(2 (1 - cos))``, so this equals ``2 sqrt(d_3d * d_2d)`` with ``d = 1 - cos``: a monotone
  function of the product of the cosine discrepancies. Both factors are >= 0, so the score is
  non-decreasing in each direction's discrepancy (no weights that could invert;
  ``tests/test_monotone_fusion.py`` checks that a stronger bump never scores lower). The grid is
  upsampled to the sample's size and blurred (:func:`~pcad.detectors.base.upsample_map`, ``sigma``
  4 at 224; CFM approximates a Gaussian with repeated box filters).
- **Image score** (``image_score``): ``"foreground-max"`` (default), the map's maximum over the
  part as pcad's other xyz detectors (:func:`~pcad.detectors.patches.foreground_max`);
  ``"foreground-mean"``, the map's mean over the part
  (:func:`~pcad.detectors.patches.foreground_mean`, below);
  ``"max"``, the map's maximum.

**Default changed: ``fpfh_neighbours=200``** (before: BTF's 100), as ``btf``, ``m3dm`` and
``lsfa`` (:mod:`pcad.detectors.btf` says why). Chosen on the built-in parts (gear, plate,
bracket, potato; 20 training samples, 8 good and 4 of each default defect type, 224 px;
dataset seeds 0, 1, 2; 12 runs): I-AUROC 0.600 -> 0.662 (8 runs better, 4 worse; paired
differences from -0.21 to +0.45: cfm's image score is unstable from run to run), AUPRO@0.3
unchanged within 0.01. Checked on the real meshes afterwards (seed 0): 0.820 -> 0.841,
AUPRO@0.3 0.896 -> 0.902 (5 meshes better, 2 worse). Runs saved before the option existed load
with 100.

Measured, not the default: on the built-in flat plate cfm's image score inverts (I-AUROC
0.31-0.49 on the three seeds) while its map localizes (P-AUROC 0.95): the maximum lands on the
part's noisy background of cross-modal error, not on the defect (a defect raises the error
over much of the part: EfficientNet's stride-16 block sees far), whereas the *mean* of the map
over the part rises on defective samples. ``image_score="foreground-mean"`` scores that mean:
on the 12 built-in runs 0.784 against the maximum's 0.662 (8 runs better, 4 worse; plate
0.79-0.91, the other parts +0.01 on average), but on the real meshes (seed 0, checked
afterwards) 0.806 against 0.841 (cycloidal 0.86 -> 0.69, torus 0.97 -> 0.89; holes 0.88 ->
0.78): the gain is the flat plate's, so the maximum stays the default. ``pcad export`` does
not export the mean yet (a one-line error).

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("cfm", image_size=64, epochs=5)
    >>> det.modalities
    ('rgb', 'xyz')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_int, check_positive
from pcad.detectors.base import (
    RUN_FILE,
    Detector,
    check_run_stats,
    load_run_module,
    read_run_file,
    run_dims,
    upsample_map,
    upsample_maps,
)
from pcad.detectors.patches import (
    FPFHOption,
    GridDeviceMixin,
    MultimodalFeatures,
    SampleForeground,
    check_device,
    check_image_size,
    check_sigma,
    foreground_max,
    foreground_mean,
    host_workers,
    prepare_foregrounds,
)
from pcad.detectors.registry import register_detector
from pcad.errors import InvalidInputError

STATE_FILE = "cfm.pt"


def mapping_mlp(d_in: int, d_out: int, hidden: int) -> nn.Sequential:
    """CFM's feature-mapping network: Linear-GELU-Linear-GELU-Linear."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                         nn.GELU(), nn.Linear(hidden, d_out))


class _MappingPair(nn.Module):
    """Both mapping MLPs as one module (one DistributedDataParallel wrapper for the pair):
    ``(rgb, pts) -> (f_2d3d(rgb), f_3d2d(pts))``."""

    def __init__(self, f_2d3d: nn.Module, f_3d2d: nn.Module) -> None:
        super().__init__()
        self.f_2d3d, self.f_3d2d = f_2d3d, f_3d2d

    def forward(self, rgb: torch.Tensor, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.f_2d3d(rgb), self.f_3d2d(pts)


@register_detector("cfm")
class CFMDetector(FPFHOption, GridDeviceMixin, Detector):
    """Crossmodal Feature Mapping on RGB backbone + FPFH patch features (see the module)."""

    modalities = ("rgb", "xyz")
    #: trains under torchrun (pcad.distributed): sharded features, data-parallel MLP steps
    supports_distributed = True
    defaults = {"image_size": 224, "epochs": 40, "lr": 1e-3, "batch_size": 256, "hidden": None,
                "seed": 0, "sigma": 4.0, "image_score": "foreground-max",
                "rgb_backbone": "effnet-lite0", "weights": None, "point_backbone": "fpfh",
                "point_weights": None, "num_group": None, "group_size": None, "device": "auto",
                **FPFHOption.FPFH_DEFAULTS}
    SCORES = ("foreground-max", "foreground-mean", "max")
    option_help: ClassVar[dict[str, str]] = {
        "hidden": "hidden width of the two mapping MLPs; null: twice the larger feature width",
        "batch_size": "training batch size in patches",
        "image_score": "foreground-max (map maximum over the part), foreground-mean (map mean "
                       "over the part) or max (whole map)",
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        size = check_image_size(c["image_size"])
        c["image_size"] = size
        c["epochs"] = check_int(c["epochs"], "epochs", minimum=1)
        c["batch_size"] = check_int(c["batch_size"], "batch_size", minimum=1)
        c["lr"] = check_positive(c["lr"], "lr")
        c["sigma"] = check_sigma(c["sigma"])
        c["seed"] = check_int(c["seed"], "seed", minimum=0)
        if c["hidden"] is not None:
            c["hidden"] = check_int(c["hidden"], "hidden", minimum=1)
        if c["image_score"] not in self.SCORES:
            raise InvalidInputError(f"image_score: expected one of {self.SCORES}, got "
                                    f"{c['image_score']!r}")
        c["device"] = check_device(c["device"])
        self.check_fpfh_option()
        self._features = MultimodalFeatures(
            "cfm", size, c["rgb_backbone"], c["weights"], c["point_backbone"],
            c["point_weights"], c["num_group"], c["group_size"], device="cpu",  # see below
            fpfh_neighbours=c["fpfh_neighbours"])
        self.f_2d3d: nn.Sequential | None = None
        self.f_3d2d: nn.Sequential | None = None
        self.stats: dict[str, torch.Tensor] = {}
        self.history: list[float] = []

    # --- features -------------------------------------------------------------------------

    def patch_features(self, sample: Any, foreground: SampleForeground | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rgb (n, C_rgb), points (n, C_pts), foreground (n,) bool)`` over the ``n = h * w``
        patches (with ``"fpfh"`` a sample without foreground gives zeros and no foreground
        patch; ``"pointmae"`` refuses it). ``foreground``: the sample's
        :class:`~pcad.detectors.patches.SampleForeground`, or None."""
        self._features.device = self.device  # resolved on use: a run loads anywhere
        rgb = self._features.rgb(sample.rgb)
        pts, fg = self._features.points(sample.xyz, foreground)
        if rgb.shape[0] != pts.shape[0]:  # pragma: no cover - both use the stride-8 grid
            raise InvalidInputError(f"cfm: {rgb.shape[0]} RGB patches but {pts.shape[0]} point "
                                    "patches")
        return rgb, pts, fg

    def _standardise(self, x: np.ndarray, m: str) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        return (t - self.stats[f"{m}_mean"].to(self.device)) / self.stats[f"{m}_std"].to(
            self.device)

    # --- fit / predict --------------------------------------------------------------------

    def fit(self, samples, progress: bool = False) -> CFMDetector:
        from tqdm import tqdm

        from pcad import distributed as dist

        items = self._train_list(samples)
        # under torchrun: this rank's contiguous block, gathered in the single-process order
        mine = dist.shard(items)
        rgbs, ptss = [], []
        for s in tqdm(mine, disable=not progress, desc="cfm features", unit="sample"):
            rgb, pts, fg = self.patch_features(s)
            rgbs.append(rgb[fg])
            ptss.append(pts[fg])
        if not mine:  # more ranks than samples: an empty block of the right width
            rgb, pts, _ = self.patch_features(items[0])
            rgbs, ptss = [rgb[:0]], [pts[:0]]
        rgb_all = dist.all_gather_arrays(np.concatenate(rgbs))
        pts_all = dist.all_gather_arrays(np.concatenate(ptss))
        return self.fit_features(rgb_all, pts_all, progress=progress)

    def fit_features(self, rgb_all: np.ndarray, pts_all: np.ndarray,
                     progress: bool = False) -> CFMDetector:
        """Fit the standardisation and the two MLPs on paired foreground patch features
        ``(n, C_rgb)`` and ``(n, C_pts)`` (what :meth:`fit` does after feature extraction)."""
        from pcad import distributed as dist

        if len(rgb_all) != len(pts_all):
            raise InvalidInputError(f"detector 'cfm': {len(rgb_all)} RGB but {len(pts_all)} "
                                    "point patch features (they must be paired)")
        if len(rgb_all) < 2:
            raise InvalidInputError(f"detector 'cfm': the training set has {len(rgb_all)} "
                                    "foreground patch(es) (patches with measured points off the "
                                    "background plane); at least 2 are needed")
        self.stats = {}
        for m, x in (("rgb", rgb_all), ("xyz", pts_all)):
            t = torch.from_numpy(x.astype(np.float64))
            self.stats[f"{m}_mean"] = t.mean(0).float()
            self.stats[f"{m}_std"] = t.std(0).clamp_min(1e-6).float()
        rgb_t, pts_t = self._standardise(rgb_all, "rgb"), self._standardise(pts_all, "xyz")

        c = self.config
        d_rgb, d_pts = rgb_t.shape[1], pts_t.shape[1]
        hidden = c["hidden"] or 2 * max(d_rgb, d_pts)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            self.f_2d3d = mapping_mlp(d_rgb, d_pts, hidden)
            self.f_3d2d = mapping_mlp(d_pts, d_rgb, hidden)
        self.f_2d3d.to(self.device)
        self.f_3d2d.to(self.device)
        params = [*self.f_2d3d.parameters(), *self.f_3d2d.parameters()]
        opt = torch.optim.Adam(params, lr=c["lr"])
        gen = torch.Generator().manual_seed(c["seed"])
        n, bs = len(rgb_t), c["batch_size"]
        # data-parallel under torchrun (pcad.distributed, rule 3): every rank draws the same
        # global batches; each takes its batch_slice, and its loss is the slice's summed
        # per-patch loss times world / batch, so DDP's gradient average is the gradient of the
        # mean loss over the whole batch (short last batch included). One process: the mean.
        world = dist.get_context().world_size
        model = dist.wrap_module(_MappingPair(self.f_2d3d, self.f_3d2d))
        from pcad.detectors.training import EpochLoop

        loop = EpochLoop("cfm training", c["epochs"], {"f_2d3d": self.f_2d3d,
                         "f_3d2d": self.f_3d2d, "optimizer": opt, "generator": gen},
                         progress=progress, identity={"n_items": n, "batch_size": bs})
        for epoch in loop:
            order = torch.randperm(n, generator=gen).to(self.device)
            total = 0.0
            for i in range(0, n, bs):
                idx = order[i:i + bs]
                if world == 1:
                    r, p = rgb_t[idx], pts_t[idx]
                    loss = ((1 - F.cosine_similarity(self.f_2d3d(r), p, dim=1)).mean()
                            + (1 - F.cosine_similarity(self.f_3d2d(p), r, dim=1)).mean())
                    local = float(loss.detach()) * len(idx)
                else:
                    part = dist.batch_slice(idx)
                    r, p = rgb_t[part], pts_t[part]
                    pred_p, pred_r = model(r, p)
                    per = ((1 - F.cosine_similarity(pred_p, p, dim=1))
                           + (1 - F.cosine_similarity(pred_r, r, dim=1)))
                    loss = per.sum() * dist.slice_loss_scale(len(idx))
                    local = float(per.detach().sum())
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += local
            loop.end_epoch(dist.all_reduce_mean(total) * world / n,
                           steps=(epoch + 1) * math.ceil(n / bs), lr=c["lr"])
        self.history = loop.history
        self.f_2d3d.eval()
        self.f_3d2d.eval()
        self.fitted = True
        return self

    def patch_scores(self, sample: Any, foreground: SampleForeground | None = None
                     ) -> np.ndarray:
        """``(h, w) float32`` CFM scores of the patches (0 off the part)."""
        return self.score_features(*self.patch_features(sample, foreground))

    def score_features(self, rgb: np.ndarray, pts: np.ndarray, fg: np.ndarray,
                       grid: tuple[int, int] | None = None) -> np.ndarray:
        """``(h, w) float32`` patch scores from :meth:`patch_features` output (``grid``: the
        output shape, default :attr:`grid`; ``(m, 1)`` scores ``m`` stacked patches)."""
        self._require_fit()
        self.check_width(rgb.shape[1], self.f_2d3d[0].in_features,
                         f"its RGB network ({STATE_FILE})")
        self.check_width(pts.shape[1], self.f_3d2d[0].in_features,
                         f"its point network ({STATE_FILE})")
        r, p = self._standardise(rgb, "rgb"), self._standardise(pts, "xyz")
        with torch.no_grad():
            d_3d = (F.normalize(self.f_2d3d(r), dim=1) - F.normalize(p, dim=1)).norm(dim=1)
            d_2d = (F.normalize(self.f_3d2d(p), dim=1) - F.normalize(r, dim=1)).norm(dim=1)
        scores = (d_3d * d_2d).cpu().numpy().astype(np.float32)
        scores[~fg] = 0.0
        return scores.reshape(grid or self.grid)

    def predict(self, sample: Any) -> tuple[float, np.ndarray]:
        self._require_fit()
        self.check_sample(sample, "test sample")
        # one foreground for the point features and the image score
        fore = SampleForeground(sample.xyz, self.config["image_size"])
        amap = upsample_map(self.patch_scores(sample, fore), sample.shape, self.config["sigma"])
        return self._image_score(amap, sample, fore), amap

    def _image_score(self, amap: np.ndarray, sample: Any, fore: SampleForeground) -> float:
        how = self.config["image_score"]
        if how == "max":
            return float(amap.max())
        reduce = foreground_max if how == "foreground-max" else foreground_mean
        return reduce(amap, sample.xyz, foreground=fore)

    def predict_batch(self, samples: Sequence[Any]) -> list[tuple[float, np.ndarray]]:
        """``[predict(s) for s in samples]`` with the work batched: the RGB backbone sees the
        batch at once (the point features are per sample), on CUDA the two MLPs score every
        patch of the batch in one call, and the maps are upsampled and blurred together on the
        device (:func:`~pcad.detectors.base.upsample_maps`). On the CPU the results equal
        :meth:`predict`'s bitwise (the MLPs run per sample there: a batched matrix product
        may round differently); on CUDA the blur is float32 on the device (about 1e-6
        relative to scipy's)."""
        items = self.batch_items(samples)
        if not items:
            return []
        dev, size = self.device, self.config["image_size"]
        fores = [SampleForeground(s.xyz, size) for s in items]
        # the background-plane fits of the batch on the device on CUDA (serial on the CPU)
        prepare_foregrounds(fores, host_workers(dev, len(items)),
                            part=self.config["image_score"] != "max", device=dev)
        self._features.device = dev
        rgbs = self._features.rgb_batch([s.rgb for s in items])
        points = self._features.points_batch([s.xyz for s in items], fores)
        for rgb, (pts, _) in zip(rgbs, points, strict=True):
            if rgb.shape[0] != pts.shape[0]:  # pragma: no cover - both use the stride-8 grid
                raise InvalidInputError(f"cfm: {rgb.shape[0]} RGB patches but {pts.shape[0]} "
                                        "point patches")
        if dev.type == "cuda":  # one call for the batch: the patches stacked
            n = rgbs.shape[1]
            flat = self.score_features(
                rgbs.reshape(-1, rgbs.shape[-1]), np.concatenate([p for p, _ in points]),
                np.concatenate([np.asarray(f, bool).reshape(-1) for _, f in points]),
                grid=(len(items) * n, 1))
            grids = list(flat.reshape(len(items), *self.grid))
        else:
            grids = [self.score_features(r, p, f) for r, (p, f) in zip(rgbs, points,
                                                                        strict=True)]
        amaps = upsample_maps(grids, [s.shape for s in items], self.config["sigma"], dev)
        return [(self._image_score(a, s, f), a)
                for a, s, f in zip(amaps, items, fores, strict=True)]

    # --- persistence ----------------------------------------------------------------------

    def _save_state(self, folder: Path) -> None:
        from pcad.io import atomic_save

        state = {"f_2d3d": {k: v.cpu() for k, v in self.f_2d3d.state_dict().items()},
                 "f_3d2d": {k: v.cpu() for k, v in self.f_3d2d.state_dict().items()},
                 "stats": {k: v.cpu() for k, v in self.stats.items()}}
        atomic_save(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))

    def _state_record(self) -> dict[str, Any]:
        return {"rgb_dim": self.f_2d3d[0].in_features, "xyz_dim": self.f_3d2d[0].in_features,
                "hidden": self.f_2d3d[0].out_features, "history": self.history}

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:
        path = folder / STATE_FILE
        d_rgb, d_pts, hidden = run_dims(state, ("rgb_dim", "xyz_dim", "hidden"),
                                        str(folder / RUN_FILE))
        saved = read_run_file(folder, STATE_FILE, "cfm", ("f_2d3d", "f_3d2d", "stats"))
        self.f_2d3d = load_run_module(lambda: mapping_mlp(d_rgb, d_pts, hidden),
                                      saved["f_2d3d"], f"{path} ['f_2d3d']")
        self.f_3d2d = load_run_module(lambda: mapping_mlp(d_pts, d_rgb, hidden),
                                      saved["f_3d2d"], f"{path} ['f_3d2d']")
        self.f_2d3d.to(self.device).eval()
        self.f_3d2d.to(self.device).eval()
        self.stats = check_run_stats(saved["stats"], {"rgb_mean": d_rgb, "rgb_std": d_rgb,
                                                      "xyz_mean": d_pts, "xyz_std": d_pts},
                                     str(path))
        self.history = [float(x) for x in state.get("history", [])]
