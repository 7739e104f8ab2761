"""Argument checks of :mod:`pcad.ops` (kornia-style shape contracts on torch tensors).

Every check raises :class:`~pcad.errors.InvalidInputError` with a message that names the
argument. Only torch tensors are accepted: a numpy array is refused with a hint to convert it.

Example:
    >>> import torch
    >>> from pcad.ops._checks import check_cloud
    >>> check_cloud(torch.zeros(2, 5, 3), "points").shape
    torch.Size([2, 5, 3])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pcad.errors import InvalidInputError


def check_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` itself when it is a torch tensor; otherwise an error naming ``name``."""
    if not isinstance(value, torch.Tensor):
        hint = " (use torch.from_numpy)" if type(value).__module__ == "numpy" else ""
        raise InvalidInputError(
            f"{name}: expected a torch.Tensor, got {type(value).__name__}{hint}"
        )
    return value


def check_cloud(value: Any, name: str, min_points: int = 1) -> torch.Tensor:
    """A ``(B, N, 3)`` floating tensor of finite values, with ``B >= 1`` and ``N >= min_points``."""
    t = check_tensor(value, name)
    if t.ndim != 3 or t.shape[2] != 3:
        raise InvalidInputError(f"{name}: expected shape (B, N, 3), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InvalidInputError(f"{name}: expected a floating dtype, got {t.dtype}")
    if t.shape[0] == 0:
        raise InvalidInputError(f"{name}: the batch is empty, shape {tuple(t.shape)}")
    if t.shape[1] < min_points:
        raise InvalidInputError(
            f"{name}: {t.shape[1]} points per item, at least {min_points} needed"
        )
    if not bool(torch.isfinite(t).all()):
        raise InvalidInputError(f"{name}: NaN or infinite coordinates")
    return t


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64, float32 otherwise (half types compute in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_same_batch(a: torch.Tensor, name_a: str, b: torch.Tensor, name_b: str) -> None:
    """Same batch size and device for two batched tensors."""
    if a.shape[0] != b.shape[0]:
        raise InvalidInputError(
            f"{name_b}: batch size {b.shape[0]} differs from {name_a}'s {a.shape[0]}"
        )
    if a.device != b.device:
        raise InvalidInputError(f"{name_b}: on {b.device}, but {name_a} is on {a.device}")


def check_lengths(
    value: Any, name: str, batch: int, size: int, device: torch.device, minimum: int = 0
) -> torch.Tensor:
    """Lengths as a ``(B,)`` int64 tensor on ``device`` with values in ``[minimum, size]``.

    ``None`` means every item is full (``size``).
    """
    if value is None:
        return torch.full((batch,), size, dtype=torch.int64, device=device)
    t = check_tensor(value, name)
    if t.shape != (batch,):
        raise InvalidInputError(f"{name}: expected shape ({batch},), got {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InvalidInputError(f"{name}: expected an integer dtype, got {t.dtype}")
    t = t.to(device=device, dtype=torch.int64)
    if batch:
        lo, hi = int(t.min()), int(t.max())
        if lo < minimum or hi > size:
            raise InvalidInputError(
                f"{name}: values must lie in [{minimum}, {size}], got min {lo} and max {hi}"
            )
    return t


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """An int ``>= minimum``; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
            value = int(value)
        else:
            raise InvalidInputError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise InvalidInputError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def check_radius(value: Any, name: str = "radius") -> float:
    """A finite float ``> 0``."""
    if isinstance(value, bool):
        raise InvalidInputError(f"{name}: expected a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise InvalidInputError(f"{name}: must be finite and > 0, got {value!r}")
    return v


def check_index(value: Any, name: str, batch: int, device: torch.device) -> torch.Tensor:
    """An integer index tensor ``(B, ...)`` on ``device`` (cast to int64)."""
    t = check_tensor(value, name)
    if t.ndim < 1 or t.shape[0] != batch:
        raise InvalidInputError(
            f"{name}: expected shape ({batch}, ...), got {tuple(t.shape)}"
        )
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InvalidInputError(f"{name}: expected an integer dtype, got {t.dtype}")
    if t.device != device:
        raise InvalidInputError(f"{name}: on {t.device}, but the values are on {device}")
    return t.to(torch.int64)
