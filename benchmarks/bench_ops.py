"""``pcad.ops`` backends side by side: FPS 100,000 -> 1,000 points and kNN (k=16, 100,000
queries against 100,000 points), on seeded uniform clouds in the unit cube, CPU tensors.

References, timed in the same run:

- FPS: ``fpsample.bucket_fps_kdline_sampling`` (QuickFPS, h=7, fixed start), fpsample's exact
  ``fps_sampling``, and ``torch_cluster.fps`` on CPU (``random_start=False``) when installed
  (a row says so when it is not).
- kNN: ``scipy.spatial.cKDTree(points).query(queries, k=16, workers=-1)``, tree build
  included, as a user would call it.

The fast contenders (fpsample's bucket FPS, cKDTree, and the numba, scipy and fpsample
backends) are timed in interleaved rounds, best of ``repeats`` after one warm-up call each
(which also compiles the numba kernels), so that a burst of load on the machine hits all of
them alike. The slow ones (torch, torch_cluster, fpsample's vanilla FPS) are timed once. The
pure-torch references are slow by design: FPS runs in full, kNN on a subset of queries and is
scaled to 100,000 (its time is linear in the number of queries).

``value`` is the wall time in milliseconds; ``ratio`` is the speed-up over the row's reference
(reference time / this time, above 1 is faster). ``exact`` tells whether the result equals
the torch reference (FPS: the whole index sequence; kNN: distances and indices on the query
subset).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch

from pcad.ops import available_backends, fps, knn

SEED = 20240611
UNIT = "ms"


def _timed(fn: Callable[[], Any], repeats: int, warm: bool = True) -> tuple[float, list, Any]:
    """Best wall time in ms over ``repeats`` calls of ``fn``, all times, the last result."""
    if warm:
        fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times), times, out


def _race(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple]:
    """Interleaved rounds: ``{name: (best ms, times, last result)}``."""
    for fn in contenders.values():
        fn()  # warm-up, JIT compilation
    times: dict[str, list[float]] = {name: [] for name in contenders}
    outs: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    return {name: (min(times[name]), times[name], outs[name]) for name in contenders}


SLOW = ("torch", "torch_cluster")
# triton on CPU tensors is Triton's interpreter (TRITON_INTERPRET=1): bench_gpu times it on CUDA.
CPU_SKIP = ("triton",)


def _has(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
    return True


def _row(benchmark: str, case: str, ms: float, reference: str, ref_ms: float | None,
         **extra: Any) -> dict:
    ratio = None if ref_ms is None else ref_ms / ms
    return dict(benchmark=benchmark, case=case, value=ms, unit=UNIT, reference=reference,
                ratio=ratio, **extra)


def _bench_fps(n: int, s: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(SEED)
    pts_np = rng.random((n, 3), dtype=np.float64).astype(np.float32)
    pts = torch.from_numpy(pts_np)[None]
    name = f"fps {n // 1000}k -> {s}, B=1"
    rows: list[dict] = []
    want = fps(pts, s, backend="torch")

    fast = {f"pcad {b}": (lambda b=b: fps(pts, s, backend=b))
            for b in available_backends("cpu", "fps") if b not in SLOW + CPU_SKIP}
    ref_name, ref_ms = "fpsample bucket", None
    if _has("fpsample"):
        import fpsample

        fast["ref"] = lambda: fpsample.bucket_fps_kdline_sampling(pts_np, s, 7, start_idx=0)
    raced = _race(fast, repeats)
    if "ref" in raced:
        ref_ms, times, idx = raced["ref"]
        rows.append(_row(name, "ref: fpsample.bucket_fps_kdline_sampling h=7", ref_ms, "-", None,
                         times=times, exact=bool(np.array_equal(idx.astype(np.int64),
                                                                want[0].numpy())),
                         note=f"fpsample {fpsample.__version__}; start_idx=0 is not honoured "
                              "(first index differs), the rest is FPS"))
        ms, times, idx = _timed(lambda: fpsample.fps_sampling(pts_np, s, start_idx=0), 1,
                                warm=False)
        rows.append(_row(name, "ref: fpsample.fps_sampling (vanilla)", ms, ref_name, ref_ms,
                         times=times, exact=bool(np.array_equal(idx.astype(np.int64),
                                                                want[0].numpy()))))
    tc_ms = None
    if _has("torch_cluster"):
        import torch_cluster

        tc_ms, times, _ = _timed(
            lambda: torch_cluster.fps(pts[0], None, (s - 0.5) / n, False), 1, warm=False)
        rows.append(_row(name, "ref: torch_cluster.fps CPU", tc_ms, ref_name, ref_ms,
                         times=times))
    else:
        rows.append(dict(benchmark=name, case="ref: torch_cluster.fps CPU", value=None,
                         unit=UNIT, reference="-", ratio=None,
                         note="torch_cluster is not installed"))

    for backend in [b for b in available_backends("cpu", "fps") if b not in CPU_SKIP]:
        if backend in SLOW:
            ms, times, idx = _timed(lambda b=backend: fps(pts, s, backend=b), 1, warm=False)
        else:
            ms, times, idx = raced[f"pcad {backend}"]
        exact = bool(torch.equal(idx, want))
        rows.append(_row(name, f"pcad {backend}", ms, ref_name, ref_ms, times=times,
                         exact=exact))
        if tc_ms is not None:
            rows.append(_row(name, f"pcad {backend}", ms, "torch_cluster CPU", tc_ms,
                             times=times, exact=exact))
    return rows


def _bench_knn(n: int, m: int, k: int, m_torch: int, repeats: int) -> list[dict]:
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(SEED + 1)
    p_np = rng.random((n, 3), dtype=np.float64).astype(np.float32)
    q_np = rng.random((m, 3), dtype=np.float64).astype(np.float32)
    p, q = torch.from_numpy(p_np)[None], torch.from_numpy(q_np)[None]
    name = f"knn k={k}, {m // 1000}k q x {n // 1000}k pts"
    ref_name = "cKDTree build+query"
    fast = {f"pcad {b}": (lambda b=b: knn(q, p, k, backend=b))
            for b in available_backends("cpu", "knn") if b not in SLOW + CPU_SKIP}
    fast["ref"] = lambda: cKDTree(p_np).query(q_np, k=k, workers=-1)
    raced = _race(fast, repeats)
    ref_ms, times, _ = raced["ref"]
    rows = [_row(name, "ref: scipy cKDTree(points).query(k, workers=-1)", ref_ms, "-", None,
                 times=times)]
    sub = q[:, :m_torch]
    want_d, want_i = knn(sub, p, k, backend="torch")
    for backend in [b for b in available_backends("cpu", "knn") if b not in CPU_SKIP]:
        if backend == "torch":
            ms_sub, times, _ = _timed(lambda: knn(sub, p, k, backend="torch"), 1, warm=False)
            ms = ms_sub * m / m_torch
            rows.append(_row(name, f"pcad torch ({m_torch:,} queries, scaled)", ms,
                             ref_name, ref_ms, times=times, exact=True,
                             seconds_measured=ms_sub / 1000))
            continue
        if backend in SLOW:
            ms, times, _ = _timed(lambda b=backend: knn(q, p, k, backend=b), 1, warm=False)
        else:
            ms, times, _ = raced[f"pcad {backend}"]
        d, i = knn(sub, p, k, backend=backend)
        exact = bool(torch.equal(d, want_d) and torch.equal(i, want_i))
        rows.append(_row(name, f"pcad {backend}", ms, ref_name, ref_ms, times=times,
                         exact=exact))
    return rows


def run(quick: bool) -> list[dict]:
    """Rows for ``benchmarks/run.py``: the FPS and kNN tables and the thread counts."""
    if quick:
        n_fps, s_fps, n_knn, m_knn, m_torch, repeats = 20_000, 200, 20_000, 20_000, 500, 2
    else:
        n_fps, s_fps, n_knn, m_knn, m_torch, repeats = 100_000, 1_000, 100_000, 100_000, 1000, 5
    rows = [
        dict(benchmark="environment", case="numba threads", value=numba.get_num_threads(),
             unit="threads", reference="-", ratio=None, note=f"numba {numba.__version__}"),
        dict(benchmark="environment", case="torch CPU threads", value=torch.get_num_threads(),
             unit="threads", reference="-", ratio=None, note=f"torch {torch.__version__}"),
        dict(benchmark="environment", case="pcad.ops CPU backends",
             value=", ".join(available_backends("cpu")), unit="-", reference="-", ratio=None),
    ]
    rows += _bench_fps(n_fps, s_fps, repeats)
    rows += _bench_knn(n_knn, m_knn, 16, m_torch, repeats)
    return rows
