"""Train and evaluate detectors on MVTec 3D-AD-layout datasets (what ``pcad train`` and
``pcad eval`` run).

Evaluation writes, in the folder ``out``:

- ``metrics.json``: :func:`pcad.metrics.evaluate` keys (``i_auroc``, ``p_auroc``, ``aupro``
  keyed by limit, ``f1_max_image``, ``ap_image``...) plus ``n_test``,
  ``latency_ms_per_sample``, ``peak_rss_mb``, ``detector``, ``category`` and ``data_root``,
  ``per_defect`` (each defect type against the good samples) and, for a run trained with
  held-out defect types (``holdout_defects``), ``holdout`` and ``seen``
  (:func:`defect_breakdown`);
- ``scores.csv``: ``path,category,defect,label,score`` per test image;
- ``maps/<category>/test/<defect>/<stem>.tiff``: float32 anomaly maps at the gt's resolution.

Example:
    >>> import pathlib, tempfile
    >>> from synth.dataset import DatasetConfig, generate
    >>> from pcad.engine import evaluate_run, train
    >>> tmp = tempfile.TemporaryDirectory()
    >>> data, run = pathlib.Path(tmp.name) / "data", pathlib.Path(tmp.name) / "run"
    >>> cfg = DatasetConfig(categories=("plate",), train=1, validation=0, test_good=1,
    ...                     test_defect=1, defects=("dent",), size=(32, 32))
    >>> generate(cfg, data, progress=False)["written"]
    3
    >>> det = train(data, "plate", "btf", run, progress=False)
    >>> sorted(p.name for p in run.iterdir())
    ['bank.npz', 'detector.json', 'train.json']
    >>> metrics = evaluate_run(data, "plate", run, run / "eval", progress=False)
    >>> metrics["n_test"], sorted(metrics["per_defect"])
    (2, ['dent'])
    >>> sorted(p.name for p in (run / "eval").iterdir())
    ['maps', 'metrics.json', 'scores.csv']
    >>> tmp.cleanup()
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from pcad.io import atomic_save, atomic_write

if TYPE_CHECKING:
    from pcad.metrics import PixelRanking


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def open_split(data: str | os.PathLike[str], category: str, split: str, det: Any):
    """The category's ``split`` read in the modalities ``det`` needs; a dataset without one of
    them is an error naming the detector (e.g. ``btf`` on an RGB-only dataset)."""
    from pcad.data import MVTec3DDataset
    from pcad.errors import FileFormatError, InvalidInputError

    modality = "+".join(det.modalities)
    try:
        return MVTec3DDataset(data, category, split, modality=modality)
    except FileFormatError as exc:
        if "requested but no defect folder" not in str(exc):
            raise
        raise InvalidInputError(
            f"detector {det.name!r} needs {' and '.join(det.modalities)}, but {exc} (an "
            "RGB-only dataset works with patchcore-rgb or synthsup -o mode=rgb)") from None


def train(data: str | os.PathLike[str], category: str, detector: str,
          out: str | os.PathLike[str], config: dict[str, Any] | None = None,
          progress: bool = True):
    """Fit ``detector`` on the category's ``train/good`` samples and save it to ``out``.

    Under ``torchrun`` (:mod:`pcad.distributed`) every rank fits (the detector shards the work)
    and returns the fitted detector, but only rank 0 shows progress and writes the run and
    ``train.json`` (whose ``world_size`` records the number of processes); the others wait for
    it at a barrier. A detector without ``supports_distributed`` is an error there.
    """
    from pcad import distributed as dist
    from pcad.detectors import create_detector
    from pcad.errors import InvalidInputError

    det = create_detector(detector, **(config or {}))
    if det.needs_defect_source:  # trains on synthetic defects (synthsup)
        from synth.supervision import DefectSource

        det.defect_source = DefectSource(**det.defect_source_options())
    ctx = dist.get_context()
    if ctx.world_size > 1 and not det.supports_distributed:
        raise InvalidInputError(f"detector {detector!r} does not support distributed training "
                                f"(world size {ctx.world_size}); run it in one process, "
                                "without torchrun")
    train_set = open_split(data, category, "train", det)
    t0 = time.perf_counter()
    det.fit(train_set, progress=progress and ctx.rank == 0)
    if ctx.rank == 0:
        det.save(out)
        record = {"data_root": str(Path(data).resolve()), "category": category,
                  "detector": detector, "n_train": len(train_set),
                  "fit_seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
                  "world_size": ctx.world_size}
        with atomic_write(Path(out) / "train.json", "w") as fh:
            json.dump(record, fh, indent=2)
    dist.barrier()
    return det


def _subset_metrics(idx: list[int], scores: list[float], labels: list[int],
                    ranking: PixelRanking, limits: tuple[float, ...]) -> dict[str, Any]:
    """I-AUROC, P-AUROC and AUPRO of the test samples ``idx`` (None where undefined), the
    pixel metrics from the test set's one ``ranking`` (no new sort)."""
    from pcad.errors import InvalidInputError
    from pcad.metrics import image_auroc
    from pcad.metrics.classification import auroc_from_counts
    from pcad.metrics.pro import aupro_from_curve, pro_from_pixel_curve

    out: dict[str, Any] = {"i_auroc": None, "p_auroc": None,
                           "aupro": {str(float(lim)): None for lim in limits}}
    try:  # a class is missing (no good sample, or no anomalous one): all undefined
        out["i_auroc"] = image_auroc([scores[i] for i in idx], [labels[i] for i in idx])
    except InvalidInputError:
        return out
    curve = ranking.curve(idx)
    if curve.n_pos == 0 or curve.n_neg == 0:  # no anomalous (or no normal) pixel
        return out
    fprs, pros = pro_from_pixel_curve(curve, max_fpr=max(limits))
    out.update(p_auroc=auroc_from_counts(curve.tps, curve.fps, curve.n_pos, curve.n_neg),
               aupro={str(float(lim)): aupro_from_curve(fprs, pros, lim) for lim in limits})
    return out


