"""Cost of the leave-one-out statistics of the fused image scores (``loo_samples``).

btf, m3dm and lsfa normalise each bank's image score by the scores of training samples scored
leave-one-out (each against every patch of the other samples). Scoring all ``N`` samples
costs ``N * (N - 1)`` sample-against-sample searches; ``loo_samples`` (default 32) scores a
seeded subset of that many, still each against all the others, so the cost grows linearly.

Workload: m3dm's fusion fit (:meth:`MultiBankDetector._fit_fusion`, ``bank_score=
"reweighted"``, ``fusion="zsum"``) on seeded standard-normal features of ``N`` samples of
``n`` patches per bank (the widths of m3dm's banks with FPFH), timed alone (the banks' networks
and memory banks are not part of it). Full: ``N`` = 240 (eight 30-sample categories in one
unified run), 64 patches (64 px; the cost of both grows with the square of the patches);
``--quick``: ``N`` = 48, 16 patches.

Rows: the seconds with the default against the reference ``loo_samples=None`` (every sample;
``ratio`` = reference / default, higher is better), and ``max_rel_diff``, the largest relative
difference between the two runs' per-bank ``[mean, std]``.

``run(quick)`` returns the rows that ``benchmarks/run.py`` prints and saves.
"""

from __future__ import annotations

import time

import numpy as np

from pcad.detectors import create_detector
from pcad.memory import MemoryBank

SEED = 20261207
#: channels per bank of m3dm with FPFH point features (the fusion bank: UFF's output, taken as
#: wide as its two inputs)
WIDTHS = {"rgb": 152, "xyz": 33, "fusion": 185}


def _fusion_seconds(loo_samples: int | None, n_samples: int, n_patch: int
                    ) -> tuple[float, np.ndarray]:
    det = create_detector("m3dm", image_size=64, bank_score="reweighted", fusion="zsum",
                          map_fusion="zsum", loo_samples=loo_samples, device="cpu")
    rng = np.random.default_rng(SEED)
    per_bank = {b: rng.standard_normal((n_samples * n_patch, WIDTHS[b]), dtype=np.float32)
                for b in det.BANKS}
    det.banks = {b: MemoryBank(device="cpu") for b in det.BANKS}  # where the searches run
    fg = np.ones((n_samples, n_patch), bool)
    t0 = time.perf_counter()
    det._fit_fusion(per_bank, n_samples, n_patch, None, fg)
    return time.perf_counter() - t0, np.asarray(det.z_image)


def run(quick: bool) -> list[dict]:
    n_samples, n_patch = (48, 16) if quick else (240, 64)
    t_all, z_all = _fusion_seconds(None, n_samples, n_patch)
    default = create_detector("m3dm").config["loo_samples"]
    t_cap, z_cap = _fusion_seconds(default, n_samples, n_patch)
    return [{"benchmark": "loo statistics",
             "case": f"m3dm fusion fit, {n_samples} samples x {n_patch} patches, "
                     f"loo_samples={default}",
             "value": t_cap, "unit": "s", "reference": "loo_samples=None (every sample)",
             "reference_value": t_all, "ratio": t_all / t_cap,
             "max_rel_diff": float(np.max(np.abs(z_cap - z_all) / np.abs(z_all)))}]


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=1))
