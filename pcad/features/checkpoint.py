"""Reading local checkpoints and loading them strictly, with a report of the keys that differ.

pcad never downloads weights. A checkpoint is a file the user names (``--weights PATH``) or
one shipped in an installed package. :func:`read_state_dict` reads one and removes the usual
wrappers; :func:`load_state_dict_strict` loads it into a module. When the weights do not fit
the architecture, it raises :class:`~pcad.errors.InvalidInputError` naming the missing,
unexpected and wrongly shaped keys (the first few of each kind, plus how many there are).

The pieces are public for the backbones whose checkpoints need more (DINO's ``'teacher'``,
Point-MAE's ``'base_model'``): :func:`load_checkpoint` reads a file as it is,
:func:`unwrap_state_dict` finds the state dict inside, :func:`strip_prefixes` renames keys and
:func:`check_state_dict` reports a mismatch without loading.

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

import contextlib
import os
import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pcad.errors import FileFormatError, InvalidInputError, PcadError

__all__ = [
    "MIN_SAFE_TORCH",
    "check_state_dict",
    "check_torch_version",
    "load_checkpoint",
    "load_state_dict_strict",
    "read_state_dict",
    "state_dict_mismatch",
    "strip_prefixes",
    "unwrap_state_dict",
]

#: Keys under which training scripts commonly nest the weights (timm, torchvision, lightning).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "module", "net")
#: Key prefixes of a whole wrapped model: DataParallel (``module.``), torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: How many key names of each kind an error message lists.
SHOW_KEYS = 5
#: The oldest torch (major, minor) whose ``weights_only=True`` unpickler has no known bypass:
#: below 2.6 a crafted file executes code (CVE-2025-32434), and the unpickler was fixed again
#: in 2.10. :func:`load_checkpoint` refuses to unpickle anything with an older torch.
MIN_SAFE_TORCH = (2, 10)


def check_torch_version(version: str | None = None) -> None:
    """Raise unless ``version`` (default: the installed ``torch.__version__``) is at least
    :data:`MIN_SAFE_TORCH`, the oldest torch that loads a checkpoint or run folder safely.

    Raises:
        PcadError: an older torch, or a version string without ``MAJOR.MINOR``.

    Example:
        >>> check_torch_version("2.13.0+cpu")
        >>> try:
        ...     check_torch_version("2.5.1")
        ... except PcadError as exc:
        ...     print(str(exc).split(" (")[0])
        torch 2.5.1 cannot load checkpoints or run folders safely
    """
    v = str(torch.__version__ if version is None else version)
    m = re.match(r"\s*(\d+)\.(\d+)", v)
    if m is None or (int(m.group(1)), int(m.group(2))) < MIN_SAFE_TORCH:
        need = ".".join(map(str, MIN_SAFE_TORCH))
        raise PcadError(
            f"torch {v} cannot load checkpoints or run folders safely (its weights_only "
            f"unpickler can be made to run code, CVE-2025-32434); upgrade with "
            f"pip install 'torch>={need}'"
        )


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any, source: str = "weights") -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` state dict inside a loaded checkpoint ``obj``.

    The weights may be nested under one of :data:`WRAPPER_KEYS` (at most three levels) or be
    a module's; the :data:`WRAPPER_PREFIXES` shared by every key are removed
    (:func:`strip_prefixes` with ``shared_only=True``).

    Raises:
        FileFormatError: no state dict inside; the message starts with ``source``.

    Example:
        >>> import torch
        >>> sorted(unwrap_state_dict({"model": {"module.w": torch.zeros(1)}, "epoch": 3}))
        ['w']
    """
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
    return strip_prefixes(obj, WRAPPER_PREFIXES, source, shared_only=True)


