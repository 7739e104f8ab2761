"""``m3dm``: Multimodal Industrial Anomaly Detection via Hybrid Fusion (Wang et al., CVPR 2023).

M3DM keeps both backbones frozen and fuses the modalities twice:

1. **Unsupervised Feature Fusion (UFF)**, per patch: each modality goes through LayerNorm and a
   two-layer MLP (``Linear(C, 4C)`` - GELU - ``Linear(4C, C)``: two 1x1 projection layers, as
   M3DM's ``FeatureFusionBlock``), and the fused patch is ``concat(chi_pts, chi_rgb)``. The
   layers are trained with a patch-wise InfoNCE between the RGB part and the point part of
   co-located patches (heads ``Linear(C_rgb, 256)`` and ``Linear(C_pts, 256)``, discarded
   after training; ``q = rgb_head(chi_rgb)``, ``k = pts_head(chi_pts)``, temperature 1, CE
   times 2T, one direction, as M3DM's ``contrastive_loss``), on the foreground patches of
   each batch of training samples (:func:`~pcad.detectors.training.info_nce`).
2. **Three memory banks** (point, RGB, fused) and **decision-layer fusion** with linear
   one-class SVMs on the per-bank image scores and on the per-patch scores
   (:class:`~pcad.detectors.multimodal.MultiBankDetector`: scalar standardisation per bank,
   greedy coreset, PatchCore scoring, leave-one-out SVM fitting; read its docstring).

Options (besides the shared ones of :mod:`pcad.detectors.multimodal`: ``image_size``,
``rgb_backbone``, ``weights``, ``point_backbone``, ``point_weights``, ``num_group``,
``group_size``, ``fpfh_neighbours`` (200; see :mod:`pcad.detectors.multimodal` for the
measured change from 100), ``coreset_ratio``, ``bank_score`` (default ``"foreground-max"``; M3DM:
``"reweighted"``), ``fusion`` and ``map_fusion`` (default ``"zsum"``: leave-one-out-normalised
bank scores summed with equal non-negative weights, monotone in every bank's evidence, at least
3 training samples; M3DM's one-class SVMs are ``"ocsvm"``), ``svm_patches``, ``ocsvm_nu``,
``ocsvm_max_iter``, ``bank_weights`` (default ``{"xyz": 1, "rgb": 0.1, "fusion": 1}``, M3DM's
lambdas), ``image_score``, ``sigma``, ``n_reweight``, ``seed``, ``device``):

- ``epochs`` (3, M3DM's ``fusion_pretrain.py`` default), ``batch_size`` (16 samples, the
  README), ``lr`` (3e-3, the README's absolute lr), ``warmup_epochs`` (1), ``weight_decay``
  (0.01: M3DM calls ``AdamW(betas=(0.9, 0.95))`` without one, i.e. torch's default),
  ``mlp_ratio`` (4), ``head_dim`` (256).

What pcad does differently (every departure from the paper and the released code):

- Features: pcad's patch grid is ``image_size / 8`` for both modalities (28 x 28 at 224; M3DM
  keeps RGB at 28 x 28 but points, UFF and the fused bank at 56 x 56) and the default RGB
  backbone is EfficientNet-Lite0 (offline); ``rgb_backbone="dino-vitb8"`` with
  ``weights=PATH`` is M3DM's DINO ViT-B/8. Point-MAE patch features average over the
  foreground pixels of a patch (M3DM dilutes them with the zero background).
- UFF foreground: the patches with measured points on the part. M3DM's
  ``torch.all(xyz_feature != 0, dim=1)`` keeps only patches whose *every* channel is
  non-zero (right for Point-MAE features, but it drops nearly every patch of a sparse
  feature such as FPFH).
- Fused bank (``fused_balance``, default ``"norm"``): each modality's UFF output is divided by
  its mean norm over the training foreground patches before the concatenation, as ``btf``
  does with its two halves, so that neither part dominates the fused distance by its width
  and units alone (M3DM concatenates them as they are: ``"none"``). Measured on five built-in
  parts (gear, plate_holes, bracket, cookie, hex_nut; 16 training samples, 6 good and 36
  defective test samples, 224 px, the generalization benchmark's recipe), the fused bank's
  own image AUROC rose from 0.72 to 0.79 (seed 0) and 0.70 to 0.78 (seed 1), m3dm's I-AUROC
  from 0.817 to 0.841 (seed 0) and 0.778 to 0.819 (seed 1).
- UFF training: per category (M3DM pre-trains one UFF on the dumped patches of all classes),
  no gradient accumulation (README: 16 batches of 16), no AMP, the last short batch kept
  (``drop_last`` in M3DM); the warm-up + cosine schedule spans the epochs actually run.
  M3DM's distributed loss offsets the labels by ``N * rank`` without gathering the keys (every
  rank but 0 indexes past its logits); pcad's contrastive loss uses the rank's own share of the
  global batch (:func:`~pcad.detectors.training.run_training`), and a single process sees the
  whole batch.
- The paper's settings (750 steps, cosine warm-up of 250 steps) are not the code's default;
  raise ``epochs`` to get there (M3DM issues #30 and #36 report that a self-trained UFF does
  not reproduce the paper's checkpoint).
- Banks, scores and DLF: see :mod:`pcad.detectors.multimodal` (per-bank statistics instead of
  M3DM's swapped ones, each coreset sized from its own bank, per-bank image scores over the
  part by default, leave-one-out training scores for the SVMs, SVM weights fitted on the patch
  grid; and the measured caveat of the segmentation SVM, which ``map_fusion="sum"`` avoids).

The mean UFF loss of each epoch is kept in :attr:`M3DMDetector.history`.

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("m3dm", image_size=64, point_backbone="fpfh", epochs=1)
    >>> det.BANKS, det.config["bank_weights"]
    (('xyz', 'rgb', 'fusion'), {'xyz': 1.0, 'rgb': 0.1, 'fusion': 1.0})
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pcad.checks import check_int, check_positive
from pcad.detectors.base import RUN_FILE, load_run_module, read_run_file, run_dims
from pcad.detectors.multimodal import (
    MultiBankDetector,
    balanced_concat,
    mean_norms,
    read_part_norms,
)
from pcad.detectors.registry import register_detector
from pcad.detectors.training import info_nce, run_training, zero_loss
from pcad.errors import InvalidInputError

STATE_FILE = "uff.pt"


class UFF(nn.Module):
    """M3DM's Unsupervised Feature Fusion block: per-patch LayerNorm + MLP per modality,
    concatenated (``forward`` returns the contrastive loss, :meth:`fuse` the fused patch).

    Args:
        rgb_dim, pts_dim: input channels.
        mlp_ratio: hidden width of the MLPs, a multiple of the input width (4).
        head_dim: width of the contrastive heads (256).

    Example:
        >>> import torch
        >>> from pcad.detectors.m3dm import UFF
        >>> uff = UFF(8, 4)
        >>> uff.fuse(torch.zeros(5, 8), torch.zeros(5, 4)).shape
        torch.Size([5, 12])
    """

    def __init__(self, rgb_dim: int, pts_dim: int, mlp_ratio: float = 4.0,
                 head_dim: int = 256) -> None:
        super().__init__()
        self.rgb_dim, self.pts_dim = rgb_dim, pts_dim
        self.pts_norm = nn.LayerNorm(pts_dim)
        self.pts_mlp = nn.Sequential(nn.Linear(pts_dim, int(pts_dim * mlp_ratio)), nn.GELU(),
                                     nn.Linear(int(pts_dim * mlp_ratio), pts_dim))
        self.rgb_norm = nn.LayerNorm(rgb_dim)
        self.rgb_mlp = nn.Sequential(nn.Linear(rgb_dim, int(rgb_dim * mlp_ratio)), nn.GELU(),
                                     nn.Linear(int(rgb_dim * mlp_ratio), rgb_dim))
        self.rgb_head = nn.Linear(rgb_dim, head_dim)
        self.pts_head = nn.Linear(pts_dim, head_dim)

    def parts(self, rgb: torch.Tensor, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(chi_rgb, chi_pts)`` of ``(..., C)`` patch features."""
        return self.rgb_mlp(self.rgb_norm(rgb)), self.pts_mlp(self.pts_norm(pts))

    def fuse(self, rgb: torch.Tensor, pts: torch.Tensor,
             norms: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
        """The fused patch feature ``concat(chi_pts / norms[0], chi_rgb / norms[1])`` (M3DM's
        order; M3DM's divisors are 1), ``(..., C_pts + C_rgb)``."""
        chi_rgb, chi_pts = self.parts(rgb, pts)
        return balanced_concat((chi_pts, chi_rgb), norms)

    def forward(self, rgb: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        """Patch-wise InfoNCE of ``(m, C)`` co-located foreground patches (0 for ``m < 2``)."""
        if rgb.shape[0] == 0:
            return zero_loss(self)
        chi_rgb, chi_pts = self.parts(rgb, pts)
        return info_nce(self.rgb_head(chi_rgb), self.pts_head(chi_pts), temperature=1.0)


@register_detector("m3dm")
class M3DMDetector(MultiBankDetector):
    """M3DM: UFF + three memory banks + decision-layer fusion (see the module docstring)."""

    BANKS = ("xyz", "rgb", "fusion")
    BANK_WEIGHTS: ClassVar[dict[str, float]] = {"xyz": 1.0, "rgb": 0.1, "fusion": 1.0}
    defaults: ClassVar[dict[str, Any]] = {
        **MultiBankDetector.defaults, "epochs": 3, "batch_size": 16, "lr": 3e-3,
        "warmup_epochs": 1.0, "weight_decay": 0.01, "mlp_ratio": 4.0, "head_dim": 256,
        "fused_balance": "norm",
    }
    FUSED_BALANCES = ("norm", "none")
    option_help: ClassVar[dict[str, str]] = {
        "fused_balance": "fused bank: norm (each modality's part divided by its mean training "
                         "norm) or none (M3DM's plain concatenation)",
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        c["epochs"] = check_int(c["epochs"], "epochs", minimum=1)
        c["batch_size"] = check_int(c["batch_size"], "batch_size", minimum=1)
        c["head_dim"] = check_int(c["head_dim"], "head_dim", minimum=1)
        c["lr"] = check_positive(c["lr"], "lr")
        c["warmup_epochs"] = check_positive(c["warmup_epochs"], "warmup_epochs", allow_zero=True)
        c["weight_decay"] = check_positive(c["weight_decay"], "weight_decay", allow_zero=True)
        c["mlp_ratio"] = check_positive(c["mlp_ratio"], "mlp_ratio")
        if c["fused_balance"] not in self.FUSED_BALANCES:
            raise InvalidInputError(f"fused_balance: expected one of {self.FUSED_BALANCES}, "
                                    f"got {c['fused_balance']!r}")
        self.uff: UFF | None = None
        #: ``(point, RGB)`` divisors of the fused bank's two parts (``fused_balance``)
        self.part_norms = (1.0, 1.0)

    def _new_uff(self, rgb_dim: int, pts_dim: int) -> UFF:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config["seed"])
            return UFF(rgb_dim, pts_dim, self.config["mlp_ratio"], self.config["head_dim"])

    def train_networks(self, rgb: np.ndarray, pts: np.ndarray, fg: np.ndarray,
                       items: Sequence[Any] | None, progress: bool) -> None:
        """Train UFF on the foreground patches (patch-wise InfoNCE)."""
        c, dev = self.config, self.device
        self.uff = self._new_uff(rgb.shape[2], pts.shape[2]).to(dev)
        rgb_t = torch.from_numpy(np.ascontiguousarray(rgb)).to(dev)
        pts_t = torch.from_numpy(np.ascontiguousarray(pts)).to(dev)
        fg_t = torch.from_numpy(np.ascontiguousarray(fg)).to(dev)

        def step(model: nn.Module, epoch: int, it: int, local: torch.Tensor) -> torch.Tensor:
            idx = local.to(dev)
            f = fg_t[idx]
            return model(rgb_t[idx][f], pts_t[idx][f])

        self.history = run_training(
            self.uff, len(rgb), step, epochs=c["epochs"], batch_size=c["batch_size"],
            lr=c["lr"], weight_decay=c["weight_decay"], warmup_epochs=c["warmup_epochs"],
            seed=c["seed"], progress=progress, desc="m3dm UFF")
        self.part_norms = (1.0, 1.0)
        if c["fused_balance"] == "norm":
            self.uff.eval()
            with torch.no_grad():
                chi_rgb, chi_pts = self.uff.parts(rgb_t[fg_t], pts_t[fg_t])
            self.part_norms = mean_norms(chi_pts, chi_rgb)

    def transform(self, rgb: np.ndarray, pts: np.ndarray, fg: np.ndarray
                  ) -> dict[str, np.ndarray]:
        """Banks: the frozen point and RGB patches, and the UFF-fused patches."""
        dev = next(self.uff.parameters()).device
        with torch.no_grad():
            fused = self.uff.fuse(torch.from_numpy(np.ascontiguousarray(rgb)).to(dev),
                                  torch.from_numpy(np.ascontiguousarray(pts)).to(dev),
                                  self.part_norms)
        return {"xyz": pts, "rgb": rgb, "fusion": fused.cpu().numpy().astype(np.float32)}

    # --- persistence ----------------------------------------------------------------------

    def _save_networks(self, folder: Path) -> None:
        from pcad.io import atomic_save

        state = {k: v.cpu() for k, v in self.uff.state_dict().items()}
        atomic_save(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))

    def _networks_record(self) -> dict[str, Any]:
        return {"rgb_dim": self.uff.rgb_dim, "pts_dim": self.uff.pts_dim,
                "part_norms": list(self.part_norms)}

    def _load_networks(self, folder: Path, state: dict[str, Any]) -> None:
        rgb_dim, pts_dim = run_dims(state, ("rgb_dim", "pts_dim"), str(folder / RUN_FILE))
        saved = read_run_file(folder, STATE_FILE, "m3dm")
        self.uff = load_run_module(lambda: self._new_uff(rgb_dim, pts_dim), saved,
                                   str(folder / STATE_FILE))
        self.uff.to(self.device).eval()
        self.part_norms = read_part_norms(state, str(folder / RUN_FILE))
