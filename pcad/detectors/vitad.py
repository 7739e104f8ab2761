"""``vitad``: ViTAD's plain-ViT feature reconstruction (Zhang et al., "Exploring Plain ViT
Reconstruction for Multi-class Unsupervised Anomaly Detection", 2023), on pcad's patch features.

ViTAD encodes an image with a frozen pretrained ViT, fuses the tokens of several encoder
layers, and trains a small plain ViT decoder to reconstruct each encoder layer's tokens from
the fused ones (encoder layer ``i`` paired with a decoder layer, shallow with deep); the map is
the cosine distance between encoder and decoder tokens, summed over the layer pairs. On normal
data the decoder learns to reconstruct; on a defect the features it has never seen are
reconstructed poorly.

What pcad does (and where it departs from the paper):

- **Frozen encoder tokens**, one per patch of the ``image_size / 8`` square grid, from
  :class:`~pcad.detectors.patches.MultimodalFeatures`, computed once per training sample
  (the decoder trains on the cached tokens). ``modality``: ``"auto"`` (default) is
  ``"both"`` when every training sample has a cloud, else ``"rgb"`` (on bumps of a 64 px
  plate, I-AUROC 1.0 with ``"both"`` or ``"xyz"``, 0.63-0.81 with ``"rgb"``: geometric
  defects barely show in the image); ``"rgb"`` the RGB backbone's patch features
  (``rgb_backbone`` ``effnet-lite0``, or ``dino-vitb8`` with a local ``weights``
  checkpoint: ViTAD's DINO ViT); ``"xyz"`` the point features (``point_backbone``
  ``fpfh`` or ``pointmae``); ``"both"`` the two concatenated per patch.
- **Tokens**: ``pool`` x ``pool`` averages of the stride-8 patches (default 2: 14 x 14
  tokens at 224, ViTAD's 16-pixel patches; the decoder's attention over 784 stride-8 tokens
  costs about six times more on the CPU); ``pool=1`` keeps the stride-8 grid.
- **Levels (the encoder/decoder layer pairs)**: pcad's ``effnet-lite0`` features are already
  the concatenation of two backbone blocks (block 4: 40 channels, block 10: 112), so each block
  is one level; the point features are one more level; other RGB backbones give one RGB level.
  Each channel is standardised with the training tokens' mean / std (saved with the run).
- **Standardisation** (``standardise``, pcad's): ``"global"`` (vitad's and fader's default)
  standardises each channel with the mean / std over every training token; ``"category"``
  (uniad's and onenip's default), in a unified run, with each category's own, at fit and at
  predict (a sample of a category the fit did not see, and every sample of a single-category
  run, with the global ones; saved with the run, runs saved before load ``"global"``). The
  global statistics of a unified run are inflated by the differences between categories: a
  flat part's small variations (the built-in plate) shrink against them, and its defects
  with them. Unified runs on the built-in gear, plate, bracket and potato (dataset seeds 0-2,
  20 training and 8 good + 24 defective test samples per category, 224 px), global ->
  category: uniad I-AUROC 0.732 -> 0.799 (9 of 12 category runs better, 2 worse; per
  category, the same samples: 0.801), mAD 0.702 -> 0.723 (per category 0.724); vitad 0.803
  -> 0.790, mAD 0.736 -> 0.715 (a two-stage version of the same, tried first: on the demo
  dataset, unified, uniad 0.730 -> 0.766, vitad 0.735 -> 0.701). vitad's cosine distance
  does not see the scale the global statistics squash; uniad's L2 error does. onenip (the
  same 12 runs): 0.802 -> 0.824, mAD 0.734 -> 0.736, the plate's gain (see
  :mod:`~pcad.detectors.onenip`). fader was not measured.
- **Fusion + decoder**: ViTAD's fusion is a linear projection of the concatenated levels to the
  decoder width ``dim`` (a bottleneck); learned position embeddings; ``depth`` pre-norm
  transformer blocks (``heads`` attention heads, MLP ``mlp_ratio * dim``). Level ``l`` (finest
  first) is read by a linear head from the output of decoder block ``taps[l]``: the finest
  level from the last block, the coarsest from the earliest (ViTAD's mirrored pairing).
- **Training**: loss = sum over levels of the mean ``1 - cos`` per token, AdamW with warm-up +
  cosine schedule (:func:`~pcad.detectors.training.run_training`: live loss, ``train_log.csv``
  and ``--resume`` through :class:`~pcad.detectors.training.EpochLoop`), batches of
  ``batch_size`` images. Initialisation and shuffling are seeded: the same seed gives the same
  weights and scores on one device.
- **Map**: the mean over levels of ``1 - cos`` per patch (0 off the part with ``"xyz"`` /
  ``"both"``, where the point features have no foreground), upsampled and blurred as the other
  detectors (:func:`~pcad.detectors.base.upsample_map`, ``sigma`` 4 at 224).
- **Calibration** (``calibration``, pcad's, not in the papers;
  :mod:`~pcad.detectors.error_calibration`): with ``"nearest"`` (default for vitad, uniad and
  fader) each token's error is divided by the fitted decoder's error on the nearest
  standardised training token on the part (kept with the run); ``"none"`` maps the raw error
  (runs saved before the option). A small decoder trained on 20 samples reconstructs some
  normal structure (holes, rims, edges) as badly as a small defect, and the map's maximum
  landed there: uniad ranked the built-in bracket's samples below chance (I-AUROC 0.32 on
  seed 0, with AUPRO@0.3 0.80) while the same tokens in a memory bank reached 0.46-0.78.
  Measured on the built-in gear, plate, bracket and potato (dataset seeds 0-2, 12 runs, 20
  training and 8 good + 24 defective test samples, 224 px), ``"none"`` -> ``"nearest"``:
  uniad I-AUROC 0.681 -> 0.805 (11 runs better, 1 worse), AUPRO@0.3 0.861 -> 0.877, P-AUROC
  0.959 -> 0.972; fader 0.683 -> 0.794 (10 / 2), AUPRO@0.3 0.870 -> 0.877; vitad 0.783 ->
  0.811 (6 / 6), AUPRO@0.3 0.872 -> 0.879, P-AUROC 0.964 -> 0.972. Checked on the eight
  shared meshes afterwards (seed 0): vitad 0.721 -> 0.810, uniad 0.627 -> 0.748, fader 0.603
  -> 0.739 (each 7 meshes of 8 better). A unified run (``pcad train --categories``) keeps
  each training token's category: a test sample's tokens are compared with the training
  tokens of its own category (``sample.category``, as onenip's prompt; a category the run
  was not fitted on is compared with every token). One decoder still serves every category.
  Demo dataset (7 categories, seed 0), unified, against the nearest token of any category:
  uniad I-AUROC 0.700 -> 0.721, mAD 0.686 -> 0.694; vitad 0.725 -> 0.735, mAD 0.716 ->
  0.723 (a single-category run is unchanged).
  Tried, not adopted: one calibration per level (each level's ``1 - cos`` over its own
  training reference, then their mean or maximum, so that the 33 FPFH channels' evidence is
  not averaged away as in btf's joint bank): per category on the same built-in parts and
  seeds (12 runs), I-AUROC 0.813 -> 0.797 (mean) and 0.768 (maximum).
- **Image score** (``image_score``): ``"foreground-max"`` (default), the map's maximum over the
  part when the sample has a cloud (the whole map for an RGB-only sample); ``"max"``, the
  map's maximum.
- **torchrun**: not supported (``supports_distributed`` False): the RGB-only token cache is
  not sharded over ranks; train in one process (it is a few seconds to minutes on the CPU).

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("vitad", image_size=64, modality="both", epochs=2)
    >>> det.modalities, det.grid
    (('rgb', 'xyz'), (8, 8))
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

from pcad.checks import check_choice, check_int, check_positive
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
    token_errors_in_batches,
)
from pcad.detectors.patches import (
    GridDeviceMixin,
    SampleForeground,
)
from pcad.detectors.registry import register_detector
from pcad.detectors.tokens import (
    FPFH_DEFAULTS,
    IMAGE_SCORE_HELP,
    ModalityPatchesMixin,
    channel_stats,
    patch_grid,
    standardise,
)
from pcad.errors import FileFormatError, InvalidInputError

STATE_FILE = "vitad.pt"
#: the ``standardise`` option: one mean / std per channel over every training token, or one
#: per category in a unified run
STANDARDISE = ("global", "category")
#: the largest decoder (an edited run could otherwise ask for gigabytes)
MAX_DIM, MAX_DEPTH = 2048, 32


def decoder_taps(n_levels: int, depth: int) -> list[int]:
    """The decoder block whose output each level (finest first) is read from: the finest from
    the last block, the coarsest from the first, the others evenly between.

    Example:
        >>> decoder_taps(2, 4), decoder_taps(3, 3), decoder_taps(1, 2)
        ([3, 0], [2, 1, 0], [1])
    """
    if n_levels == 1:
        return [depth - 1]
    return [depth - 1 - round(i * (depth - 1) / (n_levels - 1)) for i in range(n_levels)]


class Block(nn.Module):
    """A plain pre-norm ViT block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``; ``(B, n, dim)``.

    Example:
        >>> import torch
        >>> Block(16, 4)(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads) \
            .permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class ViTADDecoder(nn.Module):
    """Fusion + plain ViT decoder: ``(B, n, sum(level_dims))`` tokens to one ``(B, n, d_l)``
    reconstruction per level.

    Args:
        level_dims: channels of each level (finest first), concatenated in the input.
        n_tokens: tokens per image (the patch grid).
        dim, depth, heads, mlp_ratio: decoder width, blocks, attention heads, MLP width.

    Example:
        >>> import torch
        >>> dec = ViTADDecoder((3, 5), n_tokens=4, dim=16, depth=2, heads=4)
        >>> [tuple(o.shape) for o in dec(torch.zeros(2, 4, 8))]
        [(2, 4, 3), (2, 4, 5)]
    """

    def __init__(self, level_dims: Sequence[int], n_tokens: int, dim: int, depth: int,
                 heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.level_dims = tuple(int(d) for d in level_dims)
        self.fuse = nn.Linear(sum(self.level_dims), dim)
        self.pos = nn.Parameter(torch.zeros(1, n_tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleList(nn.Linear(dim, d) for d in self.level_dims)
        self.taps = decoder_taps(len(self.level_dims), depth)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.fuse(x) + self.pos
        outs: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in self.taps:
                outs[i] = self.norm(h)
        return [head(outs[t]) for head, t in zip(self.heads, self.taps, strict=True)]

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n)``: the mean over levels of ``1 - cos`` between each level's tokens in ``x``
        and their reconstruction."""
        parts = torch.split(x, list(self.level_dims), dim=-1)
        d = [1 - F.cosine_similarity(r, t, dim=-1) for r, t in zip(self(x), parts, strict=True)]
        return torch.stack(d).mean(0)


@register_detector("vitad")
class ViTADDetector(CalibrationOption, ModalityPatchesMixin, GridDeviceMixin, Detector):
    """ViTAD: a plain ViT decoder reconstructing frozen patch tokens (see the module)."""

    modalities = ("rgb",)
    #: no torchrun: the RGB token cache is not sharded over ranks (see the module)
    supports_distributed = False
    #: the run file of the network and its stats; the network's name in messages
    state_file: ClassVar[str] = STATE_FILE
    network_word: ClassVar[str] = "decoder"
    #: :meth:`fit_standardisation` floors each channel's std at this x the median one (the
    #: L2-error detectors use :data:`STD_FLOOR`)
    std_floor: ClassVar[float] = 0.0
    defaults = {"image_size": 224, "modality": "auto", "pool": 2, "dim": 128, "depth": 3,
                "heads": 4,
                "mlp_ratio": 4.0, "epochs": 40, "lr": 1e-3, "batch_size": 8,
                "weight_decay": 1e-4, "warmup_epochs": 2, "seed": 0, "sigma": 4.0,
                "image_score": "foreground-max", "rgb_backbone": "effnet-lite0",
                "weights": None, "point_backbone": "fpfh", "point_weights": None,
                "num_group": None, "group_size": None, "device": "auto", **FPFH_DEFAULTS,
                **CalibrationOption.CALIBRATION_DEFAULTS, "standardise": "global"}
    SCORES = ("foreground-max", "max")
    #: runs saved before the calibration existed score uncalibrated errors; before
    #: ``standardise``, with the global statistics
    legacy_options: ClassVar[dict[str, Any]] = {**ModalityPatchesMixin.legacy_options,
                                                **CalibrationOption.CALIBRATION_LEGACY,
                                                "standardise": "global"}
    option_help: ClassVar[dict[str, str]] = {
        "modality": "encoder tokens: rgb (backbone patches), xyz (point patches), both "
                    "(concatenated per patch) or auto (both when the training samples have "
                    "clouds, else rgb)",
        "pool": "tokens are k x k averages of the stride-8 patch grid (2: 14 x 14 tokens at "
                "224, as ViTAD's 16-pixel patches); image_size / 8 must be a multiple of it",
        "dim": "decoder width (the fusion projects the encoder tokens to it); a multiple of heads",
        "depth": "decoder transformer blocks",
        "heads": "attention heads per decoder block",
        "mlp_ratio": "hidden width of the decoder MLPs as a multiple of dim",
        "batch_size": "training batch size in images",
        "image_score": IMAGE_SCORE_HELP,
        "standardise": "each channel's mean / std for the network: over every training token "
                       "(global) or, in a unified run, over each category's (category: a "
                       "sample is standardised with its own category's; one of a category "
                       "the fit did not see, or a single-category run, with the global ones)",
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        size = self.check_modality_options()
        c["pool"] = check_int(c["pool"], "pool", minimum=1, maximum=8)
        if (size // 8) % c["pool"]:
            raise InvalidInputError(f"pool: image_size / 8 ({size // 8}) must be a multiple of "
                                    f"it, got {c['pool']}")
        c["dim"] = check_int(c["dim"], "dim", minimum=4, maximum=MAX_DIM)
        c["depth"] = check_int(c["depth"], "depth", minimum=1, maximum=MAX_DEPTH)
        c["heads"] = check_int(c["heads"], "heads", minimum=1, maximum=c["dim"])
        if c["dim"] % c["heads"]:
            raise InvalidInputError(f"dim: must be a multiple of heads ({c['heads']}), got "
                                    f"{c['dim']}")
        c["mlp_ratio"] = check_positive(c["mlp_ratio"], "mlp_ratio")
        if c["mlp_ratio"] > 16:
            raise InvalidInputError(f"mlp_ratio: must be <= 16, got {c['mlp_ratio']:g}")
        self.check_training_options()
        self.check_calibration()
        c["standardise"] = check_choice(c["standardise"], "standardise", STANDARDISE)
        self.decoder: ViTADDecoder | None = None
        self.stats: dict[str, torch.Tensor] = {}
        #: with ``standardise="category"`` and two or more training categories: each one's
        #: ``{"mean", "std"}``
        self.category_stats: dict[str, dict[str, torch.Tensor]] = {}
        self.history: list[float] = []

    # --- features -------------------------------------------------------------------------

    @property
    def token_grid(self) -> tuple[int, int]:
        """``(h, w)`` of the decoder's token grid: the patch grid over ``pool``."""
        return (self.grid[0] // self.config["pool"],) * 2

    def _pooled(self, toks: np.ndarray, fg: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """The ``(n, C)`` patch features and ``(n,)`` foreground as ``pool x pool`` averages
        (a token is on the part when one of its patches is)."""
        k = self.config["pool"]
        if k == 1:
            return toks, fg
        th, tw = self.token_grid
        t = toks.reshape(th, k, tw, k, -1).mean(axis=(1, 3), dtype=np.float64)
        t = np.ascontiguousarray(t.reshape(th * tw, -1), dtype=np.float32)
        if fg is not None:
            fg = fg.reshape(th, k, tw, k).any(axis=(1, 3)).reshape(-1)
        return t, fg

    def rgb_levels(self, width: int) -> list[int]:
        """The channels of each RGB level (finest first): ``effnet-lite0``'s two blocks, else
        one level of ``width``."""
        if self.config["rgb_backbone"] == "effnet-lite0":
            from pcad.features.effnet import BLOCK_CHANNELS, DEFAULT_LAYERS

            split = [BLOCK_CHANNELS[i] for i in DEFAULT_LAYERS]
            if sum(split) == width:
                return split
        return [width]

    def tokens(self, sample: Any, foreground: SampleForeground | None = None,
               where: str = "test sample") -> tuple[np.ndarray, np.ndarray | None, list[int]]:
        """``(tokens (n, C) float32, fg (n,) bool or None, level widths)`` of ``sample``: the
        encoder's patch tokens for ``modality`` (``fg``: the point features' foreground
        patches; None for ``"rgb"``)."""
        rgb, pts, fg = self.modality_parts(sample, foreground, where)
        levels = [*([] if rgb is None else self.rgb_levels(rgb.shape[1])),
                  *([] if pts is None else [pts.shape[1]])]
        feats = [f for f in (rgb, pts) if f is not None]
        return (*self._pooled(feats[0] if len(feats) == 1 else np.concatenate(feats, axis=1),
                              fg), levels)

    def _standardise(self, x: np.ndarray, category: str | None = None) -> torch.Tensor:
        st = self.stats if category is None else self.category_stats.get(str(category),
                                                                          self.stats)
        return standardise(x, st["mean"], st["std"], self.device)

    def standardise_samples(self, tokens: np.ndarray,
                            categories: Sequence[str | None] | None = None) -> torch.Tensor:
        """``(N, n, C)`` float32 on the device: each sample's ``(n, C)`` tokens standardised
        with its category's statistics (:attr:`category_stats`; the global ones without
        them)."""
        n_img, n_tok, width = tokens.shape
        if not self.category_stats or categories is None:
            return self._standardise(tokens.reshape(-1, width)).reshape(n_img, n_tok, width)
        return torch.stack([self._standardise(t, c)
                            for t, c in zip(tokens, categories, strict=True)])

    # --- fit / predict --------------------------------------------------------------------

    def fit(self, samples, progress: bool = False) -> ViTADDetector:
        from tqdm import tqdm

        items = self._train_list(samples)
        self.resolve_modality(items)  # "auto" becomes what the data has
        toks, fgs, levels = [], [], None
        for s in tqdm(items, disable=not progress, desc="vitad features", unit="sample"):
            t, fg, levels = self.tokens(s, where="training set")
            toks.append(t)
            fgs.append(fg)
        cats = [sample_category(s) for s in items]
        self.fit_tokens(np.stack(toks), levels, progress=progress, categories=cats)
        self.fit_calibration(np.stack(toks), fgs, cats)
        return self

    def fit_calibration(self, tokens: np.ndarray, fgs: Sequence[np.ndarray | None],
                        categories: Sequence[str] | None = None) -> None:
        """With ``calibration="nearest"``: keep the fitted decoder's error on every training
        token ``(N, n, C)`` on the part (``fgs``: each sample's ``(n,)`` foreground, or None:
        every token) with the standardised token (:mod:`~pcad.detectors.error_calibration`);
        with the samples' ``categories`` (two or more), a test sample's tokens are compared
        with its own category's."""
        if not self.calibrating:
            return
        n_img, n_tok, width = tokens.shape
        x = self.standardise_samples(tokens, categories)
        err = self.training_values(x, categories)
        keep = np.stack([np.ones(n_tok, bool) if fg is None else np.asarray(fg, bool)
                         for fg in fgs])
        groups = None if categories is None else patch_groups(categories, n_tok)
        self.fit_error_calibration(x.reshape(-1, width), err.reshape(-1), keep, groups)

    def training_values(self, x: torch.Tensor, categories: Sequence[str] | None = None
                        ) -> np.ndarray:
        """``(N, n)``: the fitted network's per-token value (what the map shows, before the
        calibration) on standardised training tokens ``x (N, n, C)`` of the samples'
        ``categories``: the decoder's distances."""
        return token_errors_in_batches(self.decoder.distances, x)

    def fit_standardisation(self, tokens: np.ndarray, levels: Sequence[int],
                            categories: Sequence[str | None] | None = None) -> torch.Tensor:
        """Check ``tokens (N, n, C)`` against the token grid and the ``levels`` (widths, summing
        to C), fit :attr:`stats` (each channel's mean and std over every training token; the
        std floored at :attr:`std_floor` x the median channel std and at 1e-6) and, with
        ``standardise="category"`` and the samples' ``categories`` naming two or more,
        :attr:`category_stats` (the same over each category's tokens); return the standardised
        tokens ``(N, n, C)`` float32 on the detector's device."""
        n_img, n_tok, width = tokens.shape
        th, tw = self.token_grid
        if n_tok != th * tw or sum(levels) != width:
            raise InvalidInputError(f"detector {self.name!r}: tokens {tokens.shape} do not fit the "
                                    f"{self.token_grid} token grid and levels {list(levels)}")
        mean, std = channel_stats(torch.from_numpy(tokens.reshape(-1, width)), self.std_floor)
        self.stats = {"mean": mean, "std": std}
        self.category_stats = {}
        names = np.asarray([str(c) for c in categories or ()], dtype=object)
        if self.config["standardise"] == "category" and len(set(names.tolist())) > 1:
            for name in dict.fromkeys(names.tolist()):
                m, sd = channel_stats(torch.from_numpy(tokens[names == name].reshape(-1, width)),
                                      self.std_floor)
                self.category_stats[name] = {"mean": m, "std": sd}
        return self.standardise_samples(tokens, categories)

    def new_network(self, levels: Sequence[int]) -> nn.Module:
        """:meth:`_network` for ``levels`` initialised from the ``seed`` option (the global torch
        generator is left as it was), on the detector's device."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config["seed"])
            net = self._network(levels)
        return net.to(self.device)

    def fit_tokens(self, tokens: np.ndarray, levels: Sequence[int], progress: bool = False,
                   categories: Sequence[str | None] | None = None) -> ViTADDetector:
        """Fit the standardisation and the decoder on ``(N, n, C)`` encoder tokens whose
        channels are the ``levels`` (widths, finest first) concatenated (``categories``: the
        samples', for ``standardise="category"``)."""
        from pcad.detectors.training import run_training

        c = self.config
        n_img = len(tokens)
        x = self.fit_standardisation(tokens, levels, categories)
        self.decoder = self.new_network(levels)

        def step_loss(model: nn.Module, epoch: int, step: int,
                      idx: torch.Tensor) -> torch.Tensor:
            batch = x[idx.to(self.device)]
            outs = model(batch)
            parts = torch.split(batch, list(levels), dim=-1)
            return sum((1 - F.cosine_similarity(o, t, dim=-1)).mean()
                       for o, t in zip(outs, parts, strict=True))

        self.history = run_training(
            self.decoder, n_img, step_loss, epochs=c["epochs"], batch_size=c["batch_size"],
            lr=c["lr"], weight_decay=c["weight_decay"], warmup_epochs=c["warmup_epochs"],
            seed=c["seed"], progress=progress, desc="vitad training")
        self.decoder.eval()
        self.fitted = True
        return self

    def standardised_tokens(self, sample: Any, foreground: SampleForeground | None = None
                            ) -> tuple[torch.Tensor, np.ndarray | None]:
        """``(z (n, C), fg (n,) or None)``: the fitted detector's standardised :meth:`tokens`
        of a test ``sample`` (their width checked against the fit's)."""
        self._require_fit()
        toks, fg, _ = self.tokens(sample, foreground)
        self.check_width(toks.shape[1], self.stats["mean"].numel(),
                         f"its {self.network_word} ({self.state_file})")
        return self._standardise(toks, sample_category(sample)), fg

    def patch_scores(self, sample: Any, foreground: SampleForeground | None = None
                     ) -> np.ndarray:
        """``(h, w) float32`` on the :attr:`token_grid`: the mean over levels of ``1 - cos``
        per token (0 off the part with point features)."""
        z, fg = self.standardised_tokens(sample, foreground)
        with torch.no_grad():
            d = self.decoder.distances(z[None])[0]
            d = self.calibrate(z, d, fg, sample_category(sample))
        return patch_grid(d, fg, self.token_grid)

    # --- persistence ----------------------------------------------------------------------

    def _save_state(self, folder: Path) -> None:
        from pcad.io import atomic_save

        state = {"decoder": {k: v.cpu() for k, v in self.decoder.state_dict().items()},
                 "stats": {k: v.cpu() for k, v in self.stats.items()},
                 **self.category_stats_state(), **self.calibration_state()}
        atomic_save(folder / self.state_file, lambda tmp: torch.save(state, tmp))

    def category_stats_state(self) -> dict[str, Any]:
        """``{"category_stats": {"names", "mean" (G, C), "std" (G, C)}}`` for the state file,
        or ``{}`` without :attr:`category_stats`."""
        if not self.category_stats:
            return {}
        names = list(self.category_stats)
        return {"category_stats": {
            "names": names,
            **{k: torch.stack([self.category_stats[n][k].cpu() for n in names])
               for k in ("mean", "std")}}}

    def load_category_stats(self, saved: dict[str, Any], width: int, where: str) -> None:
        """:attr:`category_stats` from a state file's dict ``saved`` (none when it has no
        entry); a bad entry is a :class:`~pcad.errors.FileFormatError` naming ``where``."""
        self.category_stats = {}
        entry = saved.get("category_stats")
        if entry is None:
            return
        names = entry.get("names") if isinstance(entry, dict) else None
        ok = isinstance(names, list) and len(names) > 1 and all(isinstance(n, str)
                                                                for n in names)
        if ok:
            shape = (len(names), width)
            ok = all(isinstance(entry.get(k), torch.Tensor) and entry[k].is_floating_point()
                     and tuple(entry[k].shape) == shape and bool(torch.isfinite(entry[k]).all())
                     for k in ("mean", "std")) and bool((entry["std"] > 0).all())
        if not ok:
            raise FileFormatError(f"{where}: 'category_stats' must hold a list of two or more "
                                  f"str 'names', a finite (G, {width}) 'mean' and a positive "
                                  "'std'")
        self.category_stats = {n: {"mean": entry["mean"][i].float(), "std": entry["std"][i].float()}
                               for i, n in enumerate(names)}

    def _state_record(self) -> dict[str, Any]:
        return {"levels": list(self.decoder.level_dims), "history": self.history}

    def _network(self, levels: Sequence[int]) -> nn.Module:
        """The (untrained) network for tokens of ``levels`` channel widths."""
        c = self.config
        return ViTADDecoder(levels, self.token_grid[0] * self.token_grid[1], c["dim"],
                            c["depth"], c["heads"], c["mlp_ratio"])

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:
        path = folder / self.state_file
        levels = state.get("levels")
        if not isinstance(levels, list) or not levels or len(levels) > 8:
            raise FileFormatError(f"{folder / RUN_FILE}: 'state.levels' must be a list of 1 "
                                  f"to 8 channel counts, got {levels!r:.80}")
        levels = run_dims({f"level{i}": v for i, v in enumerate(levels)},
                          tuple(f"level{i}" for i in range(len(levels))), str(folder / RUN_FILE))
        saved = read_run_file(folder, self.state_file, self.name, ("decoder", "stats"))
        self.decoder = load_run_module(lambda: self._network(levels), saved["decoder"],
                                       f"{path} ['decoder']")
        self.decoder.to(self.device).eval()
        width = sum(levels)
        self.stats = check_run_stats(saved["stats"], {"mean": width, "std": width}, str(path))
        self.load_category_stats(saved, width, str(path))
        self.history = [float(x) for x in state.get("history", [])]
        self.load_calibration(saved, width, str(path))
