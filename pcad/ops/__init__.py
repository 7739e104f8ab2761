"""Point-cloud ops on dense batched tensors: FPS, kNN, ball query, gather/group, interpolation.

One API over several backends. Clouds are ``(B, N, 3)`` floating tensors (CPU or CUDA) with
optional ``(B,)`` lengths for ragged batches (the first ``lengths[b]`` rows are valid);
indices are int64 with ``-1`` for padding; distances are *squared*, ``inf`` for padding.
Every op has a pure-torch reference (``backend="torch"``), a fast CPU path, and uses
``torch_cluster`` / ``pointnet2_ops`` when they are installed, their quirks normalised (see
each op's module). ``backend="auto"`` picks the fastest available backend for the tensors'
device; the environment variable ``PCAD_OPS_BACKEND`` can force one (see
:mod:`pcad.ops.backends`). Only torch tensors are accepted (``torch.from_numpy`` first).

Example:
    >>> import torch
    >>> from pcad.ops import fps, gather, knn
    >>> pts = torch.rand(4, 2048, 3, generator=torch.Generator().manual_seed(0))
    >>> centers = gather(pts, fps(pts, 128))
    >>> d2, idx = knn(centers, pts, 16)
    >>> idx.shape
    torch.Size([4, 128, 16])
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# The ops load on first use (PEP 562), so that ``pcad.ops.backends`` (its tables, and the
# torch-free backend choice ``pcad info`` reports) imports without torch.
_EXPORTS = {
    "BackendUnavailableError": "pcad.ops.backends",
    "available_backends": "pcad.ops.backends",
    "ball_query": "pcad.ops.ball_query",
    "fps": "pcad.ops.fps",
    "gather": "pcad.ops.group",
    "group": "pcad.ops.group",
    "interpolate_features": "pcad.ops.interpolate",
    "knn": "pcad.ops.knn",
    "three_interpolate": "pcad.ops.interpolate",
    "three_nn": "pcad.ops.interpolate",
}

__all__ = [
    "BackendUnavailableError",
    "available_backends",
    "ball_query",
    "fps",
    "gather",
    "group",
    "interpolate_features",
    "knn",
    "three_interpolate",
    "three_nn",
]

if TYPE_CHECKING:
    from pcad.ops.backends import BackendUnavailableError, available_backends
    from pcad.ops.ball_query import ball_query
    from pcad.ops.fps import fps
    from pcad.ops.group import gather, group
    from pcad.ops.interpolate import interpolate_features, three_interpolate, three_nn
    from pcad.ops.knn import knn


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _OpsPackage(types.ModuleType):
    """``pcad.ops`` itself: importing a submodule named like its op (``pcad.ops.fps``,
    ``.knn``, ``.ball_query``, ``.group``) binds the op, not the submodule, on the package, as
    the eager imports this package had did."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            value = getattr(value, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _OpsPackage
