"""Argument checks shared by every public function of pcad, synth and viz.

Each check returns the argument in its canonical form (for arrays: C-contiguous with the
documented dtype) or raises :class:`~pcad.errors.InvalidInputError` naming the argument.

The checks come in five groups:

- numbers and choices: :func:`check_int`, :func:`check_number`, :func:`check_positive`,
  :func:`check_radius`, :func:`check_fraction`, :func:`check_choice`, :func:`check_float_dtype`;
- numpy arrays: point clouds :func:`check_points`, organized clouds :func:`check_organized`
  (with :func:`valid_pixels`), :func:`check_mask`, per-point :func:`check_values`, images
  :func:`check_image`;
- metric inputs: :func:`check_scores`, :func:`check_labels`, :func:`check_maps_and_masks`,
  FPR limits :func:`check_limit` / :func:`check_limits`;
- torch tensors (the shape contracts of :mod:`pcad.ops`): :func:`check_tensor`,
  :func:`check_cloud`, :func:`check_same_batch`, :func:`check_lengths`, :func:`check_index`.
  Only torch tensors are accepted there: a numpy array is refused with a hint to convert it.
  torch is imported by these checks only, so importing this module stays light.
- output folders: :func:`check_out_folder` (before any long computation writes there).

Example:
    >>> import numpy as np
    >>> from pcad.checks import check_points
    >>> check_points(np.zeros((20, 3)) + np.arange(20)[:, None] * [1, 2, 0.5], "points").dtype
    dtype('float32')
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pcad.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

MIN_POINTS = 10
#: Most points pcad samples on a mesh (``pcad synth --points``, :func:`pcad.io.sample_mesh`,
#: :func:`synth.apply_defect_to_mesh`): 50 million, about 10 GB of working memory for the
#: sampling and the defect. Larger requests are refused before anything is allocated.
MAX_SAMPLE_POINTS = 50_000_000
#: numpy dtype kinds a metric input may have: bool, signed/unsigned integer, floating.
NUMERIC_KINDS = "biuf"


# ----------------------------------------------------------------------------- numbers


def check_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None, *,
              whole_floats: bool = True) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]``.

    Python ints, numpy integer scalars and 0-d integer torch tensors are accepted; so are
    floats with an integral value (``3.0``) unless ``whole_floats=False``. Bools and
    fractions are refused.

    Example:
        >>> import numpy as np
        >>> check_int(np.int64(3), "k"), check_int(4.0, "k")
        (3, 4)
        >>> check_int(4.0, "k", whole_floats=False)
        Traceback (most recent call last):
        ...
        pcad.errors.InvalidInputError: k: expected an integer, got 4.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
        if torch is not None and isinstance(value, torch.Tensor) and value.ndim == 0 \
                and not value.is_floating_point():
            value = int(value)
        elif whole_floats and isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidInputError(f"{name}: expected an integer, got {value!r}")
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        hi = f" and <= {maximum}" if maximum is not None else ""
        raise InvalidInputError(f"{name}: must be >= {minimum}{hi}, got {v}")
    return v


def check_indices(values: Any, name: str, minimum: int, maximum: int) -> tuple[int, ...]:
    """A non-empty sequence of integers in ``[minimum, maximum]`` as a tuple of ints (each as
    :func:`check_int`; a numeric string counts as its integer).

    Example:
        >>> check_indices([4, "10", 2.0], "layers", 0, 15)
        (4, 10, 2)
        >>> check_indices([""], "k", 0, 15)
        Traceback (most recent call last):
        ...
        pcad.errors.InvalidInputError: k: expected a non-empty list of integers in [0, 15], got ['']
    """
    wanted = f"{name}: expected a non-empty list of integers in [{minimum}, {maximum}]"
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{wanted}, got {values!r}")
    values = list(values)
    out = []
    for v in values:
        if isinstance(v, str):
            try:
                v = int(v)
            except ValueError:
                raise InvalidInputError(f"{wanted}, got {values!r}") from None
        out.append(check_int(v, name, minimum, maximum))
    if not out:
        raise InvalidInputError(f"{wanted}, got {values!r}")
    return tuple(out)


def check_number(value: Any, name: str, *, allow_bool: bool = True) -> float:
    """Return ``value`` as a Python float (NaN and inf included; the range is the caller's).

    A bool is refused when ``allow_bool`` is False.

    Example:
        >>> check_number("2.5", "scale")
        2.5
        >>> check_number(True, "scale", allow_bool=False)
        Traceback (most recent call last):
        ...
        pcad.errors.InvalidInputError: scale: expected a number, got True
    """
    if isinstance(value, bool) and not allow_bool:
        raise InvalidInputError(f"{name}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a number, got {value!r}") from None


def check_positive(value: Any, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as a float that is finite and > 0 (>= 0 with ``allow_zero``).

    Example:
        >>> check_positive(0, "sigma", allow_zero=True)
        0.0
    """
    v = check_number(value, name)
    if math.isnan(v) or math.isinf(v):
        raise InvalidInputError(f"{name}: must be finite, got {value!r}")
    if v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInputError(f"{name}: must be {bound}, got {value!r}")
    return v


def check_radius(value: Any, name: str = "radius") -> float:
    """Return a radius (or any length) as a finite float ``> 0``; bools are refused.

    Example:
        >>> check_radius(0.5)
        0.5
    """
    v = check_number(value, name, allow_bool=False)
    if not math.isfinite(v) or v <= 0:
        raise InvalidInputError(f"{name}: must be finite and > 0, got {value!r}")
    return v


def check_fraction(value: Any, name: str, inclusive_zero: bool = True) -> float:
    """Return ``value`` as a float in ``[0, 1]`` (``(0, 1]`` without ``inclusive_zero``).

    Example:
        >>> check_fraction(0.25, "ratio")
        0.25
    """
    v = check_positive(value, name, allow_zero=inclusive_zero)
    if v > 1:
        raise InvalidInputError(f"{name}: must be <= 1, got {value!r}")
    return v


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is a bool, else a one-line error naming option ``name``.

    >>> check_flag(True, "attenuate")
    True
    """
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name}: must be true or false, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise InvalidInputError.

    Example:
        >>> check_choice("test", "split", ("train", "test"))
        'test'
    """
    options = tuple(choices)
    if value not in options:
        raise InvalidInputError(f"{name}: expected one of {options}, got {value!r}")
    return str(value)


# ----------------------------------------------------------------------------- numpy arrays


def check_points(points: Any, name: str = "points", min_points: int = MIN_POINTS,
                 dtype: Any = np.float32) -> np.ndarray:
    """Return ``points`` as a C-contiguous ``(N, 3) float32`` array of finite values.

    ``dtype=np.float64`` returns the original values as float64 instead (no float32 round
    trip: what a caller that centres a cloud far from the origin needs); the values must
    still fit in float32.

    Raises InvalidInputError for a wrong shape, fewer than ``min_points`` rows, NaN/inf, or a
    ``dtype`` other than float32 and float64.

    Example:
        >>> check_points([[1e6 + 0.1, 0, 0]], min_points=1, dtype=np.float64)[0, 0]
        np.float64(1000000.1)
    """
    out_dtype = check_float_dtype(dtype)
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InvalidInputError(f"{name}: expected shape (N, 3), got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise InvalidInputError(f"{name}: the cloud is empty (0 points)")
    if arr.shape[0] < min_points:
        raise InvalidInputError(
            f"{name}: {arr.shape[0]} points, at least {min_points} are needed"
        )
    arr = np.ascontiguousarray(arr, dtype=out_dtype)
    finite = np.isfinite(arr)
    if out_dtype != np.float32 and finite.all():
        finite = np.abs(arr) <= np.finfo(np.float32).max  # infinite once cast to float32
    if not finite.all():
        bad = int((~finite).any(axis=1).sum())
        raise InvalidInputError(f"{name}: {bad} points have NaN or infinite coordinates")
    return arr


def check_float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """``dtype`` as a ``numpy.dtype``: float32 or float64, else InvalidInputError.

    Example:
        >>> check_float_dtype("float64")
        dtype('float64')
    """
    out = None
    if dtype is not None:  # np.dtype(None) would be float64
        try:
            out = np.dtype(dtype)
        except (TypeError, ValueError):
            pass
    if out is None or out.type not in (np.float32, np.float64):
        raise InvalidInputError(f"{name}: expected numpy.float32 or numpy.float64, got {dtype!r}")
    return np.dtype(out.type)  # native byte order


def check_organized(xyz: Any, name: str = "xyz") -> np.ndarray:
    """Return an organized cloud as a C-contiguous ``(H, W, 3) float32`` array.

    ``(0, 0, 0)`` marks a pixel with no measurement (MVTec 3D-AD convention). NaN or inf
    coordinates are an error (convert them to zeros first if they mean "missing").
    """
    arr = np.asarray(xyz)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidInputError(
            f"{name}: expected an organized cloud of shape (H, W, 3), got {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"{name}: the organized cloud is empty, shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InvalidInputError(
            f"{name}: NaN or infinite coordinates; use (0, 0, 0) for pixels with no measurement"
        )
    return arr


def valid_pixels(xyz: np.ndarray) -> np.ndarray:
    """``(H, W) bool``: True where an organized cloud holds a measurement (not all zeros)."""
    return np.any(xyz != 0, axis=-1)


def check_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a bool array of exactly ``shape``."""
    arr = np.asarray(mask)
    if arr.shape != tuple(shape):
        raise InvalidInputError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    return arr.astype(bool, copy=False)


def check_values(values: Any, n: int, name: str = "values", what: str = "points") -> np.ndarray:
    """``values`` as a ``(n,) float64`` array, one per point (``(n, 1)`` is flattened).

    NaN and inf are allowed (viz draws them in a distinct colour); a length that differs from
    the cloud's is an error naming both lengths.

    Example:
        >>> check_values([1.0, float("nan")], 2).tolist()
        [1.0, nan]
    """
    arr = np.asarray(values)
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidInputError(
            f"{name}: {arr.shape[0] if arr.ndim == 1 else arr.shape} values for {n} {what}; "
            f"expected one value per {what.rstrip('s')} (shape ({n},))")
    return arr


def check_image(arr: Any, name: str, ndim: int | tuple[int, ...] = 2) -> np.ndarray:
    """A non-empty 2D (or ``(H, W, C)``) array; ``(H, W, 1)`` is squeezed to ``(H, W)``.

    Example:
        >>> check_image(np.zeros((4, 5, 1)), "map").shape
        (4, 5)
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims:
        raise InvalidInputError(f"{name}: expected a {' or '.join(f'{d}D' for d in dims)} "
                                f"image, got shape {a.shape}")
    if a.size == 0:
        raise InvalidInputError(f"{name}: the image is empty, shape {a.shape}")
    return a


# ----------------------------------------------------------------------------- metric inputs


def _check_numeric(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise InvalidInputError(f"{name}: expected a numeric or bool array, got dtype {arr.dtype}")


def _nan_count(arr: np.ndarray) -> int:
    if arr.dtype.kind != "f":
        return 0
    return int(np.isnan(arr).sum())


def check_scores(scores: Any, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a non-empty ``(N,)`` numeric array without NaN (``±inf`` allowed).

    Example:
        >>> check_scores([0.5, float("inf")]).tolist()
        [0.5, inf]
    """
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
    """Return ``labels`` as an ``(n,) bool`` array: True (anomalous) where the label is > 0.

    Example:
        >>> check_labels([0, 2, 1], 3).tolist()
        [False, True, True]
    """
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
    truth's resolution, and resizing is the caller's job. Errors name the image index.

    Example:
        >>> maps, masks = check_maps_and_masks(np.zeros((2, 3, 4)), np.ones((2, 3, 4)))
        >>> len(maps), masks[0].dtype
        (2, dtype('bool'))
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
    """Return an FPR integration limit as a float in ``(0, 1]``.

    Example:
        >>> check_limit(0.3)
        0.3
    """
    if isinstance(limit, bool):
        raise InvalidInputError(f"{name}: expected a number in (0, 1], got {limit!r}")
    return check_fraction(limit, name, inclusive_zero=False)


def check_limits(limits: Any, name: str = "limits") -> tuple[float, ...]:
    """Return a non-empty tuple of FPR limits, each in ``(0, 1]`` (a single number is allowed).

    Example:
        >>> check_limits(0.3), check_limits([0.3, 1])
        ((0.3,), (0.3, 1.0))
    """
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


# ----------------------------------------------------------------------------- torch tensors


def check_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` itself when it is a torch tensor; otherwise an error naming ``name``.

    Example:
        >>> import numpy as np
        >>> check_tensor(np.zeros(3), "points")
        Traceback (most recent call last):
        ...
        pcad.errors.InvalidInputError: points: expected a torch.Tensor, got ndarray (use torch.from_numpy)
    """  # noqa: E501
    import torch

    if not isinstance(value, torch.Tensor):
        hint = " (use torch.from_numpy)" if type(value).__module__ == "numpy" else ""
        raise InvalidInputError(
            f"{name}: expected a torch.Tensor, got {type(value).__name__}{hint}"
        )
    return value


def check_cloud(value: Any, name: str, min_points: int = 1) -> torch.Tensor:
    """A ``(B, N, 3)`` floating tensor of finite values, with ``B >= 1`` and ``N >= min_points``.

    Example:
        >>> import torch
        >>> check_cloud(torch.zeros(2, 5, 3), "points").shape
        torch.Size([2, 5, 3])
    """
    import torch

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


def check_same_batch(a: torch.Tensor, name_a: str, b: torch.Tensor, name_b: str) -> None:
    """Same batch size and device for two batched tensors."""
    if a.shape[0] != b.shape[0]:
        raise InvalidInputError(
            f"{name_b}: batch size {b.shape[0]} differs from {name_a}'s {a.shape[0]}"
        )
    if a.device != b.device:
        raise InvalidInputError(f"{name_b}: on {b.device}, but {name_a} is on {a.device}")


def _check_integer_dtype(t: torch.Tensor, name: str) -> None:
    import torch

    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InvalidInputError(f"{name}: expected an integer dtype, got {t.dtype}")


def check_lengths(
    value: Any, name: str, batch: int, size: int, device: torch.device, minimum: int = 0
) -> torch.Tensor:
    """Lengths as a ``(B,)`` int64 tensor on ``device`` with values in ``[minimum, size]``.

    ``None`` means every item is full (``size``).

    Example:
        >>> import torch
        >>> check_lengths(None, "lengths", 2, 5, torch.device("cpu")).tolist()
        [5, 5]
    """
    import torch

    if value is None:
        return torch.full((batch,), size, dtype=torch.int64, device=device)
    t = check_tensor(value, name)
    if t.shape != (batch,):
        raise InvalidInputError(f"{name}: expected shape ({batch},), got {tuple(t.shape)}")
    _check_integer_dtype(t, name)
    t = t.to(device=device, dtype=torch.int64)
    if batch:
        lo, hi = int(t.min()), int(t.max())
        if lo < minimum or hi > size:
            raise InvalidInputError(
                f"{name}: values must lie in [{minimum}, {size}], got min {lo} and max {hi}"
            )
    return t


def check_index(value: Any, name: str, batch: int, device: torch.device) -> torch.Tensor:
    """An integer index tensor ``(B, ...)`` on ``device`` (cast to int64)."""
    import torch

    t = check_tensor(value, name)
    if t.ndim < 1 or t.shape[0] != batch:
        raise InvalidInputError(
            f"{name}: expected shape ({batch}, ...), got {tuple(t.shape)}"
        )
    _check_integer_dtype(t, name)
    if t.device != device:
        raise InvalidInputError(f"{name}: on {t.device}, but the values are on {device}")
    return t.to(torch.int64)


# ----------------------------------------------------------------------------- output folders


def check_out_folder(path: Any, name: str = "--out") -> Path:
    """``path`` as a :class:`~pathlib.Path` a command may write its folder to: an existing
    writable folder, or a new one whose nearest existing ancestor is a writable folder.
    Nothing is created; call it before a long computation, not after.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> check_out_folder(pathlib.Path(tmp.name) / "new" / "run").name
        'run'
        >>> (pathlib.Path(tmp.name) / "f.txt").write_text("x")
        1
        >>> check_out_folder(pathlib.Path(tmp.name) / "f.txt" / "run")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pcad.errors.InvalidInputError: --out: cannot create .../f.txt/run: .../f.txt is a file
        >>> tmp.cleanup()
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InvalidInputError(f"{name}: expected a folder path, got {path!r}")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{name}: {out} exists and is not a folder")
    probe = out
    while not probe.exists():
        if probe.is_symlink():
            raise InvalidInputError(f"{name}: cannot create {out}: {probe} is a broken link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InvalidInputError(f"{name}: cannot create {out}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == out:
            raise InvalidInputError(f"{name}: {out}: the folder is not writable")
        raise InvalidInputError(f"{name}: cannot create {out}: {probe} is not writable")
    return out
