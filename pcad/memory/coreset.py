"""Greedy k-center coreset (PatchCore), chunked so that memory stays linear and bounded.

PatchCore subsamples its memory bank with the greedy k-center rule on randomly projected
features: project every feature to ``projection_dim`` (128) dimensions with a seeded
Gaussian matrix, start from a seeded random index, then repeatedly add the feature farthest
from the ones already chosen (its distance to the nearest chosen one is largest).

:func:`greedy_coreset` never holds more than, in addition to the input bank:

- the projected bank, ``N x d`` float32 (``d = min(projection_dim, C)``; with no projection
  the input itself is used when it is a float32 tensor or array on the right device);
- three length-``N`` float32 vectors (squared norms, distance to the coreset, one buffer);
- one chunk of rows at a time, at most ``memory_budget_mb`` and at most 65536 rows (the
  float32 copy of an input that is not float32 on the device while projecting; ``p * p``
  while computing the norms);

so the peak grows linearly with ``N`` (``N * (d + 3) * 4`` bytes) plus at most the budget
(:func:`coreset_memory_bytes`). The result equals that of the unchunked
:func:`greedy_coreset_reference`.

Example:
    >>> import numpy as np
    >>> from pcad.memory.coreset import greedy_coreset
    >>> x = np.random.default_rng(0).normal(size=(1000, 300)).astype(np.float32)
    >>> idx = greedy_coreset(x, ratio=0.05, seed=0)
    >>> idx.shape, idx.dtype, len(set(idx.tolist()))
    ((50,), dtype('int64'), 50)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pcad.checks import check_fraction, check_int, check_positive
from pcad.errors import InvalidInputError

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "as_feature_tensor",
    "coreset_memory_bytes",
    "coreset_size",
    "greedy_coreset",
    "greedy_coreset_reference",
]

DEFAULT_MEMORY_BUDGET_MB = 256.0
#: Largest chunk, whatever the budget: bigger chunks do not make the matmuls faster.
MAX_CHUNK_ROWS = 1 << 16


def as_feature_tensor(features: Any, name: str = "features") -> torch.Tensor:
    """Features ``(N, C)`` (numpy or torch) as a floating torch tensor, without copying a float
    numpy array (integers and float16 become float32; torch tensors are detached).

    Raises:
        InvalidInputError: not numeric, not 2-D, or empty; the message names ``name``.

    Example:
        >>> import numpy as np
        >>> as_feature_tensor(np.ones((4, 3), np.int64)).dtype
        torch.float32
    """
    if isinstance(features, np.ndarray):
        if not (np.issubdtype(features.dtype, np.floating)
                or np.issubdtype(features.dtype, np.integer)):
            raise InvalidInputError(f"{name}: expected a numeric array, got dtype "
                                    f"{features.dtype}")
        if features.dtype == np.float16 or np.issubdtype(features.dtype, np.integer):
            features = features.astype(np.float32)
        if any(st < 0 for st in features.strides):  # torch.from_numpy refuses them
            features = np.ascontiguousarray(features)
        t = torch.from_numpy(features)
    elif isinstance(features, torch.Tensor):
        t = features.detach()
        if not t.is_floating_point():
            t = t.float()
    else:
        raise InvalidInputError(f"{name}: expected a numpy array or torch tensor, "
                                f"got {type(features).__name__}")
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise InvalidInputError(f"{name}: expected a non-empty (N, C) array, got "
                                f"{tuple(t.shape)}")
    return t


def coreset_size(n_rows: int, n: int | None = None, ratio: float | None = None) -> int:
    """Number of features to keep: ``n`` itself, or ``max(1, floor(ratio * n_rows))``."""
    if (n is None) == (ratio is None):
        raise InvalidInputError("pass exactly one of n (a count) and ratio (a fraction)")
    if n is not None:
        return check_int(n, "n", 1, n_rows)
    r = check_fraction(ratio, "ratio", inclusive_zero=False)
    return max(1, min(n_rows, int(math.floor(r * n_rows))))


def _start_and_matrix(n_rows: int, dim: int, projection_dim: int | None,
                      seed: int) -> tuple[int, torch.Tensor | None]:
    """The seeded start index, then the ``(dim, d)`` Gaussian matrix scaled by ``1/sqrt(d)``
    (None when ``projection_dim`` is None/0 or ``>= dim``), from one generator."""
    g = torch.Generator().manual_seed(int(seed))
    start = int(torch.randint(0, n_rows, (1,), generator=g))
    if not projection_dim or projection_dim >= dim:
        return start, None
    return start, torch.randn(dim, projection_dim, generator=g) / math.sqrt(projection_dim)


def coreset_memory_bytes(n_rows: int, dim: int, projection_dim: int | None = 128,
                         memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB) -> int:
    """Upper estimate of the extra memory :func:`greedy_coreset` needs beyond its input.

    ``N * (d + 3) * 4`` bytes (projected bank + 3 vectors) plus the chunk budget; ``d`` is the
    projected dimension (the input dimension when not projected: a float32 input on the
    device is then used in place, and ``N * C * 4`` overestimates).
    """
    d = dim if not projection_dim or projection_dim >= dim else projection_dim
    return int(n_rows * (d + 3) * 4 + memory_budget_mb * 2**20)


def _device_of(t: torch.Tensor, device: Any) -> torch.device:
    return torch.device(device) if device is not None else t.device


def _chunk_rows(budget_bytes: float, row_bytes: int) -> int:
    """Rows per chunk: within the budget and at most :data:`MAX_CHUNK_ROWS`."""
    return max(1, min(MAX_CHUNK_ROWS, int(budget_bytes // max(row_bytes, 1))))


def _project(x: torch.Tensor, w: torch.Tensor | None, device: torch.device,
             budget_bytes: float) -> torch.Tensor:
    """``(N, d) float32`` on ``device``: the projected bank, computed chunk by chunk.

    With no projection a float32 input on ``device`` is used in place.
    """
    n, c = x.shape
    if w is None and x.dtype == torch.float32 and x.device == device and x.is_contiguous():
        return x
    d = c if w is None else w.shape[1]
    copy = 0 if (x.dtype == torch.float32 and x.device == device) else 4 * c
    rows = _chunk_rows(budget_bytes, copy + 4 * d)
    out = torch.empty((n, d), dtype=torch.float32, device=device)
    w = None if w is None else w.to(device)
    for s in range(0, n, rows):
        chunk = x[s:s + rows].to(device=device, dtype=torch.float32)
        if w is None:
            out[s:s + rows].copy_(chunk)
        else:
            torch.matmul(chunk, w, out=out[s:s + rows])
        del chunk
    return out


def _squared_norms(p: torch.Tensor, budget_bytes: float) -> torch.Tensor:
    """``(N,)`` row norms squared, ``(p * p).sum(1)`` by chunks; raises on NaN/inf.

    A NaN or inf feature (or one too large for float32 squares) makes its norm non-finite,
    so this is also the finiteness check of the input, at no extra memory.
    """
    n, d = p.shape
    norms = torch.empty(n, dtype=torch.float32, device=p.device)
    rows = _chunk_rows(budget_bytes, 4 * d)
    for s in range(0, n, rows):
        q = p[s:s + rows]
        norms[s:s + rows] = (q * q).sum(1)
    if not bool(torch.isfinite(norms).all()):
        bad = int((~torch.isfinite(norms)).sum())
        raise InvalidInputError(f"features: {bad} rows have NaN or infinite values (or values "
                                "too large for float32 distances)")
    return norms


def greedy_coreset(
    features: Any,
    n: int | None = None,
    ratio: float | None = None,
    projection_dim: int | None = 128,
    seed: int = 0,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Indices of a greedy k-center coreset of ``features`` (PatchCore's subsampling).

    Args:
        features: ``(N, C)`` numpy array or torch tensor (float32 avoids any copy).
        n, ratio: the coreset size, as a count or as a fraction of ``N`` (exactly one).
        projection_dim: dimension of the seeded Gaussian random projection (PatchCore: 128);
            None or ``>= C`` disables it.
        seed: seeds the projection matrix and the start index.
        memory_budget_mb: bound on the transient chunk memory (see the module docstring).
        device: where to compute (``"cpu"``, ``"cuda"``); default: the tensor's device.

    Returns:
        ``(n,) int64`` distinct indices into ``features``, in selection order (the first is
        the seeded start).

    Raises:
        InvalidInputError: wrong shape/dtype, NaN/inf, or an impossible size.
    """
    x = as_feature_tensor(features)
    n_rows, dim = x.shape
    k = coreset_size(n_rows, n, ratio)
    budget = check_positive(memory_budget_mb, "memory_budget_mb") * 2**20
    if projection_dim is not None:
        projection_dim = check_int(projection_dim, "projection_dim", 0)
    dev = _device_of(x, device)
    start, w = _start_and_matrix(n_rows, dim, projection_dim, seed)
    p = _project(x, w, dev, budget)
    norms = _squared_norms(p, budget)
    min_d = torch.full((n_rows,), float("inf"), dtype=torch.float32, device=dev)
    buf = torch.empty(n_rows, dtype=torch.float32, device=dev)
    chosen = np.empty(k, dtype=np.int64)
    idx = start
    # One pass over the projected bank per selection, as whole-length ops into preallocated
    # vectors: few parallel regions per iteration (chunking them costs more in barriers
    # than it saves in cache on a busy machine) and no allocation.
    for i in range(k):
        chosen[i] = idx
        if i == k - 1:
            break
        torch.addmv(norms, p, p[idx], alpha=-2.0, out=buf)  # |x|^2 - 2 x.c
        buf += norms[idx]  # + |c|^2
        torch.minimum(min_d, buf, out=min_d)
        min_d[idx] = float("-inf")  # chosen: never picked again
        idx = int(torch.argmax(min_d))
    return chosen


def greedy_coreset_reference(
    features: Any,
    n: int | None = None,
    ratio: float | None = None,
    projection_dim: int | None = 128,
    seed: int = 0,
) -> np.ndarray:
    """The same selection written plainly, without chunks (for tests; O(N * d) temporaries).

    Squared distances use ``|x|^2 - 2 x.c + |c|^2``, as :func:`greedy_coreset`.
    """
    x = as_feature_tensor(features).float()
    n_rows, dim = x.shape
    k = coreset_size(n_rows, n, ratio)
    start, w = _start_and_matrix(n_rows, dim, projection_dim, seed)
    p = x if w is None else x @ w.to(x.device)
    norms = (p * p).sum(1)
    if not bool(torch.isfinite(norms).all()):
        raise InvalidInputError("features: NaN or infinite values")
    min_d = torch.full((n_rows,), float("inf"), device=x.device)
    chosen = [start]
    for _ in range(k - 1):
        c = p[chosen[-1]]
        d = norms - 2.0 * (p @ c) + norms[chosen[-1]]
        min_d = torch.minimum(min_d, d)
        min_d[chosen] = float("-inf")
        chosen.append(int(torch.argmax(min_d)))
    return np.asarray(chosen, dtype=np.int64)
