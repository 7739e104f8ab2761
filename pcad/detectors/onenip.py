"""``onenip``: OneNIP (Gao et al., "Learning to Detect Multi-class Anomalies with Just One
Normal Image Prompt", ECCV 2024) on pcad's frozen patch tokens.

OneNIP extends UniAD's reconstruction transformer with a *normal image prompt*: the decoder
reconstructs the test image's tokens while attending to the tokens of ONE normal image of the
same category, so what it rebuilds is "normal, like the prompt". Training adds synthesized
anomalies whose target is the clean image (restoration), and a small supervised refiner
learns, on the synthesized masks, to turn the test tokens, their reconstruction and the
difference into the anomaly map.

What pcad does (and where it departs from the paper):

- **Tokens**: vitad's / uniad's (:class:`~pcad.detectors.tokens.ModalityPatchesMixin`,
  ``modality`` auto / rgb / xyz / both, ``pool x pool`` averages of the stride-8 patch grid),
  standardised per channel with the clean training tokens' mean / std (the std floored at 0.1 x
  the median channel std, as uniad). OneNIP used raw EfficientNet-B4 stages.
- **Transformer** (:class:`OneNIPNet`): a linear projection to ``dim`` and a learned position
  embedding; ``depth`` neighbour-masked encoder layers (uniad's
  :class:`~pcad.detectors.uniad.EncoderLayer`) encode the test tokens and, with the same
  weights, the prompt's tokens; ``depth`` decoder layers, each with its own learned query,
  self-attention (neighbour-masked) and one cross-attention whose keys / values are the
  previous layer's output (neighbour-masked, as UniAD) *and the prompt's encoded tokens (never
  masked)*: the prompt's token at the same place is always visible, the test token itself is
  not. A linear projection back to the token width gives the reconstruction.
- **Prompt**: in training, each sample's prompt is another clean training sample of the same
  category, drawn per step from a seeded generator (itself when the category has one sample).
  At fit, each category's prompt is the training sample whose tokens are nearest (L2) to the
  category's mean token grid; its tokens and path are saved with the run
  (``prompt_categories``, ``prompt_sources`` in ``detector.json``). At predict the prompt is the
  one of ``sample.category`` (what pcad's datasets set; ``pcad train --categories`` fits one
  model with one prompt per category). A category seen at fit by no sample
  (``unknown_category``): ``"nearest"`` (default) takes the prompt nearest (L2) to the sample's
  tokens; ``"error"`` refuses with a one-line error.
- **Restoration**: every clean training sample gives ``variants`` anomalies made by a defect
  source (pcad's synthesizer: ``pcad train`` builds :class:`synth.supervision.DefectSource`
  from :meth:`OneNIPDetector.defect_source_options`, as for ``synthsup``; in Python pass
  ``fit(samples, defect_source=...)``; :mod:`pcad.detectors` never imports ``synth``). The
  rng of variant ``v`` of sample ``i`` is ``numpy.random.default_rng([seed, i, v])``. Inputs are
  the clean and the anomalous tokens, the target always the clean sample's tokens: MSE. Each
  epoch trains on every clean sample and on ``variants_per_epoch`` of its variants (they take
  turns across epochs; null, the default: all). One per epoch trains 2/5 of the steps but
  lost on the demo dataset (built-in categories, seed 0, per category): plate_holes, potato
  and shaft, I-AUROC 0.744 -> 0.682; all seven, 0.759 against the previous release's 0.816.
- **Refiner**: ``refiner_layers`` 3x3 convolutions (``refiner_hidden`` channels, GELU) and a
  1x1 to one logit per token over (test tokens, reconstruction, difference) stacked as
  channels, trained on the synthesized masks area-averaged to the token grid (``loss``:
  ``bce+dice`` default, ``focal+dice`` or ``focal``; clean inputs have empty masks). The
  reconstruction is detached at its input (the reconstruction stays unsupervised; OneNIP
  trains both jointly end to end). Loss = MSE + refiner loss, AdamW with warm-up + cosine in
  :func:`~pcad.detectors.training.run_training` (live loss, ``train_log.csv``, ``--resume``
  bit-identical: the prompt generator and the refiner's loss record are in the checkpoint).
  :attr:`OneNIPDetector.refiner_history` keeps the refiner's mean loss per epoch. **30
  epochs** by default (uniad and vitad: 40; onenip's epoch is five of theirs, every sample and
  its four variants): 40 -> 30 on the built-in gear, plate, bracket and potato (seeds 0-2,
  unified, 12 category runs) moved I-AUROC 0.824 -> 0.828, mAD 0.736 -> 0.738, AUPRO@0.3 0.838
  -> 0.841 (5 runs better, 4 worse) and cuts training by a quarter
  (``benchmarks/bench_training.py``).
- **Map** (``map``): ``"product"`` (default: the refiner's probability times uniad's L2
  reconstruction error per token), ``"refiner"`` (OneNIP's output, the refiner's probability)
  or ``"reconstruction"`` (the L2 error); 0 off the part with point features, upsampled and
  blurred; the image score is its maximum (``image_score``, as vitad / uniad). OneNIP
  average-pools the map first. Measured on plate bumps (64 px, 6 training plates, 20 epochs,
  modality both; I-AUROC / AUPRO@0.3): ``variants=4``: product 1.00 / 0.94, reconstruction
  1.00 / 0.91, refiner 0.69 / 0.82; ``variants=1``: product 0.56 / 0.13, reconstruction
  1.00 / 0.91, refiner 0.44 / 0.09 (uniad: 1.00 / 0.91). With few parts the refiner alone sees
  too few synthetic defects; weighted by the reconstruction error it sharpens the map. On
  five built-in parts (gear, plate, bracket, potato, cookie; dataset seed 0, 128 px, 16
  training samples, defaults; mean I-AUROC / AUPRO@0.3): product 0.764 / 0.742,
  reconstruction 0.747 / 0.797, refiner 0.758 / 0.744 (uniad 0.744 / 0.806): the product
  ranks images best, the reconstruction error localizes best; one seed, so the default stays
  the product until more seeds say otherwise.
- **Calibration** (``calibration``, vitad's, default ``"none"``): ``"nearest"`` divides the
  map by its value on the nearest clean training token of the sample's category, each
  training sample scored with its category's prompt. It lifted uniad and vitad but not
  onenip, whose refiner already reads the errors against the synthesized masks: demo dataset,
  per category, plate_holes / potato / shaft (same code, seed 0) I-AUROC 0.731 / 0.694 /
  0.806 -> 0.787 / 0.602 / 0.750 (mean 0.744 -> 0.713, mAD 0.699 -> 0.689).
- **Standardisation** (``standardise``, vitad's option, **default ``"category"``**, as
  uniad): a unified run standardises each category's tokens with its own statistics; a
  single-category run is unchanged. Chosen on the built-in gear, plate, bracket and potato
  (dataset seeds 0-2, 20 training samples each, one unified model over the four per seed, 12
  category runs): I-AUROC 0.802 -> 0.824, mAD 0.734 -> 0.736, AUPRO@0.3 0.843 -> 0.838. The
  gain is the flat plate's (0.82 / 0.59 / 0.89 -> 0.98 / 0.91 / 0.90, the one part whose small
  variations the pooled statistics squash); the other nine runs move by -0.17 to +0.05 (6 of
  12 better in all). Demo dataset unified (7 built-in categories, seed 0, the unified
  benchmark), checked afterwards: 0.774 -> 0.779, mAD 0.748 -> 0.754 (per category 0.825 /
  0.741); an earlier run of the same options outside the benchmark (through a feature cache)
  gave 0.832 / 0.767: two runs of the same options differ by 0.05 there (6 good test samples
  per category).
- **torchrun**: not supported (the token cache is not sharded over ranks).

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("onenip", image_size=64, modality="both")
    >>> det.modalities, det.token_grid, det.needs_defect_source, det.config["map"]
    (('rgb', 'xyz'), (4, 4), True, 'product')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_choice, check_int
from pcad.detectors.base import RUN_FILE, read_run_file
from pcad.detectors.defect_source import DefectSourceMixin
from pcad.detectors.error_calibration import (
    CalibrationOption,
    patch_groups,
    sample_category,
)
from pcad.detectors.patches import FPFHOption, SampleForeground
from pcad.detectors.registry import register_detector
from pcad.detectors.synthsup import _dice, _focal, segmentation_head
from pcad.detectors.tokens import FPFH_DEFAULTS, STD_FLOOR, patch_grid
from pcad.detectors.training import StateSlot
from pcad.detectors.uniad import MAX_NEIGHBOR, EncoderLayer, QueryDecoderLayer, neighbour_mask
from pcad.detectors.vitad import ViTADDetector
from pcad.errors import FileFormatError, InvalidInputError

STATE_FILE = "onenip.pt"
MAPS = ("refiner", "reconstruction", "product")
LOSSES = ("bce+dice", "focal+dice", "focal")
UNKNOWN = ("nearest", "error")
#: the most 3x3 convolutions of the refiner
MAX_REFINER_LAYERS = 16


def epoch_rows(items: torch.Tensor, epoch: int, variants: int, per_epoch: int
               ) -> torch.Tensor:
    """The training rows of an epoch's ``items``: item ``k`` is sample ``k // (1 + per_epoch)``
    and slot ``s = k % (1 + per_epoch)``; slot 0 is the clean sample (row ``i * (1 +
    variants)``), slot ``s >= 1`` its variant ``(s - 1 + epoch * per_epoch) % variants`` (row
    ``i * (1 + variants) + 1 + v``): the variants take turns, so ``variants / per_epoch``
    epochs train on each once.

    Example:
        >>> import torch
        >>> [epoch_rows(torch.arange(4), e, variants=3, per_epoch=1).tolist() for e in range(3)]
        [[0, 1, 4, 5], [0, 2, 4, 6], [0, 3, 4, 7]]
        >>> epoch_rows(torch.arange(8), 5, variants=3, per_epoch=3).tolist()  # all: rows = items
        [0, 1, 2, 3, 4, 5, 6, 7]
    """
    per = 1 + per_epoch
    turn = items % per
    variant = torch.where(turn == 0, 0, 1 + (turn - 1 + epoch * per_epoch) % variants)
    return (items // per) * (1 + variants) + variant


class PromptDecoderLayer(QueryDecoderLayer):
    """A decoder layer with a learned query: masked self-attention, then one cross-attention
    over ``memory`` (the previous layer's output, masked by ``mask``) and the ``prompt``'s
    encoded tokens (never masked), then an MLP; post-norm. ``(B, n, dim)``.

    Example:
        >>> import torch
        >>> layer = PromptDecoderLayer(8, 2, n_tokens=4)
        >>> z = torch.zeros(3, 4, 8)
        >>> layer(z, z, torch.zeros(1, 4, 8), None).shape
        torch.Size([3, 4, 8])
    """

    def forward(self, memory: torch.Tensor, prompt: torch.Tensor,  # type: ignore[override]
                pos: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        t = self.query.expand(memory.shape[0], -1, -1)
        q = t + pos
        t = self.norm1(t + self.self_attn(q, q, t, attn_mask=mask, need_weights=False)[0])
        keys = torch.cat([memory, prompt], dim=1)
        kpos = torch.cat([pos, pos], dim=1)
        cross = None if mask is None else torch.cat([mask, torch.zeros_like(mask)], dim=1)
        t = self.norm2(t + self.cross_attn(t + pos, keys + kpos, keys, attn_mask=cross,
                                           need_weights=False)[0])
        return self.norm3(t + self.mlp(t))


class OneNIPNet(nn.Module):
    """The prompted reconstruction transformer and the refiner: ``(x (B, n, C), prompt
    (B or 1, n, C))`` to ``(reconstruction (B, n, C), refiner logits (B, n))``.

    Args:
        level_dims: channels of each feature level, concatenated in the input.
        grid: ``(h, w)`` token grid (``n = h * w``).
        dim, depth, heads, mlp_ratio: width, encoder and decoder layers each, attention heads,
            MLP width as a multiple of ``dim``.
        neighbor_mask: ``k`` of the ``k x k`` neighbourhood a token ignores among the test
            tokens (0: none); the prompt's tokens are always visible.
        hidden, layers: the refiner's channels and 3x3 convolutions.

    Example:
        >>> import torch
        >>> net = OneNIPNet((3, 5), (3, 3), dim=16, depth=1, heads=4, neighbor_mask=3)
        >>> rec, logits = net(torch.zeros(2, 9, 8), torch.ones(1, 9, 8))
        >>> rec.shape, logits.shape
        (torch.Size([2, 9, 8]), torch.Size([2, 9]))
    """

    def __init__(self, level_dims: Sequence[int], grid: tuple[int, int], dim: int, depth: int,
                 heads: int, mlp_ratio: float = 4.0, neighbor_mask: int = 3, hidden: int = 32,
                 layers: int = 2) -> None:
        super().__init__()
        self.level_dims = tuple(int(d) for d in level_dims)
        self.grid = tuple(grid)
        width, n = sum(self.level_dims), grid[0] * grid[1]
        self.input_proj = nn.Linear(width, dim)
        self.pos = nn.Parameter(torch.zeros(1, n, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.encoder = nn.ModuleList(EncoderLayer(dim, heads, mlp_ratio) for _ in range(depth))
        self.decoder = nn.ModuleList(PromptDecoderLayer(dim, heads, n, mlp_ratio)
                                     for _ in range(depth))
        self.output_proj = nn.Linear(dim, width)
        self.refiner = segmentation_head(3 * width, hidden, layers)
        self.register_buffer("mask", neighbour_mask(grid, neighbor_mask), persistent=False)
        self.use_mask = neighbor_mask > 0

    def _encode(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.input_proj(x)
        for layer in self.encoder:
            h = layer(h, self.pos, mask)
        return h

    def reconstruct(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """``(B, n, C)``: ``x`` rebuilt by the decoder attending to ``prompt`` (``(B or 1, n,
        C)``)."""
        mask = self.mask if self.use_mask else None
        p = self._encode(prompt, mask).expand(x.shape[0], -1, -1)
        h = self._encode(x, mask)
        for layer in self.decoder:
            h = layer(h, p, self.pos, mask)
        return self.output_proj(h)

    def refine(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` refiner logits over (``x``, ``rec``, ``x - rec``)."""
        b, n, c = x.shape
        inp = torch.cat([x, rec, x - rec], dim=-1).transpose(1, 2).reshape(b, 3 * c, *self.grid)
        return self.refiner(inp).reshape(b, n)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        rec = self.reconstruct(x, prompt)
        return rec, self.refine(x, rec.detach())


@register_detector("onenip")
class OneNIPDetector(DefectSourceMixin, ViTADDetector):
    """OneNIP: prompt-guided reconstruction + restoration + supervised refiner on frozen patch
    tokens (see the module)."""

    modalities = ("rgb",)
    supports_distributed = False
    state_file = STATE_FILE
    std_floor = STD_FLOOR
    network_word = "network"
    #: runs saved before ``calibration`` and ``variants_per_epoch`` existed map raw values
    #: and trained on every variant each epoch
    legacy_options: ClassVar[dict[str, Any]] = {**FPFHOption.legacy_options,
                                                **CalibrationOption.CALIBRATION_LEGACY,
                                                "variants_per_epoch": None, "standardise": "global"}
    defaults = {"image_size": 224, "modality": "auto", "pool": 2, "dim": 64, "depth": 2,
                "heads": 4, "mlp_ratio": 4.0, "neighbor_mask": 3, "variants": 4,
                "variants_per_epoch": None, "refiner_hidden": 32, "refiner_layers": 2,
                "loss": "bce+dice", "map": "product", "unknown_category": "nearest",
                "epochs": 30, "lr": 1e-3, "batch_size": 8, "weight_decay": 1e-4,
                "warmup_epochs": 2, "seed": 0, "sigma": 4.0, "image_score": "foreground-max",
                "holdout_defects": [],
                "defect_types": None, "textures": None, "rgb_backbone": "effnet-lite0",
                "weights": None, "point_backbone": "fpfh", "point_weights": None,
                "num_group": None, "group_size": None, "device": "auto", **FPFH_DEFAULTS,
                **CalibrationOption.CALIBRATION_DEFAULTS, "calibration": "none",
                "standardise": "category"}
    option_help: ClassVar[dict[str, str]] = {
        **ViTADDetector.option_help,
        "dim": "transformer width (the input projection maps the tokens to it); a multiple "
               "of heads",
        "depth": "layers of the encoder and of the decoder each",
        "heads": "attention heads per attention",
        "mlp_ratio": "hidden width of the MLPs as a multiple of dim",
        "neighbor_mask": "k: each test token ignores its own k x k token neighbourhood among "
                         "the test tokens (odd; capped below the token grid's side; 0: no "
                         "mask); the prompt's tokens are always visible",
        "variants": "synthetic anomalies made from each clean training sample (restoration "
                    "and refiner targets)",
        "variants_per_epoch": "of a sample's variants, how many an epoch trains on (they take "
                              "turns across epochs); null: all of them",
        "refiner_hidden": "channels of the refiner's 3x3 convolutions",
        "refiner_layers": "3x3 convolutions of the refiner",
        "loss": "refiner loss: bce+dice, focal+dice or focal",
        "map": "product (the refiner's probability times the L2 reconstruction error), "
               "refiner or reconstruction",
        "unknown_category": "a test sample of a category without prompt: nearest (the prompt "
                            "nearest its tokens) or error",
        "holdout_defects": "synthetic defect types kept out of training",
        "defect_types": "synthetic defect types trained on; null: all but the held-out ones",
        "textures": "folder of texture images for RGB defects; null: procedural Perlin",
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        c["neighbor_mask"] = k = check_int(c["neighbor_mask"], "neighbor_mask", minimum=0,
                                           maximum=MAX_NEIGHBOR)
        if k % 2 == 0 and k:
            raise InvalidInputError(f"neighbor_mask: must be 0 or odd, got {k}")
        c["variants"] = check_int(c["variants"], "variants", minimum=1, maximum=64)
        if c["variants_per_epoch"] is not None:
            c["variants_per_epoch"] = check_int(c["variants_per_epoch"], "variants_per_epoch",
                                                minimum=1, maximum=c["variants"])
        c["refiner_hidden"] = check_int(c["refiner_hidden"], "refiner_hidden", minimum=1,
                                        maximum=1024)
        c["refiner_layers"] = check_int(c["refiner_layers"], "refiner_layers", minimum=1,
                                        maximum=MAX_REFINER_LAYERS)
        c["loss"] = check_choice(c["loss"], "loss", LOSSES)
        c["map"] = check_choice(c["map"], "map", MAPS)
        c["unknown_category"] = check_choice(c["unknown_category"], "unknown_category", UNKNOWN)
        self.check_source_options()
        self.defect_source: Any = None
        self.decoder: OneNIPNet | None = None
        self.refiner_history: list[float] = []
        #: per category: the prompt's standardised tokens ``(n, C)``
        self.prompts: dict[str, torch.Tensor] = {}
        #: per category: the path of the training sample chosen as its prompt
        self.prompt_sources: dict[str, str | None] = {}

    @property
    def mask_size(self) -> int:
        """``neighbor_mask`` capped at the largest odd size smaller than the token grid."""
        side = self.token_grid[0]
        return min(self.config["neighbor_mask"], side - 1 - side % 2 if side > 1 else 0)

    def _network(self, levels: Sequence[int]) -> OneNIPNet:
        c = self.config
        return OneNIPNet(levels, self.token_grid, c["dim"], c["depth"], c["heads"],
                         c["mlp_ratio"], self.mask_size, c["refiner_hidden"],
                         c["refiner_layers"])

    # --- fit ------------------------------------------------------------------------------

    def _token_mask(self, mask: np.ndarray) -> np.ndarray:
        """``(n,) float32``: the fraction of each token's pixels the mask covers."""
        t = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
        return F.interpolate(t, size=self.token_grid, mode="area").reshape(-1).numpy()

    def fit(self, samples, progress: bool = False, defect_source: Any = None
            ) -> OneNIPDetector:
        """Tokens of every clean training sample and of its ``variants`` synthetic anomalies
        (``defect_source``, or :attr:`defect_source`), then :meth:`fit_tokens`."""
        from tqdm import tqdm

        source = defect_source if defect_source is not None else self.defect_source
        if source is None:
            raise InvalidInputError(
                "detector 'onenip': fit needs a defect source (fit(samples, defect_source=...));"
                " `pcad train` builds one from synth; in Python pass "
                "synth.supervision.DefectSource(**det.defect_source_options())")
        if not callable(source):
            raise InvalidInputError(f"defect_source: expected a callable, got {type(source)}")
        items = self._train_list(samples)
        self.resolve_modality(items)
        c = self.config
        use_xyz = "xyz" in self.modalities
        held = set(c["holdout_defects"])
        clean, fgs, anomalous, masks, levels = [], [], [], [], None
        for i, s in enumerate(tqdm(items, disable=not progress, desc="onenip features",
                                   unit="sample")):
            t, fg, levels = self.tokens(s, where="training set")
            clean.append(t)
            fgs.append(fg)
            for v in range(c["variants"]):
                a = source(s.rgb, s.xyz if use_xyz else None,
                           np.random.default_rng([c["seed"], i, v]))
                if str(a.defect) in held:
                    raise InvalidInputError(f"defect_source: made held-out type {a.defect!r}")
                mask = np.asarray(a.mask, bool)
                if mask.shape != tuple(s.shape):
                    raise InvalidInputError(f"defect_source: mask {mask.shape} for a sample of "
                                            f"shape {tuple(s.shape)}")
                fake = SimpleNamespace(rgb=a.rgb, xyz=a.xyz if use_xyz else None,
                                       path=getattr(s, "path", None), shape=s.shape)
                anomalous.append(self.tokens(fake, where="training set")[0])
                masks.append(self._token_mask(mask))
        cats = [sample_category(s) or "" for s in items]
        paths = [None if getattr(s, "path", None) is None else str(s.path) for s in items]
        self.fit_tokens(np.stack(clean), levels, np.stack(anomalous), np.stack(masks),
                        cats, paths, progress=progress)
        self.fit_calibration(np.stack(clean), fgs, cats)
        return self

    def map_values(self, x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """``(B, n)``: the ``map`` per token of standardised tokens ``x (B, n, C)`` with their
        ``prompts (B, n, C)``, uncalibrated."""
        with torch.no_grad():
            rec, logits = self.decoder(x, prompts)
        err = torch.linalg.vector_norm(rec - x, dim=-1)
        kind = self.config["map"]
        prob = torch.sigmoid(logits)
        return prob if kind == "refiner" else err if kind == "reconstruction" else prob * err

    def training_values(self, x: torch.Tensor, categories: Sequence[str] | None = None
                        ) -> np.ndarray:
        """``(N, n)``: :meth:`map_values` of standardised training tokens ``x (N, n, C)``, each
        sample with the prompt of its category (``categories``), for the calibration."""
        cats = [""] * len(x) if categories is None else [c or "" for c in categories]
        prompts = torch.stack([self.prompts[c] for c in cats]).to(x.device)
        return torch.cat([self.map_values(x[i:i + 8], prompts[i:i + 8]).cpu()
                          for i in range(0, len(x), 8)]).numpy()

    def fit_tokens(self, tokens: np.ndarray, levels: Sequence[int],
                   anomalous: np.ndarray | None = None, masks: np.ndarray | None = None,
                   categories: Sequence[str] | None = None,
                   paths: Sequence[str | None] | None = None,
                   progress: bool = False) -> OneNIPDetector:
        """Fit on ``tokens (N, n, C)`` of clean samples (channels: the ``levels`` widths
        concatenated), ``anomalous (N * variants, n, C)`` tokens of their synthetic anomalies
        (sample-major) with ``masks (N * variants, n)`` (fraction of each token that is
        defective), the samples' ``categories`` and ``paths`` (for the prompt record)."""
        from pcad.detectors.training import run_training

        c = self.config
        n_img, n_tok, width = tokens.shape
        x = self.fit_standardisation(tokens, levels, categories)
        var = c["variants"]
        if anomalous is None or masks is None or anomalous.shape != (n_img * var, n_tok, width) \
                or masks.shape != (n_img * var, n_tok):
            raise InvalidInputError(f"detector 'onenip': expected {var} anomalous variants and "
                                    f"masks per sample of tokens {tokens.shape}")
        categories = [""] * n_img if categories is None else [str(x) for x in categories]
        paths = [None] * n_img if paths is None else list(paths)
        xa = self.standardise_samples(anomalous, patch_groups(categories, var))
        # row i * (1 + var) + j: sample i's clean tokens (j = 0) or its variant j - 1; an
        # epoch's items are mapped to rows by epoch_rows
        per_epoch = var if c["variants_per_epoch"] is None else c["variants_per_epoch"]
        per = 1 + per_epoch
        inputs = torch.cat([x[:, None], xa.reshape(n_img, var, n_tok, width)], 1)
        inputs = inputs.reshape(n_img * (1 + var), n_tok, width)
        targets_m = torch.cat([torch.zeros(n_img, 1, n_tok),
                               torch.from_numpy(masks.astype(np.float32)).reshape(
                                   n_img, var, n_tok)], 1).reshape(n_img * (1 + var), n_tok)
        targets_m = targets_m.to(self.device)
        groups: dict[str, list[int]] = {}
        for i, cat in enumerate(categories):
            groups.setdefault(cat, []).append(i)
        partners = [[j for j in groups[cat] if j != i] or [i] for i, cat in enumerate(categories)]
        self.decoder = self.new_network(levels)
        pairing = torch.Generator().manual_seed(c["seed"] + 1)
        record: dict[str, Any] = {"history": [], "sum": 0.0, "n": 0}

        def close_epoch(_epoch: int = 0) -> None:
            if record["n"]:
                record["history"].append(record["sum"] / record["n"])
            record["sum"], record["n"] = 0.0, 0

        def step_loss(model: nn.Module, epoch: int, step: int,
                      idx: torch.Tensor) -> torch.Tensor:
            draws = torch.rand(len(idx), generator=pairing)
            owners = (idx // per).tolist()
            prompt_idx = [partners[o][int(u * len(partners[o]))]
                          for o, u in zip(owners, draws.tolist(), strict=True)]
            dev = epoch_rows(idx, epoch, var, per_epoch).to(self.device)
            rec, logits = model(inputs[dev], x[torch.tensor(prompt_idx, device=self.device)])
            rec_loss = ((rec - x[torch.tensor(owners, device=self.device)]) ** 2).mean()
            ref_loss = self._refiner_loss(logits, targets_m[dev])
            record["sum"] += float(ref_loss.detach()) * len(idx)
            record["n"] += len(idx)
            return rec_loss + ref_loss

        slot = StateSlot(lambda: {k: (list(v) if isinstance(v, list) else v)
                                  for k, v in record.items()},
                         lambda v: record.update({k: (list(w) if isinstance(w, list) else w)
                                                  for k, w in v.items()}))
        self.history = run_training(
            self.decoder, n_img * per, step_loss, epochs=c["epochs"], batch_size=c["batch_size"],
            lr=c["lr"], weight_decay=c["weight_decay"], warmup_epochs=c["warmup_epochs"],
            seed=c["seed"], progress=progress, desc="onenip training", epoch_start=close_epoch,
            extra_state={"pairing": pairing, "refiner_record": slot})
        close_epoch()
        self.refiner_history = [float(v) for v in record["history"]]
        self.decoder.eval()
        self.prompts, self.prompt_sources = {}, {}
        for cat, members in sorted(groups.items()):
            sub = x[members]
            dist = ((sub - sub.mean(0, keepdim=True)) ** 2).sum(dim=(1, 2))
            best = members[int(torch.argmin(dist))]
            self.prompts[cat] = x[best].detach().clone()
            self.prompt_sources[cat] = paths[best]
        self.fitted = True
        return self

    def _refiner_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kind = self.config["loss"]
        first = _focal(logits, target) if kind.startswith("focal") else \
            F.binary_cross_entropy_with_logits(logits, target)
        return first + _dice(logits, target) if kind.endswith("dice") else first

    # --- predict --------------------------------------------------------------------------

    def prompt_for(self, category: str | None, x: torch.Tensor) -> torch.Tensor:
        """``(n, C)``: the prompt of ``category``; for a category without prompt the one
        nearest (L2) to the sample's standardised tokens ``x (n, C)`` (``unknown_category``
        ``"nearest"``) or a one-line error (``"error"``)."""
        key = str(category or "")
        if key in self.prompts:
            return self.prompts[key].to(x.device)
        if self.config["unknown_category"] == "error":
            raise InvalidInputError(
                f"detector 'onenip': no prompt for category {category!r} (fitted on "
                f"{sorted(self.prompts)}); -o unknown_category=nearest takes the prompt nearest "
                "the sample")
        names = sorted(self.prompts)
        stack = torch.stack([self.prompts[k] for k in names]).to(x.device)
        return stack[int(torch.argmin(((stack - x[None]) ** 2).sum(dim=(1, 2))))]

    def reconstruction(self, sample: Any, foreground: SampleForeground | None = None,
                       prompt: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray | None]:
        """``(x (n, C), reconstruction (n, C), refiner probability (n,), fg (n,) or None)`` of
        ``sample`` (standardised tokens), with the prompt of its category or ``prompt``."""
        x, fg = self.standardised_tokens(sample, foreground)
        p = self.prompt_for(sample_category(sample), x) if prompt is None \
            else prompt.to(x.device)
        with torch.no_grad():
            rec, logits = self.decoder(x[None], p[None])
        return x, rec[0], torch.sigmoid(logits[0]), fg

    def patch_scores(self, sample: Any, foreground: SampleForeground | None = None
                     ) -> np.ndarray:
        """``(h, w) float32`` on the :attr:`token_grid`: the ``map`` per token (0 off the part
        with point features)."""
        x, fg = self.standardised_tokens(sample, foreground)
        category = sample_category(sample)
        d = self.map_values(x[None], self.prompt_for(category, x)[None])[0]
        return patch_grid(self.calibrate(x, d, fg, category), fg, self.token_grid)

    # --- persistence ----------------------------------------------------------------------

    def _save_state(self, folder: Path) -> None:
        from pcad.io import atomic_save

        names = sorted(self.prompts)
        state = {"decoder": {k: v.cpu() for k, v in self.decoder.state_dict().items()},
                 "stats": {k: v.cpu() for k, v in self.stats.items()},
                 "prompts": torch.stack([self.prompts[k].cpu() for k in names]),
                 **self.category_stats_state(), **self.calibration_state()}
        atomic_save(folder / self.state_file, lambda tmp: torch.save(state, tmp))

    def _state_record(self) -> dict[str, Any]:
        names = sorted(self.prompts)
        return {**super()._state_record(), "refiner_history": self.refiner_history,
                "prompt_categories": names,
                "prompt_sources": [self.prompt_sources.get(k) for k in names]}

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:
        super()._load_state(folder, state)
        path = folder / self.state_file
        names = state.get("prompt_categories")
        sources = state.get("prompt_sources")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) \
                or not isinstance(sources, list) or len(sources) != len(names):
            raise FileFormatError(f"{folder / RUN_FILE}: 'state.prompt_categories' must "
                                  "be a non-empty list of names with one prompt_sources entry "
                                  "each")
        prompts = read_run_file(folder, self.state_file, self.name, ("prompts",))["prompts"]
        shape = (len(names), self.token_grid[0] * self.token_grid[1], self.stats["mean"].numel())
        if not isinstance(prompts, torch.Tensor) or tuple(prompts.shape) != shape \
                or not prompts.is_floating_point() or not torch.isfinite(prompts).all():
            raise FileFormatError(f"{path}: 'prompts' must be a finite {shape} float tensor")
        self.prompts = {n: prompts[i].float().to(self.device) for i, n in enumerate(names)}
        self.prompt_sources = {n: None if s is None else str(s)
                               for n, s in zip(names, sources, strict=True)}
        self.refiner_history = [float(v) for v in state.get("refiner_history", [])]
