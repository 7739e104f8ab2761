"""Train and evaluate detectors on MVTec 3D-AD-layout datasets (what ``pcad train`` and
``pcad eval`` run).

Evaluation writes, in the folder ``out``:

- ``metrics.json``: :func:`pcad.metrics.evaluate` keys (``i_auroc``, ``p_auroc``, ``aupro``
  keyed by limit, ``f1_max_image``, ``ap_image``...) plus ``n_test``,
  ``latency_ms_per_sample``, ``peak_rss_mb``, ``detector``, ``category`` and ``data_root``;
- ``scores.csv``: ``path,category,defect,label,score`` per test image;
- ``maps/<category>/test/<defect>/<stem>.tiff``: float32 anomaly maps at the gt's resolution.

Example:
    >>> from pcad.engine import train  # doctest: +SKIP
    >>> det = train("data/synth", "gear", "btf", "runs/gear")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from pcad.io import atomic_save, atomic_write


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train(data: str | os.PathLike[str], category: str, detector: str,
          out: str | os.PathLike[str], config: dict[str, Any] | None = None,
          progress: bool = True):
    """Fit ``detector`` on the category's ``train/good`` samples and save it to ``out``."""
    from pcad.data import MVTec3DDataset
    from pcad.detectors import create

    det = create(detector, **(config or {}))
    modality = "+".join(det.modalities) if len(det.modalities) > 1 else det.modalities[0]
    train_set = MVTec3DDataset(data, category, "train", modality=modality)
    t0 = time.perf_counter()
    det.fit(train_set, progress=progress)
    det.save(out)
    record = {"data_root": str(Path(data).resolve()), "category": category,
              "detector": detector, "n_train": len(train_set),
              "fit_seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}
    with atomic_write(Path(out) / "train.json", "w") as fh:
        json.dump(record, fh, indent=2)
    return det


def _write_map(path: Path, amap: np.ndarray) -> None:
    atomic_save(path, lambda tmp: tifffile.imwrite(tmp, amap.astype(np.float32)))


def evaluate_run(data: str | os.PathLike[str], category: str, run: str | os.PathLike[str],
                 out: str | os.PathLike[str], progress: bool = True,
                 write_maps: bool = True,
                 maps_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Score every test sample of the category with the run's detector; write the results.

    ``maps_root`` (default ``out/maps``) lets several categories share one maps tree.
    """
    from tqdm import tqdm

    from pcad.data import MVTec3DDataset
    from pcad.detectors import load_detector
    from pcad.metrics import evaluate

    det = load_detector(run)
    modality = "+".join(det.modalities) if len(det.modalities) > 1 else det.modalities[0]
    test = MVTec3DDataset(data, category, "test", modality=modality)
    out = Path(out)
    maps_dir = Path(maps_root) if maps_root is not None else out / "maps"
    scores, labels, maps, masks, rows = [], [], [], [], []
    elapsed = 0.0
    for sample in tqdm(test, disable=not progress, desc=f"eval {category}", unit="sample"):
        t0 = time.perf_counter()
        score, amap = det.predict(sample)
        elapsed += time.perf_counter() - t0
        scores.append(score)
        labels.append(sample.label)
        maps.append(amap)
        masks.append(sample.mask)
        rows.append([str(sample.path), category, sample.defect, sample.label, repr(score)])
        if write_maps:
            _write_map(maps_dir / category / "test" / sample.defect / f"{sample.stem}.tiff", amap)
    metrics = evaluate(scores, labels, maps, masks)
    metrics.update(detector=det.name, category=category, data_root=str(Path(data).resolve()),
                   run=str(Path(run).resolve()), n_test=len(test),
                   latency_ms_per_sample=1000.0 * elapsed / max(len(test), 1),
                   peak_rss_mb=_peak_rss_mb())
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "category", "defect", "label", "score"])
    writer.writerows(rows)
    with atomic_write(out / "scores.csv", "w") as fh:
        fh.write(buf.getvalue())
    with atomic_write(out / "metrics.json", "w") as fh:
        json.dump(metrics, fh, indent=2)
    return metrics
