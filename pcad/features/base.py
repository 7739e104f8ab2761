"""What every RGB backbone shares: input preparation and PatchCore's local aggregation.

An RGB backbone (:class:`FeatureBackbone`) takes an image and returns one feature map:

- input: an ``(H, W, 3) uint8`` RGB image (numpy or torch), a ``(B, H, W, 3) uint8`` batch,
  or a ``(B, 3, H, W)`` float tensor with values in ``[0, 1]``; the backbone applies the
  ImageNet normalization itself (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`);
- output: ``(B, out_channels, ceil(H / stride), ceil(W / stride)) float32``: the selected
  layers, each averaged over its 3x3 neighbourhood (PatchCore's local aggregation),
  bilinearly resized to the finest selected layer and concatenated along channels
  (:func:`aggregate_feature_maps`).

Example:
    >>> import torch
    >>> from pcad.features.base import aggregate_feature_maps
    >>> maps = [torch.ones(1, 4, 8, 8), torch.ones(1, 6, 4, 4)]
    >>> tuple(aggregate_feature_maps(maps).shape)
    (1, 10, 8, 8)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pcad.errors import InvalidInputError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FeatureBackbone",
    "aggregate_feature_maps",
    "full_float32_convolutions",
    "image_to_tensor",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@contextlib.contextmanager
def full_float32_convolutions() -> Iterator[None]:
    """cuDNN convolutions in full float32 inside the block (``torch.backends.cudnn.allow_tf32``
    off, restored after): torch lets them use TF32 by default, whose results depend in about
    the third digit on the algorithm cuDNN picks for a batch size, so a sample's features
    would change with the samples batched with it (measured on an H200: LSFA scores 1.1 %
    apart between ``predict_batch`` and ``predict``; 0 without TF32, at the same speed; see
    ``benchmarks/results/gpu_h200_no_tf32.json``). No effect on the CPU. Not thread-safe:
    the flag is global to the process.

    Example:
        >>> import torch
        >>> with full_float32_convolutions():
        ...     torch.backends.cudnn.allow_tf32
        False
    """
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def image_to_tensor(image: Any, name: str = "image") -> torch.Tensor:
    """``(B, 3, H, W) float32`` in ``[0, 1]`` from a uint8 image/batch or a float batch.

    Accepts ``(H, W, 3)`` or ``(B, H, W, 3)`` uint8 (numpy or torch), and ``(B, 3, H, W)``
    or ``(3, H, W)`` floats (numpy or torch) already scaled to ``[0, 1]``.
    """
    t = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if not isinstance(t, torch.Tensor):
        raise InvalidInputError(f"{name}: expected a numpy array or a torch tensor, "
                                f"got {type(image).__name__}")
    if t.dtype == torch.uint8:
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[-1] != 3:
            raise InvalidInputError(
                f"{name}: a uint8 image must be (H, W, 3) or (B, H, W, 3), got {tuple(t.shape)}"
            )
        t = t.permute(0, 3, 1, 2).float().div_(255.0)
    elif t.is_floating_point():
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[1] != 3:
            raise InvalidInputError(
                f"{name}: a float image batch must be (B, 3, H, W) with values in [0, 1], "
                f"got {tuple(t.shape)}"
            )
        t = t.float()
        if not bool(torch.isfinite(t).all()):
            raise InvalidInputError(f"{name}: NaN or infinite values")
    else:
        raise InvalidInputError(f"{name}: expected uint8 or floating dtype, got {t.dtype}")
    if t.shape[0] == 0 or t.shape[2] < 2 or t.shape[3] < 2:
        raise InvalidInputError(f"{name}: empty or too small image batch {tuple(t.shape)}")
    return t


def aggregate_feature_maps(maps: Sequence[torch.Tensor], kernel: int = 3) -> torch.Tensor:
    """PatchCore's aggregation: ``kernel x kernel`` average, resize to the first map, concat.

    Args:
        maps: ``(B, C_i, h_i, w_i)`` tensors, finest first.
        kernel: side of the average-pooling window (stride 1, zero padding not counted);
            1 disables the local aggregation.

    Returns:
        ``(B, sum C_i, h_0, w_0)``.
    """
    if not maps:
        raise InvalidInputError("maps: at least one feature map is needed")
    size = maps[0].shape[-2:]
    out = []
    for m in maps:
        if kernel > 1:
            m = F.avg_pool2d(m, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
        if m.shape[-2:] != size:
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        out.append(m)
    return torch.cat(out, dim=1)


class FeatureBackbone(nn.Module):
    """Base class of the RGB backbones: normalization buffers and input handling.

    Subclasses implement :meth:`layer_maps` (``(B, 3, H, W)`` normalized ->
    list of feature maps, finest first) and set :attr:`out_channels` and :attr:`stride`.
    The mean/std buffers are not persistent, so they never appear in ``state_dict()``.
    """

    out_channels: int
    stride: int
    layers: tuple[Any, ...]

    def __init__(self, aggregate_kernel: int = 3) -> None:
        super().__init__()
        self.aggregate_kernel = int(aggregate_kernel)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def normalize(self, image: Any) -> torch.Tensor:
        """The image as an ImageNet-normalized ``(B, 3, H, W)`` tensor on this module's device."""
        t = image_to_tensor(image).to(self.pixel_mean.device)
        return (t - self.pixel_mean) / self.pixel_std

    def layer_maps(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def forward(self, image: Any) -> torch.Tensor:
        """``(B, out_channels, ceil(H / stride), ceil(W / stride))`` aggregated features."""
        return aggregate_feature_maps(self.layer_maps(self.normalize(image)),
                                      self.aggregate_kernel)

    def freeze(self) -> FeatureBackbone:
        """Evaluation mode, no gradients: how PatchCore-style detectors use a backbone."""
        self.eval()
        self.requires_grad_(False)
        return self
