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

from pcad.ops.backends import BackendUnavailableError, available_backends
from pcad.ops.ball_query import ball_query
from pcad.ops.fps import fps
from pcad.ops.group import gather, group
from pcad.ops.interpolate import interpolate_features, three_interpolate, three_nn
from pcad.ops.knn import knn

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
