"""Image scores that cannot invert: leave-one-out normalisation of several score sources and
their monotone fusion, shared by the detectors with more than one source (``m3dm`` and
``lsfa``'s banks, ``btf``'s RGB and FPFH banks).

Each source's training scores are computed leave-one-out (a training sample scored against the
others only, as a test sample would be); :func:`loo_stats` turns them into a per-source
``[mean, std]``; :func:`fuse_normalized` combines ``(s - mean) / std`` with non-negative weights
(``"zsum"``) or takes the maximum (``"zmax"``), so more evidence in any source never lowers the
fused score. :func:`read_loo_stats` checks those statistics when a run is loaded.

Scoring every training sample against all the others costs the square of the training set
(each of ``N`` samples searches the ``N - 1`` others' patches). The ``loo_samples`` option
(:data:`LOO_DEFAULTS`) caps the samples scored: with more training samples than that, a seeded
subset of them (:func:`loo_indices`) is scored, each still against every patch of all the
others, so the cost grows linearly. Its default, 32, leaves a training set of up to 32 samples
as it was (every sample scored); a unified run over eight 30-sample categories scores 32 of its
240 samples (``benchmarks/bench_loo.py`` times the difference).

Example:
    >>> st = loo_stats(np.array([[1.0, 10.0], [2.0, 12.0], [3.0, 14.0]]))
    >>> st.tolist()
    [[2.0, 1.0], [12.0, 2.0]]
    >>> fuse_normalized(np.array([4.0, 12.0]), st, np.ones(2)).item()
    2.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcad.checks import check_int
from pcad.detectors.base import check_run_number
from pcad.errors import FileFormatError, InvalidInputError

__all__ = ["LOO_DEFAULTS", "LOO_HELP", "LOO_LEGACY", "MIN_LOO_SAMPLES", "Z_FUSIONS",
           "check_loo_samples", "fuse_normalized", "loo_indices", "loo_stats", "others_bank",
           "read_loo_stats"]

#: the fewest training samples the LOO-normalised fusions (``"zsum"``, ``"zmax"``) accept: the
#: std of each bank's leave-one-out training scores needs at least two degrees of freedom
MIN_LOO_SAMPLES = 3
#: fusions whose bank scores are normalised by leave-one-out statistics of the training set
Z_FUSIONS = ("zsum", "zmax")
#: the ``loo_samples`` option, for a detector's ``defaults``
LOO_DEFAULTS = {"loo_samples": 32}
#: what runs saved before the option were fitted with (every training sample), for
#: ``legacy_options``
LOO_LEGACY = {"loo_samples": None}
#: its ``option_help`` line
LOO_HELP = {"loo_samples": "training samples scored leave-one-out for the fusion's per-bank "
                           "statistics: with more, a seeded subset of this many (each against "
                           "every patch of all the others); null: every sample"}


def check_loo_samples(value: Any) -> int | None:
    """The ``loo_samples`` option checked: None or an int >= :data:`MIN_LOO_SAMPLES`.

    >>> check_loo_samples(32), check_loo_samples(None)
    (32, None)
    """
    return None if value is None else check_int(value, "loo_samples", minimum=MIN_LOO_SAMPLES)


def loo_indices(n_samples: int, limit: int | None, seed: int) -> np.ndarray:
    """``(m,) int64`` ascending: the training samples scored leave-one-out, every one of the
    ``n_samples`` when ``limit`` is None or not below it, else ``limit`` of them drawn without
    replacement by ``numpy.random.default_rng([seed, n_samples])``.

    >>> loo_indices(4, 32, 0).tolist()
    [0, 1, 2, 3]
    >>> a = loo_indices(100, 5, 0)
    >>> len(a), bool((np.diff(a) > 0).all()), a.tolist() == loo_indices(100, 5, 0).tolist()
    (5, True, True)
    """
    if limit is None or n_samples <= limit:
        return np.arange(n_samples, dtype=np.int64)
    rng = np.random.default_rng([seed, n_samples])
    return np.sort(rng.choice(n_samples, size=limit, replace=False)).astype(np.int64)


def loo_stats(scores: np.ndarray) -> np.ndarray:
    """``(m, k)`` leave-one-out training scores of ``k`` sources -> ``(k, 2)`` per-source
    ``[mean, std]`` (``ddof=1``; a std that is zero or not finite becomes 1, so the source is
    only shifted).

    >>> loo_stats(np.array([[1.0, 5.0], [3.0, 5.0]])).tolist()
    [[2.0, 1.4142135623730951], [5.0, 1.0]]
    """
    x = np.asarray(scores, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1) if len(x) > 1 else np.ones(x.shape[1])
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return np.stack([mean, std], axis=1)


def fuse_normalized(scores: np.ndarray, stats: np.ndarray, weights: np.ndarray,
                    how: str = "zsum") -> np.ndarray:
    """Fuse ``(..., k)`` per-source scores into ``(...)``: each source normalised as
    ``(s - mean) / std`` with its ``(k, 2)`` ``stats`` (:func:`loo_stats`), then the
    ``weights``-weighted sum (``"zsum"``) or the maximum over the sources with a positive weight
    (``"zmax"``). ``weights`` must be >= 0 and ``std`` > 0, so the result is non-decreasing in
    every source's score: more evidence in any one source never lowers it.

    >>> st = np.array([[0.0, 1.0], [10.0, 5.0]])
    >>> fuse_normalized(np.array([1.0, 20.0]), st, np.ones(2)).item()
    3.0
    >>> fuse_normalized(np.array([1.0, 20.0]), st, np.ones(2), "zmax").item()
    2.0
    """
    w = np.asarray(weights, dtype=np.float64)
    st = np.asarray(stats, dtype=np.float64)
    if w.shape != st.shape[:1] or (w < 0).any() or not (st[:, 1] > 0).all():
        raise InvalidInputError(f"fuse_normalized: need {st.shape[0]} non-negative weights and "
                                f"positive stds, got weights {w.tolist()}")
    z = (np.asarray(scores, dtype=np.float64) - st[:, 0]) / st[:, 1]
    if how == "zsum":
        return z @ w
    if how == "zmax":
        if not (w > 0).any():
            raise InvalidInputError("fuse_normalized: zmax needs one positive weight")
        return z[..., w > 0].max(axis=-1)
    raise InvalidInputError(f"fuse_normalized: expected one of {Z_FUSIONS}, got {how!r}")


def others_bank(features: np.ndarray, i: int, n_samples: int, device: Any = None) -> Any:
    """The leave-one-out reference of training sample ``i``: a full
    :class:`~pcad.memory.MemoryBank` (no coreset) of the ``(n_samples * n, C)`` training
    patch features without sample ``i``'s ``n`` rows, i.e. every patch of the other samples
    (what a coreset bank stands for at test time; the coreset minus sample ``i``'s own entries
    would leave its patches without a near neighbour where the coreset is sparse).

    >>> x = np.array([[0.0], [1.0], [10.0], [11.0], [20.0], [21.0]], dtype=np.float32)
    >>> others_bank(x, 1, 3).score(x[2:4]).tolist()
    [9.0, 9.0]
    """
    from pcad.memory import MemoryBank

    n = len(features) // n_samples
    rows = np.ones(len(features), bool)
    rows[i * n:(i + 1) * n] = False
    return MemoryBank(coreset_ratio=1.0, device=device).fit(features[rows])


def read_loo_stats(value: Any, sources: list[str] | tuple[str, ...], key: str,
                   source: str) -> np.ndarray:
    """A run's saved ``[[mean, std], ...]`` (one per name in ``sources``, as written by
    ``loo_stats(...).tolist()``) checked and returned as ``(k, 2) float64``; a
    :class:`~pcad.errors.FileFormatError` naming ``'state.<key>'`` and the file ``source``
    otherwise.

    >>> read_loo_stats([[0.5, 2.0]], ["rgb"], "z_image", "run.json").tolist()
    [[0.5, 2.0]]
    """
    if not (isinstance(value, list) and len(value) == len(sources) and all(
            isinstance(v, list) and len(v) == 2 for v in value)):
        raise FileFormatError(f"{source}: 'state.{key}' must list [mean, std] per bank "
                              f"{list(sources)}, got {value!r:.80}")
    return np.array([[check_run_number(v[0], f"'state.{key}' mean", source),
                      check_run_number(v[1], f"'state.{key}' std", source, positive=True)]
                     for v in value], dtype=np.float64)
