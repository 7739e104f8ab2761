"""Point-MAE point-cloud encoder (M3DM / LSFA feature extractor) and its checkpoint loader.

Architecture (Pang et al., "Masked Autoencoders for Point Cloud Self-supervised Learning",
ECCV 2022; module names as in ``Pang-Yatian/Point-MAE`` ``models/Point_MAE.py``, so the
official pretrain checkpoint loads with ``strict=True``):

1. **Grouping**: FPS picks ``num_group`` centres (:func:`pcad.ops.fps`, start at index 0),
   every centre takes its ``group_size`` nearest points (:func:`pcad.ops.knn`), and each
   group is expressed relative to its centre: ``(B, G, K, 3)``.
2. **Tokenizer** ``encoder`` (Point-MAE's mini-PointNet ``Encoder``): ``first_conv``
   (Conv1d 3 -> 128, BatchNorm, ReLU, Conv1d 128 -> 256), max over the group, the max
   concatenated in front of every point feature, ``second_conv`` (Conv1d 512 -> 512,
   BatchNorm, ReLU, Conv1d 512 -> ``encoder_dims``), max over the group: ``(B, G, E)``.
   The hidden widths (128, 256, 512) are read from the checkpoint's shapes.
3. **Positional embedding** ``pos_embed``: Linear 3 -> 128, GELU, Linear 128 -> ``trans_dim``
   on the centres, added to the tokens before *every* block.
4. **Transformer** ``blocks.blocks.{i}``: pre-norm ViT blocks (``norm1``, ``attn.qkv``
   without bias, ``attn.proj``, ``norm2``, ``mlp.fc1``, GELU, ``mlp.fc2``), then ``norm``.
   Optional ``cls_token`` / ``cls_pos`` (Point-MAE's fine-tuned ``PointTransformer``, and
   M3DM when ``encoder_dims != trans_dim``, with ``reduce_dim``) are prepended and dropped
   from the output. The official *pretrain* checkpoint has no cls token.

Output (M3DM ``PointTransformer.forward``): the outputs of the blocks ``fetch_idx``, each
passed through the final ``norm``, concatenated along channels. M3DM fetches blocks
``[3, 7, 11]`` of 12 (``3 * 384 = 1152`` channels). For another depth ``L`` pcad takes three
evenly spaced blocks ending at the last, ``round(L * k / 3) - 1`` for ``k = 1, 2, 3``
(``L = 6``: ``[1, 3, 5]``; ``L = 4``: ``[0, 2, 3]``), or every block when ``L < 3``
(:func:`default_fetch_idx`).

Input conditioning (stored in pcad checkpoints, off for official ones, so that M3DM's
behaviour is kept): ``normalize=True`` maps each cloud into the unit sphere before grouping
(Point-MAE's ``pc_norm``: minus the centroid, divided by the largest radius); ``max_points``
keeps at most that many points per cloud, by a deterministic stride over the point order
(on an organized cloud in row-major order that is a regular spatial subsampling). Centres
are always returned in the input coordinates.

:func:`load_point_encoder` reads the official format (``ckpt["base_model"]`` with
``MAE_encoder.*`` keys, possibly prefixed ``module.``; fine-tuned ``base_model.*`` keys;
or a plain encoder state dict), ignores the decoder and heads, infers the architecture from
the tensor shapes, and loads strictly. Without ``weights`` it loads the small checkpoint
shipped in :mod:`pcad.features.weights` (see :mod:`pcad.features.pointmae_pretrain`).

Example:
    >>> import torch
    >>> from pcad.features.pointmae import PointMAEEncoder
    >>> enc = PointMAEEncoder(trans_dim=32, depth=2, num_heads=2, num_group=16,
    ...                       group_size=8).eval()
    >>> pts = torch.rand(2, 300, 3, generator=torch.Generator().manual_seed(0))
    >>> feats, centers = enc(pts)
    >>> tuple(feats.shape), tuple(centers.shape), enc.fetch_idx, enc.out_channels
    ((2, 16, 64), (2, 16, 3), (0, 1), 64)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_int
from pcad.errors import DegenerateGeometryError, InvalidInputError
from pcad.features.checkpoint import load_checkpoint, load_state_dict_strict, unwrap_state_dict
from pcad.features.vit import Block as ViTBlock
from pcad.ops import fps, gather, group, knn

__all__ = [
    "DEFAULT_WEIGHTS",
    "M3DM_GROUP_SIZE",
    "M3DM_NUM_GROUP",
    "PointMAEEncoder",
    "default_fetch_idx",
    "encoder_state_dict",
    "infer_arch",
    "load_point_encoder",
    "read_point_checkpoint",
    "shipped_weights_path",
]

#: M3DM's defaults (``--num_group 1024 --group_size 128``), used for checkpoints without a
#: pcad record.
M3DM_NUM_GROUP = 1024
M3DM_GROUP_SIZE = 128
#: File name of the checkpoint shipped in ``pcad/features/weights/``.
DEFAULT_WEIGHTS = "pointmae_pcad_small.pth"
#: Top-level module names of the encoder (everything else in a checkpoint is not its own).
ENCODER_NAMES = ("encoder", "pos_embed", "blocks", "norm", "cls_token", "cls_pos", "reduce_dim")
#: Parts of the Point-MAE pretraining / fine-tuning models that are not the encoder.
NON_ENCODER_PREFIXES = ("MAE_decoder.", "decoder_pos_embed.", "mask_token", "increase_dim.",
                        "cls_head_finetune.", "group_divider.", "loss_func.")
#: Architecture keys a pcad record may hold (see :meth:`PointMAEEncoder.arch`).
ARCH_KEYS = ("trans_dim", "depth", "num_heads", "encoder_dims", "num_group", "group_size",
             "mlp_ratio", "qkv_bias", "tokenizer_dims", "pos_hidden", "cls_token",
             "fetch_idx", "normalize", "max_points")


def default_fetch_idx(depth: int) -> tuple[int, ...]:
    """Blocks whose outputs form the features: ``(3, 7, 11)`` for 12 blocks (M3DM), three
    evenly spaced blocks ending at the last otherwise, every block when ``depth < 3``.

    Example:
        >>> default_fetch_idx(12), default_fetch_idx(6), default_fetch_idx(4), default_fetch_idx(2)
        ((3, 7, 11), (1, 3, 5), (0, 2, 3), (0, 1))
    """
    if depth < 3:
        return tuple(range(depth))
    return tuple((2 * k * depth + 3) // 6 - 1 for k in (1, 2, 3))


# ------------------------------------------------------------------------------------------
# modules (names match Point-MAE's)
# ------------------------------------------------------------------------------------------


class Tokenizer(nn.Module):
    """Point-MAE's ``Encoder``: ``(B, G, K, 3)`` groups -> ``(B, G, encoder_dims)`` tokens.

    Its 1x1 convolutions are applied as matrix products on channels-last tensors (the same
    parameters, shapes ``(out, in, 1)``, as ``nn.Conv1d``; no transposes).
    """

    def __init__(self, encoder_dims: int, widths: Sequence[int] = (128, 256, 512)) -> None:
        super().__init__()
        c1, c2, c3 = (int(w) for w in widths)
        self.encoder_channel = int(encoder_dims)
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, c1, 1), nn.BatchNorm1d(c1), nn.ReLU(inplace=True), nn.Conv1d(c1, c2, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * c2, c3, 1), nn.BatchNorm1d(c3), nn.ReLU(inplace=True),
            nn.Conv1d(c3, self.encoder_channel, 1),
        )

    @staticmethod
    def _tail(seq: nn.Sequential, y: torch.Tensor) -> torch.Tensor:
        """BatchNorm, ReLU and the second convolution of ``seq`` on ``(BG, n, c)``."""
        _, bn, _, conv_b = seq
        shape = y.shape
        y = F.relu(bn(y.reshape(-1, shape[-1])).reshape(shape))
        return F.linear(y, conv_b.weight[..., 0], conv_b.bias)

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        bs, g, n, _ = groups.shape
        conv1 = self.first_conv[0]
        x = F.linear(groups.reshape(bs * g, n, 3), conv1.weight[..., 0], conv1.bias)
        x = self._tail(self.first_conv, x)  # (BG, n, c2)
        glob = x.max(dim=1, keepdim=True).values
        # second_conv[0] on concat([glob, x]) (global first), with the global half computed
        # once per group instead of once per point
        conv2 = self.second_conv[0]
        c2 = x.shape[-1]
        w = conv2.weight[..., 0]
        y = F.linear(x, w[:, c2:]) + F.linear(glob, w[:, :c2], conv2.bias)
        y = self._tail(self.second_conv, y)
        return y.max(dim=1).values.reshape(bs, g, self.encoder_channel)


def Block(dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False  # noqa: N802
          ) -> nn.Module:
    """Point-MAE's pre-norm transformer block (``norm1``, ``attn.qkv`` without bias,
    ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``; LayerNorm eps 1e-5): the ViT block of
    :mod:`pcad.features.vit` with Point-MAE's settings."""
    if dim % num_heads:
        raise InvalidInputError(f"num_heads: {num_heads} does not divide trans_dim {dim}")
    return ViTBlock(dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, eps=1e-5)


