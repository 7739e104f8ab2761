"""``uniad``: UniAD's feature reconstruction transformer (You et al., "A Unified Model for
Multi-class Anomaly Detection", NeurIPS 2022), on pcad's frozen patch tokens.

UniAD reconstructs a frozen backbone's patch features with a transformer trained on normal
images of every category at once. Three devices keep it from learning the identity (which
would reconstruct defects too): a **layer-wise learned query** (each decoder layer starts
from its own learned embedding, one vector per token, and reads the previous layer's output
through cross-attention), **neighbour-masked attention** (a token may not attend to its own
``k x k`` neighbourhood, itself included, so it must be predicted from farther tokens) and
**feature jittering** (training inputs get noise, the target stays clean: the model learns to
denoise towards normal features). The map is the per-token L2 reconstruction error.

What pcad does (and where it departs from the paper):

- **Tokens**: vitad's token path (this detector extends :class:`~pcad.detectors.vitad.
  ViTADDetector`): ``modality`` ``auto`` / ``rgb`` / ``xyz`` / ``both`` of
  :class:`~pcad.detectors.patches.MultimodalFeatures` (EfficientNet-Lite0 for RGB, FPFH or
  Point-MAE for points), ``pool x pool`` averages of the stride-8 patch grid, each channel
  standardised with the training tokens' mean / std, the std floored at 0.1 x the median
  channel std (a channel constant on normal parts, e.g. an FPFH bin, would otherwise turn
  an L2 error into 1e7). UniAD used raw EfficientNet-B4 stages. **Default
  ``standardise="category"``** (vitad's option): in a unified run each category's tokens
  are standardised with its own statistics (built-in gear, plate, bracket, potato, seeds 0-2,
  unified: I-AUROC 0.732 -> 0.799 against 0.801 per category, mAD 0.702 -> 0.723 against
  0.724; see :mod:`~pcad.detectors.vitad`); a single-category run is unchanged.
- **Transformer**: a linear projection to ``dim``, a learned position embedding (UniAD: a
  fixed sine one) added to queries and keys of every attention, ``depth`` post-norm encoder
  layers and ``depth`` decoder layers (UniAD: 4 + 4 at width 256; pcad's defaults are small),
  each decoder layer with its own learned query ``(n_tokens, dim)``, then a linear projection
  back to the token width.
- **Neighbour mask** (``neighbor_mask`` ``k``, odd, 0 off): in the encoder's self-attention
  and in the decoder's self- and cross-attention (UniAD's three masks), token ``(i, j)``
  ignores tokens ``(i', j')`` with ``|i - i'|, |j - j'| <= k // 2``. ``k`` must be smaller
  than the token grid: a larger ``k`` is capped at the largest odd size below the grid's
  side (the default 7 is UniAD's on 14 x 14 tokens, 224 px; on the 4 x 4 tokens at 64 px it
  is 3; at 32 px, 2 x 2 tokens, 1: a token ignores only itself). 3 -> 7 on the demo dataset
  (7 built-in categories, seed 0): unified, I-AUROC 0.721 -> 0.730, mAD 0.694 -> 0.713; per
  category 0.821 -> 0.826, mAD 0.745 -> 0.747; on the built-in gear, plate, bracket and
  potato (dataset seeds 0-2, 12 runs per category) 0.805 -> 0.801 (7 runs worse by at most
  0.011, none better, AUPRO@0.3 0.877 -> 0.877): per category the mask's size hardly matters;
  one model for seven categories, which could otherwise copy a token from its neighbours,
  gains.
- **Jittering**: with probability ``jitter_prob`` per training batch, each input token
  ``x`` gets ``N(0, 1) * |x| / C * jitter_scale`` (UniAD's rule and defaults 20 / 1.0),
  from a seeded generator (saved in the checkpoint: ``--resume`` is bit-identical).
- **Training**: MSE between reconstruction and clean tokens, AdamW with warm-up + cosine in
  :func:`~pcad.detectors.training.run_training` (UniAD: AdamW, step decay), live loss,
  ``train_log.csv``, ``--resume``. ``pcad train --categories`` fits one model on every
  category's samples, as UniAD's unified setting.
- **Map / score**: per-token L2 error (0 off the part with point features), divided by the
  error on the nearest training token (``calibration`` ``"nearest"``, vitad's; ``"none"``:
  the raw error, UniAD's), upsampled and blurred
  (:func:`~pcad.detectors.base.upsample_map`); the image score is the map's maximum
  over the part (``image_score`` ``foreground-max``, the whole map without a cloud) or over
  the whole map (``max``). UniAD takes the maximum of the average-pooled map.
- **FADeR plug-in** (``fader``, default false): :class:`~pcad.detectors.fader.FADeR`'s two
  MLP layers gate each token of the encoder's output before the decoder reads it (a soft
  mask towards zero on the memory of the cross-attention), trained as in ``fader``: a
  fraction of the (jittered) training tokens is corrupted
  (:func:`~pcad.detectors.fader.corrupt_tokens`) and the gates learn the attenuation
  signals (BCE, weight 1) next to the MSE. FADeR's hidden width is ``dim // 2``. False
  leaves the network, its training and its weights file as they were.
- **torchrun**: not supported, as vitad (the token cache is not sharded over ranks).

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("uniad", image_size=64, modality="both")
    >>> det.modalities, det.token_grid, det.config["neighbor_mask"], det.mask_size
    (('rgb', 'xyz'), (4, 4), 7, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pcad.checks import check_flag, check_int, check_positive
from pcad.detectors.fader import (
    CORRUPT_PROB,
    CORRUPT_SCALE,
    FADeR,
    attenuation_loss,
    corrupt_tokens,
)
from pcad.detectors.registry import register_detector
from pcad.detectors.tokens import FPFH_DEFAULTS, STD_FLOOR
from pcad.detectors.vitad import ViTADDetector
from pcad.errors import InvalidInputError

STATE_FILE = "uniad.pt"
#: the largest neighbour mask (a 28 x 28 token grid at 448 px, pool 2, takes 27)
MAX_NEIGHBOR = 63


def neighbour_mask(grid: tuple[int, int], k: int) -> torch.Tensor:
    """``(n, n) bool`` over the ``grid`` tokens (row-major): True where token ``a`` may not
    attend to token ``b`` (``b`` in the ``k x k`` window centred on ``a``); all False for
    ``k = 0``.

    Example:
        >>> m = neighbour_mask((3, 3), 3)
        >>> m.shape, int(m[4].sum()), int(m[0].sum())  # centre: all 9; corner: 4
        (torch.Size([9, 9]), 9, 4)
    """
    h, w = grid
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    r = k // 2
    if k == 0:
        return torch.zeros(h * w, h * w, dtype=torch.bool)
    return ((ii[:, None] - ii[None]).abs() <= r) & ((jj[:, None] - jj[None]).abs() <= r)


def _ffn(dim: int, mlp_ratio: float) -> nn.Sequential:
    hidden = max(1, int(dim * mlp_ratio))
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))


class EncoderLayer(nn.Module):
    """UniAD's post-norm encoder layer: masked self-attention (position added to queries and
    keys), then an MLP; ``(B, n, dim)``.

    Example:
        >>> import torch
        >>> EncoderLayer(8, 2)(torch.zeros(2, 4, 8), torch.zeros(1, 4, 8), None).shape
        torch.Size([2, 4, 8])
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = _ffn(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None
                ) -> torch.Tensor:
        q = x + pos
        x = self.norm1(x + self.attn(q, q, x, attn_mask=mask, need_weights=False)[0])
        return self.norm2(x + self.mlp(x))


