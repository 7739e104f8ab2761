"""Reading local checkpoints and loading them strictly, with a report of the keys that differ.

pcad never downloads weights. A checkpoint is a file the user names (``--weights PATH``) or
one shipped in an installed package. :func:`read_state_dict` reads one and removes the usual
wrappers; :func:`load_state_dict_strict` loads it into a module. When the weights do not fit
the architecture, it raises :class:`~pcad.errors.InvalidInputError` naming the missing,
unexpected and wrongly shaped keys (the first few of each kind, plus how many there are).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from pcad.features.checkpoint import load_state_dict_strict
    >>> net = nn.Linear(3, 2)
    >>> bad = {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}
    >>> try:
    ...     load_state_dict_strict(net, bad, "linear")
    ... except ValueError as exc:
    ...     print(str(exc).splitlines()[1])
      shape mismatch (1): weight: checkpoint (2, 4) vs model (2, 3)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pcad.errors import FileFormatError, InvalidInputError

__all__ = ["load_state_dict_strict", "read_state_dict", "state_dict_mismatch"]

#: Keys under which training scripts commonly nest the weights (timm, torchvision, lightning).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "module", "net")
#: How many key names of each kind an error message lists.
SHOW_KEYS = 5


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    for _ in range(3):  # {"model": {"state_dict": {...}}} at most
        if _is_state_dict(obj):
            break
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
            continue
        break
    if not _is_state_dict(obj):
        what = type(obj).__name__
        keys = list(obj)[:SHOW_KEYS] if isinstance(obj, Mapping) else []
        raise FileFormatError(
            f"{source}: not a state dict (a mapping of parameter names to tensors); found a "
            f"{what}" + (f" with keys {keys}" if keys else "")
        )
    sd = dict(obj)
    for prefix in ("module.", "_orig_mod."):  # DataParallel / torch.compile wrappers
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def read_state_dict(weights: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Read a checkpoint into a plain ``{name: tensor}`` dict, on the CPU.

    Args:
        weights: a path to a ``torch.save`` file (loaded with ``weights_only=True``, so a
            pickle with arbitrary objects is refused), or an already loaded mapping.

    The weights may be nested under one of :data:`WRAPPER_KEYS` and prefixed with
    ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile); both wrappers are removed.

    Raises:
        FileNotFoundError: the path does not exist.
        FileFormatError: the file cannot be read by ``torch.load`` or holds no state dict.
    """
    obj, source = load_checkpoint(weights)
    return _unwrap(obj, source)


def load_checkpoint(weights: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[Any, str]:
    """The raw object of a checkpoint file (``torch.load(weights_only=True)`` on the CPU), or
    an in-memory mapping as it is, with a name for messages (the path, or ``"weights"``).

    Raises:
        FileNotFoundError: the path does not exist.
        FileFormatError: a directory, or a file ``torch.load`` cannot read.
    """
    if isinstance(weights, Mapping):
        return weights, "weights"
    if not isinstance(weights, (str, os.PathLike)):
        raise InvalidInputError(
            f"weights: expected a file path or a state dict, got {type(weights).__name__}"
        )
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise FileFormatError(f"{path}: is a directory, expected a checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, wrong format...
        raise FileFormatError(f"{path}: cannot be read as a torch checkpoint ({exc})") from exc
    return obj, str(path)


def state_dict_mismatch(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, shape_mismatch)`` key lists between a module and a state dict.

    ``shape_mismatch`` entries read ``"name: checkpoint (a, b) vs model (c, d)"``.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    return missing, unexpected, shapes


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:SHOW_KEYS])
    more = f", ... ({len(items) - SHOW_KEYS} more)" if len(items) > SHOW_KEYS else ""
    return f"  {label} ({len(items)}): {shown}{more}"


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str
) -> nn.Module:
    """Load ``state_dict`` into ``module`` with ``strict=True`` after checking keys and shapes.

    Args:
        module: the architecture.
        state_dict: ``{name: tensor}``, e.g. from :func:`read_state_dict`.
        what: names the model in the error message (``"effnet-lite0"``, a file path...).

    Raises:
        InvalidInputError: a key is missing, unexpected or has another shape; the message
            lists the first :data:`SHOW_KEYS` of each kind.
    """
    missing, unexpected, shapes = state_dict_mismatch(module, state_dict)
    if missing or unexpected or shapes:
        lines = [f"{what}: the weights do not match the architecture"]
        if shapes:
            lines.append(_listing("shape mismatch", shapes))
        if missing:
            lines.append(_listing("missing keys", missing))
        if unexpected:
            lines.append(_listing("unexpected keys", unexpected))
        raise InvalidInputError("\n".join(lines))
    non_finite = [k for k, v in state_dict.items() if v.is_floating_point()
                  and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise InvalidInputError(f"{what}: {_listing('keys with NaN or inf', non_finite).strip()}")
    module.load_state_dict(state_dict, strict=True)
    return module
