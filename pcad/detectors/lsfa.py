"""``lsfa``: Self-supervised Feature Adaptation for 3D industrial anomaly detection (Tu et al.,
ECCV 2024; code yuanpengtu/LSFA).

LSFA adapts the frozen features before PatchCore: one transformer block per modality, trained
on the good samples only, makes the features of normal parts compact and the two modalities
agree; inference is M3DM's memory banks on the adapted features.

- **Adapters**: one pre-norm ViT block per modality after the frozen backbones (LSFA's
  ``FeatureFusionBlock``: ``Block(768, 12)`` on DINO tokens, ``Block(1152, 12)`` on Point-MAE
  patches): LayerNorm -> multi-head self-attention over the sample's patch tokens (qkv without
  bias) -> residual, LayerNorm -> MLP (4x, GELU) -> residual (:class:`AdapterBlock`). Heads
  ``Linear(C, 512)`` per modality feed the contrastive losses and are discarded afterwards.
- **Losses**, per batch of training samples (weights as the released code, all options):

  - ``L_LA`` (cross-modal local alignment): InfoNCE between the RGB and point head
    projections of the co-located foreground patches of the batch (background masked),
    symmetrised ``(q->k + k->q) / 2``, temperature 1, CE times 2T; weight ``la_weight`` 1.
  - ``L_rot`` (in the code, not in the paper): InfoNCE between the RGB head projections of the
    image and of a copy whose 4 x 4-pixel cells are each rotated by a random multiple of 90
    degrees (``rotation_cell``; new rotations every epoch, seeded), on a random sixth of the
    foreground patches; weight ``rotation_weight`` 0.05 (0 skips it and its extra RGB pass).
  - ``IFC`` (intra-modal compactness) with FIFO memory queues of detached adapted features:
    ``L_LC`` = mean distance of each adapted patch to its nearest queued patch (RGB: all
    patches; points: foreground patches, as the code), ``L_GC`` = distance of the sample's
    global feature (mean of its adapted foreground patches) to the nearest queued global
    feature, RGB + point each; ``IFC = mean over samples (L_LC_rgb + L_LC_pts +
    global_compact_weight (0.4) * (L_GC_rgb + L_GC_pts))``, weight ``compact_weight`` 0.9.
    The local queues hold the patches of the last ``queue_samples`` samples (19: the code's
    60000 patches / 3136 per sample), the global ones ``global_queue`` (100) samples, both
    clamped to the training-set size. The term starts after ``compact_start`` (0.09) of the
    training iterations (the code: 60 of its ~664) once the local queues are full.
    With a training set no larger than the queue (16 samples here, 19 queued), every sample
    finds its own earlier features in the queue and is "compact" towards itself;
    ``compact_others=True`` measures each sample against the other samples' queued rows only
    (what the code's queue holds on MVTec 3D-AD's ~250 samples per class). Not the default:
    on the five built-in parts below it changed I-AUROC by -0.003 / -0.007 (2 epochs) and did
    not help at 20 epochs either (gear: 0.977 vs 0.972 / 0.875 vs 0.838, frozen 0.977 /
    0.866).
  - ``L_GA`` (cross-modal global alignment): InfoNCE between the head projections of the
    samples' global RGB and point features; weight ``ga_weight`` 0.1.

  ``L = la_weight L_LA + rotation_weight L_rot + compact_weight IFC + ga_weight L_GA``.
- **Training**: AdamW(betas 0.9, 0.95; ``weight_decay`` 0.01, torch's default, as the code
  passes none), ``lr`` 3e-4 (the README), ``batch_size`` 8 samples, ``epochs`` 2 (the code),
  per-iteration linear warm-up over ``warmup_epochs`` (1) then half-cycle cosine to 0, seeded
  initialisation and shuffling; under ``torchrun`` each global batch is split over the ranks
  (:func:`~pcad.detectors.training.run_training`) and the queues are fed with the gathered
  features of the whole batch, in single-process order; the InfoNCE negatives are those of the
  rank's share of the batch (as in the released code), so a multi-process fit is close to, not
  equal to, a single-process one. The mean loss of each epoch is kept in
  :attr:`LSFADetector.history`. ``epochs=0`` trains nothing and builds the banks on the
  frozen features (no adapters, no ``adapters.pt``): the unadapted double lib, the baseline
  of ``benchmarks/bench_lsfa_ablation.py``.
- **Inference**: M3DM's "double lib" on the adapted features: a point bank and an RGB bank with
  fusion: by default ``"zsum"`` (leave-one-out-normalised bank scores summed with equal
  non-negative weights, monotone in each bank's evidence; at least 3 training samples), or
  the code's decision-layer fusion with ``fusion="ocsvm"`` / ``map_fusion="ocsvm"`` (linear
  one-class SVMs, ``bank_weights`` ``{"xyz": 1, "rgb": 0.1}`` as the code),
  :class:`~pcad.detectors.multimodal.MultiBankDetector`, whose options (``coreset_ratio``,
  ``bank_score`` (default ``"foreground-max"``; the code's is
  ``"reweighted"``), ``fusion``, ``map_fusion``, ``svm_patches``, ``ocsvm_nu``,
  ``image_score``, the feature options, ``fpfh_neighbours`` 200 since its measured change
  there...) and measured caveats apply.
- ``banks`` (:func:`bank_features`): ``"split"`` (default) keeps four banks: the code's double
  lib (the adapted point and RGB banks), the adapted point features through a per-patch
  LayerNorm (``xyz_ln``: each FPFH histogram centred and scaled to unit norm, its shape without
  its offset and size) and a fused bank of both modalities so normalised side by side
  (``fusion_ln``, each part of unit norm, so neither dominates the distance). The image score
  fuses all four, the anomaly map the last three (RGB, ``xyz_ln``, ``fusion_ln``).
  ``"split-double"`` scores images with the double lib only (the map as ``"split"``);
  ``"double"`` is the code's (both scores from the point + RGB banks); ``"triple"`` adds to it
  a fused bank of the two adapted features each over its mean training norm
  (:func:`~pcad.detectors.multimodal.balanced_concat`, m3dm's ``fused_balance="norm"``), used
  by both scores.

  The maps were chosen first, on five built-in parts (gear, plate_holes, bracket, cookie,
  hex_nut; 16 training samples, 6 good and 36 defective test samples, 224 px; means over the
  parts, seeds 0 / 1):

  ==========================  ===============  ===============  ===============
  lsfa (2 epochs) / m3dm      I-AUROC          AUPRO@0.3        P-AUROC
  ==========================  ===============  ===============  ===============
  banks="double"              0.861 / 0.821    0.878 / 0.860    0.970 / 0.966
  banks="triple"              0.851 / 0.794    0.889 / 0.865
  LN banks for both scores    0.824 / 0.793    0.937 / 0.910
  banks="split-double"        0.861 / 0.821    0.937 / 0.910    0.983 / 0.978
  m3dm (defaults)             0.841 / 0.819    0.898 / 0.873    0.974 / 0.968
  ==========================  ===============  ===============  ===============

  The layer-normed banks localize far better (AUPRO +0.06 over the double lib) but rank
  whole samples worse alone (the normalised FPFH point bank alone: image AUROC 0.744 / 0.694
  vs 0.794 / 0.743 raw). Adaptation matters for these maps: the same banks on the frozen
  features (``epochs=0``) reach AUPRO 0.871 / 0.841. The image score was chosen next, with the
  maps fixed: every bank (``"split"``) against the double lib (``"split-double"``), I-AUROC
  0.832 vs 0.817 on gear, plate, bracket and potato x seeds 0 and 1 (20 training samples, 8 good
  and 24 defective test samples, 224 px; m3dm 0.807), confirmed on five other built-in parts
  rendered afterwards (flange, hex_nut, cookie, pipe, plate_holes; seed 5): 0.858 vs 0.823 (m3dm
  0.877); checked on the eight shared meshes afterwards (three seeds): 0.814 -> 0.843 (m3dm
  0.825, btf 0.836); since the leave-one-out fix of :mod:`pcad.detectors.multimodal`, 0.842
  on those four built-in parts x two seeds and 0.860 on the meshes, behind m3dm (0.835 / 0.871)
  and btf (0.851 / 0.869): the adaptation does not yet earn its place in the image score.
  With FPFH over 200 neighbours (the default since): 0.852 on those parts x three seeds (m3dm
  0.855, btf 0.860) and 0.870 on the meshes (m3dm 0.883, btf 0.877). The
  four banks' evidence adds up: each bank's LOO-normalised score, summed
  (``fusion="zsum"``), is non-decreasing in every bank.

Bugs of the released code and pcad's fixes:

1. ``L_GA`` projects the *RGB* global features with the point head
   (``xyz_head(global_feat1.reshape(-1, 1152))``, which also fails unless the batch is a
   multiple of 3, as 768-d rows are reshaped to 1152): pcad projects the point global
   features.
2. Crash while the compactness term is off: ``torch.cat(global_feat1)`` runs on an empty list
   during the first 60 iterations (and while the queues fill): pcad computes ``L_GA`` on every
   batch of two or more samples from the first iteration (the paper's ``L_CLC = L_LA + L_GA``),
   whatever the state of the queues.
3. Gradient accumulation: ``optimizer.zero_grad()`` runs after every iteration, so with
   ``accum_iter 16`` each update uses the gradient of the last batch only and 15 of 16 batches
   are thrown away: pcad steps on every batch (no accumulation).
4. Rotation term: the sixth of the patches is drawn as positions ``randperm(n_fg)[:n_fg // 6]``
   into *all* patches rather than among the foreground ones, and the rotated image's feature
   map is reshaped ``(B, C, 56, 56) -> (B, 3136, C)`` without a permute, mixing channels and
   positions: pcad samples foreground patches of correctly ordered features.
5. ``euclidean_dist`` clamps squared distances to ``[1e-12, 50]``, which zeroes the gradient
   of every distance above ``sqrt(50)`` in the features' raw units (typical between DINO
   tokens): pcad clamps from below only (:func:`~pcad.detectors.training.nearest_distance`).
6. Bank normalisation statistics swapped (point std from the RGB bank, RGB mean from the
   point bank, inherited from M3DM) and the RGB coreset sized from the reduced point bank:
   each bank uses its own (:mod:`pcad.detectors.multimodal`).
7. Hard-wired setup: a data path, a class index, ``torch.distributed`` initialised and a
   ``DistributedSampler`` always, ``get_rank()`` and ``.cuda()`` inside the loss, epochs
   hard-coded to 2 while ``--epochs`` only shapes the schedule, a feature-path rewrite
   ``.replace('.', 'full.')`` that mangles every '.' of a relative path: pcad takes the
   category and every setting as options, keeps features in memory, runs in one process on
   CPU or CUDA or under ``torchrun``, and ``epochs`` drives both the loop and the schedule.

Other departures:

- Training is per category with one queue (LSFA trains all ten MVTec classes jointly, with
  per-class queues); the compactness start is a fraction of the iterations instead of 60.
- Features: one ``image_size / 8`` patch grid for both modalities (LSFA: 56 x 56, RGB tokens
  upsampled), effnet-lite0 RGB by default (``rgb_backbone="dino-vitb8"``, ``weights=PATH`` for
  DINO ViT-B/8), no CLS token in the RGB sequence; the global features are means of the
  adapted foreground patches (the code; the paper describes k-means of the local features).
- Attention heads: ``num_heads`` (12), or the largest divisor of a feature width not above it
  (152 EfficientNet channels: 8; 33 FPFH bins: 11).
- No AMP, no ``max_sample`` cap on the banks, the last short batch kept.

Measured on pcad's generated data (``benchmarks/bench_lsfa_ablation.py``; 4 categories, 20
training samples, 128 px): adaptation does **not** beat the unadapted banks (``epochs=0``),
I-AUROC / AUPRO@0.3 0.611 / 0.686 (10 epochs: 0.608 / 0.685) vs 0.632 / 0.739. Nothing is
learned: 20 samples make 3 steps an epoch, ``L_LA`` / ``L_GA`` stay at chance (2 ln m), the
loss does not fall in 10 epochs, and untrained adapters (``lr`` 1e-12) score the same (0.608 /
0.668); without compactness 0.597 / 0.677, without alignment 0.615 / 0.672; no collapse
(effective rank, mean cosine unchanged). The shipped Point-MAE's patch features are nearly
collinear (mean cosine 0.98) and blind to the defects (patch AUROC 0.49): the random residual
block moves them by 1.8x their spread, the map SVM then weights that point bank 0.42 instead of
0.02 and AUPRO drops. The RGB bank alone gains (I-AUROC 0.667 -> 0.733) but weighs ~0.03 in the
image fusion. With FPFH (patch AUROC 0.72) the adapters barely move the features: 0.920 / 0.730
vs 0.920 / 0.735 frozen; ``map_fusion="sum"`` (AUPRO 0.878) matters far more there.

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("lsfa", image_size=64, point_backbone="fpfh", epochs=1)
    >>> det.BANKS, det.IMAGE_BANKS, det.MAP_BANKS
    (('xyz', 'rgb', 'xyz_ln', 'fusion_ln'), None, ('xyz_ln', 'rgb', 'fusion_ln'))
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_flag, check_fraction, check_int, check_positive
from pcad.detectors.base import RUN_FILE, load_run_module, read_run_file, run_dims
from pcad.detectors.multimodal import (
    MultiBankDetector,
    balanced_concat,
    mean_norms,
    read_part_norms,
)
from pcad.detectors.patches import backbone_image
from pcad.detectors.registry import register_detector
from pcad.detectors.training import StateSlot, info_nce, nearest_distance, run_training, zero_loss
from pcad.errors import InvalidInputError

STATE_FILE = "adapters.pt"


def heads_for(dim: int, wanted: int) -> int:
    """The largest number of attention heads ``<= wanted`` that divides ``dim``."""
    return max(h for h in range(1, max(1, min(wanted, dim)) + 1) if dim % h == 0)


class AdapterBlock(nn.Module):
    """A pre-norm ViT block (Point-MAE's / timm's ``Block``): ``x + Attn(LN(x))``, then
    ``x + MLP(LN(x))``; ``(B, n, C) -> (B, n, C)``.

    Example:
        >>> import torch
        >>> from pcad.detectors.lsfa import AdapterBlock
        >>> AdapterBlock(16, 4)(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise InvalidInputError(f"num_heads: {num_heads} does not divide the width {dim}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c / h)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` mean of ``x (B, n, C)`` over the rows where ``mask (B, n)`` is True."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class LSFAAdapters(nn.Module):
    """The two adapter blocks, the two contrastive heads and the loss of one batch.

    Args:
        rgb_dim, pts_dim: frozen feature widths.
        num_heads, mlp_ratio: of the blocks (heads reduced to a divisor of each width).
        head_dim: width of the contrastive heads (512).
        weights: ``{"la", "rotation", "compact", "global_compact", "ga"}`` loss weights.
    """

    def __init__(self, rgb_dim: int, pts_dim: int, num_heads: int = 12, mlp_ratio: float = 4.0,
                 head_dim: int = 512, weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.rgb_dim, self.pts_dim = rgb_dim, pts_dim
        self.rgb_block = AdapterBlock(rgb_dim, heads_for(rgb_dim, num_heads), mlp_ratio)
        self.pts_block = AdapterBlock(pts_dim, heads_for(pts_dim, num_heads), mlp_ratio)
        self.rgb_head = nn.Linear(rgb_dim, head_dim)
        self.pts_head = nn.Linear(pts_dim, head_dim)
        self.weights = {"la": 1.0, "rotation": 0.05, "compact": 0.9, "global_compact": 0.4,
                        "ga": 0.1, **(weights or {})}

    def adapt(self, rgb: torch.Tensor, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapted ``(B, n, C)`` features of each modality."""
        return self.rgb_block(rgb), self.pts_block(pts)

    def forward(self, rgb: torch.Tensor, pts: torch.Tensor, fg: torch.Tensor,
                rgb_rot: torch.Tensor | None = None, rot_index: torch.Tensor | None = None,
                queues: tuple[torch.Tensor, ...] | None = None,
                owners: tuple[torch.Tensor, ...] | None = None):
        """The loss of a batch.

        Args:
            rgb, pts: ``(B, n, C)`` frozen features; ``fg``: ``(B, n)`` bool.
            rgb_rot: ``(B, n, C_rgb)`` frozen features of the cell-rotated images (None: no
                rotation term); ``rot_index``: rows of the foreground patches it uses.
            queues: ``(local RGB (M, C), local points (M', C), global RGB (K, C), global
                points (K, C))`` or None (no compactness term).
            owners: the training-sample indices of the batch and of the queue rows (see
                :func:`compactness`; None: every queue row counts for every sample).

        Returns:
            ``(loss, terms, adapted_rgb, adapted_pts, global_rgb, global_pts)``: the weighted
            total, the unweighted terms (detached), and the detached adapted features and
            per-sample global features for the queues.
        """
        if rgb.shape[0] == 0:
            return zero_loss(self), {}, None, None, None, None
        w = self.weights
        a_rgb, a_pts = self.adapt(rgb, pts)
        q, k = self.rgb_head(a_rgb[fg]), self.pts_head(a_pts[fg])
        terms = {"la": (info_nce(q, k) + info_nce(k, q)) / 2.0}
        if rgb_rot is not None:
            q_rot = self.rgb_head(self.rgb_block(rgb_rot)[fg])
            sel = rot_index if rot_index is not None else torch.arange(len(q), device=q.device)
            terms["rotation"] = info_nce(q[sel], q_rot[sel])
        g_rgb, g_pts = masked_mean(a_rgb, fg), masked_mean(a_pts, fg)
        terms["ga"] = info_nce(self.rgb_head(g_rgb), self.pts_head(g_pts))
        if queues is not None:
            terms["compact"] = compactness(a_rgb, a_pts, fg, g_rgb, g_pts, queues,
                                           w["global_compact"], owners)
        total = sum(w[name] * value for name, value in terms.items())
        detached = {name: value.detach() for name, value in terms.items()}
        return (total, detached, a_rgb.detach(), a_pts.detach(), g_rgb.detach(),
                g_pts.detach())


def compactness(a_rgb: torch.Tensor, a_pts: torch.Tensor, fg: torch.Tensor,
                g_rgb: torch.Tensor, g_pts: torch.Tensor, queues: tuple[torch.Tensor, ...],
                global_weight: float = 0.4,
                owners: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """LSFA's intra-modal compactness of a batch (the IFC term, unweighted).

    Per sample ``i``: ``L_LC = mean_j d(a_rgb[i, j], Q_rgb) + mean_{j in fg} d(a_pts[i, j],
    Q_pts)`` and ``L_GC = d(g_rgb[i], G_rgb) + d(g_pts[i], G_pts)``, with ``d`` the distance to
    the nearest queue row; the result is ``mean_i (L_LC + global_weight * L_GC)``.
    ``owners``: ``(batch (B,), local RGB (M,), local points (M',), global RGB (K,), global
    points (K,))``, the training-sample indices of the batch's samples and of every queue
    row; each sample is then measured against the rows of *other* samples only (a sample
    with no other row adds 0).
    """
    q_rgb, q_pts, qg_rgb, qg_pts = queues
    b, n, _ = a_rgb.shape
    if owners is not None:
        return torch.stack([compactness(
            a_rgb[i:i + 1], a_pts[i:i + 1], fg[i:i + 1], g_rgb[i:i + 1], g_pts[i:i + 1],
            tuple(q[o != owners[0][i]] for q, o in zip(queues, owners[1:], strict=True)),
            global_weight) for i in range(b)]).mean()
    if min(len(q) for q in queues) == 0:  # only the sample's own rows were queued
        return (a_rgb.sum() + a_pts.sum()) * 0.0
    lc_rgb = nearest_distance(a_rgb.reshape(b * n, -1), q_rgb).reshape(b, n).mean(1)
    owner = fg.nonzero()[:, 0]
    d_pts = nearest_distance(a_pts[fg], q_pts) if fg.any() else a_pts.new_zeros(0)
    lc_pts = torch.zeros(b, dtype=d_pts.dtype, device=d_pts.device).index_add(0, owner, d_pts)
    lc_pts = lc_pts / fg.sum(1).clamp_min(1).to(d_pts.dtype)
    gc = nearest_distance(g_rgb, qg_rgb) + nearest_distance(g_pts, qg_pts)
    return (lc_rgb + lc_pts + global_weight * gc).mean()


def unit_layer_norm(x: torch.Tensor) -> torch.Tensor:
    """Each ``(..., C)`` row centred and scaled to unit norm (LayerNorm without affine, over
    ``sqrt(C)``): the shape of a feature without its offset and scale.

    >>> [round(v, 4) for v in unit_layer_norm(torch.tensor([[1.0, 3.0]]))[0].tolist()]
    [-0.7071, 0.7071]
    """
    return F.layer_norm(x, x.shape[-1:]) / math.sqrt(x.shape[-1])


def bank_features(a_rgb: torch.Tensor, a_pts: torch.Tensor, banks: Sequence[str],
                  norms: tuple[float, float] = (1.0, 1.0)) -> list[torch.Tensor]:
    """The features of each of ``banks`` from the adapted ``(..., C)`` RGB and point
    features: ``xyz`` the point ones, ``rgb`` the RGB ones, ``fusion`` the two side by side,
    each over its mean training norm ``norms`` (:func:`~pcad.detectors.multimodal.
    balanced_concat`), ``xyz_ln`` the point ones through :func:`unit_layer_norm`,
    ``fusion_ln`` both through it, side by side.

    >>> [f.shape[-1] for f in bank_features(torch.ones(2, 4), torch.ones(2, 3),
    ...                                     ("xyz", "rgb", "fusion", "xyz_ln", "fusion_ln"))]
    [3, 4, 7, 3, 7]
    """
    make = {"xyz": lambda: a_pts, "rgb": lambda: a_rgb,
            "fusion": lambda: balanced_concat((a_pts, a_rgb), norms),
            "xyz_ln": lambda: unit_layer_norm(a_pts),
            "fusion_ln": lambda: torch.cat([unit_layer_norm(a_pts), unit_layer_norm(a_rgb)],
                                           dim=-1)}
    return [make[b]() for b in banks]


def rotate_cells(image: np.ndarray, cell: int, rng: np.random.Generator) -> np.ndarray:
    """LSFA's ``img_rotate_patch``: every ``cell x cell`` block of an ``(H, W, C)`` image
    rotated by a random multiple of 90 degrees (a partial block at the border is kept)."""
    h, w, c = image.shape
    gh, gw = h // cell, w // cell
    out = image.copy()
    if gh == 0 or gw == 0:
        return out
    blocks = image[:gh * cell, :gw * cell].reshape(gh, cell, gw, cell, c).transpose(0, 2, 1, 3,
                                                                                     4)
    turns = rng.integers(0, 4, size=(gh, gw))
    rotated = blocks.copy()
    for r in (1, 2, 3):
        sel = turns == r
        rotated[sel] = np.rot90(blocks[sel], r, axes=(1, 2))
    out[:gh * cell, :gw * cell] = rotated.transpose(0, 2, 1, 3, 4).reshape(gh * cell, gw * cell,
                                                                           c)
    return out


@register_detector("lsfa")
class LSFADetector(MultiBankDetector):
    """LSFA: adapters trained on good samples + M3DM's double-lib banks (see the module)."""

    BANKS = ("xyz", "rgb")
    BANK_WEIGHTS: ClassVar[dict[str, float]] = {"xyz": 1.0, "rgb": 0.1, "fusion": 1.0,
                                                "xyz_ln": 1.0, "fusion_ln": 1.0}
    #: ``banks`` option -> the memory banks, and those the image score / the map fuse
    BANK_SETS: ClassVar[dict[str, tuple[tuple[str, ...], tuple[str, ...] | None,
                                        tuple[str, ...] | None]]] = {
        "double": (("xyz", "rgb"), None, None),
        "triple": (("xyz", "rgb", "fusion"), None, None),
        "split": (("xyz", "rgb", "xyz_ln", "fusion_ln"), None, ("xyz_ln", "rgb", "fusion_ln")),
        "split-double": (("xyz", "rgb", "xyz_ln", "fusion_ln"), ("xyz", "rgb"),
                         ("xyz_ln", "rgb", "fusion_ln"))}
    defaults: ClassVar[dict[str, Any]] = {
        **MultiBankDetector.defaults, "epochs": 2, "batch_size": 8, "lr": 3e-4,
        "warmup_epochs": 1.0, "weight_decay": 0.01, "num_heads": 12, "mlp_ratio": 4.0,
        "head_dim": 512, "la_weight": 1.0, "rotation_weight": 0.05, "compact_weight": 0.9,
        "global_compact_weight": 0.4, "ga_weight": 0.1, "queue_samples": 19,
        "global_queue": 100, "compact_start": 0.09, "rotation_cell": 4, "banks": "split",
        "compact_others": False,
    }
    WEIGHT_KEYS = {"la": "la_weight", "rotation": "rotation_weight", "compact": "compact_weight",
                   "global_compact": "global_compact_weight", "ga": "ga_weight"}
    option_help: ClassVar[dict[str, str]] = {
        "epochs": "adapter training epochs (0: no adapters, M3DM's banks on frozen features)",
        "num_heads": "attention heads of each adapter block",
        "la_weight": "weight of the cross-modal local alignment loss",
        "rotation_weight": "weight of the rotated-cell RGB loss (0 skips it)",
        "compact_weight": "weight of the intra-modal compactness loss",
        "global_compact_weight": "weight of the global term inside the compactness loss",
        "ga_weight": "weight of the cross-modal global alignment loss",
        "queue_samples": "samples whose patches the local memory queues hold",
        "global_queue": "samples the global memory queues hold",
        "compact_start": "fraction of the iterations before the compactness loss starts",
        "rotation_cell": "side in pixels of the randomly rotated RGB cells",
        "compact_others": "compactness towards the queued features of other training samples "
                          "only (a sample's own earlier features excluded)",
        "banks": "split (image score from the point, RGB and layer-normed point and fused "
                 "banks, map from the last three), split-double (image score from the point + "
                 "RGB banks, map as split), double (the code's point + RGB banks for both) or "
                 "triple (double + the two adapted features concatenated, each over its mean "
                 "training norm)",
    }

    def __init__(self, **config: Any) -> None:
        banks = config.get("banks", self.defaults["banks"])
        if banks not in self.BANK_SETS:
            raise InvalidInputError(f"banks: expected one of {tuple(self.BANK_SETS)}, "
                                    f"got {banks!r}")
        self.BANKS, self.IMAGE_BANKS, self.MAP_BANKS = self.BANK_SETS[banks]
        #: ``(point, RGB)`` divisors of the fused bank's two parts (``banks="triple"``)
        self.part_norms = (1.0, 1.0)
        super().__init__(**config)
        c = self.config
        for key in ("batch_size", "num_heads", "head_dim", "queue_samples", "global_queue",
                    "rotation_cell"):
            c[key] = check_int(c[key], key, minimum=1)
        c["epochs"] = check_int(c["epochs"], "epochs", minimum=0)  # 0: no adapters
        c["lr"] = check_positive(c["lr"], "lr")
        c["mlp_ratio"] = check_positive(c["mlp_ratio"], "mlp_ratio")
        for key in ("warmup_epochs", "weight_decay", *self.WEIGHT_KEYS.values()):
            c[key] = check_positive(c[key], key, allow_zero=True)
        c["compact_start"] = check_fraction(c["compact_start"], "compact_start")
        c["compact_others"] = check_flag(c["compact_others"], "compact_others")
        self.adapters: LSFAAdapters | None = None
        self.last_terms: dict[str, float] = {}

    def _new_adapters(self, rgb_dim: int, pts_dim: int) -> LSFAAdapters:
        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            return LSFAAdapters(rgb_dim, pts_dim, c["num_heads"], c["mlp_ratio"], c["head_dim"],
                                {k: c[v] for k, v in self.WEIGHT_KEYS.items()})

    def rotated_features(self, items: Sequence[Any], epoch: int) -> np.ndarray:
        """``(N, n, C_rgb)`` RGB features of the cell-rotated training images of ``epoch``
        (each rank extracts its shard; gathered in single-process order)."""
        from pcad import distributed as dist

        c = self.config
        start, stop = dist.shard_range(len(items))
        local = []
        for i in range(start, stop):
            rng = np.random.default_rng([c["seed"], epoch, i])
            image = backbone_image(items[i].rgb, c["image_size"])
            local.append(self.features.rgb(rotate_cells(image, c["rotation_cell"], rng)))
        n = self.grid[0] * self.grid[1]
        width = self.adapters.rgb_dim
        block = np.stack(local) if local else np.zeros((0, n, width), np.float32)
        return dist.all_gather_arrays(block)

    def train_networks(self, rgb: np.ndarray, pts: np.ndarray, fg: np.ndarray,
                       items: Sequence[Any] | None, progress: bool) -> None:
        """Train the adapters (see the module docstring)."""
        from pcad import distributed as dist

        c, dev = self.config, self.device
        if c["epochs"] == 0:  # the unadapted double lib: banks on the frozen features
            self.adapters, self.history = None, []
            self._fit_part_norms(rgb, pts, fg)
            return
        n_samples = len(rgb)
        rotation = c["rotation_weight"] > 0
        if rotation and items is None:
            raise InvalidInputError("detector 'lsfa': the rotation term needs the training "
                                    "samples (pass items, or rotation_weight=0)")
        self.adapters = self._new_adapters(rgb.shape[2], pts.shape[2]).to(dev)
        rgb_t = torch.from_numpy(np.ascontiguousarray(rgb)).to(dev)
        pts_t = torch.from_numpy(np.ascontiguousarray(pts)).to(dev)
        fg_t = torch.from_numpy(np.ascontiguousarray(fg)).to(dev)
        rot: dict[str, torch.Tensor] = {}
        steps = max(1, math.ceil(n_samples / c["batch_size"]))
        start_it = int(round(c["compact_start"] * c["epochs"] * steps))
        local_cap = min(c["queue_samples"], n_samples)
        global_cap = min(c["global_queue"], n_samples)
        q_rgb: deque[torch.Tensor] = deque(maxlen=local_cap)
        q_pts: deque[torch.Tensor] = deque(maxlen=local_cap)
        g_rgb: deque[torch.Tensor] = deque(maxlen=global_cap)
        g_pts: deque[torch.Tensor] = deque(maxlen=global_cap)
        o_loc: deque[int] = deque(maxlen=local_cap)  # the training sample of each queued entry
        o_glob: deque[int] = deque(maxlen=global_cap)
        rot_gen = torch.Generator().manual_seed(c["seed"] + 1)
        world = dist.get_context().world_size

        def epoch_start(epoch: int) -> None:
            if rotation:
                rot["rgb"] = torch.from_numpy(self.rotated_features(items, epoch)).to(dev)

        def gathered(x: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
            """The whole global batch's rows (this rank's are ``x``)."""
            if world == 1:
                return x
            arr = (x.cpu().numpy() if x is not None else
                   np.zeros((0, *like.shape[1:]), np.float32))
            return torch.from_numpy(dist.all_gather_arrays(arr)).to(dev)

        def step(model: nn.Module, epoch: int, it: int, local: torch.Tensor) -> torch.Tensor:
            idx = local.to(dev)
            f = fg_t[idx]
            active = it >= start_it and len(q_rgb) == local_cap and c["compact_weight"] > 0
            queues = ((torch.cat(list(q_rgb)), torch.cat(list(q_pts)), torch.stack(list(g_rgb)),
                       torch.stack(list(g_pts))) if active else None)
            owners = None
            if active and c["compact_others"]:
                o_local, o_global = (torch.tensor(list(q), device=dev) for q in (o_loc, o_glob))
                owners = (idx, o_local.repeat_interleave(torch.tensor(
                    [len(r) for r in q_rgb], device=dev)), o_local.repeat_interleave(
                    torch.tensor([len(r) for r in q_pts], device=dev)), o_global, o_global)
            rot_index = None
            if rotation:
                m = int(f.sum())
                rot_index = torch.randperm(m, generator=rot_gen)[:m // 6].to(dev)
            loss, terms, a_rgb, a_pts, gr, gp = model(
                rgb_t[idx], pts_t[idx], f, rot["rgb"][idx] if rotation else None, rot_index,
                queues, owners)
            self.last_terms = {k: float(v) for k, v in terms.items()}
            # the queues see the whole global batch, in single-process order, on every rank
            n, cr, cp = rgb_t.shape[1], rgb_t.shape[2], pts_t.shape[2]
            a_rgb = gathered(a_rgb, torch.zeros(0, n, cr))
            a_pts = gathered(a_pts, torch.zeros(0, n, cp))
            gr = gathered(gr, torch.zeros(0, cr))
            gp = gathered(gp, torch.zeros(0, cp))
            fb = gathered(f, torch.zeros(0, n, dtype=torch.bool)) if world > 1 else f
            ib = gathered(idx, torch.zeros(0, dtype=torch.long)) if world > 1 else idx
            for i in range(len(a_rgb)):
                o_loc.append(int(ib[i]))
                o_glob.append(int(ib[i]))
                q_rgb.append(a_rgb[i])
                q_pts.append(a_pts[i][fb[i].bool()])
                g_rgb.append(gr[i])
                g_pts.append(gp[i])
            return loss

        self.history = run_training(
            self.adapters, n_samples, step, epochs=c["epochs"], batch_size=c["batch_size"],
            lr=c["lr"], weight_decay=c["weight_decay"], warmup_epochs=c["warmup_epochs"],
            seed=c["seed"], progress=progress, desc="lsfa adapters", epoch_start=epoch_start,
            extra_state={"rotation_generator": rot_gen, "queues": StateSlot(
                lambda: [list(q) for q in (q_rgb, q_pts, g_rgb, g_pts, o_loc, o_glob)],
                lambda saved: [q.clear() or q.extend(v) for q, v in zip(
                    (q_rgb, q_pts, g_rgb, g_pts, o_loc, o_glob), saved, strict=True)])})
        self._fit_part_norms(rgb, pts, fg)

    def _adapted(self, rgb: np.ndarray, pts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rgb, pts)`` adapted ``(B, n, C)`` tensors (the frozen ones without adapters)."""
        if self.adapters is None:
            return torch.from_numpy(np.asarray(rgb, np.float32)), \
                torch.from_numpy(np.asarray(pts, np.float32))
        dev = next(self.adapters.parameters()).device
        with torch.no_grad():
            return self.adapters.adapt(torch.from_numpy(np.ascontiguousarray(rgb)).to(dev),
                                       torch.from_numpy(np.ascontiguousarray(pts)).to(dev))

    def _fit_part_norms(self, rgb: np.ndarray, pts: np.ndarray, fg: np.ndarray,
                        chunk: int = 16) -> None:
        """:attr:`part_norms` from the adapted training foreground patches (triple banks)."""
        self.part_norms = (1.0, 1.0)
        if "fusion" not in self.BANKS:
            return
        parts_rgb, parts_pts = [], []
        for s in range(0, len(rgb), chunk):
            a_rgb, a_pts = self._adapted(rgb[s:s + chunk], pts[s:s + chunk])
            f = torch.from_numpy(np.ascontiguousarray(fg[s:s + chunk])).to(a_rgb.device)
            parts_rgb.append(a_rgb[f].cpu())
            parts_pts.append(a_pts[f].cpu())
        self.part_norms = mean_norms(torch.cat(parts_pts), torch.cat(parts_rgb))

    def transform(self, rgb: np.ndarray, pts: np.ndarray, fg: np.ndarray
                  ) -> dict[str, np.ndarray]:
        """Banks (:func:`bank_features`) of the adapted point and RGB patches (the frozen ones
        without adapters)."""
        a_rgb, a_pts = self._adapted(rgb, pts)
        feats = bank_features(a_rgb, a_pts, self.BANKS, self.part_norms)
        return {b: f.cpu().numpy().astype(np.float32)
                for b, f in zip(self.BANKS, feats, strict=True)}

    # --- persistence ----------------------------------------------------------------------

    def _save_networks(self, folder: Path) -> None:
        from pcad.io import atomic_save

        if self.adapters is None:
            return
        state = {k: v.cpu() for k, v in self.adapters.state_dict().items()}
        atomic_save(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))

    def _networks_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"part_norms": list(self.part_norms)}
        if self.adapters is None:
            return out
        return {"rgb_dim": self.adapters.rgb_dim, "pts_dim": self.adapters.pts_dim, **out}

    def _load_networks(self, folder: Path, state: dict[str, Any]) -> None:
        self.part_norms = read_part_norms(state, str(folder / RUN_FILE))
        if self.config["epochs"] == 0:
            self.adapters = None
            return
        rgb_dim, pts_dim = run_dims(state, ("rgb_dim", "pts_dim"), str(folder / RUN_FILE))
        saved = read_run_file(folder, STATE_FILE, "lsfa")
        self.adapters = load_run_module(lambda: self._new_adapters(rgb_dim, pts_dim), saved,
                                        str(folder / STATE_FILE))
        self.adapters.to(self.device).eval()
