"""PatchCore memory banks: greedy coreset, nearest-neighbour search, image score.

- :func:`greedy_coreset`: greedy k-center selection on seeded random projections, chunked so
  the extra memory is ``N * (d + 3) * 4`` bytes plus a configurable budget;
- :class:`NearestNeighbours`: exact k-NN with faiss when installed, else torch;
- :func:`patchcore_image_score`: PatchCore's re-weighted maximum patch score;
- :class:`MemoryBank`: ``fit`` / ``score`` / ``image_score`` / ``save`` / ``load``.

Example:
    >>> import numpy as np
    >>> from pcad.memory import MemoryBank
    >>> x = np.random.default_rng(1).normal(size=(500, 16)).astype(np.float32)
    >>> bank = MemoryBank(coreset_ratio=0.2).fit(x)
    >>> len(bank), bank.score(x[bank.indices[:2]]).tolist()
    (100, [0.0, 0.0])
"""

from pcad.memory.bank import MemoryBank
from pcad.memory.coreset import (
    DEFAULT_MEMORY_BUDGET_MB,
    coreset_memory_bytes,
    coreset_size,
    greedy_coreset,
    greedy_coreset_reference,
)
from pcad.memory.search import NearestNeighbours, faiss_available, patchcore_image_score

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "MemoryBank",
    "NearestNeighbours",
    "coreset_memory_bytes",
    "coreset_size",
    "faiss_available",
    "greedy_coreset",
    "greedy_coreset_reference",
    "patchcore_image_score",
]
