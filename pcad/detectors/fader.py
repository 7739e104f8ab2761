"""``fader``: FADeR, Feature Attenuation of Defective Representation (Park et al., "Feature
Attenuation of Defective Representation Can Resolve Incomplete Masking on Anomaly Detection",
2024), on pcad's frozen patch tokens.

Reconstruction by inpainting hides tokens and predicts them from the visible ones: a defect
is not reconstructed and its error is high. Random multiple masks cost several passes and
give scores that change from run to run; the methods the paper builds on use **one
deterministic mask** instead. Their weakness is *incomplete masking*: a defect larger than the
masked area leaves defective tokens visible, and the network copies their (anomalous)
information into the reconstruction of their masked neighbours. FADeR adds **two MLP layers**
that, while decoding, attenuate the feature information of defective tokens (a soft mask on
the skip connection), so the decoder falls back on what it learned of normal parts and an
unseen defect is reconstructed as a normal pattern: its error stays high.

What pcad does (and where it departs from the paper):

- **Tokens**: vitad's token path (this detector extends :class:`~pcad.detectors.vitad.
  ViTADDetector`): ``modality`` ``auto`` / ``rgb`` / ``xyz`` / ``both``, ``pool x pool``
  averages of the stride-8 patch grid, each channel standardised with the training tokens'
  mean / std, the std floored at 0.1 x the median channel std (as uniad: an L2 error would
  blow up on a channel constant in training). The paper inpaints images with a small U-Net.
  fader's ``pool`` is 1 (vitad's and uniad's 2): the stride-8 grid itself, 28 x 28 tokens at
  224, so that a masked token is predicted from neighbours 8 pixels away rather than 16.
  Chosen on the built-in gear, plate, bracket and potato (the conditions benchmark, seeds
  0-2, 12 runs), 2 -> 1: I-AUROC 0.794 -> 0.832 (10 runs better, 2 worse; bracket seed 1
  0.58 -> 0.80, potato seed 1 0.71 -> 0.56), AUPRO@0.3 0.877 -> 0.891, under strong
  conditions 0.599 -> 0.652; the decoder's attention over four times the tokens makes the fit
  and the head several times slower (the conditions and heads tables in the README).
- **One deterministic mask** (:func:`checkerboard`): the checkerboard of the token grid,
  token ``(i, j)`` masked when ``i + j`` is even. It is one fixed pattern, the same in
  training and at inference (no random draw, no ensemble of masks: one forward, the same
  score every time); its complement is the second half of the same pass (batched), so every
  token is masked exactly once and reconstructed from its visible 4-neighbours' side of the
  board. A masked token's features are replaced by a learned mask token.
- **Light decoder**: a linear projection of the tokens to ``dim``, ``depth`` plain pre-norm
  ViT blocks (vitad's :class:`~pcad.detectors.vitad.Block`) over the whole grid with a
  learned position embedding, a linear projection back to the token width.
- **FADeR** (:class:`FADeR`): ``Linear(dim, fader_hidden) - GELU - Linear(fader_hidden, 1)``
  and a sigmoid give each visible token a gate ``g`` in (0, 1); the token entering the
  decoder is ``g * h + (1 - g) * mask_token``: ``g = 1`` passes it, ``g = 0`` masks it (a soft
  mask on the skip connection). ``attenuate=False`` removes it (the plain inpainting
  baseline, for ablation).
- **Training the attenuation without defects**: the paper derives patch-wise attenuation
  signals from reconstruction errors (its "active learning"). pcad corrupts a random
  fraction ``corrupt_prob`` of the training tokens with Gaussian noise of a random strength
  (``corrupt_scale`` 3 training standard deviations x U(0.5, 1.5): off the normal tokens)
  (:func:`corrupt_tokens`, seeded generator saved in the checkpoint) and the signal of a
  token is ``exp(-mean((corrupted - clean)^2) / 0.25)`` (1 on clean tokens, towards 0 on
  strongly corrupted ones). Loss = MSE between the reconstruction and the clean tokens +
  ``attenuation_weight`` x BCE between the gates and the signals; AdamW with warm-up +
  cosine in :func:`~pcad.detectors.training.run_training` (live loss, ``train_log.csv``,
  ``--resume``). The gates need steps to separate: the default ``batch_size`` is 2.
- **Map / score**: per-token L2 reconstruction error (0 off the part with point features),
  divided by the error on the nearest training token (``calibration`` ``"nearest"``, vitad's;
  ``"none"``: the raw error), upsampled and blurred; the image score is the map's maximum
  over the part (``foreground-max``; the whole map without a cloud) or over the whole map
  (``max``).
- **What else was tried** (with ``pool=2``; built-in gear, plate, bracket and potato, the
  conditions benchmark's standard datasets, seeds 0-2, 12 runs; as it was: I-AUROC 0.794,
  AUPRO@0.3 0.877): FPFH over 200 neighbours 0.796 (8 runs better, 2 worse; potato seed 1
  0.71 -> 0.59); ``calibration_size=512`` 0.802 (6 better, 5 worse); the same with 80
  epochs 0.795 (9 runs); per-level mean squared errors averaged over the levels 0.797; the
  calibration's reference errors taken on held-out folds (2-fold) 0.773 against 0.783 (8
  runs); the top 1 % of the part's map as image score 0.808 (with ``calibration_size=512``),
  the part's mean 0.730; ``1 - gate`` as a score 0.48-0.77. On seed 0 alone (4 runs, as it was:
  0.771): vitad's cosine distance per level 0.694 (potato 0.44 -> 0.78, bracket 0.70 ->
  0.51), ``depth=4`` 0.733. None gained on most runs by more than the seed spread. The runs
  that failed with ``pool=2`` were potato seed 0 (0.44) and bracket seed 1 (0.58):
  the good samples' map maxima sit within 1-8 pixels of the part's outline on normal
  structure, which inpainting from the neighbours predicts worse than a defect elsewhere
  (per level on potato seed 0, uncalibrated: block 4 0.37, block 10 0.64, FPFH 0.52).
- **Small by design**: :meth:`FADeRDetector.complexity` gives the parameters and the FLOPs
  of one sample's forward (:func:`network_complexity`, counted by
  :class:`torch.utils.flop_counter.FlopCounterMode`). At 224 px on RGB + FPFH tokens (152 + 33
  channels): 143 k parameters and 0.89 GFLOPs with the default ``pool=1`` (784 tokens), 106 k
  and 0.105 GFLOPs with ``pool=2``; uniad on its 196 tokens has 295 k and 0.099 GFLOPs.
- **Plug-in**: the same :class:`FADeR` module goes into ``uniad``'s decoder with
  ``-o fader=true`` (:mod:`pcad.detectors.uniad`).
- **torchrun**: not supported, as vitad.

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("fader", image_size=64, modality="both")
    >>> det.modalities, det.token_grid, checkerboard((2, 3)).tolist()
    (('rgb', 'xyz'), (8, 8), [True, False, True, False, True, False])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_flag, check_int, check_positive
from pcad.detectors.registry import register_detector
from pcad.detectors.tokens import FPFH_DEFAULTS, STD_FLOOR
from pcad.detectors.vitad import Block, ViTADDetector
from pcad.errors import InvalidInputError

STATE_FILE = "fader.pt"
#: the attenuation signal of a token is exp(-mean squared corruption / this)
SIGNAL_SCALE = 0.25
#: the default share of corrupted training tokens and their noise (``fader``; ``uniad`` with
#: ``fader``)
CORRUPT_PROB, CORRUPT_SCALE = 0.25, 3.0
#: the largest FADeR hidden width
MAX_HIDDEN = 4096
#: the initial bias of FADeR's last layer: gates start about 0.73, mostly open
GATE_BIAS = 1.0


def checkerboard(grid: tuple[int, int]) -> torch.Tensor:
    """``(h * w,) bool``, row-major: True where ``i + j`` is even (the tokens the first half
    of the pass masks; the second half masks the complement).

    Example:
        >>> checkerboard((2, 2)).tolist()
        [True, False, False, True]
    """
    ii, jj = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    return ((ii + jj) % 2 == 0).reshape(-1)


def corrupt_tokens(x: torch.Tensor, prob: float, scale: float, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(corrupted (..., C), signal (...))``: each token of ``x`` picked with probability
    ``prob`` gets ``N(0, 1) * scale * U(0.5, 1.5)`` noise (drawn on the CPU from
    ``generator``); the attenuation signal is ``exp(-mean((corrupted - x)^2) / 0.25)``, 1 on
    the tokens left alone.

    Example:
        >>> x = torch.zeros(1, 6, 4)
        >>> y, t = corrupt_tokens(x, 0.5, 1.0, torch.Generator().manual_seed(0))
        >>> bool(((t == 1) == (y == x).all(-1)).all()), bool((t > 0).all())
        (True, True)
    """
    shape = x.shape[:-1]
    pick = (torch.rand(shape, generator=generator) < prob).float()
    strength = scale * (0.5 + torch.rand(shape, generator=generator))
    noise = torch.randn(x.shape, generator=generator) * (pick * strength)[..., None]
    noise = noise.to(x.device)
    signal = torch.exp(-(noise ** 2).mean(-1) / SIGNAL_SCALE)
    return x + noise, signal


