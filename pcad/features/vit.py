"""DINO ViT-B/8 (Caron et al. 2021) as an RGB backbone, loaded from the official checkpoint.

:class:`DinoViT` is the Vision Transformer of facebookresearch/dino ``vision_transformer.py``
with parameter names equal to the official release ``dino_vitbase8_pretrain.pth``:

- ``cls_token`` ``(1, 1, D)``, ``pos_embed`` ``(1, 1 + g * g, D)`` (``g = img_size / patch``,
  28 for the release), ``patch_embed.proj.{weight,bias}`` (``Conv2d(3, D, p, stride=p)``);
- ``blocks.{i}``: pre-norm blocks ``norm1`` -> ``attn.qkv`` (``D -> 3D``, with bias) ->
  softmax attention -> ``attn.proj`` -> residual, then ``norm2`` -> ``mlp.fc1`` (``D -> 4D``)
  -> GELU -> ``mlp.fc2`` -> residual;
- ``norm``: the final LayerNorm. Every LayerNorm has ``eps = 1e-6``.

ViT-B/8 is ``D = 768``, 12 blocks, 12 heads, patch 8 (85.8 M parameters). The feature map is
what M3DM, LSFA and CFM take from timm's ``vit_base_patch8_224.dino``: the patch tokens of the
last block after the final ``norm``, CLS token removed, as an image-shaped map

- input: an ``(H, W, 3) uint8`` image, a ``(B, H, W, 3) uint8`` batch or a ``(B, 3, H, W)``
  float batch in ``[0, 1]`` (ImageNet mean/std normalization is applied inside);
  ``H`` and ``W`` multiples of the patch size 8;
- output: ``(B, 768, H / 8, W / 8) float32`` (``stride = 8``, ``out_channels = 768``);
  a 224 x 224 image gives the 28 x 28 grid of M3DM.

At other input sizes the position embedding is resized as DINO's ``interpolate_pos_encoding``
does it (bicubic, ``scale_factor = (n + 0.1) / g`` per axis); at the native size it is used
unchanged. Unlike PatchCore's CNN features, the tokens are not 3x3-averaged by default
(``aggregate_kernel=1``), as in M3DM.

Checkpoints accepted by :func:`read_vit_state_dict` (and so by ``create_backbone``):

- the official ``dino_vitbase8_pretrain.pth`` (a plain state dict), and the same weights as
  timm saves them for ``vit_base_patch8_224.dino`` (identical key names; timm's
  ``pytorch_model.bin`` is read, its ``model.safetensors`` is not);
- a state dict nested under ``'teacher'`` (DINO's full training checkpoint
  ``checkpoint.pth`` / ``dino_vitbase8_pretrain_full_checkpoint.pth``, whose ``'args'``
  namespace is allowed by the safe loader; the teacher is used, as DINO's evaluation scripts
  do) or under one of :data:`~pcad.features.checkpoint.WRAPPER_KEYS` (``'model'``,
  ``'state_dict'``, ...);
- keys prefixed with ``module.`` (DistributedDataParallel), ``backbone.`` (DINO's
  ``MultiCropWrapper``) or ``_orig_mod.`` (torch.compile), in any combination;
- keys under ``head.`` (DINO's projection head, a timm classifier) are ignored: the features
  are taken before any head.

Anything else must match the architecture exactly (``strict=True``); otherwise
:class:`~pcad.errors.InvalidInputError` names the missing, unexpected and wrongly shaped keys.

Example:
    >>> import numpy as np
    >>> from pcad.features.vit import DinoViT
    >>> net = DinoViT(embed_dim=64, depth=2, num_heads=2, img_size=32).freeze()  # tiny, random
    >>> tuple(net(np.zeros((48, 64, 3), np.uint8)).shape), net.out_channels, net.stride
    ((1, 64, 6, 8), 64, 8)
    >>> # the real one: create_backbone("dino-vitb8", weights="dino_vitbase8_pretrain.pth")
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_indices, check_int
from pcad.errors import FileFormatError, InvalidInputError
from pcad.features.base import IMAGENET_MEAN, IMAGENET_STD, FeatureBackbone
from pcad.features.checkpoint import (
    check_state_dict,
    load_checkpoint,
    strip_prefixes,
    unwrap_state_dict,
)
from pcad.features.registry import register_backbone

__all__ = [
    "DINO_VITB8_FILE",
    "DINO_VITB8_URL",
    "DinoViT",
    "create_dino_vitb8",
    "infer_vit_config",
    "read_vit_state_dict",
]

#: File name of the official DINO ViT-B/8 backbone weights.
DINO_VITB8_FILE = "dino_vitbase8_pretrain.pth"
#: Where the official file is published (for the user to fetch; pcad never downloads).
DINO_VITB8_URL = f"https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/{DINO_VITB8_FILE}"
#: ViT-B/8: embedding width, blocks, heads, patch side, native input side.
VITB8 = {"embed_dim": 768, "depth": 12, "num_heads": 12, "patch_size": 8, "img_size": 224}
LN_EPS = 1e-6
#: Key prefixes removed from every checkpoint key (any order, repeatedly).
STRIP_PREFIXES = ("module.", "backbone.", "_orig_mod.")
#: Keys starting with this are dropped (projection/classifier heads).
HEAD_PREFIX = "head."
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


class Mlp(nn.Module):
    """``fc1`` (D -> hidden) -> GELU -> ``fc2`` (hidden -> D)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection, ``(B, N, D) -> (B, N, D)``.

    ``fused=True`` uses :func:`torch.nn.functional.scaled_dot_product_attention`; ``False``
    the explicit ``softmax(q k^T / sqrt(d)) v`` of DINO's code (same result up to rounding).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 fused: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d / heads)
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            y = attn @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``
    (LayerNorm ``eps`` 1e-6 as DINO; Point-MAE's encoder uses it with 1e-5 and no qkv bias)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 fused: bool = True, eps: float = LN_EPS) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, fused=fused)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """``(B, 3, H, W) -> (B, (H / p) * (W / p), D)`` with one ``p x p`` stride-``p`` conv."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoViT(FeatureBackbone):
    """DINO's Vision Transformer whose ``state_dict()`` matches the official release.

    Args:
        embed_dim: token width ``D`` (768 for ViT-B).
        depth: number of blocks (12).
        num_heads: attention heads; ``embed_dim`` must be divisible by it (12).
        patch_size: side of the square patches, also :attr:`stride` (8).
        img_size: native input side; ``pos_embed`` holds ``(img_size / patch_size) ** 2``
            patch positions (224 -> 28 x 28).
        mlp_ratio: MLP hidden width over ``embed_dim`` (4).
        qkv_bias: whether ``attn.qkv`` has a bias (True in every DINO ViT).
        layers: indices of the blocks whose tokens (each passed through the final ``norm``,
            as DINO's ``get_intermediate_layers`` does) form the feature map; default the
            last block only. Negative indices count from the end.
        aggregate_kernel: PatchCore's local ``k x k`` averaging of the map; 1 (default) keeps
            the raw tokens, as M3DM/LSFA/CFM do.
        fused_attention: use ``scaled_dot_product_attention`` (faster, same result).

    Attributes:
        out_channels: ``embed_dim * len(layers)``.
        stride: ``patch_size``.
        grid: the native patch grid side (``img_size // patch_size``).
    """

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        patch_size: int = 8,
        img_size: int = 224,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        layers: Sequence[int] | None = None,
        aggregate_kernel: int = 1,
        fused_attention: bool = True,
    ) -> None:
        super().__init__(aggregate_kernel)
        embed_dim, depth, num_heads, patch_size, img_size = (
            check_int(value, name, whole_floats=False)
            for name, value in (("embed_dim", embed_dim), ("depth", depth),
                                ("num_heads", num_heads), ("patch_size", patch_size),
                                ("img_size", img_size)))
        if embed_dim % num_heads:
            raise InvalidInputError(f"num_heads: must divide embed_dim {embed_dim}, "
                                    f"got {num_heads}")
        if img_size % patch_size:
            raise InvalidInputError(f"img_size: must be a multiple of patch_size {patch_size}, "
                                    f"got {img_size}")
        idx = ((depth - 1,) if layers is None
               else check_indices(layers, "layers", -depth, depth - 1))
        self.layers = tuple(sorted({i % depth for i in idx}))
        self.embed_dim, self.depth, self.num_heads = embed_dim, depth, num_heads
        self.patch_size = self.stride = patch_size
        self.grid = img_size // patch_size
        self.out_channels = embed_dim * len(self.layers)

        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, fused_attention)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        """DINO's initialization: truncated normal (std 0.02), zero biases, unit LayerNorms."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``(1, 1 + grid_h * grid_w, D)`` position embedding for a ``grid_h x grid_w`` patch
        grid: ``pos_embed`` itself at the native grid, else DINO's bicubic resize of the
        patch part (``scale_factor = (n + 0.1) / g`` per axis; the CLS entry is kept)."""
        g = self.grid
        if (grid_h, grid_w) == (g, g):
            return self.pos_embed
        d = self.pos_embed.shape[-1]
        patch = self.pos_embed[:, 1:].float().reshape(1, g, g, d).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, scale_factor=((grid_h + 0.1) / g, (grid_w + 0.1) / g),
                              mode="bicubic", align_corners=False)
        if tuple(patch.shape[-2:]) != (grid_h, grid_w):  # pragma: no cover - DINO's assert
            raise RuntimeError(f"position embedding resized to {tuple(patch.shape[-2:])}, "
                               f"expected {(grid_h, grid_w)}")
        patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, d)
        return torch.cat((self.pos_embed[:, :1], patch.to(self.pos_embed.dtype)), dim=1)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalized -> ``(B, 1 + (H / p) * (W / p), D)`` input tokens."""
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise InvalidInputError(
                f"image: height and width must be multiples of the patch size {p} "
                f"(e.g. {max(p, round(h / p) * p)} x {max(p, round(w / p) * p)}), "
                f"got {h} x {w}"
            )
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat((cls, tokens), dim=1) + self.interpolate_pos_encoding(h // p, w // p)

    def layer_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, D, H / p, W / p)`` patch-token maps (after ``norm``) of the :attr:`layers`."""
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        t = self.prepare_tokens(x)
        out = []
        for i, block in enumerate(self.blocks):
            t = block(t)
            if i in self.layers:
                tokens = self.norm(t)[:, 1:]  # CLS removed
                out.append(tokens.transpose(1, 2).reshape(t.shape[0], -1, gh, gw))
                if i == self.layers[-1]:
                    break
        return out


