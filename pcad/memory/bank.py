"""PatchCore memory bank: greedy coreset of the training features + nearest-neighbour scoring.

Example:
    >>> import numpy as np
    >>> from pcad.memory import MemoryBank
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(2000, 32)).astype(np.float32)
    >>> bank = MemoryBank(coreset_ratio=0.1, seed=0).fit(train)
    >>> len(bank), bank.dim
    (200, 32)
    >>> test = np.vstack([train[:3], train[:1] + 10])
    >>> s = bank.score(test)
    >>> s.shape, bool(s[3] > s[:3].max())
    ((4,), True)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcad.checks import check_fraction, check_int, check_positive
from pcad.errors import FileFormatError, InvalidInputError
from pcad.memory.coreset import DEFAULT_MEMORY_BUDGET_MB, as_feature_tensor, greedy_coreset
from pcad.memory.search import NearestNeighbours, patchcore_image_score

__all__ = ["MemoryBank"]

FORMAT_VERSION = 1


class MemoryBank:
    """A PatchCore memory bank.

    Args:
        coreset_ratio: fraction of the training features kept by the greedy coreset
            (1.0 keeps all of them, without running the coreset).
        projection_dim: random-projection dimension used by the coreset selection only
            (scores use the full features).
        seed: seeds the coreset's projection and start index.
        memory_budget_mb: chunk budget of the coreset and of the torch search.
        backend: nearest-neighbour backend, ``"auto"``, ``"faiss"`` or ``"torch"``.
        device: torch device for the coreset and the torch search (default: CPU).

    Attributes (after :meth:`fit`):
        features: ``(K, C) float32`` the kept features.
        indices: ``(K,) int64`` their rows in the array given to :meth:`fit`.
    """

    def __init__(
        self,
        coreset_ratio: float = 0.1,
        projection_dim: int | None = 128,
        seed: int = 0,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        backend: str = "auto",
        device: str | None = None,
    ) -> None:
        self.coreset_ratio = check_fraction(coreset_ratio, "coreset_ratio", inclusive_zero=False)
        self.projection_dim = (None if projection_dim is None
                               else check_int(projection_dim, "projection_dim", 0))
        self.seed = int(seed)
        self.memory_budget_mb = check_positive(memory_budget_mb, "memory_budget_mb")
        self.backend = backend
        self.device = device
        self.features: np.ndarray | None = None
        self.indices: np.ndarray | None = None
        self._nn: NearestNeighbours | None = None

    # ------------------------------------------------------------------ fitting

    def fit(self, features: Any) -> MemoryBank:
        """Select the coreset of ``(N, C)`` training features and index it. Returns self."""
        x = as_feature_tensor(features)
        if self.coreset_ratio >= 1.0:
            idx = np.arange(x.shape[0], dtype=np.int64)
        else:
            idx = greedy_coreset(x, ratio=self.coreset_ratio,
                                 projection_dim=self.projection_dim, seed=self.seed,
                                 memory_budget_mb=self.memory_budget_mb, device=self.device)
        kept = x[torch.from_numpy(idx).to(x.device)].float().cpu().numpy()
        if not np.isfinite(kept).all():
            raise InvalidInputError("features: NaN or infinite values")
        self._set(kept, idx)
        return self

    def _set(self, features: np.ndarray, indices: np.ndarray) -> None:
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.indices = np.asarray(indices, dtype=np.int64)
        self._nn = NearestNeighbours(self.features, backend=self.backend, device=self.device,
                                     memory_budget_mb=self.memory_budget_mb)

    def _require_fit(self) -> NearestNeighbours:
        if self._nn is None:
            raise InvalidInputError("MemoryBank: call fit() (or load()) before scoring")
        return self._nn

    def __len__(self) -> int:
        return 0 if self.features is None else self.features.shape[0]

    @property
    def dim(self) -> int:
        """Feature dimension ``C`` (0 before fitting)."""
        return 0 if self.features is None else self.features.shape[1]

    # ------------------------------------------------------------------ scoring

    def query(self, features: Any, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(sq_dists (M, k), indices (M, k))`` of the ``k`` nearest bank features."""
        return self._require_fit().query(features, k)

    def score(self, features: Any) -> np.ndarray:
        """``(M,) float32``: Euclidean distance of each ``(M, C)`` feature to the bank."""
        d2, _ = self.query(features, 1)
        return np.sqrt(d2[:, 0])

    def image_score(self, patch_features: Any, n_reweight: int = 3) -> float:
        """PatchCore's re-weighted image score of one image's ``(M, C)`` patches."""
        return self.score_image(patch_features, n_reweight)[1]

    def score_image(self, patch_features: Any, n_reweight: int = 3) -> tuple[np.ndarray, float]:
        """One image's ``(M,)`` patch distances and its re-weighted image score, from a single
        nearest-neighbour search (what :meth:`score` and :meth:`image_score` give)."""
        nn = self._require_fit()
        d2, idx = nn.query(patch_features, 1)
        score = float(patchcore_image_score(patch_features, d2, idx, nn.bank,
                                            n_reweight=n_reweight, index=nn))
        return np.sqrt(d2[:, 0]), score

    # ------------------------------------------------------------------ persistence

    def config(self) -> dict[str, Any]:
        """The constructor arguments, as JSON-serializable values."""
        return {"coreset_ratio": self.coreset_ratio, "projection_dim": self.projection_dim,
                "seed": self.seed, "memory_budget_mb": self.memory_budget_mb,
                "backend": self.backend, "device": None if self.device is None
                else str(self.device)}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the bank to a ``.npz`` file atomically (features, indices, config)."""
        from pcad.io.atomic import atomic_save

        self._require_fit()
        meta = json.dumps({"format": "pcad.MemoryBank", "version": FORMAT_VERSION,
                           "config": self.config()})

        def writer(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: numpy adds no ".npz" to the name
                np.savez(f, features=self.features, indices=self.indices,
                         meta=np.array(meta))

        atomic_save(path, writer)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> MemoryBank:
        """Read a bank written by :meth:`save`; ``overrides`` replace saved config values
        (e.g. ``backend="torch"``, ``device="cuda"``)."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                feats, idx = z["features"], z["indices"]
        except (KeyError, ValueError, OSError, json.JSONDecodeError) as exc:
            raise FileFormatError(f"{p}: not a pcad memory bank file ({exc})") from exc
        if meta.get("format") != "pcad.MemoryBank":
            raise FileFormatError(f"{p}: not a pcad memory bank file (format "
                                  f"{meta.get('format')!r})")
        if meta.get("version", 0) > FORMAT_VERSION:
            raise FileFormatError(f"{p}: memory bank format version {meta['version']} is newer "
                                  f"than this pcad ({FORMAT_VERSION})")
        if feats.ndim != 2 or idx.shape != (feats.shape[0],):
            raise FileFormatError(f"{p}: inconsistent arrays features {feats.shape}, "
                                  f"indices {idx.shape}")
        bank = cls(**{**meta["config"], **overrides})
        bank._set(feats, idx)
        return bank
