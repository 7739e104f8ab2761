"""Throughput of ``synth.pnoise2`` / ``synth.pnoise3`` against the ``noise`` package's C loop.

In one run, on seeded random coordinates in [-50, 50] at 4 octaves (defaults otherwise):

- the reference: ``noise.pnoise2`` / ``noise.pnoise3`` called once per point from Python, measured
  on a subset and reported per point (its time is linear in the number of points), in two
  flavours: the plain loop a user writes over numpy arrays, and the fastest Python loop (a list
  comprehension over Python lists with a local alias);
- ``synth`` with backend ``"numba"`` (warmed once, best of 5), ``"numpy"`` (best of 3) and torch
  CPU tensors (warmed once, best of 3) on all points.

Every backend's output on the subset is compared with the loop's values (``max_abs_diff``).
``run(quick)`` returns the rows that ``benchmarks/run.py`` prints and saves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import noise
import numba
import numpy as np
import torch

from synth import pnoise2, pnoise3

OCTAVES = 4
LOW, HIGH = -50.0, 50.0
SEED = 20240611
UNIT = "Mpoints/s"


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Wall times of ``repeats`` calls of ``fn`` and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


# The two Python loops over the C function, written as a user would write them.

def _plain_loop2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    out = np.empty(n)
    for i in range(n):
        out[i] = noise.pnoise2(x[i], y[i], octaves=OCTAVES)
    return out


def _fast_loop2(xs: list[float], ys: list[float]) -> list[float]:
    p, o = noise.pnoise2, OCTAVES
    return [p(a, b, o) for a, b in zip(xs, ys, strict=True)]


def _plain_loop3(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    out = np.empty(n)
    for i in range(n):
        out[i] = noise.pnoise3(x[i], y[i], z[i], octaves=OCTAVES)
    return out


def _fast_loop3(xs: list[float], ys: list[float], zs: list[float]) -> list[float]:
    p, o = noise.pnoise3, OCTAVES
    return [p(a, b, c, o) for a, b, c in zip(xs, ys, zs, strict=True)]


def _fmt_count(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def _bench_dim(dim: int, n: int, n_sub: int) -> list[dict]:
    rng = np.random.default_rng(SEED + dim)
    coords = [rng.uniform(LOW, HIGH, n) for _ in range(dim)]
    sub = [c[:n_sub] for c in coords]
    sub_lists = [c.tolist() for c in sub]
    tensors = [torch.from_numpy(c.astype(np.float32)) for c in coords]
    func = pnoise2 if dim == 2 else pnoise3
    plain_loop = _plain_loop2 if dim == 2 else _plain_loop3
    fast_loop = _fast_loop2 if dim == 2 else _fast_loop3
    name = f"pnoise{dim} {dim}D {OCTAVES} oct, {_fmt_count(n)} pts"
    subset = f"{_fmt_count(n_sub)} subset, scaled"
    scaled = f"{_fmt_count(n_sub)} measured, per-point rate applied to {_fmt_count(n)}"

    # Reference loops, on the subset (time is linear in the number of points).
    times_plain, want = _timed(lambda: plain_loop(*sub), 3)
    times_fast, fast_vals = _timed(lambda: fast_loop(*sub_lists), 3)
    t_plain, t_fast = min(times_plain), min(times_fast)
    assert np.array_equal(np.asarray(fast_vals), want)
    plain_rate = n_sub / t_plain / 1e6
    fast_rate = n_sub / t_fast / 1e6

    rows = [
        dict(benchmark=name, case=f"noise loop plain, arrays ({subset})", value=plain_rate,
             unit=UNIT, reference="-", ratio=None, n_points=n, n_measured=n_sub,
             seconds=t_plain * n / n_sub, seconds_measured=t_plain, repeats=3,
             times=times_plain,
             note=f"noise.pnoise{dim} per point, out[i] = ...; {scaled}"),
        dict(benchmark=name, case=f"noise loop fast, lists ({subset})", value=fast_rate,
             unit=UNIT, reference="plain loop", ratio=fast_rate / plain_rate, n_points=n,
             n_measured=n_sub, seconds=t_fast * n / n_sub, seconds_measured=t_fast, repeats=3,
             times=times_fast,
             note=f"[p(...) for ... in zip(lists)], list building not timed; {scaled}"),
    ]

    def ours(case: str, call: Callable[[], Any], repeats: int, warm: bool, note: str) -> None:
        if warm:
            call()  # JIT compilation / cache load, first-call allocations
        times, out = _timed(call, repeats)
        t = min(times)
        out = out.numpy() if isinstance(out, torch.Tensor) else out
        assert out.shape == (n,) and out.dtype == np.float32
        diff = float(np.max(np.abs(out[:n_sub].astype(np.float64) - want)))
        rate = n / t / 1e6
        for ref, ref_rate in (("plain loop", plain_rate), ("fast loop", fast_rate)):
            rows.append(dict(benchmark=name, case=case, value=rate, unit=UNIT, reference=ref,
                             ratio=rate / ref_rate, n_points=n, seconds=t, repeats=repeats,
                             times=times, max_abs_diff=diff, note=note))

    threads = numba.get_num_threads()
    ours(f"synth numba ({threads} threads)",
         lambda: func(*coords, octaves=OCTAVES, backend="numba"), 5, True,
         f"float64 arrays in (cast to float32 included), {threads} numba threads, best of 5")
    ours("synth numpy", lambda: func(*coords, octaves=OCTAVES, backend="numpy"), 3, False,
         "float64 arrays in, plain numpy reference, best of 3")
    ours(f"synth torch CPU ({torch.get_num_threads()} thr)",
         lambda: func(*tensors, octaves=OCTAVES), 3, True,
         f"float32 CPU tensors in, torch threads {torch.get_num_threads()}, best of 3")
    return rows


def run(quick: bool) -> list[dict]:
    """Rows for ``benchmarks/run.py``: 2D and 3D throughputs and the thread counts."""
    n, n_sub = (100_000, 20_000) if quick else (1_000_000, 100_000)
    rows = [
        dict(benchmark="environment", case="numba threads", value=numba.get_num_threads(),
             unit="threads", reference="-", ratio=None,
             note=f"numba {numba.__version__}, threading layer chosen at first parallel call"),
        dict(benchmark="environment", case="torch CPU threads", value=torch.get_num_threads(),
             unit="threads", reference="-", ratio=None, note=f"torch {torch.__version__}"),
    ]
    rows += _bench_dim(2, n, n_sub)
    rows += _bench_dim(3, n, n_sub)
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel function has run
        layer = "unknown"
    rows[0]["note"] = f"numba {numba.__version__}, threading layer {layer}"
    return rows
