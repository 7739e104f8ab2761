"""Argument checks of :mod:`pcad.metrics` (private).

Every check raises :class:`~pcad.errors.InvalidInputError` naming the argument (and the image
index for per-image inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pcad.checks import check_fraction
from pcad.errors import InvalidInputError

NUMERIC_KINDS = "biuf"


def _check_numeric(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise InvalidInputError(f"{name}: expected a numeric or bool array, got dtype {arr.dtype}")


def _nan_count(arr: np.ndarray) -> int:
    if arr.dtype.kind != "f":
        return 0
    return int(np.isnan(arr).sum())


def check_scores(scores: Any, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a non-empty ``(N,)`` numeric array without NaN (``±inf`` allowed)."""
    arr = np.asarray(scores)
    _check_numeric(arr, name)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-D array of shape (N,), got {arr.shape}")
    if arr.size == 0:
        raise InvalidInputError(f"{name}: empty (0 scores)")
    bad = _nan_count(arr)
    if bad:
        raise InvalidInputError(f"{name}: {bad} of {arr.size} values are NaN")
    return arr


def check_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as an ``(n,) bool`` array: True (anomalous) where the label is > 0."""
    arr = np.asarray(labels)
    _check_numeric(arr, name)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-D array of shape (N,), got {arr.shape}")
    if arr.shape[0] != n:
        raise InvalidInputError(f"{name}: expected {n} labels (one per score), got {arr.shape[0]}")
    bad = _nan_count(arr)
    if bad:
        raise InvalidInputError(f"{name}: {bad} of {arr.size} labels are NaN")
    return arr > 0


def _image_list(images: Any, name: str) -> list[np.ndarray]:
    """A sequence of ``(H, W)`` arrays (or one ``(N, H, W)`` array) as a list of arrays."""
    if isinstance(images, np.ndarray) or hasattr(images, "__array__"):
        arr = np.asarray(images)
        if arr.ndim == 2:
            raise InvalidInputError(
                f"{name}: expected a sequence of (H, W) arrays, got one array of shape "
                f"{arr.shape}; wrap a single image in a list"
            )
        if arr.ndim != 3:
            raise InvalidInputError(
                f"{name}: expected a sequence of (H, W) arrays or an (N, H, W) array, "
                f"got shape {arr.shape}"
            )
        items: Sequence[Any] = list(arr)
    else:
        try:
            items = list(images)
        except TypeError:
            raise InvalidInputError(
                f"{name}: expected a sequence of (H, W) arrays, got {type(images).__name__}"
            ) from None
    if len(items) == 0:
        raise InvalidInputError(f"{name}: empty (0 images)")
    out = []
    for i, item in enumerate(items):
        arr = np.asarray(item)
        _check_numeric(arr, f"{name}[{i}]")
        if arr.ndim != 2:
            raise InvalidInputError(f"{name}[{i}]: expected an (H, W) array, got shape {arr.shape}")
        if arr.size == 0:
            raise InvalidInputError(f"{name}[{i}]: empty image, shape {arr.shape}")
        out.append(arr)
    return out


def check_maps_and_masks(
    anomaly_maps: Any,
    gt_masks: Any,
    maps_name: str = "anomaly_maps",
    masks_name: str = "gt_masks",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return the maps (numeric, no NaN) and the masks as ``(H, W) bool`` (True where > 0).

    Map ``i`` must have exactly the shape of mask ``i``: metrics are computed at the ground
    truth's resolution, and resizing is the caller's job.
    """
    maps = _image_list(anomaly_maps, maps_name)
    masks = _image_list(gt_masks, masks_name)
    if len(maps) != len(masks):
        raise InvalidInputError(
            f"{maps_name} and {masks_name}: different lengths, {len(maps)} maps and "
            f"{len(masks)} masks"
        )
    bool_masks = []
    for i, (amap, mask) in enumerate(zip(maps, masks, strict=True)):
        if amap.shape != mask.shape:
            raise InvalidInputError(
                f"{maps_name}[{i}] has shape {amap.shape} but {masks_name}[{i}] has shape "
                f"{mask.shape}; pixel metrics are computed at the ground truth's resolution, "
                "resize the map to the mask's shape first"
            )
        bad = _nan_count(amap)
        if bad:
            raise InvalidInputError(f"{maps_name}[{i}]: {bad} of {amap.size} values are NaN")
        bad = _nan_count(mask)
        if bad:
            raise InvalidInputError(f"{masks_name}[{i}]: {bad} of {mask.size} values are NaN")
        bool_masks.append(mask > 0)
    return maps, bool_masks


def check_limit(limit: Any, name: str = "fpr_limit") -> float:
    """Return an FPR integration limit as a float in ``(0, 1]``."""
    if isinstance(limit, bool):
        raise InvalidInputError(f"{name}: expected a number in (0, 1], got {limit!r}")
    return check_fraction(limit, name, inclusive_zero=False)


def check_limits(limits: Any, name: str = "limits") -> tuple[float, ...]:
    """Return a non-empty tuple of FPR limits, each in ``(0, 1]`` (a single number is allowed)."""
    if isinstance(limits, (int, float, np.number)) and not isinstance(limits, bool):
        limits = (limits,)
    try:
        items = list(limits)
    except TypeError:
        raise InvalidInputError(
            f"{name}: expected a sequence of numbers in (0, 1], got {limits!r}"
        ) from None
    if not items:
        raise InvalidInputError(f"{name}: empty, give at least one FPR limit")
    return tuple(check_limit(v, f"{name}[{i}]") for i, v in enumerate(items))


def limit_key(limit: float) -> str:
    """The dictionary key of an FPR limit: ``0.3 -> "0.3"``, ``1 -> "1.0"``."""
    return str(float(limit))