class TransformerEncoder(nn.Module):
    """``blocks`` of :class:`Block`; the positional embedding is added before each block."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth))

    def forward(self, x: torch.Tensor, pos: torch.Tensor,
                fetch: Sequence[int] | None = None) -> list[torch.Tensor]:
        """The outputs of the blocks in ``fetch`` (all blocks run; None: only the last)."""
        out = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x + pos)
            if (fetch is None and i == last) or (fetch is not None and i in fetch):
                out.append(x)
        return out


# ------------------------------------------------------------------------------------------
# the encoder
# ------------------------------------------------------------------------------------------


def _check_points(points: Any, lengths: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(points, torch.Tensor):
        raise InvalidInputError(
            f"points: expected a torch tensor (B, N, 3), got {type(points).__name__}")
    if points.ndim != 3 or points.shape[2] != 3 or not points.is_floating_point():
        raise InvalidInputError(
            f"points: expected a floating (B, N, 3) tensor, got {points.dtype} "
            f"{tuple(points.shape)}")
    if points.shape[0] == 0:
        raise InvalidInputError("points: the batch is empty")
    if not bool(torch.isfinite(points).all()):
        raise InvalidInputError("points: NaN or infinite coordinates")
    batch, size = points.shape[:2]
    if lengths is None:
        return points, torch.full((batch,), size, dtype=torch.int64)
    if not isinstance(lengths, torch.Tensor) or lengths.shape != (batch,) \
            or lengths.is_floating_point():
        raise InvalidInputError(f"lengths: expected a ({batch},) integer tensor, got {lengths!r}")
    lengths = lengths.to(device="cpu", dtype=torch.int64)
    if bool((lengths < 0).any()) or bool((lengths > size).any()):
        raise InvalidInputError(f"lengths: entries must be in [0, {size}], got {lengths.tolist()}")
    return points, lengths


class PointMAEEncoder(nn.Module):
    """Point-MAE encoder: ``(B, N, 3)`` clouds -> ``(B, G, C_out)`` group features and
    ``(B, G, 3)`` centres (see the module docstring).

    Args:
        trans_dim: token width ``D`` (official: 384).
        depth: number of blocks (official: 12).
        num_heads: attention heads (official: 6).
        encoder_dims: tokenizer output width (official: ``trans_dim``); when it differs,
            a ``reduce_dim`` Linear and a cls token are used, as M3DM does.
        num_group, group_size: ``G`` centres and ``K`` points per group (M3DM: 1024 x 128).
        mlp_ratio, qkv_bias: block MLP width factor and qkv bias (official: 4, False).
        tokenizer_dims: hidden widths of the tokenizer (official: 128, 256, 512).
        pos_hidden: hidden width of ``pos_embed`` (official: 128).
        cls_token: prepend ``cls_token`` / ``cls_pos`` (dropped from the output).
        fetch_idx: blocks whose normed outputs are concatenated; default
            :func:`default_fetch_idx`.
        normalize: map each cloud into the unit sphere before grouping.
        max_points: keep at most this many points per cloud (deterministic stride).
    """

    def __init__(
        self,
        trans_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        encoder_dims: int | None = None,
        num_group: int = M3DM_NUM_GROUP,
        group_size: int = M3DM_GROUP_SIZE,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        tokenizer_dims: Sequence[int] = (128, 256, 512),
        pos_hidden: int = 128,
        cls_token: bool = False,
        fetch_idx: Sequence[int] | None = None,
        normalize: bool = False,
        max_points: int | None = None,
    ) -> None:
        super().__init__()
        trans_dim, depth, num_heads, num_group, group_size, pos_hidden = (
            check_int(value, name, whole_floats=False)
            for name, value in (("trans_dim", trans_dim), ("depth", depth),
                                ("num_heads", num_heads), ("num_group", num_group),
                                ("group_size", group_size), ("pos_hidden", pos_hidden)))
        if len(tuple(tokenizer_dims)) != 3:
            raise InvalidInputError(f"tokenizer_dims: expected 3 widths, got {tokenizer_dims!r}")
        if max_points is not None and (not isinstance(max_points, int) or max_points < 1):
            raise InvalidInputError(f"max_points: expected None or an int >= 1, got {max_points!r}")
        fetch = tuple(int(i) for i in (default_fetch_idx(depth) if fetch_idx is None
                                       else fetch_idx))
        if not fetch or any(i < 0 or i >= depth for i in fetch) or len(set(fetch)) != len(fetch):
            raise InvalidInputError(
                f"fetch_idx: expected distinct block indices in [0, {depth}), got {fetch_idx!r}")
        self.trans_dim, self.depth, self.num_heads = trans_dim, depth, num_heads
        self.encoder_dims = int(encoder_dims or trans_dim)
        self.num_group, self.group_size = num_group, group_size
        self.mlp_ratio, self.qkv_bias = float(mlp_ratio), bool(qkv_bias)
        self.tokenizer_dims = tuple(int(w) for w in tokenizer_dims)
        self.pos_hidden = pos_hidden
        self.use_cls = bool(cls_token) or self.encoder_dims != trans_dim
        self.fetch_idx = tuple(sorted(fetch))
        self.normalize = bool(normalize)
        self.max_points = max_points

        self.encoder = Tokenizer(self.encoder_dims, self.tokenizer_dims)
        if self.encoder_dims != trans_dim:
            self.reduce_dim = nn.Linear(self.encoder_dims, trans_dim)
        if self.use_cls:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, trans_dim))
            self.cls_pos = nn.Parameter(torch.zeros(1, 1, trans_dim))
        self.pos_embed = nn.Sequential(
            nn.Linear(3, pos_hidden), nn.GELU(), nn.Linear(pos_hidden, trans_dim))
        self.blocks = TransformerEncoder(trans_dim, depth, num_heads, mlp_ratio, qkv_bias)
        self.norm = nn.LayerNorm(trans_dim)

    # -- description ---------------------------------------------------------------------

    @property
    def out_channels(self) -> int:
        """``C_out = len(fetch_idx) * trans_dim``."""
        return len(self.fetch_idx) * self.trans_dim

    @property
    def arch(self) -> dict[str, Any]:
        """Constructor arguments (plain Python values), as stored in pcad checkpoints."""
        return {
            "trans_dim": self.trans_dim, "depth": self.depth, "num_heads": self.num_heads,
            "encoder_dims": self.encoder_dims, "num_group": self.num_group,
            "group_size": self.group_size, "mlp_ratio": self.mlp_ratio,
            "qkv_bias": self.qkv_bias, "tokenizer_dims": list(self.tokenizer_dims),
            "pos_hidden": self.pos_hidden, "cls_token": self.use_cls,
            "fetch_idx": list(self.fetch_idx), "normalize": self.normalize,
            "max_points": self.max_points,
        }

    def extra_repr(self) -> str:
        return (f"groups={self.num_group}x{self.group_size}, fetch_idx={list(self.fetch_idx)}, "
                f"out_channels={self.out_channels}, normalize={self.normalize}, "
                f"max_points={self.max_points}")

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    # -- grouping ------------------------------------------------------------------------

    def prepare(self, points: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input conditioning: ``(kept points, lengths, normalized points)``.

        The kept points are a stride subsample when an item has more than ``max_points``
        points; the normalized points are the kept ones mapped into the unit sphere when
        ``normalize`` is set (else the kept points themselves).
        """
        points, lens = _check_points(points, lengths)
        points = points.to(self.device, torch.float32)
        short = int(lens.min())
        need = max(self.num_group, self.group_size)
        if short < need:
            b = int(lens.argmin())
            what = (f"fewer than num_group={self.num_group}" if short < self.num_group
                    else f"fewer than group_size={self.group_size}")
            raise InvalidInputError(f"points: item {b} has {short} points, {what} "
                                    f"(the encoder needs at least {need})")
        if self.max_points is not None and int(lens.max()) > self.max_points:
            m = self.max_points
            rows = []
            for b, n in enumerate(lens.tolist()):
                keep = min(n, m)
                idx = (torch.arange(keep, dtype=torch.int64) * n) // keep
                item = points[b, idx.to(points.device)]
                rows.append(F.pad(item, (0, 0, 0, min(int(lens.max()), m) - keep)))
            points = torch.stack(rows)
            lens = lens.clamp(max=m)
        work = points
        if self.normalize:
            valid = (torch.arange(points.shape[1])[None, :] < lens[:, None]).to(points.device)
            w = valid[..., None].to(points.dtype)
            centroid = (points * w).sum(1, keepdim=True) / lens.to(points)[:, None, None]
            radius = ((points - centroid).norm(dim=-1) * valid).amax(dim=1)
            if bool((radius <= 0).any()):
                raise DegenerateGeometryError("points: a cloud whose points all coincide "
                                              "cannot be normalized")
            work = ((points - centroid) / radius[:, None, None]) * w
        return points, lens, work

    def group(self, points: torch.Tensor, lengths: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """FPS + kNN grouping (Point-MAE ``Group``).

        Returns:
            ``neighborhood (B, G, K, 3)`` (the points of each group minus its centre, in the
            normalized frame when ``normalize`` is set), ``centers (B, G, 3)`` in the input
            frame, ``center_idx (B, G)`` and ``group_idx (B, G, K)`` int64 indices into the
            points kept by :meth:`prepare` (equal to the input when nothing is dropped).
        """
        kept, lens, work = self.prepare(points, lengths)
        return self._group(kept, lens, work)

    def _group(self, kept: torch.Tensor, lens: torch.Tensor, work: torch.Tensor):
        lens_dev = lens.to(work.device)
        center_idx = fps(work, self.num_group, lengths=lens_dev)
        centers_w = gather(work, center_idx)
        _, group_idx = knn(centers_w, work, self.group_size, point_lengths=lens_dev)
        neighborhood = group(work, group_idx, centers_w)
        return neighborhood, gather(kept, center_idx), center_idx, group_idx

    # -- forward -------------------------------------------------------------------------

    def tokens(self, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Tokens and positions -> the normed outputs of ``fetch_idx``, concatenated:
        ``(B, G, C_out)``. ``centers`` are in the frame of ``neighborhood``."""
        x = self.encoder(neighborhood)
        if self.encoder_dims != self.trans_dim:
            x = self.reduce_dim(x)
        pos = self.pos_embed(centers)
        if self.use_cls:
            b = x.shape[0]
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
            pos = torch.cat([self.cls_pos.expand(b, -1, -1), pos], dim=1)
        feats = self.blocks(x, pos, self.fetch_idx)
        start = 1 if self.use_cls else 0
        return torch.cat([self.norm(f)[:, start:] for f in feats], dim=-1)

    def forward(self, points: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, 3)`` (optional ``(B,)`` valid lengths) -> ``features (B, G, C_out)``,
        ``centers (B, G, 3)`` (float32, on the module's device).

        Raises:
            InvalidInputError: a wrong shape or dtype, NaN, or an item with fewer points
                than ``num_group`` or ``group_size`` (the message gives the counts).
        """
        kept, lens, work = self.prepare(points, lengths)
        neighborhood, centers, center_idx, _ = self._group(kept, lens, work)
        centers_w = centers if work is kept else gather(work, center_idx)
        return self.tokens(neighborhood, centers_w), centers

    def freeze(self) -> PointMAEEncoder:
        """Eval mode, no gradients; returns self."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------


def shipped_weights_path() -> Path:
    """Path of the checkpoint shipped with pcad (``pcad/features/weights/`` package data).

    Raises:
        FileNotFoundError: the file is missing from this installation.
    """
    path = Path(str(resources.files("pcad.features.weights").joinpath(DEFAULT_WEIGHTS)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the packaged Point-MAE checkpoint is missing; reinstall pcad or "
            "rebuild it with 'make point-weights', or pass weights=PATH")
    return path


def read_point_checkpoint(
    weights: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a Point-MAE checkpoint: ``(state dict as stored, pcad record or None)``.

    Accepts the official layout ``{"base_model": {...}, ...}`` (the other entries, such as
    ``optimizer``, are ignored), pcad's ``{"base_model": {...}, "pcad": {...}}``, or anything
    :func:`~pcad.features.checkpoint.read_state_dict` reads. Files are loaded with
    ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        FileFormatError: not a torch checkpoint, or no state dict in it.
    """
    obj, source = load_checkpoint(weights)
    record = None
    if isinstance(obj, Mapping) and isinstance(obj.get("base_model"), Mapping):
        rec = obj.get("pcad")
        record = dict(rec) if isinstance(rec, Mapping) else None
        obj = obj["base_model"]
    return unwrap_state_dict(obj, source), record


def encoder_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's entries of a Point-MAE state dict, with its prefixes removed.

    ``module.`` (DataParallel) is removed from every key. When keys start with
    ``MAE_encoder.`` (pretraining model) only those are kept, without the prefix; otherwise
    ``base_model.`` is removed (fine-tuned model, as M3DM does). Entries of the decoder and
    heads (``MAE_decoder``, ``decoder_pos_embed``, ``mask_token``, ``increase_dim``,
    ``cls_head_finetune``) are dropped; any other key is kept, so a foreign checkpoint
    shows up as unexpected keys in the strict load.
    """
    sd = {(k[len("module."):] if k.startswith("module.") else k): v
          for k, v in state_dict.items()}
    if any(k.startswith("MAE_encoder.") for k in sd):
        return {k[len("MAE_encoder."):]: v for k, v in sd.items() if k.startswith("MAE_encoder.")}
    sd = {(k[len("base_model."):] if k.startswith("base_model.") else k): v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if not k.startswith(NON_ENCODER_PREFIXES)}


def _shape(sd: Mapping[str, torch.Tensor], key: str, dim: int) -> int | None:
    t = sd.get(key)
    return int(t.shape[dim]) if isinstance(t, torch.Tensor) and t.ndim > dim else None


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture read from an encoder state dict's shapes (keys it cannot see are left
    out, so the constructor defaults apply and the strict load names what is missing).

    ``num_heads`` cannot be seen in the shapes: it is ``trans_dim // 64`` (384 -> 6, the
    official value), at least 1.
    """
    arch: dict[str, Any] = {}
    dim = _shape(state_dict, "norm.weight", 0) or _shape(state_dict, "pos_embed.2.weight", 0)
    if dim:
        arch["trans_dim"] = dim
        arch["num_heads"] = max(1, dim // 64)
    blocks = {int(m.group(1)) for k in state_dict
              if (m := re.match(r"blocks\.blocks\.(\d+)\.", k))}
    if blocks:
        arch["depth"] = max(blocks) + 1
    enc = _shape(state_dict, "encoder.second_conv.3.weight", 0)
    if enc:
        arch["encoder_dims"] = enc
    widths = (_shape(state_dict, "encoder.first_conv.0.weight", 0),
              _shape(state_dict, "encoder.first_conv.3.weight", 0),
              _shape(state_dict, "encoder.second_conv.0.weight", 0))
    if all(widths):
        arch["tokenizer_dims"] = list(widths)
    hidden = _shape(state_dict, "pos_embed.0.weight", 0)
    if hidden:
        arch["pos_hidden"] = hidden
    fc1 = _shape(state_dict, "blocks.blocks.0.mlp.fc1.weight", 0)
    if fc1 and dim:
        arch["mlp_ratio"] = fc1 / dim
    arch["qkv_bias"] = "blocks.blocks.0.attn.qkv.bias" in state_dict
    arch["cls_token"] = "cls_token" in state_dict
    return arch


def load_point_encoder(
    weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    num_group: int | None = None,
    group_size: int | None = None,
    device: str | torch.device | None = None,
    num_heads: int | None = None,
    fetch_idx: Sequence[int] | None = None,
) -> PointMAEEncoder:
    """A frozen :class:`PointMAEEncoder` with the weights of a Point-MAE checkpoint.

    Args:
        weights: a checkpoint file (official Point-MAE ``pretrain.pth``, a pcad checkpoint
            from ``pcad pretrain-points``, a plain encoder state dict file) or an already
            loaded mapping; None: the checkpoint shipped with pcad.
        num_group, group_size: grouping at inference (they are not weights). Default: the
            checkpoint's pcad record, else M3DM's 1024 x 128.
        device: where the encoder lives (default CPU).
        num_heads: attention heads when the checkpoint does not record them (default
            ``trans_dim // 64``).
        fetch_idx: blocks whose outputs form the features (default: the record's, else
            :func:`default_fetch_idx`).

    Half-precision tensors are cast to float32.

    Raises:
        FileNotFoundError: no such file.
        FileFormatError: not a readable checkpoint.
        InvalidInputError: the weights do not fit the architecture inferred from them (the
            message names the missing, unexpected and wrongly shaped keys).
    """
    path = shipped_weights_path() if weights is None else weights
    raw, record = read_point_checkpoint(path)
    sd = {k: (v.float() if v.is_floating_point() else v)
          for k, v in encoder_state_dict(raw).items()}
    saved = dict((record or {}).get("arch") or {})
    arch = {"num_group": M3DM_NUM_GROUP, "group_size": M3DM_GROUP_SIZE}
    arch.update({k: v for k, v in saved.items() if k in ARCH_KEYS})
    arch.update(infer_arch(sd))
    if "num_heads" in saved:
        arch["num_heads"] = saved["num_heads"]
    for key, value in (("num_group", num_group), ("group_size", group_size),
                       ("num_heads", num_heads), ("fetch_idx", fetch_idx)):
        if value is not None:
            arch[key] = value
    if fetch_idx is None and "fetch_idx" in arch and "depth" in arch and \
            any(i >= arch["depth"] for i in arch["fetch_idx"]):
        del arch["fetch_idx"]  # a stale record: let the strict load report the blocks
    what = "Point-MAE" if isinstance(path, Mapping) else f"Point-MAE ({path})"
    with torch.random.fork_rng(devices=[]):  # the default init must not touch the global RNG
        model = PointMAEEncoder(**arch)
    load_state_dict_strict(model, sd, what)
    return model.to(device or "cpu").freeze()