def strip_prefixes(
    state_dict: Mapping[str, torch.Tensor],
    prefixes: Sequence[str],
    source: str = "weights",
    *,
    shared_only: bool = False,
    drop: str | None = None,
) -> dict[str, torch.Tensor]:
    """A copy of ``state_dict`` whose keys lose the ``prefixes``.

    Args:
        state_dict: ``{name: tensor}``.
        prefixes: the key prefixes to remove.
        source: names the checkpoint in the error message.
        shared_only: remove each prefix (in the order given, once) only when every key has it,
            as the wrapper of a whole model. Otherwise every key loses any of the prefixes,
            repeatedly and in any order (``module.backbone.x`` -> ``x``).
        drop: keys that start with this once stripped are left out (a classifier head).

    Raises:
        FileFormatError: two keys become the same name (only without ``shared_only``).

    Example:
        >>> import torch
        >>> w = torch.zeros(1)
        >>> sorted(strip_prefixes({"module.backbone.a": w, "b": w}, ("module.", "backbone.")))
        ['a', 'b']
        >>> sorted(strip_prefixes({"module.a": w, "b": w}, ("module.",), shared_only=True))
        ['b', 'module.a']
    """
    if shared_only:
        sd = dict(state_dict)
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
        return {k: v for k, v in sd.items() if drop is None or not k.startswith(drop)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = _strip_key(key, prefixes)
        if drop is not None and name.startswith(drop):
            continue
        if name in out:
            raise FileFormatError(f"{source}: two keys map to {name!r} once the prefixes "
                                  f"{tuple(prefixes)} are removed")
        out[name] = value
    return out


def _strip_key(key: str, prefixes: Sequence[str]) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


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
    return unwrap_state_dict(obj, source)


def load_checkpoint(
    weights: str | os.PathLike[str] | Mapping[str, Any],
    safe_globals: Sequence[type] = (),
) -> tuple[Any, str]:
    """The raw object of a checkpoint file (``torch.load(weights_only=True)`` on the CPU), or
    an in-memory mapping as it is, with a name for messages (the path, or ``"weights"``).

    ``safe_globals``: classes the safe loader may also build (DINO's training checkpoints
    pickle their ``argparse.Namespace``); ignored by a torch without
    ``torch.serialization.safe_globals``.

    Raises:
        FileNotFoundError: the path does not exist.
        FileFormatError: a directory, or a file ``torch.load`` cannot read.
        PcadError: torch is older than :data:`MIN_SAFE_TORCH` (:func:`check_torch_version`).
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
    check_torch_version()  # before unpickling anything
    safe = getattr(torch.serialization, "safe_globals", None) if safe_globals else None
    ctx = safe(list(safe_globals)) if safe is not None else contextlib.nullcontext()
    try:
        with ctx, warnings.catch_warnings():
            # torch's note on a pickle protocol it did not write: the load refuses or succeeds
            warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                    category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, wrong format...
        raise FileFormatError(f"{path}: cannot be read as a torch checkpoint "
                              f"({_load_failure(exc)})") from exc
    return obj, str(path)


def _load_failure(exc: BaseException) -> str:
    """What a failed ``torch.load`` found, in one short line (torch's messages span lines
    and give advice that does not apply to pcad's files).

    Example:
        >>> _load_failure(EOFError())
        'empty or truncated file'
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", text, re.S)
        detail = f": {found.group(1).strip()}" if found else ""
        return ("not a file of tensors: the weights-only loader refuses it (a pickle of other "
                f"objects, or not a torch file){detail}")
    if isinstance(exc, EOFError) or "central directory" in text or "zip archive" in text:
        return "empty or truncated file"
    first = next((line.strip() for line in text.splitlines() if line.strip()),
                 type(exc).__name__)
    return first if len(first) <= 200 else first[:197] + "..."


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


def check_state_dict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str
) -> None:
    """Raise unless ``state_dict`` fits ``module`` exactly, with finite values (loads nothing).

    ``module`` may live on the meta device: only its keys and shapes are read.

    Raises:
        InvalidInputError: a key is missing, unexpected or has another shape (the message
            lists the first :data:`SHOW_KEYS` of each kind), or a value is NaN or infinite.
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


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str
) -> nn.Module:
    """Load ``state_dict`` into ``module`` with ``strict=True`` after checking keys and shapes.

    Args:
        module: the architecture.
        state_dict: ``{name: tensor}``, e.g. from :func:`read_state_dict`.
        what: names the model in the error message (``"effnet-lite0"``, a file path...).

    Raises:
        InvalidInputError: see :func:`check_state_dict`.
    """
    check_state_dict(module, state_dict, what)
    module.load_state_dict(state_dict, strict=True)
    return module
