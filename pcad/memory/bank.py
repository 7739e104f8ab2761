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
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcad.checks import check_choice, check_fraction, check_int, check_positive
from pcad.errors import FileFormatError, InvalidInputError, PcadError
from pcad.memory.coreset import DEFAULT_MEMORY_BUDGET_MB, as_feature_tensor, greedy_coreset
from pcad.memory.search import BACKENDS, NearestNeighbours, patchcore_image_score

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
        device: torch device for the coreset and the torch search (default: CPU). It is not
            saved with the bank: :meth:`load` puts the bank where its ``device`` says (a bank
            fitted on a GPU loads on a machine without one).

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
        device: str | torch.device | None = None,
    ) -> None:
        self.coreset_ratio = check_fraction(coreset_ratio, "coreset_ratio", inclusive_zero=False)
        self.projection_dim = (None if projection_dim is None
                               else check_int(projection_dim, "projection_dim", 0))
        self.seed = int(seed)
        self.memory_budget_mb = check_positive(memory_budget_mb, "memory_budget_mb")
        self.backend = check_choice(backend, "backend", BACKENDS)
        self.device = None if device is None else torch.device(device)
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

    def score_images(self, images: Any, n_reweight: int | None = 3
                     ) -> tuple[list[np.ndarray], list[float]]:
        """:meth:`score_image` of several images from one nearest-neighbour search of all
        their patches: ``images`` is a list of ``(M_i, C)`` patch arrays; returns each image's
        ``(M_i,)`` patch distances and re-weighted score (``n_reweight`` None: no image score,
        an empty list; what :meth:`score` gives per image).

        Example:
            >>> import numpy as np
            >>> bank = MemoryBank(coreset_ratio=1.0).fit(np.eye(4, dtype=np.float32))
            >>> d, s = bank.score_images([np.eye(4, dtype=np.float32)[:2], np.zeros((3, 4))])
            >>> [x.shape for x in d], len(s)
            ([(2,), (3,)], 2)
        """
        nn = self._require_fit()
        arrays = [np.asarray(x, dtype=np.float32) for x in images]
        if not arrays:
            return [], []
        d2, idx = nn.query(np.concatenate(arrays), 1)
        bounds = np.cumsum([0] + [len(x) for x in arrays])
        dists = [np.sqrt(d2[lo:hi, 0]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        if n_reweight is None:
            return dists, []
        scores = [float(patchcore_image_score(x, d2[lo:hi], idx[lo:hi], nn.bank,
                                              n_reweight=n_reweight, index=nn))
                  for x, lo, hi in zip(arrays, bounds[:-1], bounds[1:], strict=True)]
        return dists, scores

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
        # the device is where this process computes, not a property of the bank
        meta = json.dumps({"format": "pcad.MemoryBank", "version": FORMAT_VERSION,
                           "config": {**self.config(), "device": None}})

        def writer(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: numpy adds no ".npz" to the name
                np.savez(f, features=self.features, indices=self.indices,
                         meta=np.array(meta))

        atomic_save(path, writer)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> MemoryBank:
        """Read a bank written by :meth:`save`; ``overrides`` replace saved config values
        (e.g. ``backend="torch"``, ``device="cuda"``). A device saved by an older pcad is
        ignored: the bank goes on ``device`` (default: the CPU).

        Raises:
            FileNotFoundError: no file at ``path``.
            FileFormatError: the file is empty, truncated, not a zip of ``.npy`` arrays, its
                arrays' headers claim more data than the file holds, or its metadata, arrays
                or config do not make a bank (unknown or invalid config keys, a newer format,
                non-float, NaN or inconsistent arrays); the message names the file.

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> bad = Path(tempfile.mkdtemp()) / "bank.npz"
            >>> _ = bad.write_bytes(b"PK\x03\x04 truncated")
            >>> try:
            ...     MemoryBank.load(bad)
            ... except FileFormatError as exc:
            ...     print(str(exc).replace(str(bad), "bank.npz"))
            bank.npz: not a pcad memory bank file (truncated or not a zip archive)
        """
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
        arrays = _read_npz(p, ("features", "indices", "meta"))
        meta = _bank_meta(p, arrays["meta"])
        feats, idx = arrays["features"], arrays["indices"]
        if feats.dtype.kind != "f" or idx.dtype.kind not in "iu":
            raise FileFormatError(f"{p}: features must be floats and indices integers, got "
                                  f"{feats.dtype} and {idx.dtype}")
        if feats.ndim != 2 or 0 in feats.shape or idx.shape != (feats.shape[0],):
            raise FileFormatError(f"{p}: inconsistent arrays features {feats.shape}, "
                                  f"indices {idx.shape}")
        if not np.isfinite(feats).all():
            raise FileFormatError(f"{p}: the bank's features hold NaN or infinite values")
        config = {**meta["config"], "device": None}
        try:  # the saved values alone (an override's error is the caller's)
            cls(**{k: v for k, v in config.items() if k not in overrides})
        except InvalidInputError as exc:
            raise FileFormatError(f"{p}: bad config in the bank's metadata ({exc})") from None
        bank = cls(**{**config, **overrides})
        bank._set(feats, idx)
        return bank


#: the bank's config keys (MemoryBank's arguments)
CONFIG_KEYS = ("coreset_ratio", "projection_dim", "seed", "memory_budget_mb", "backend", "device")


def _bank_meta(p: Path, arr: np.ndarray) -> dict[str, Any]:
    """The checked metadata of the bank file ``p`` (``arr``: its 0-d string array)."""
    try:
        if arr.ndim != 0 or arr.dtype.kind != "U":
            raise ValueError(f"a {arr.dtype} array of shape {arr.shape}, not a string")
        meta = json.loads(str(arr))
    except (ValueError, RecursionError) as exc:
        raise FileFormatError(f"{p}: not a pcad memory bank file (metadata: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != "pcad.MemoryBank":
        what = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise FileFormatError(f"{p}: not a pcad memory bank file (format {what!r})")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise FileFormatError(f"{p}: memory bank format version must be an int, got "
                              f"{version!r:.40}")
    if version > FORMAT_VERSION:
        raise FileFormatError(f"{p}: memory bank format version {version} is newer than this "
                              f"pcad ({FORMAT_VERSION})")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise FileFormatError(f"{p}: the bank's metadata has no config object (got "
                              f"{type(config).__name__})")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise FileFormatError(f"{p}: unknown key(s) {unknown} in the bank's config; known: "
                              f"{list(CONFIG_KEYS)}")
    return meta


def _read_npz(p: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the ``.npz`` file ``p`` (no pickles).

    Each array's header is checked against the size of its member before anything is
    allocated: a header claiming more data than the file holds is an error, not a huge
    allocation.
    """
    fmt = np.lib.format
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(p) as zf:
            for name in names:
                try:
                    info = zf.getinfo(f"{name}.npy")
                except KeyError:
                    raise FileFormatError(f"{p}: not a pcad memory bank file (no {name!r} "
                                          "array)") from None
                with zf.open(info) as fh:
                    version = fmt.read_magic(fh)
                    read_header = (fmt.read_array_header_1_0 if version == (1, 0)
                                   else fmt.read_array_header_2_0)
                    shape, fortran, dtype = read_header(fh)
                    if dtype.hasobject:
                        raise FileFormatError(f"{p}: array {name!r} holds Python objects "
                                              "(pickles are not read)")
                    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if size > info.file_size - fh.tell():
                        raise FileFormatError(
                            f"{p}: array {name!r} claims shape {shape} ({size} bytes) but its "
                            f"member holds {info.file_size - fh.tell()} (truncated or edited)")
                    data = fh.read(size)
                if len(data) != size:
                    raise FileFormatError(f"{p}: array {name!r} is truncated")
                out[name] = np.frombuffer(data, dtype=dtype).reshape(
                    shape, order="F" if fortran else "C").copy()
    except (PcadError, PermissionError, IsADirectoryError):
        raise
    except (zipfile.BadZipFile, EOFError) as exc:
        raise FileFormatError(f"{p}: not a pcad memory bank file (truncated or not a zip "
                              f"archive)") from exc
    except (OSError, ValueError, TypeError, NotImplementedError, RuntimeError,
            zlib.error) as exc:  # bad headers, CRC, unsupported compression, encrypted
        raise FileFormatError(f"{p}: not a pcad memory bank file ({exc})") from exc
    return out