def defect_breakdown(scores: list[float], labels: list[int], maps: list, masks: list,
                     defects: list[str], holdout: Any = (),
                     ranking: PixelRanking | None = None) -> dict[str, Any]:
    """Metrics per defect type, and held-out vs seen types, for ``metrics.json``.

    Returns ``per_defect``: ``{type: {i_auroc, p_auroc, aupro: {"0.3"}, n}}``, each type's
    anomalous samples against all good ones (``n``: that type's samples). With ``holdout``
    (the types a detector never saw in training) also ``holdout`` (good + the held-out types)
    and ``seen`` (good + every other anomalous type): ``i_auroc``, ``p_auroc``, ``aupro`` at
    every limit, ``defects`` and ``n_anomalous``. A metric that is undefined (no good sample,
    no anomalous pixel) is None.

    The pixels of all test samples are sorted once (``ranking``, a
    :class:`~pcad.metrics.PixelRanking` of ``maps`` and ``masks``, made here when None) and
    every subset's pixel metrics read that one order.
    """
    from pcad.metrics import DEFAULT_LIMITS, PixelRanking

    good = [i for i, lab in enumerate(labels) if not lab]
    bad = {}
    for i, (lab, d) in enumerate(zip(labels, defects, strict=True)):
        if lab:
            bad.setdefault(d, []).append(i)
    if ranking is None:
        ranking = PixelRanking(maps, masks)
    out: dict[str, Any] = {"per_defect": {
        d: {**_subset_metrics(good + idx, scores, labels, ranking, (0.3,)), "n": len(idx)}
        for d, idx in sorted(bad.items())}}
    held = list(dict.fromkeys(holdout))
    if held:
        for key, types in (("holdout", [d for d in bad if d in held]),
                           ("seen", [d for d in bad if d not in held])):
            idx = [i for d in sorted(types) for i in bad[d]]
            out[key] = {**_subset_metrics(good + idx, scores, labels, ranking,
                                          tuple(DEFAULT_LIMITS)),
                        "defects": sorted(types), "n_anomalous": len(idx)}
        out["holdout"]["held_out"] = held
    return out


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

    from pcad.detectors import load_detector
    from pcad.metrics import PixelRanking, evaluate

    det = load_detector(run)
    test = open_split(data, category, "test", det)
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
    ranking = PixelRanking(maps, masks)  # one sort of all pixels, shared by every subset
    metrics = evaluate(scores, labels, maps, masks, ranking=ranking)
    metrics.update(defect_breakdown(scores, labels, maps, masks, [r[2] for r in rows],
                                    det.config.get("holdout_defects") or (), ranking=ranking))
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