class QueryDecoderLayer(nn.Module):
    """UniAD's decoder layer with a layer-wise learned query: the layer's own ``(n, dim)``
    query embedding attends to itself (masked), then to ``memory`` (the previous layer's
    output; masked), then an MLP, post-norm; returns ``(B, n, dim)``.

    Example:
        >>> import torch
        >>> layer = QueryDecoderLayer(8, 2, n_tokens=4)
        >>> layer(torch.zeros(3, 4, 8), torch.zeros(1, 4, 8), None).shape
        torch.Size([3, 4, 8])
    """

    def __init__(self, dim: int, heads: int, n_tokens: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, n_tokens, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))
        self.mlp = _ffn(dim, mlp_ratio)

    def forward(self, memory: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None
                ) -> torch.Tensor:
        t = self.query.expand(memory.shape[0], -1, -1)
        q = t + pos
        t = self.norm1(t + self.self_attn(q, q, t, attn_mask=mask, need_weights=False)[0])
        t = self.norm2(t + self.cross_attn(t + pos, memory + pos, memory, attn_mask=mask,
                                           need_weights=False)[0])
        return self.norm3(t + self.mlp(t))


class UniADTransformer(nn.Module):
    """``(B, n, C)`` tokens to their ``(B, n, C)`` reconstruction: projection, ``depth``
    neighbour-masked encoder layers, ``depth`` layer-wise-query decoder layers, projection.

    Args:
        level_dims: channels of each feature level, concatenated in the input (kept for the
            run record; the reconstruction covers all ``C = sum(level_dims)`` channels).
        grid: ``(h, w)`` token grid (``n = h * w``).
        dim, depth, heads, mlp_ratio: width, layers of the encoder and of the decoder each,
            attention heads, MLP width as a multiple of ``dim``.
        neighbor_mask: ``k`` of the ``k x k`` neighbourhood a token ignores (0: none).
        fader_hidden: > 0: a :class:`~pcad.detectors.fader.FADeR` of this hidden width gates
            the encoder's output tokens before the decoder (0: none).

    Example:
        >>> import torch
        >>> net = UniADTransformer((3, 5), (3, 3), dim=16, depth=2, heads=4, neighbor_mask=3)
        >>> net(torch.zeros(2, 9, 8)).shape, net.distances(torch.zeros(2, 9, 8)).shape
        (torch.Size([2, 9, 8]), torch.Size([2, 9]))
    """

    def __init__(self, level_dims: Sequence[int], grid: tuple[int, int], dim: int, depth: int,
                 heads: int, mlp_ratio: float = 4.0, neighbor_mask: int = 3,
                 fader_hidden: int = 0) -> None:
        super().__init__()
        self.level_dims = tuple(int(d) for d in level_dims)
        width, n = sum(self.level_dims), grid[0] * grid[1]
        self.input_proj = nn.Linear(width, dim)
        self.pos = nn.Parameter(torch.zeros(1, n, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.encoder = nn.ModuleList(EncoderLayer(dim, heads, mlp_ratio) for _ in range(depth))
        self.decoder = nn.ModuleList(QueryDecoderLayer(dim, heads, n, mlp_ratio)
                                     for _ in range(depth))
        self.output_proj = nn.Linear(dim, width)
        self.register_buffer("mask", neighbour_mask(grid, neighbor_mask), persistent=False)
        self.use_mask = neighbor_mask > 0
        if fader_hidden > 0:  # only then: without it the state dict is as it was
            self.fader = FADeR(dim, fader_hidden)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(reconstruction (B, n, C), FADeR's gates (B, n) or None)``."""
        mask = self.mask if self.use_mask else None
        h = self.input_proj(x)
        for layer in self.encoder:
            h = layer(h, self.pos, mask)
        gate = None
        if hasattr(self, "fader"):
            h, gate = self.fader(h)
        for layer in self.decoder:
            h = layer(h, self.pos, mask)
        return self.output_proj(h), gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)[0]

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n)``: the L2 norm of each token's reconstruction error."""
        return torch.linalg.vector_norm(self(x) - x, dim=-1)


def jitter(x: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """UniAD's feature jitter: ``x + N(0, 1) * |x| / C * scale`` per token of ``(..., C)``
    (the noise drawn on the CPU from ``generator``, then moved to ``x``'s device).

    Example:
        >>> import torch
        >>> x = torch.ones(2, 3, 4)
        >>> y = jitter(x, 20.0, torch.Generator().manual_seed(0))
        >>> y.shape, bool((y != x).all())
        (torch.Size([2, 3, 4]), True)
    """
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True) / x.shape[-1]
    return x + noise * norms * scale


@register_detector("uniad")
class UniADDetector(ViTADDetector):
    """UniAD: a neighbour-masked transformer with layer-wise queries reconstructing frozen
    patch tokens (see the module)."""

    modalities = ("rgb",)
    supports_distributed = False
    defaults = {"image_size": 224, "modality": "auto", "pool": 2, "dim": 64, "depth": 2,
                "heads": 4, "mlp_ratio": 4.0, "neighbor_mask": 7, "jitter_scale": 20.0,
                "jitter_prob": 1.0, "fader": False, "epochs": 40, "lr": 1e-3, "batch_size": 8,
                "weight_decay": 1e-4, "warmup_epochs": 2, "seed": 0, "sigma": 4.0,
                "image_score": "foreground-max", "rgb_backbone": "effnet-lite0",
                "weights": None, "point_backbone": "fpfh", "point_weights": None,
                "num_group": None, "group_size": None, "device": "auto", **FPFH_DEFAULTS,
                **ViTADDetector.CALIBRATION_DEFAULTS, "standardise": "category"}
    option_help: ClassVar[dict[str, str]] = {
        "dim": "transformer width (the input projection maps the tokens to it); a multiple "
               "of heads",
        "depth": "layers of the encoder and of the decoder each",
        "heads": "attention heads per attention",
        "mlp_ratio": "hidden width of the MLPs as a multiple of dim",
        "neighbor_mask": "k: each token ignores its own k x k token neighbourhood in every "
                         "attention (odd; capped below the token grid's side; 0: no mask)",
        "jitter_scale": "training noise per token: N(0, 1) * |token| / channels * this "
                        "(UniAD's 20; 0: none)",
        "jitter_prob": "probability that a training batch is jittered",
        "fader": "true: FADeR's two attenuation MLP layers (pcad.detectors.fader) gate the "
                 "encoder's tokens before the decoder",
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        c["neighbor_mask"] = k = check_int(c["neighbor_mask"], "neighbor_mask", minimum=0,
                                           maximum=MAX_NEIGHBOR)
        if k % 2 == 0 and k:
            raise InvalidInputError(f"neighbor_mask: must be 0 or odd, got {k}")
        c["jitter_scale"] = check_positive(c["jitter_scale"], "jitter_scale", allow_zero=True)
        c["jitter_prob"] = check_positive(c["jitter_prob"], "jitter_prob", allow_zero=True)
        if c["jitter_prob"] > 1:
            raise InvalidInputError(f"jitter_prob: must be in [0, 1], got {c['jitter_prob']:g}")
        c["fader"] = check_flag(c["fader"], "fader")
        self.decoder: UniADTransformer | None = None

    @property
    def mask_size(self) -> int:
        """The ``k`` the attention masks use: ``neighbor_mask`` capped at the largest odd size
        smaller than the token grid (every token keeps tokens to attend to)."""
        side = self.token_grid[0]
        return min(self.config["neighbor_mask"], side - 1 - side % 2 if side > 1 else 0)

    state_file = STATE_FILE
    std_floor = STD_FLOOR
    network_word = "transformer"

    def _network(self, levels: Sequence[int]) -> UniADTransformer:
        c = self.config
        return UniADTransformer(levels, self.token_grid, c["dim"], c["depth"], c["heads"],
                                c["mlp_ratio"], self.mask_size,
                                c["dim"] // 2 if c["fader"] else 0)

    def fit_tokens(self, tokens: np.ndarray, levels: Sequence[int], progress: bool = False,
                   categories: Sequence[str | None] | None = None) -> UniADDetector:
        """Fit the standardisation and the transformer on ``(N, n, C)`` encoder tokens whose
        channels are the ``levels`` (widths) concatenated (``categories``: the samples', for
        ``standardise="category"``)."""
        from pcad.detectors.training import run_training

        c = self.config
        n_img = len(tokens)
        x = self.fit_standardisation(tokens, levels, categories)
        self.decoder = self.new_network(levels)
        noise = torch.Generator().manual_seed(c["seed"] + 1)

        def step_loss(model: nn.Module, epoch: int, step: int,
                      idx: torch.Tensor) -> torch.Tensor:
            target = x[idx.to(self.device)]
            inp = target
            draw = float(torch.rand((), generator=noise))
            if c["jitter_scale"] > 0 and draw < c["jitter_prob"]:
                inp = jitter(target, c["jitter_scale"], noise)
            if not c["fader"]:
                return ((model(inp) - target) ** 2).mean()
            inp, signal = corrupt_tokens(inp, CORRUPT_PROB, CORRUPT_SCALE, noise)
            rec, gate = getattr(model, "module", model).reconstruct(inp)
            return ((rec - target) ** 2).mean() + attenuation_loss(gate, signal)

        self.history = run_training(
            self.decoder, n_img, step_loss, epochs=c["epochs"], batch_size=c["batch_size"],
            lr=c["lr"], weight_decay=c["weight_decay"], warmup_epochs=c["warmup_epochs"],
            seed=c["seed"], progress=progress, desc="uniad training",
            extra_state={"jitter": noise})
        self.decoder.eval()
        self.fitted = True
        return self