class FADeR(nn.Module):
    """The two MLP layers of FADeR: a gate ``g = sigmoid(fc2(gelu(fc1(h))))`` per token of
    ``h (B, n, dim)``; returns ``(g * h + (1 - g) * fill, g (B, n))`` (``fill`` broadcast to
    ``h``; None: zeros, a pure attenuation). The last bias starts at 1 (``g`` about 0.73):
    the module starts mostly open.

    Example:
        >>> import torch
        >>> out, g = FADeR(8, 4)(torch.ones(2, 3, 8))
        >>> out.shape, g.shape, bool(((g > 0) & (g < 1)).all())
        (torch.Size([2, 3, 8]), torch.Size([2, 3]), True)
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, 1)
        nn.init.constant_(self.fc2.bias, GATE_BIAS)

    def gate(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` gates in (0, 1) of ``h (B, n, dim)``."""
        return torch.sigmoid(self.fc2(F.gelu(self.fc1(h))))[..., 0]

    def forward(self, h: torch.Tensor, fill: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gate(h)
        out = g[..., None] * h
        if fill is not None:
            out = out + (1 - g[..., None]) * fill
        return out, g


def attenuation_loss(gate: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between FADeR's gates and the attenuation signals (same shape).

    Example:
        >>> import torch
        >>> float(attenuation_loss(torch.tensor([0.5]), torch.tensor([1.0]))) > 0
        True
    """
    return F.binary_cross_entropy(gate.clamp(1e-6, 1 - 1e-6), signal)


class FADeRNet(nn.Module):
    """Checkerboard inpainting of ``(B, n, C)`` tokens with FADeR on the skip connection.

    Args:
        level_dims: channels of each feature level, concatenated in the input (kept for the
            run record).
        grid: ``(h, w)`` token grid (``n = h * w``).
        dim, depth, heads, mlp_ratio: decoder width, blocks, attention heads, MLP width.
        hidden: FADeR's hidden width; ``attenuate`` False: no FADeR.

    ``reconstruct(x)`` returns ``(reconstruction (B, n, C), gates (B, n) or None)``: each token
    reconstructed by the half of the pass that masks it.

    Example:
        >>> import torch
        >>> net = FADeRNet((3, 5), (3, 3), dim=16, depth=1, heads=4, hidden=8)
        >>> rec, g = net.reconstruct(torch.zeros(2, 9, 8))
        >>> rec.shape, g.shape, net.distances(torch.zeros(2, 9, 8)).shape
        (torch.Size([2, 9, 8]), torch.Size([2, 9]), torch.Size([2, 9]))
    """

    def __init__(self, level_dims: Sequence[int], grid: tuple[int, int], dim: int, depth: int,
                 heads: int, mlp_ratio: float = 4.0, hidden: int = 32,
                 attenuate: bool = True) -> None:
        super().__init__()
        self.level_dims = tuple(int(d) for d in level_dims)
        width, n = sum(self.level_dims), grid[0] * grid[1]
        self.input_proj = nn.Linear(width, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, n, dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.fader = FADeR(dim, hidden) if attenuate else None
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.output_proj = nn.Linear(dim, width)
        board = checkerboard(grid)
        self.register_buffer("masks", torch.stack([board, ~board]), persistent=False)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, _ = x.shape
        h = self.input_proj(x)
        gate = None
        if self.fader is not None:  # soft mask on the skip: attenuated tokens read as masked
            h, gate = self.fader(h, self.mask_token)
        m = self.masks[:, None, :, None]  # (2, 1, n, 1): the two halves of the one mask
        t = torch.where(m, self.mask_token, h[None]).reshape(2 * b, n, -1) + self.pos
        for block in self.blocks:
            t = block(t)
        out = self.output_proj(self.norm(t)).reshape(2, b, n, -1)
        return torch.where(m, out, torch.zeros((), dtype=out.dtype, device=out.device)).sum(0), gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)[0]

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n)``: the L2 norm of each token's reconstruction error."""
        return torch.linalg.vector_norm(self(x) - x, dim=-1)


def network_complexity(det: Any, levels: Sequence[int] | None = None) -> dict[str, int]:
    """``{"params", "flops"}`` of the token network of ``det`` (a vitad-family detector:
    ``fader``, ``uniad``, ``vitad``) for one sample at its configured size: the fitted
    network, or (``levels``: the channel widths of the tokens) an untrained one. FLOPs of
    one forward, counted by :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add
    is 2 FLOPs).

    Example:
        >>> from pcad.detectors import create_detector
        >>> c = network_complexity(create_detector("fader", image_size=64), [40, 112])
        >>> c["params"] > 0 and c["flops"] > 0
        True
    """
    from torch.utils.flop_counter import FlopCounterMode

    if levels is None:
        if getattr(det, "decoder", None) is None:
            raise InvalidInputError(f"detector {det.name!r}: complexity needs a fit, or the "
                                    f"token levels")
        net = det.decoder
    else:
        net = det._network(levels)
    net = net.to("cpu")
    width = sum(net.level_dims)
    th, tw = det.token_grid
    x = torch.zeros(1, th * tw, width)
    was_training = net.training
    net.eval()
    with FlopCounterMode(display=False) as counter:  # no no_grad: its module hooks need
        net(x)  # grad functions (torch 2.13)
    net.train(was_training)
    if getattr(det, "decoder", None) is net:
        net.to(det.device)
    return {"params": int(sum(p.numel() for p in net.parameters())),
            "flops": int(counter.get_total_flops())}


@register_detector("fader")
class FADeRDetector(ViTADDetector):
    """FADeR: checkerboard inpainting of frozen patch tokens with two attenuation MLP layers on
    the decoder's skip connection (see the module)."""

    modalities = ("rgb",)
    supports_distributed = False
    state_file: ClassVar[str] = STATE_FILE
    std_floor = STD_FLOOR
    network_word: ClassVar[str] = "inpainting network"
    defaults = {"image_size": 224, "modality": "auto", "pool": 1, "dim": 64, "depth": 2,
                "heads": 4, "mlp_ratio": 2.0, "attenuate": True, "fader_hidden": 32,
                "corrupt_prob": CORRUPT_PROB, "corrupt_scale": CORRUPT_SCALE,
                "attenuation_weight": 1.0,
                "epochs": 40, "lr": 1e-3, "batch_size": 2, "weight_decay": 1e-4,
                "warmup_epochs": 2, "seed": 0, "sigma": 4.0, "image_score": "foreground-max",
                "rgb_backbone": "effnet-lite0", "weights": None, "point_backbone": "fpfh",
                "point_weights": None, "num_group": None, "group_size": None,
                "device": "auto", **FPFH_DEFAULTS,
                **ViTADDetector.CALIBRATION_DEFAULTS, "standardise": "global"}
    option_help: ClassVar[dict[str, str]] = {
        "dim": "decoder width (the input projection maps the tokens to it); a multiple of heads",
        "depth": "decoder transformer blocks",
        "heads": "attention heads per decoder block",
        "attenuate": "true: FADeR's two MLP layers gate the visible tokens entering the "
                     "decoder; false: plain checkerboard inpainting",
        "fader_hidden": "hidden width of FADeR's two MLP layers",
        "corrupt_prob": "fraction of training tokens corrupted with Gaussian noise (what the "
                        "attenuation learns to gate; 0: none)",
        "corrupt_scale": "noise of a corrupted token: N(0, 1) * this * U(0.5, 1.5), in "
                         "training standard deviations",
        "attenuation_weight": "weight of the gates' BCE against the attenuation signals",
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        c["attenuate"] = check_flag(c["attenuate"], "attenuate")
        c["fader_hidden"] = check_int(c["fader_hidden"], "fader_hidden", minimum=1,
                                      maximum=MAX_HIDDEN)
        c["corrupt_prob"] = check_positive(c["corrupt_prob"], "corrupt_prob", allow_zero=True)
        if c["corrupt_prob"] > 1:
            raise InvalidInputError(f"corrupt_prob: must be in [0, 1], got "
                                    f"{c['corrupt_prob']:g}")
        c["corrupt_scale"] = check_positive(c["corrupt_scale"], "corrupt_scale")
        c["attenuation_weight"] = check_positive(c["attenuation_weight"], "attenuation_weight",
                                                 allow_zero=True)
        self.decoder: FADeRNet | None = None

    def _network(self, levels: Sequence[int]) -> FADeRNet:
        c = self.config
        return FADeRNet(levels, self.token_grid, c["dim"], c["depth"], c["heads"],
                        c["mlp_ratio"], c["fader_hidden"], c["attenuate"])

    def complexity(self, levels: Sequence[int] | None = None) -> dict[str, int]:
        """``{"params", "flops"}`` per sample at the configured size (:func:`
        network_complexity`): the fitted network, or an untrained one for tokens of
        ``levels`` channel widths."""
        return network_complexity(self, levels)

    def fit_tokens(self, tokens: np.ndarray, levels: Sequence[int], progress: bool = False,
                   categories: Sequence[str | None] | None = None) -> FADeRDetector:
        """Fit the standardisation and the network on ``(N, n, C)`` encoder tokens whose
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
            inp, signal = corrupt_tokens(target, c["corrupt_prob"], c["corrupt_scale"], noise)
            rec, gate = getattr(model, "module", model).reconstruct(inp)
            loss = ((rec - target) ** 2).mean()
            if gate is not None and c["attenuation_weight"] > 0:
                loss = loss + c["attenuation_weight"] * attenuation_loss(gate, signal)
            return loss

        self.history = run_training(
            self.decoder, n_img, step_loss, epochs=c["epochs"], batch_size=c["batch_size"],
            lr=c["lr"], weight_decay=c["weight_decay"], warmup_epochs=c["warmup_epochs"],
            seed=c["seed"], progress=progress, desc="fader training",
            extra_state={"corruption": noise})
        self.decoder.eval()
        self.fitted = True
        return self
