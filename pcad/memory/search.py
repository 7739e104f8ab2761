"""Exact nearest-neighbour search in a memory bank, and PatchCore's image score.

:class:`NearestNeighbours` uses faiss (``IndexFlatL2``, exact) when it is installed and the
search runs on the CPU, otherwise torch (chunked ``|x|^2 - 2 x.b + |b|^2`` + ``topk``, on
CPU or CUDA). Both find candidates with that expansion (fast, but in float32 it loses about
``sqrt(eps) * |x|`` near zero), then recompute the squared Euclidean distances of the ``k``
neighbours found directly from the differences and sort by them, so a query equal to a bank
feature gets exactly 0.

:func:`patchcore_image_score` is PatchCore's re-weighted maximum (Roth et al., CVPR 2022,
eq. 7), written as in the reference code that BTF and M3DM reuse (rvorias/ind_knn_ad):

- ``s* = max_j min_b |m_j - b|``: the largest patch distance; ``m_test`` is that patch and
  ``m*`` its nearest bank feature;
- ``N``: the ``n_reweight`` nearest bank features of ``m*`` *without* ``m*`` itself (the
  reference takes ``topk(n_reweight)`` and drops the first, which is ``m*``), so
  ``n_reweight=3`` uses 2 neighbours;
- ``w = 1 - exp(s* / sqrt(C)) / sum_{b in N} exp(|m_test - b| / sqrt(C))``, the
  ``sqrt(C)`` (feature dimension) scaling being the reference's guard against overflow;
- score ``s = w * s*``.

Since ``m*`` is the nearest bank feature to ``m_test``, every term of the sum is at least
the numerator, so ``w`` lies in ``[1 - 1/|N|, 1)``: the score is lowered when ``m_test`` is
about as far from ``m*``'s neighbours as from ``m*`` (a dense region of the bank) and kept
when they are much farther (``m*`` is an isolated, rare normal feature).

Example:
    >>> import numpy as np
    >>> from pcad.memory.search import NearestNeighbours
    >>> bank = np.array([[0, 0], [1, 0], [0, 2]], np.float32)
    >>> d2, idx = NearestNeighbours(bank, backend="torch").query([[0.9, 0.1]], k=2)
    >>> idx.tolist(), np.round(d2.astype(float), 4).tolist()
    ([[1, 0]], [[0.02, 0.82]])
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np
import torch

from pcad.checks import check_choice, check_int, check_positive
from pcad.errors import InvalidInputError

__all__ = ["NearestNeighbours", "faiss_available", "patchcore_image_score"]

BACKENDS = ("auto", "faiss", "torch")


def faiss_available() -> bool:
    """True when the ``faiss`` module can be imported."""
    return importlib.util.find_spec("faiss") is not None


def _as_2d_float32(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 1 and dim is not None and arr.shape[0] == dim:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"{name}: expected a non-empty (N, C) array, got {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise InvalidInputError(f"{name}: expected {dim} columns (the bank's), got "
                                f"{arr.shape[1]}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{name}: NaN or infinite values")
    return arr


class NearestNeighbours:
    """Exact k-nearest-neighbour search in a fixed bank of features.

    Args:
        bank: ``(K, C)`` features (copied as float32).
        backend: ``"faiss"``, ``"torch"`` or ``"auto"`` (faiss if installed and the device is
            the CPU, else torch).
        device: torch backend only: where to search (default CPU).
        memory_budget_mb: torch backend: bound on the ``(chunk, K)`` distance block.
        refine: torch backend: where the exact distances of the found neighbours are
            computed: ``"host"`` (numpy, float32 differences summed by ``einsum``), ``"device"``
            (torch on ``device``, with the search: no gather of the neighbours' features on
            the CPU; equal to the host's within float32 rounding) or ``"auto"`` (the device
            on CUDA, else the host).
    """

    def __init__(self, bank: Any, backend: str = "auto", device: str | torch.device | None = None,
                 memory_budget_mb: float = 256.0, refine: str = "auto") -> None:
        check_choice(backend, "backend", BACKENDS)
        check_choice(refine, "refine", ("auto", "host", "device"))
        self.bank = _as_2d_float32(bank, "bank")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.memory_budget_mb = check_positive(memory_budget_mb, "memory_budget_mb")
        if backend == "auto":
            backend = "faiss" if faiss_available() and self.device.type == "cpu" else "torch"
        if backend == "faiss" and not faiss_available():
            raise ModuleNotFoundError("backend='faiss': the faiss package is not installed "
                                      "(pip install faiss-cpu), use backend='torch'")
        self.backend = backend
        self.refine_on_device = backend == "torch" and (
            refine == "device" or (refine == "auto" and self.device.type == "cuda"))
        if backend == "faiss":
            import faiss

            self._index = faiss.IndexFlatL2(self.bank.shape[1])
            self._index.add(self.bank)
        else:
            self._bank_t = torch.from_numpy(self.bank).to(self.device)
            self._bank_sq = (self._bank_t * self._bank_t).sum(1)

    def __len__(self) -> int:
        return self.bank.shape[0]

    @property
    def dim(self) -> int:
        """Feature dimension ``C``."""
        return self.bank.shape[1]

    def query(self, x: Any, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest bank features of each row of ``x``.

        Args:
            x: ``(M, C)`` queries (a single ``(C,)`` vector is accepted).
            k: neighbours per query, ``1 <= k <= len(bank)``.

        Returns:
            ``(sq_dists (M, k) float32, indices (M, k) int64)``, nearest first; squared
            Euclidean distances clamped at 0.
        """
        q = _as_2d_float32(x, "x", self.dim)
        k = check_int(k, "k", 1, len(self))
        if self.backend == "faiss":
            _, idx = self._index.search(q, k)
            idx = idx.astype(np.int64)
        elif self.refine_on_device:
            return self._query_device(q, k)
        else:
            idx = self._query_torch(q, k)
        return self._refine(q, idx)

    def _query_device(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search and exact distances on the device, chunk by chunk of queries."""
        m = q.shape[0]
        rows = max(1, int(self.memory_budget_mb * 2**20
                          // (8 * len(self) + 4 * self.dim * (k + 1))))
        d_out = np.empty((m, k), np.float32)
        i_out = np.empty((m, k), np.int64)
        for s in range(0, m, rows):
            qt = torch.from_numpy(q[s:s + rows]).to(self.device)
            d2 = torch.addmm(self._bank_sq[None], qt, self._bank_t.T, alpha=-2.0)
            _, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
            diff = self._bank_t[idx] - qt[:, None, :]
            exact = (diff * diff).sum(-1)
            if k > 1:
                exact, order = torch.sort(exact, dim=1, stable=True)
                idx = torch.gather(idx, 1, order)
            d_out[s:s + rows] = exact.cpu().numpy()
            i_out[s:s + rows] = idx.cpu().numpy()
        return d_out, i_out

    def _refine(self, q: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact squared distances of the found neighbours, rows re-sorted by them."""
        m, k = idx.shape
        rows = max(1, int(self.memory_budget_mb * 2**20 // (8 * k * self.dim + 1)))
        d2 = np.empty((m, k), np.float32)
        for s in range(0, m, rows):
            diff = self.bank[idx[s:s + rows]] - q[s:s + rows, None, :]
            d2[s:s + rows] = np.einsum("mkc,mkc->mk", diff, diff)
        if k > 1:
            order = np.argsort(d2, axis=1, kind="stable")
            d2 = np.take_along_axis(d2, order, 1)
            idx = np.take_along_axis(idx, order, 1)
        return d2, idx

    def _query_torch(self, q: np.ndarray, k: int) -> np.ndarray:
        m = q.shape[0]
        rows = max(1, int(self.memory_budget_mb * 2**20 // (8 * len(self) + 4 * self.dim)))
        i_out = np.empty((m, k), np.int64)
        for s in range(0, m, rows):
            qt = torch.from_numpy(q[s:s + rows]).to(self.device)
            d2 = torch.addmm(self._bank_sq[None], qt, self._bank_t.T, alpha=-2.0)
            _, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)  # |q|^2 is constant
            i_out[s:s + rows] = idx.cpu().numpy()
        return i_out


def patchcore_image_score(
    patch_features: Any,
    sq_dists: Any,
    nn_idx: Any,
    bank: Any,
    n_reweight: int = 3,
    index: NearestNeighbours | None = None,
    return_weight: bool = False,
) -> float | tuple[float, float]:
    """PatchCore's re-weighted image score (see the module docstring for the formula).

    Args:
        patch_features: ``(M, C)`` test patches of one image.
        sq_dists: ``(M,)`` or ``(M, k)`` squared distances to the nearest bank features
            (column 0 is used), e.g. from :meth:`NearestNeighbours.query`.
        nn_idx: ``(M,)`` or ``(M, k)`` the matching bank indices.
        bank: ``(K, C)`` memory bank.
        n_reweight: ``b`` in the paper: the neighbourhood of ``m*`` is its ``n_reweight``
            nearest bank features minus ``m*`` itself; ``n_reweight <= 1`` (or a bank of one
            feature) gives the plain maximum ``s*``.
        index: a :class:`NearestNeighbours` over ``bank`` to find ``m*``'s neighbours;
            brute force when None.
        return_weight: also return ``w``.

    Returns:
        ``w * s*`` as a float (and ``w``).
    """
    feats = _as_2d_float32(patch_features, "patch_features")
    m, c = feats.shape
    d2 = np.asarray(sq_dists, dtype=np.float64)
    ids = np.asarray(nn_idx)
    d2 = d2[:, 0] if d2.ndim == 2 else d2
    ids = ids[:, 0] if ids.ndim == 2 else ids
    if d2.shape != (m,) or ids.shape != (m,):
        raise InvalidInputError(f"sq_dists, nn_idx: expected ({m},) or ({m}, k) like "
                                f"patch_features, got {np.shape(sq_dists)}, {np.shape(nn_idx)}")
    if not np.isfinite(d2).all() or (d2 < 0).any():
        raise InvalidInputError("sq_dists: expected finite values >= 0 (squared distances)")
    bank_arr = index.bank if index is not None else _as_2d_float32(bank, "bank", c)
    if bank_arr.shape[1] != c:
        raise InvalidInputError(f"bank: expected {c} columns, got {bank_arr.shape[1]}")
    if not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any() or (ids >= len(bank_arr)).any():
        raise InvalidInputError(f"nn_idx: expected integer indices in [0, {len(bank_arr)})")
    n_reweight = check_int(n_reweight, "n_reweight", 0)
    j = int(np.argmax(d2))
    s_star = math.sqrt(d2[j])
    b = min(n_reweight, len(bank_arr))
    if b <= 1:
        return (s_star, 1.0) if return_weight else s_star
    star = int(ids[j])
    m_test = feats[j].astype(np.float64)
    if index is not None:
        _, knn = index.query(bank_arr[star][None], b)
        knn = knn[0]
    else:
        diff = bank_arr.astype(np.float64) - bank_arr[star].astype(np.float64)
        knn = np.argsort(np.einsum("ij,ij->i", diff, diff), kind="stable")[:b]
    knn = list(int(i) for i in knn)
    knn.remove(star) if star in knn else knn.pop(0)  # drop m* (or a duplicate of it)
    knn = knn[: b - 1]
    dists = np.linalg.norm(bank_arr[knn].astype(np.float64) - m_test, axis=1)
    scale = math.sqrt(c)
    log_den = float(np.logaddexp.reduce(dists / scale))
    w = 1.0 - math.exp(s_star / scale - log_den)
    score = w * s_star
    return (score, w) if return_weight else score
