"""Training time of the unified detectors on the demo set's shape (issue 14's target: 15
minutes on two CPU cores for all demo categories at 224 px on precomputed frozen features).

Workload: seeded standard-normal tokens of the demo set's shape, the features already
computed: 210 training samples (7 categories x 30), 14 x 14 tokens of 185 channels
(EfficientNet-Lite0's 40 + 112 and FPFH's 33: ``modality="both"`` at 224 px, ``pool=2``),
onenip's four synthesized variants per sample with 5% of their tokens defective. Each detector
(``vitad``, ``uniad``, ``onenip``, defaults) fits through its ``fit_tokens`` (standardisation
and training; calibration excluded) once with one epoch and once with three, with
``PCAD_BENCH_THREADS`` torch threads (default 2): the difference over two is the seconds per
epoch (the loop's cost whatever the values), the rest the set-up, and the estimate for the
default epochs is set-up + epochs x seconds per epoch. Nothing else should run meanwhile.
``--quick``: 14 samples, 8 x 8 tokens (128 px).

Rows: per detector the estimated minutes for the default epochs against the 15-minute target
(``ratio`` = 15 / estimate: above 1 meets it), with ``s_per_epoch``, ``setup_s`` and
``epochs`` in the JSON (the set-up, a difference of two timings, can come out slightly
negative when it is near zero).

``run(quick)`` returns the rows that ``benchmarks/run.py`` prints and saves.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from pcad.detectors import create_detector

SEED = 20261207
TARGET_MIN = 15.0
LEVELS = (40, 112, 33)
DETECTORS = ("vitad", "uniad", "onenip")


def _tokens(n_samples: int, n_tok: int, variants: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(SEED)
    width = sum(LEVELS)
    tokens = rng.standard_normal((n_samples, n_tok, width), dtype=np.float32)
    anomalous = rng.standard_normal((n_samples * variants, n_tok, width), dtype=np.float32)
    masks = (rng.random((n_samples * variants, n_tok)) < 0.05).astype(np.float32)
    return tokens, anomalous, masks, [f"category{i % 7}" for i in range(n_samples)]


def fit_seconds(name: str, n_samples: int, size: int, epochs: int) -> float:
    """Seconds of ``name``'s ``fit_tokens`` with ``epochs`` epochs on the seeded tokens."""
    det = create_detector(name, image_size=size, modality="both", epochs=epochs, device="cpu")
    n_tok = det.token_grid[0] * det.token_grid[1]
    variants = det.config.get("variants", 0)
    tokens, anomalous, masks, cats = _tokens(n_samples, n_tok, variants)
    t0 = time.perf_counter()
    if det.needs_defect_source:
        det.fit_tokens(tokens, LEVELS, anomalous, masks, cats)
    else:
        det.fit_tokens(tokens, LEVELS, categories=cats)
    return time.perf_counter() - t0


def run(quick: bool) -> list[dict]:
    threads = int(os.environ.get("PCAD_BENCH_THREADS", "2"))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    n_samples, size = (14, 128) if quick else (210, 224)
    rows = []
    try:
        for name in DETECTORS:  # warm-up: torch's one-time costs land in no measurement
            fit_seconds(name, 14, 128, 1)
        for name in DETECTORS:
            one, three = (fit_seconds(name, n_samples, size, e) for e in (1, 3))
            per_epoch = max(three - one, 0.0) / 2
            default = int(create_detector(name).config["epochs"])
            minutes = (one - per_epoch + default * per_epoch) / 60
            rows.append({"benchmark": "training time",
                         "case": f"{name}, {n_samples} samples, {size} px, {threads} threads, "
                                 f"{default} epochs (estimate)",
                         "value": minutes, "unit": "min",
                         "reference": f"{TARGET_MIN:g}-minute target",
                         "ratio": TARGET_MIN / minutes, "s_per_epoch": per_epoch,
                         "setup_s": one - per_epoch, "epochs": default})
    finally:
        torch.set_num_threads(before)
    return rows


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=1))
