"""Speed and peak memory of ``pcad.metrics``: exact AUPRO, P-AUROC and ``evaluate``.

Workload: ``n`` seeded float32 anomaly maps of ``size x size`` pixels with continuous scores
(almost every score distinct: the largest curve). Every other image has two rectangular
ground-truth regions, raised by 0.3; the rest are good images. Full run: 40 maps of
800 x 800 (25.6 Mpixels, about one MVTec 3D-AD category at full resolution). ``--quick``:
10 maps of 256 x 256.

Rows (best of 3, throughput in Mpixels/s, higher is better):

- ``aupro_at`` at the four default limits (one sort of all pixels);
- ``pixel_auroc`` with ``sklearn.metrics.roc_auc_score`` on the same flattened pixels as the
  reference (``ratio`` = our throughput / sklearn's; ``max_abs_diff`` in the JSON);
- ``evaluate`` (image and pixel metrics, all AUPRO limits);
- the peak traced memory (``tracemalloc``) of ``evaluate`` in bytes per pixel; the inputs
  themselves take 5 (float32 map + uint8 mask).

``run(quick)`` returns the rows that ``benchmarks/run.py`` prints and saves.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from pcad.metrics import aupro_at, evaluate, flatten_pixels, pixel_auroc

SEED = 20240611


def _workload(n: int, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(SEED)
    maps, masks = [], []
    for i in range(n):
        mask = np.zeros((size, size), dtype=np.uint8)
        if i % 2:
            a, b = size // 8, size // 5
            mask[a : a + b, 2 * a : 2 * a + b // 2] = 255
            mask[5 * a : 5 * a + b // 3, a : a + b] = 255
        amap = rng.random((size, size), dtype=np.float32) + np.float32(0.3) * (mask > 0)
        maps.append(amap)
        masks.append(mask)
    return maps, masks


def _best(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def run(quick: bool) -> list[dict]:
    n, size = (10, 256) if quick else (40, 800)
    maps, masks = _workload(n, size)
    mpix = n * size * size / 1e6
    label = f"{n} x {size}x{size}"
    rows = []

    t_pro, times, _ = _best(lambda: aupro_at(maps, masks))
    rows.append({"benchmark": "metrics", "case": f"aupro_at 4 limits, {label}",
                 "value": mpix / t_pro, "unit": "Mpixels/s", "reference": None, "ratio": None,
                 "times": times})

    scores, labels = flatten_pixels(maps, masks)
    t_sk, sk_times, sk_value = _best(lambda y=labels, s=scores: roc_auc_score(y, s))
    t_ours, times, value = _best(lambda: pixel_auroc(maps, masks))
    rows.append({"benchmark": "metrics", "case": f"pixel_auroc, {label}",
                 "value": mpix / t_ours, "unit": "Mpixels/s",
                 "reference": "sklearn roc_auc_score", "ratio": t_sk / t_ours,
                 "times": times, "reference_times": sk_times,
                 "max_abs_diff": abs(value - float(sk_value))})
    del scores, labels  # free them before the memory measurement

    t_eval, times, _ = _best(lambda: evaluate(None, None, maps, masks))
    rows.append({"benchmark": "metrics", "case": f"evaluate, {label}",
                 "value": mpix / t_eval, "unit": "Mpixels/s", "reference": None, "ratio": None,
                 "times": times})

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        evaluate(None, None, maps, masks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rows.append({"benchmark": "metrics", "case": f"evaluate peak memory, {label}",
                 "value": peak / (mpix * 1e6), "unit": "bytes/pixel", "reference": None,
                 "ratio": None})
    return rows