# ----------------------------------------------------------------------------- loading


def read_vit_state_dict(
    weights: str | os.PathLike[str] | Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """A DINO ViT checkpoint as ``{name: tensor}`` with the official key names.

    Args:
        weights: a ``torch.save`` file path (read with ``weights_only=True``; an
            ``argparse.Namespace`` is allowed) or an already loaded mapping.

    Unwraps ``'teacher'`` (DINO training checkpoints) and the generic wrappers of
    :func:`~pcad.features.checkpoint.read_state_dict`, strips the :data:`STRIP_PREFIXES`
    from every key and drops the ``head.*`` keys.

    Raises:
        FileNotFoundError: the path does not exist.
        FileFormatError: unreadable file, or no state dict inside.
        InvalidInputError: ``weights`` is neither a path nor a mapping.
    """
    # DINO's full training checkpoints also pickle the run's argparse.Namespace ('args').
    obj, source = load_checkpoint(weights, safe_globals=(argparse.Namespace,))
    if isinstance(obj, Mapping) and isinstance(obj.get("teacher"), Mapping):
        obj = obj["teacher"]
    sd = unwrap_state_dict(obj, source)
    out = strip_prefixes(sd, STRIP_PREFIXES, source, drop=HEAD_PREFIX)
    if not out:
        raise FileFormatError(f"{source}: only head weights, no backbone")
    return out


def infer_vit_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Architecture of a ViT state dict: ``embed_dim``, ``depth``, ``patch_size``, ``img_size``.

    ``embed_dim`` comes from ``cls_token``, ``depth`` from the ``blocks.{i}`` count,
    ``patch_size`` from ``patch_embed.proj.weight`` and ``img_size`` from ``pos_embed``
    (``sqrt(N - 1) * patch_size``). What cannot be read (missing or oddly shaped keys) keeps
    the ViT-B/8 value, so that the strict load then names the offending keys.
    """
    cfg = {k: VITB8[k] for k in ("embed_dim", "depth", "patch_size", "img_size")}
    cls = state_dict.get("cls_token")
    if isinstance(cls, torch.Tensor) and cls.ndim == 3 and cls.shape[-1] > 0:
        cfg["embed_dim"] = int(cls.shape[-1])
    blocks = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))}
    if blocks:
        cfg["depth"] = max(blocks) + 1
    proj = state_dict.get("patch_embed.proj.weight")
    if isinstance(proj, torch.Tensor) and proj.ndim == 4 and proj.shape[-1] == proj.shape[-2] > 0:
        cfg["patch_size"] = int(proj.shape[-1])
    pos = state_dict.get("pos_embed")
    if isinstance(pos, torch.Tensor) and pos.ndim == 3 and pos.shape[1] > 1:
        side = math.isqrt(int(pos.shape[1]) - 1)
        if side * side == pos.shape[1] - 1:
            cfg["img_size"] = side * cfg["patch_size"]
    return cfg


@register_backbone("dino-vitb8", kind="rgb",
                   description="DINO ViT-B/8 from the official local checkpoint "
                               f"({DINO_VITB8_FILE}); last-block patch tokens, 768 channels "
                               "at stride 8")
def create_dino_vitb8(
    weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    patch_size: int | None = None,
    layers: Sequence[int] | None = None,
    aggregate_kernel: int = 1,
    fused_attention: bool = True,
) -> DinoViT:
    """A frozen DINO ViT (ViT-B/8 for the official file) with weights from a local checkpoint.

    Args:
        weights: path of ``dino_vitbase8_pretrain.pth`` (or another accepted checkpoint, see
            the module docstring) or a loaded state dict. Required: pcad ships no DINO weights.
        embed_dim, depth, patch_size: by default read from the checkpoint
            (:func:`infer_vit_config`); when given, the checkpoint must agree.
        num_heads: attention heads (not stored in a checkpoint); default
            ``max(1, embed_dim // 64)``, which is right for every DINO ViT (S: 6, B: 12).
        layers, aggregate_kernel, fused_attention: see :class:`DinoViT`.

    Raises:
        InvalidInputError: ``weights`` is None, or the checkpoint does not fit the architecture
            (the message names the mismatched keys).
        FileNotFoundError, FileFormatError: the file is missing or unreadable.
    """
    if weights is None:
        raise InvalidInputError(
            f"dino-vitb8: weights are required; pass the official DINO checkpoint as a local "
            f"path, weights='/path/to/{DINO_VITB8_FILE}' (published at {DINO_VITB8_URL}); "
            "pcad never downloads weights"
        )
    sd = read_vit_state_dict(weights)
    cfg = infer_vit_config(sd)
    grid = cfg["img_size"] // cfg["patch_size"]
    for name, value in (("embed_dim", embed_dim), ("depth", depth), ("patch_size", patch_size)):
        if value is not None:
            cfg[name] = value
    cfg["img_size"] = grid * cfg["patch_size"]
    heads = max(1, cfg["embed_dim"] // 64) if num_heads is None else num_heads
    what = "dino-vitb8" if isinstance(weights, Mapping) else f"dino-vitb8 ({weights})"
    # Built without memory first: a wrong checkpoint is reported without allocating the
    # model, and the right one skips the random initialization (2-3 s for ViT-B/8).
    with torch.device("meta"):
        net = DinoViT(num_heads=heads, layers=layers, aggregate_kernel=aggregate_kernel,
                      fused_attention=fused_attention, **cfg)
    check_state_dict(net, sd, what)  # raises, naming the keys
    net = net.to_empty(device="cpu")
    with torch.no_grad():  # the non-persistent normalization buffers are not in `sd`
        net.pixel_mean.copy_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        net.pixel_std.copy_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    net.load_state_dict(sd, strict=True)
    return net.freeze()
