"""``pbas``: Progressive Boundary-guided Anomaly Synthesis (PBAS), feature-level anomaly
synthesis without auxiliary textures, on pcad's frozen patch features.

PBAS adapts frozen patch features with a small adaptor, makes the adapted normal features
compact around a centre (Approximate Boundary Learning), synthesizes anomalous features
outside the hypersphere of the normal ones, directed by it and at several distances (Anomaly
Feature Synthesis), and trains a binary discriminator between normal and synthesized features
that refines the boundary (Refined Boundary Optimization). At inference a patch costs one
adaptor and one discriminator pass: no memory bank, no nearest-neighbour search.

What pcad does (and where it departs from the paper):

- **Frozen patch features**, one per patch of the ``image_size / 8`` square grid, from
  :class:`~pcad.detectors.patches.MultimodalFeatures`, computed once per training sample and
  standardised per channel with the training patches' mean / std (saved with the run; the
  std floored at ``std_floor`` = 0.1 x the median channel std, :func:`channel_stats`, as the
  reconstruction detectors do: most FPFH bins are (near) constant on a smooth part, and an
  unfloored std turned their tiny test-time changes into large inputs. Measured with
  ``std_floor`` 0 vs 0.1 on the built-in gear, plate, bracket and potato, seeds 0 and 1
  (20 training, 8 good + 24 defective test samples, 224 px): I-AUROC 0.766 vs 0.771, AUPRO@0.3
  0.867 vs 0.871, a tie; checked on the eight shared meshes (seed 0) afterwards: 0.698 vs
  0.749, higher on six of them).
  ``modality``: ``"auto"`` (default) is ``"both"`` when every training sample has a cloud,
  else ``"rgb"``; ``"rgb"`` the RGB backbone's patch features; ``"xyz"`` the point features
  (``point_backbone`` ``fpfh`` or ``pointmae``); ``"both"`` the two concatenated per patch.
  With point features only the patches on the part train and score (0 elsewhere).
- **Adaptor** (the paper's feature adaptor): ``Linear(C, hidden) - LeakyReLU -
  Linear(hidden, dim)``.
- **Approximate Boundary Learning**: the centre ``c`` is the mean of the adapted normal
  features of the freshly initialised adaptor (the paper's feature alignment for the
  centre's initialisation) and stays fixed; the radius ``r`` is the ``radius_quantile`` of
  their distances to ``c`` (pcad's choice: the adaptor's output scale is arbitrary, so the
  radius is measured rather than set). The centre constraint is the hinge
  ``mean(relu(|a - c| - r)^2) / r^2``, weight ``center_weight``: it pulls adapted normal
  features inside the hypersphere (no collapse onto ``c``: features already inside are left
  alone).
- **Anomaly Feature Synthesis**: each adapted normal feature ``a`` of a batch gives one
  synthetic feature ``c + u * (max(|a - c|, r) + r * s * (1 + U))``: ``u`` is the direction
  away from the centre, ``(a - c) / |a - c|`` plus Gaussian jitter of relative size
  ``direction_jitter`` (renormalised), ``s`` one of ``n_scales`` scales
  ``min_scale * 2^k`` drawn uniformly per feature, ``U ~ U(0, 1)``. The paper's progressive
  schedule of the synthesis distance is replaced by these fixed scales.
- **Refined Boundary Optimization**: an MLP discriminator ``Linear(dim, hidden) -
  LeakyReLU - Linear(hidden, 1)`` (an anomaly logit) trained jointly with the adaptor by
  binary cross-entropy, normal 0 and synthetic 1; the synthetic features are made from the
  adapted ones without gradient (the adaptor learns from the normal term and the centre
  constraint). Loss = BCE(normal) + BCE(synthetic) + ``center_weight`` x centre constraint.
- **Training**: :func:`~pcad.detectors.training.run_training` in batches of ``batch_size``
  training images (all their patches; AdamW, warm-up + cosine; live loss, ``train_log.csv``
  and ``--resume`` through :class:`~pcad.detectors.training.EpochLoop`; the synthesis
  generator is in the checkpoint). Initialisation, shuffling and synthesis are seeded: the
  same seed gives the same weights and scores on one device.
- **Map**: ``softplus(logit) = -log(1 - p)`` per patch (monotone in the discriminator's
  anomaly probability ``p`` and not saturating at 1), upsampled and blurred as the other
  detectors (:func:`~pcad.detectors.base.upsample_map`, ``sigma`` 4 at 224).
- **Calibration** (``calibration``, pcad's, not in the paper;
  :mod:`~pcad.detectors.error_calibration`, as vitad's family, prototypes-ot and hetnet): with
  ``"nearest"`` (default) each patch's score is divided by the score of the nearest
  standardised training patch (a training patch the discriminator finds odd, a hole's rim,
  makes similar test patches count less); ``"none"`` keeps the discriminator's output (runs
  saved before the option load with it). The references are a greedy coreset of
  ``calibration_size`` = 512 training patches, each with the mean score of the training
  patches nearest to it: with every patch (about 8000 at 224 px) the search made pbas's head
  1.05x that of fader (with its 14 x 14 tokens then), no longer the fastest
  (``benchmarks/bench_heads.py``). Measured on the built-in gear, plate, bracket and potato,
  dataset seeds 0-2 (20 training, 8 good + 24 defective test samples, 224 px): I-AUROC
  0.799 (none) -> 0.819 (every training patch) -> 0.826 (512; 9 runs better than none, 2
  worse), AUPRO@0.3 0.873 -> 0.866 -> 0.867, P-AUROC 0.971 all three.
- **Image score** (``image_score``): ``"foreground-max"`` (default), the map's maximum over
  the part when the sample has a cloud (the whole map for an RGB-only sample); ``"max"``.
- **torchrun**: not supported (``supports_distributed`` False): training is seconds.

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("pbas", image_size=64, modality="both")
    >>> det.modalities, det.grid, det.scales
    (('rgb', 'xyz'), (8, 8), (0.5, 1.0, 2.0))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_fraction, check_int, check_positive
from pcad.detectors.base import (
    RUN_FILE,
    Detector,
    check_run_stats,
    load_run_module,
    read_run_file,
    run_dims,
)
from pcad.detectors.error_calibration import (
    CalibrationOption,
    patch_groups,
    sample_category,
)
from pcad.detectors.patches import (
    GridDeviceMixin,
    SampleForeground,
)
from pcad.detectors.registry import register_detector
from pcad.detectors.tokens import (
    FPFH_DEFAULTS,
    IMAGE_SCORE_HELP,
    STD_FLOOR,
    ModalityPatchesMixin,
    channel_stats,
    patch_grid,
    standardise,
)
from pcad.errors import InvalidInputError

STATE_FILE = "pbas.pt"
#: the largest adaptor / discriminator width (an edited run could otherwise ask for gigabytes)
MAX_WIDTH = 8192


class PBASNet(nn.Module):
    """Adaptor + discriminator, with the fixed hypersphere (``center (dim,)``, ``radius ()``
    buffers).

    ``adapt``: ``(m, C)`` features to ``(m, dim)``; ``forward``: ``(m, C)`` to ``(m,)`` anomaly
    logits; ``synthesize``: anomalous features outside the hypersphere.

    Example:
        >>> import torch
        >>> net = PBASNet(6, hidden=8, dim=4)
        >>> net.init_sphere(torch.randn(10, 6), 0.9)
        >>> net(torch.randn(3, 6)).shape, net.center.shape
        (torch.Size([3]), torch.Size([4]))
        >>> a = net.adapt(torch.randn(5, 6)).detach()
        >>> s = net.synthesize(a, (0.5, 1.0), 0.1, torch.Generator().manual_seed(0))
        >>> bool(((s - net.center).norm(dim=1) > net.radius).all())
        True
    """

    def __init__(self, width: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.adaptor = nn.Sequential(nn.Linear(width, hidden), nn.LeakyReLU(0.2),
                                     nn.Linear(hidden, dim))
        self.discriminator = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2),
                                           nn.Linear(hidden, 1))
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("radius", torch.ones(()))

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return self.adaptor(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(self.adaptor(x))[:, 0]

    @torch.no_grad()
    def init_sphere(self, x: torch.Tensor, quantile: float) -> None:
        """Centre = mean of the adapted ``(m, C)`` normal features; radius = the ``quantile``
        of their distances to it (feature alignment of the centre's initialisation)."""
        a = self.adapt(x).double()
        center = a.mean(0)
        dist = (a - center).norm(dim=1)
        self.center.copy_(center.float())
        self.radius.copy_(torch.quantile(dist, quantile).clamp_min(1e-6).float())

    def center_loss(self, a: torch.Tensor) -> torch.Tensor:
        """The centre constraint: ``mean(relu(|a - c| - r)^2) / r^2``."""
        r = self.radius
        return (F.relu((a - self.center).norm(dim=1) - r) ** 2).mean() / (r * r)

    @torch.no_grad()
    def synthesize(self, a: torch.Tensor, scales: tuple[float, ...], jitter: float,
                   gen: torch.Generator) -> torch.Tensor:
        """``(m, dim)`` anomalous features from adapted normal ones ``a (m, dim)``: pushed
        along their direction away from the centre (with relative Gaussian ``jitter``) to a
        distance ``max(|a - c|, r) + r * s * (1 + U(0, 1))``, ``s`` drawn from ``scales``."""
        m = a.shape[0]
        d = a - self.center
        norm = d.norm(dim=1, keepdim=True)
        u = d / norm.clamp_min(1e-12)
        noise = torch.randn(a.shape, generator=gen).to(a.device)
        u = F.normalize(u + jitter * noise / max(a.shape[1], 1) ** 0.5, dim=1)
        pick = torch.randint(len(scales), (m,), generator=gen)
        s = torch.tensor(scales, dtype=a.dtype)[pick].to(a.device)
        extra = self.radius * s * (1.0 + torch.rand(m, generator=gen).to(a.device))
        dist = norm[:, 0].clamp_min(self.radius) + extra
        return self.center + u * dist[:, None]


@register_detector("pbas")
class PBASDetector(CalibrationOption, ModalityPatchesMixin, GridDeviceMixin, Detector):
    """PBAS: adaptor + hypersphere + synthesized anomalies + discriminator (see the module)."""

    modalities = ("rgb",)
    #: no torchrun: training takes seconds (see the module)
    supports_distributed = False
    defaults = {"image_size": 224, "modality": "auto", "hidden": 256, "dim": 128,
                "epochs": 60, "lr": 3e-3, "batch_size": 2, "weight_decay": 1e-4,
                "warmup_epochs": 1, "center_weight": 1.0, "radius_quantile": 0.9,
                "n_scales": 3, "min_scale": 0.5, "direction_jitter": 0.5, "seed": 0,
                "sigma": 4.0, "image_score": "foreground-max", "rgb_backbone": "effnet-lite0",
                "weights": None, "point_backbone": "fpfh", "point_weights": None,
                "num_group": None, "group_size": None, "device": "auto", **FPFH_DEFAULTS,
                **CalibrationOption.CALIBRATION_DEFAULTS, "calibration_size": 512}
    SCORES = ("foreground-max", "max")
    #: runs saved before the calibration existed score raw discriminator outputs
    legacy_options: ClassVar[dict[str, Any]] = {**ModalityPatchesMixin.legacy_options,
                                                **CalibrationOption.CALIBRATION_LEGACY}
    #: the standardisation's std floor, x the median channel std (:func:`channel_stats`)
    std_floor: ClassVar[float] = STD_FLOOR
    option_help: ClassVar[dict[str, str]] = {
        "modality": "patch features: rgb (backbone patches), xyz (point patches), both "
                    "(concatenated per patch) or auto (both when the training samples have "
                    "clouds, else rgb)",
        "hidden": "hidden width of the adaptor and of the discriminator MLPs",
        "dim": "width of the adapted features (the hypersphere's space)",
        "batch_size": "training batch size in images (all their patches)",
        "center_weight": "weight of the centre constraint (Approximate Boundary Learning)",
        "radius_quantile": "hypersphere radius: this quantile of the initial adapted normal "
                           "features' distances to the centre",
        "n_scales": "synthesis scales min_scale * 2^k, k < n_scales (distances beyond the "
                    "radius, in radii)",
        "min_scale": "smallest synthesis scale, in radii beyond the radius",
        "direction_jitter": "relative Gaussian jitter of the synthesis direction (0: straight "
                            "away from the centre)",
        "image_score": IMAGE_SCORE_HELP,
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        self.check_modality_options()
        c["hidden"] = check_int(c["hidden"], "hidden", minimum=1, maximum=MAX_WIDTH)
        c["dim"] = check_int(c["dim"], "dim", minimum=1, maximum=MAX_WIDTH)
        self.check_training_options()
        c["center_weight"] = check_positive(c["center_weight"], "center_weight",
                                            allow_zero=True)
        c["radius_quantile"] = check_fraction(c["radius_quantile"], "radius_quantile",
                                              inclusive_zero=False)
        c["n_scales"] = check_int(c["n_scales"], "n_scales", minimum=1, maximum=8)
        c["min_scale"] = check_positive(c["min_scale"], "min_scale")
        if c["min_scale"] > 16:
            raise InvalidInputError(f"min_scale: must be <= 16 radii, got {c['min_scale']:g}")
        c["direction_jitter"] = check_positive(c["direction_jitter"], "direction_jitter",
                                               allow_zero=True)
        self.check_calibration()
        self.net: PBASNet | None = None
        self.stats: dict[str, torch.Tensor] = {}
        self.history: list[float] = []

    @property
    def scales(self) -> tuple[float, ...]:
        """The synthesis scales, in radii beyond the radius: ``min_scale * 2^k``."""
        return tuple(self.config["min_scale"] * 2.0 ** k for k in range(self.config["n_scales"]))

    # --- features -------------------------------------------------------------------------

    def patches(self, sample: Any, foreground: SampleForeground | None = None,
                where: str = "test sample") -> tuple[np.ndarray, np.ndarray | None]:
        """``(features (n, C) float32, fg (n,) bool or None)`` of ``sample`` on the patch grid
        for ``modality`` (:meth:`~pcad.detectors.tokens.ModalityPatchesMixin.
        modality_features`)."""
        return self.modality_features(sample, foreground, where)

    def _standardise(self, x: np.ndarray) -> torch.Tensor:
        return standardise(x, self.stats["mean"], self.stats["std"], self.device)

    # --- fit / predict --------------------------------------------------------------------

    def fit(self, samples, progress: bool = False) -> PBASDetector:
        from tqdm import tqdm

        items = self._train_list(samples)
        self.resolve_modality(items)  # "auto" becomes what the data has
        rows = []
        for s in tqdm(items, disable=not progress, desc="pbas features", unit="sample"):
            feats, fg = self.patches(s, where="training set")
            rows.append(feats if fg is None else feats[fg])
        return self.fit_patches(rows, progress=progress,
                                categories=[sample_category(s) for s in items])

    def fit_patches(self, rows: list[np.ndarray], progress: bool = False,
                    categories: Sequence[str | None] | None = None) -> PBASDetector:
        """Fit the standardisation, the hypersphere, the adaptor and the discriminator on the
        normal patch features of each training image, ``(m_i, C)`` each (batches of
        ``batch_size`` images); with the images' ``categories`` (two or more), a test
        sample's calibration references are its own category's patches."""
        from pcad.detectors.training import run_training

        c = self.config
        if not rows or any(r.ndim != 2 or r.shape[1] != rows[0].shape[1] for r in rows) \
                or sum(len(r) for r in rows) < 2:
            raise InvalidInputError("detector 'pbas': expected (m_i, C) patch features per "
                                    "training image, two patches or more in all")
        feats = np.concatenate(rows)
        width = feats.shape[1]
        bounds = np.cumsum([0] + [len(r) for r in rows])
        mean, std = channel_stats(torch.from_numpy(feats), self.std_floor)
        self.stats = {"mean": mean, "std": std}
        x = self._standardise(feats)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            self.net = PBASNet(width, c["hidden"], c["dim"])
        self.net.to(self.device)
        self.net.init_sphere(x, c["radius_quantile"])
        gen = torch.Generator().manual_seed(c["seed"] + 1)
        scales, jitter = self.scales, c["direction_jitter"]
        cw = c["center_weight"]

        def step_loss(model: nn.Module, epoch: int, step: int,
                      idx: torch.Tensor) -> torch.Tensor:
            net = getattr(model, "module", model)
            pick = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in idx.tolist()])
            a = net.adapt(x[torch.from_numpy(pick).to(self.device)])
            fake = net.synthesize(a.detach(), scales, jitter, gen)
            logits = net.discriminator(torch.cat([a, fake]))[:, 0]
            target = torch.cat([torch.zeros(len(a)), torch.ones(len(fake))]).to(logits.device)
            return (2 * F.binary_cross_entropy_with_logits(logits, target)
                    + cw * net.center_loss(a))

        self.history = run_training(
            self.net, len(rows), step_loss, epochs=c["epochs"], batch_size=c["batch_size"],
            lr=c["lr"], weight_decay=c["weight_decay"], warmup_epochs=c["warmup_epochs"],
            seed=c["seed"], progress=progress, desc="pbas training",
            extra_state={"synthesis": gen})
        self.net.eval()
        if self.calibrating:
            with torch.no_grad():
                groups = None if categories is None else patch_groups(categories,
                                                                      np.diff(bounds))
                self.fit_error_calibration(x, F.softplus(self.net(x)), groups=groups)
        self.fitted = True
        return self

    def patch_scores(self, sample: Any, foreground: SampleForeground | None = None
                     ) -> np.ndarray:
        """``(h, w) float32`` on the patch grid: ``softplus`` of the discriminator's anomaly
        logit per patch (0 off the part with point features)."""
        self._require_fit()
        feats, fg = self.patches(sample, foreground)
        self.check_width(feats.shape[1], self.stats["mean"].numel(),
                         f"its networks ({STATE_FILE})")
        z = self._standardise(feats)
        with torch.no_grad():
            s = self.calibrate(z, F.softplus(self.net(z)), fg, sample_category(sample))
        return patch_grid(s, fg, self.grid)

    # --- persistence ----------------------------------------------------------------------

    def _save_state(self, folder: Path) -> None:
        from pcad.io import atomic_save

        state = {"net": {k: v.cpu() for k, v in self.net.state_dict().items()},
                 "stats": {k: v.cpu() for k, v in self.stats.items()},
                 **self.calibration_state()}
        atomic_save(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))

    def _state_record(self) -> dict[str, Any]:
        return {"width": int(self.stats["mean"].numel()), "history": self.history}

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:
        path = folder / STATE_FILE
        (width,) = run_dims(state, ("width",), str(folder / RUN_FILE))
        c = self.config
        saved = read_run_file(folder, STATE_FILE, "pbas", ("net", "stats"))
        self.net = load_run_module(lambda: PBASNet(width, c["hidden"], c["dim"]),
                                   saved["net"], f"{path} ['net']")
        self.net.to(self.device).eval()
        self.stats = check_run_stats(saved["stats"], {"mean": width, "std": width}, str(path))
        self.history = [float(x) for x in state.get("history", [])]
        self.load_calibration(saved, width, str(path))
