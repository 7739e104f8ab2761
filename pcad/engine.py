"""Train and evaluate detectors on MVTec 3D-AD-layout datasets (what ``pcad train`` and
``pcad eval`` run).

Evaluation writes, in the folder ``out``:

- ``metrics.json``: :func:`pcad.metrics.evaluate` keys (``i_auroc``, ``p_auroc``, ``aupro``
  keyed by limit, ``f1_max_image``, ``ap_image``...) plus ``n_test``,
  ``latency_ms_per_sample``, ``peak_rss_mb``, ``detector``, ``category`` and ``data_root``,
  ``per_defect`` (each defect type against the good samples) and, for a run trained with
  held-out defect types (``holdout_defects``), ``holdout`` and ``seen``
  (:func:`defect_breakdown`); ``at_threshold``: the confusion counts at the run's calibrated
  threshold (``tp``, ``fp``, ``tn``, ``fn``, ``precision``, ``recall``), null for a run
  without one;
- ``scores.csv``: ``path,category,defect,label,score`` per test image;
- ``maps/<category>/test/<defect>/<stem>.tiff``: float32 anomaly maps at the gt's resolution.

Checks before the long work: :func:`train` checks ``out`` before fitting; :func:`evaluate_run`
checks ``out`` and the test set (:func:`check_test_set`: good and defective samples, some
anomalous gt pixel) before predicting. Input that is accepted but probably gives a wrong
result raises a :class:`~pcad.errors.PcadWarning` first: a dataset whose ``dataset.json`` says
``"complete": false``, training images smaller than :data:`MIN_IMAGE_SIDE` pixels or with an
all-zero xyz, gt masks with several foreground values or marking more than half their pixels,
a run evaluated on another category than it was trained on (``train.json`` records it).

The results of an evaluation are written as one unit: staged in a hidden folder inside
``out`` (``.eval.<pid>.<random>.tmp``, on the file system they end on), then moved into place
by renames, the category's maps first, ``scores.csv`` next and ``metrics.json`` last (the old
one is removed before the first move). A failure before that (a prediction, the metrics)
leaves an existing results folder exactly as it was, and no new folder.

Example:
    >>> import pathlib, tempfile
    >>> from synth.dataset import DatasetConfig, generate
    >>> from pcad.engine import evaluate_run, train
    >>> tmp = tempfile.TemporaryDirectory()
    >>> data, run = pathlib.Path(tmp.name) / "data", pathlib.Path(tmp.name) / "run"
    >>> cfg = DatasetConfig(categories=("plate",), train=3, validation=0, test_good=1,
    ...                     test_defect=1, defects=("dent",), size=(32, 32))
    >>> generate(cfg, data, progress=False)["written"]
    5
    >>> det = train(data, "plate", "btf", run, progress=False)
    >>> sorted(p.name for p in run.iterdir())
    ['bank.npz', 'bank_rgb.npz', 'bank_xyz.npz', 'detector.json', 'train.json']
    >>> metrics = evaluate_run(data, "plate", run, run / "eval", progress=False)
    >>> metrics["n_test"], sorted(metrics["per_defect"])
    (2, ['dent'])
    >>> sorted(p.name for p in (run / "eval").iterdir())
    ['maps', 'metrics.json', 'scores.csv']
    >>> tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import resource
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from pcad.checks import check_out_folder, valid_pixels
from pcad.errors import InvalidInputError, PcadWarning
from pcad.io import atomic_save, atomic_write
from pcad.io.atomic import remove_path

if TYPE_CHECKING:
    from pcad.data import MVTec3DDataset
    from pcad.metrics import PixelRanking

#: training images smaller than this on a side get a warning (a patch detector sees at most
#: 2 x 2 cells of its 8-pixel stride there; an upsampled 1 x 1 image holds one colour)
MIN_IMAGE_SIDE = 16
#: the files a warning names before it says "and N more"
SHOWN_FILES = 5


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def open_split(data: str | os.PathLike[str], category: str, split: str, det: Any):
    """The category's ``split`` read in the modalities ``det`` needs (its ``dataset_modality``
    where it has one, e.g. ``"auto"`` for ``synthsup``'s default mode, which picks its mode from
    the data); a dataset without one of them is an error naming the detector (e.g. ``btf`` on
    an RGB-only dataset)."""
    from pcad.data import MVTec3DDataset
    from pcad.errors import FileFormatError, InvalidInputError

    modality = getattr(det, "dataset_modality", None) or "+".join(det.modalities)
    try:
        return MVTec3DDataset(data, category, split, modality=modality)
    except FileFormatError as exc:
        if "requested but no defect folder" not in str(exc):
            raise
        raise InvalidInputError(
            f"detector {det.name!r} needs {' and '.join(det.modalities)}, but {exc} (an "
            "RGB-only dataset works with patchcore-rgb or synthsup, whose default mode=auto picks "
            "rgb)") from None


def _listing(items: list[str]) -> str:
    """``a, b, c`` (at most :data:`SHOWN_FILES` items, then ``and N more``)."""
    more = f" and {len(items) - SHOWN_FILES} more" if len(items) > SHOWN_FILES else ""
    return ", ".join(items[:SHOWN_FILES]) + more


def warn_incomplete_dataset(data: str | os.PathLike[str]) -> None:
    """A :class:`~pcad.errors.PcadWarning` when ``<data>/dataset.json`` says
    ``"complete": false`` (a ``make-dataset`` that was interrupted or still runs). A dataset
    without that file or key (the real MVTec 3D-AD) is silent, and so is an unreadable one."""
    path = Path(data) / "dataset.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(record, dict) and record.get("complete") is False:
        warnings.warn(PcadWarning(
            f"{path}: the dataset is incomplete (\"complete\": false: its generation was "
            "interrupted or is still running); finish it with the same pcad make-dataset "
            "command first, or results will change when it is"), stacklevel=3)


def run_category(run: str | os.PathLike[str]) -> str | None:
    """The category a run was trained on (``train.json``, written by :func:`train`); None for
    a run without a readable record (saved by ``Detector.save`` alone)."""
    try:
        record = json.loads((Path(run) / "train.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cat = record.get("category") if isinstance(record, dict) else None
    return cat if isinstance(cat, str) else None


def run_categories(run: str | os.PathLike[str]) -> list[str] | None:
    """The categories a run was trained on (``train.json``'s ``categories``, several for a
    unified multi-class run; ``[category]`` for a record that has only that); None without a
    readable record."""
    try:
        record = json.loads((Path(run) / "train.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    cats = record.get("categories")
    if isinstance(cats, list) and cats and all(isinstance(c, str) for c in cats):
        return cats
    cat = record.get("category")
    return [cat] if isinstance(cat, str) else None


def warn_category_mismatch(run: str | os.PathLike[str], category: str,
                           action: str = "evaluated on") -> None:
    """A :class:`~pcad.errors.PcadWarning` when ``run`` was trained on categories that do not
    include ``category`` (a gear run scored on cookie: the scores say nothing about either;
    a unified run evaluated on one of its categories is silent); ``action`` words the use
    (``pcad predict``: ``"applied to"``)."""
    cats = run_categories(run)
    if cats is not None and category not in cats:
        trained = cats[0] if len(cats) == 1 else ", ".join(cats)
        warnings.warn(PcadWarning(
            f"{run}: a run trained on category {trained!r}, {action} {category!r}; a "
            "detector scores deviations from the part it was trained on, so these results "
            "do not measure it (train a run on this category)"), stacklevel=3)


def check_training_set(samples: list[Any]) -> None:
    """Warnings (:class:`~pcad.errors.PcadWarning`) for training samples that train nothing
    useful: images smaller than :data:`MIN_IMAGE_SIDE` pixels on a side and xyz without one
    measured pixel (all ``(0, 0, 0)``). One warning per kind, naming the files."""
    tiny, empty = [], []
    for s in samples:
        shape = getattr(s, "shape", ())
        name = str(s.paths.get("xyz") or s.paths.get("rgb") or s.stem)
        if len(shape) == 2 and min(shape) < MIN_IMAGE_SIDE:
            tiny.append(f"{name} ({shape[0]}x{shape[1]})")
        xyz = getattr(s, "xyz", None)
        if xyz is not None and not valid_pixels(xyz).any():
            empty.append(name)
    n = len(samples)
    if tiny:
        warnings.warn(PcadWarning(
            f"training set: {len(tiny)} of {n} images are smaller than {MIN_IMAGE_SIDE} "
            f"pixels on a side (the detector sees almost nothing of them): {_listing(tiny)}"),
            stacklevel=3)
    if empty:
        warnings.warn(PcadWarning(
            f"training set: {len(empty)} of {n} xyz files have no measured pixel (all "
            f"(0, 0, 0)): {_listing(empty)}; their point features are empty"), stacklevel=3)


def train(data: str | os.PathLike[str], category: str | list[str] | tuple[str, ...],
          detector: str,
          out: str | os.PathLike[str], config: dict[str, Any] | None = None,
          progress: bool = True, false_alarm_rate: float | None = None,
          overwrite: bool | None = None, resume: bool = False):
    """Fit ``detector`` on the category's ``train/good`` samples and save it to ``out``.

    ``category`` a list (or tuple) of names, or ``["all"]``: one unified (multi-class) model
    fitted on the training samples of all those categories together
    (:func:`pcad.multiclass.resolve_categories`: a missing name is an error listing what
    exists), calibrated on the ``validation/good`` samples of all of them; ``train.json``
    records them under ``categories`` (``category`` is null for several). Categories of
    different image sizes are resized to the model's input size, said once (a
    :class:`~pcad.errors.PcadWarning`).

    Training lifecycle (:mod:`pcad.detectors.training`): a detector that trains networks
    (cfm, lsfa, m3dm, synthsup) writes ``out/train_log.csv`` (one row per epoch) and
    ``out/checkpoint.pt`` after every epoch (removed once the run is saved); ``resume=True``
    continues an interrupted training from that checkpoint (an error when there is none or it
    is another detector's, configuration's or dataset's) and gives the run an uninterrupted
    training gives. ``overwrite``: None (the API default) writes into ``out`` whatever is
    there; False refuses a non-empty ``out`` (:func:`pcad.cli.outputs.check_out`) unless
    ``resume``; True trains into a staging folder beside it that replaces it only when the
    run is complete.

    After fitting, the decision threshold is calibrated on the category's ``validation/good``
    samples at ``false_alarm_rate`` (default :data:`pcad.calibration.DEFAULT_FALSE_ALARM_RATE`,
    1 %) and recorded in ``train.json`` under ``calibration``
    (:class:`pcad.calibration.Calibration`: threshold and score normalization); without a
    validation split a :class:`~pcad.errors.PcadWarning` says so and ``calibration`` is null.

    ``out`` is checked (a writable folder, or one that can be created) before anything is
    fitted; ``train.json`` records the category, which :func:`evaluate_run` compares with the
    one it evaluates. Warnings (:class:`~pcad.errors.PcadWarning`) come before fitting: an
    incomplete dataset (:func:`warn_incomplete_dataset`), tiny images or all-zero xyz
    (:func:`check_training_set`).

    Under ``torchrun`` (:mod:`pcad.distributed`) every rank fits (the detector shards the work)
    and returns the fitted detector, but only rank 0 shows progress, warns and writes the run
    and ``train.json`` (whose ``world_size`` records the number of processes); the others wait
    for it at a barrier. A detector without ``supports_distributed`` is an error there.
    """
    from pcad import distributed as dist
    from pcad.cli.outputs import check_out, is_nonempty
    from pcad.detectors import create_detector
    from pcad.detectors.training import check_resume, training_session

    out = check_out_folder(out)
    if resume and overwrite:
        raise InvalidInputError("--resume continues the run in --out; --overwrite replaces "
                                "it: pass one of them")
    if overwrite is False:
        check_out(out, overwrite=False, what="run folder", reuse=resume)
    if false_alarm_rate is not None:  # checked before the long work
        from pcad.calibration import check_false_alarm_rate

        check_false_alarm_rate(false_alarm_rate)
    det = create_detector(detector, **(config or {}))
    if det.needs_defect_source:  # trains on synthetic defects (synthsup)
        from synth.supervision import DefectSource

        det.defect_source = DefectSource(**det.defect_source_options())
    ctx = dist.get_context()
    if ctx.world_size > 1 and not det.supports_distributed:
        raise InvalidInputError(f"detector {detector!r} does not support distributed training "
                                f"(world size {ctx.world_size}); run it in one process, "
                                "without torchrun")
    from pcad.multiclass import resolve_categories, warn_mixed_sizes

    cats = [category] if isinstance(category, str) else resolve_categories(data, category)
    splits = [open_split(data, c, "train", det) for c in cats]
    n_train = sum(len(s) for s in splits)
    identity = {"detector": detector, "config": det.config,
                "category": cats[0] if len(cats) == 1 else cats,
                "data_root": str(Path(data).resolve()), "n_train": n_train}
    if resume:  # before the long work: a checkpoint of this run is there
        check_resume(out, identity)
    final, target = out, out
    if overwrite and not resume and is_nonempty(out) and ctx.rank == 0:
        target = _stage_sibling(out)  # the old run stays until the new one is complete
    if ctx.rank == 0:
        warn_incomplete_dataset(data)
    t0 = time.perf_counter()
    per_cat = [list(s) for s in splits]  # what every fit does first: read each sample once
    items = [x for part in per_cat for x in part]
    if ctx.rank == 0:
        check_training_set(items)
        if len(cats) > 1:
            warn_mixed_sizes(dict(zip(cats, per_cat, strict=True)), det.config)
    try:
        with training_session(target, identity, resume=resume):
            det.fit(items, progress=progress and ctx.rank == 0)
        if ctx.rank == 0:
            _save_run(det, data, cats, detector, target, n_train, t0,
                      false_alarm_rate, progress)
            if target != final:
                _replace_folder(target, final)
    except BaseException:
        if target != final:
            remove_path(target)
        raise
    dist.barrier()
    return det


def _save_run(det: Any, data: str | os.PathLike[str], cats: list[str], detector: str, out: Path,
              n_train: int, t0: float, false_alarm_rate: float | None, progress: bool) -> None:
    """Calibrate, save the detector and ``train.json`` into ``out``, drop the checkpoint."""
    from pcad import distributed as dist
    from pcad.detectors.training import CHECKPOINT_FILE

    ctx = dist.get_context()
    calibration = _calibrate(det, data, cats, false_alarm_rate, progress)
    det.save(out)
    record = {"data_root": str(Path(data).resolve()),
              "category": cats[0] if len(cats) == 1 else None, "categories": cats,
              "detector": detector, "n_train": n_train,
              "fit_seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
              "world_size": ctx.world_size,
              "calibration": None if calibration is None else calibration.to_dict()}
    with atomic_write(out / "train.json", "w") as fh:
        json.dump(record, fh, indent=2)
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is whole: nothing to resume


def _stage_sibling(final: Path) -> Path:
    """A new hidden folder ``.<name>.<pid>.<random>.tmp`` beside ``final`` (same file system:
    it replaces ``final`` by rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp",
                                 dir=final.parent))


def _calibrate(det: Any, data: str | os.PathLike[str], cats: list[str],
               false_alarm_rate: float | None, progress: bool):
    """The run's :class:`~pcad.calibration.Calibration` on the ``validation/good`` samples of
    the categories ``cats``, or None (with a warning) when none has a validation split or a
    good sample there."""
    import itertools

    from pcad.calibration import DEFAULT_FALSE_ALARM_RATE, calibrate_detector

    rate = DEFAULT_FALSE_ALARM_RATE if false_alarm_rate is None else false_alarm_rate
    cal = None
    splits = [open_split(data, c, "validation", det) for c in cats
              if (Path(data) / c / "validation").is_dir()]
    if splits:
        cal = calibrate_detector(det, itertools.chain.from_iterable(splits), rate,
                                 progress=progress)
    if cal is None:
        where = Path(data) / cats[0] if len(cats) == 1 else f"{Path(data)} ({', '.join(cats)})"
        warnings.warn(PcadWarning(
            f"{where}: no validation/good samples, so no decision threshold "
            "is recorded (pcad predict reports raw scores and no ok/defect decision; make the "
            "dataset with a validation split, e.g. pcad make-dataset --validation N)"),
            stacklevel=3)
    return cal


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


def check_test_set(test: MVTec3DDataset) -> None:
    """Check a test split before anything is predicted.

    Errors (InvalidInputError naming the split): no good or no defective sample (I-AUROC is
    undefined), no anomalous pixel in any gt mask (P-AUROC and AUPRO are). Warnings
    (:class:`~pcad.errors.PcadWarning`, one per kind naming the files): gt masks with several
    foreground values (:func:`pcad.data._files.gt_levels_note`: every value > 0 counts as
    anomalous, e.g. soft edges), gt masks marking more than
    :data:`~pcad.data._files.MOSTLY_ANOMALOUS` of their pixels (an inverted mask?). Reads the
    gt files only. (A defective sample without gt is already an error when the split is
    opened.)
    """
    from pcad.data._files import MOSTLY_ANOMALOUS, gt_levels_note, read_gt_levels

    where = getattr(test, "split_dir", "test set")
    labels = [e.label for e in test.entries]
    if 0 not in labels or 1 not in labels:
        missing = "good" if 0 not in labels else "defective"
        raise InvalidInputError(
            f"{where}: no {missing} test sample ({len(labels)} samples); I-AUROC needs good "
            "and defective samples")
    odd, mostly, n_anomalous = [], [], 0
    for e in test.entries:
        if e.gt is None:
            continue
        levels = read_gt_levels(e.gt)
        note = gt_levels_note(levels)
        if note is not None:
            odd.append(f"{e.gt} ({note})")
        frac = float(np.count_nonzero(levels > 0)) / max(levels.size, 1)
        n_anomalous += int(e.label == 1 and frac > 0)
        if frac > MOSTLY_ANOMALOUS:
            mostly.append(f"{e.gt} ({100 * frac:.0f}%)")
    if n_anomalous == 0:
        raise InvalidInputError(
            f"{where}: no gt mask of a defective sample marks an anomalous pixel (every value "
            "is 0); P-AUROC and AUPRO need some")
    if odd:
        warnings.warn(PcadWarning(
            f"{len(odd)} gt mask(s) hold several foreground values, not just 0 and one "
            f"value (or MVTec's 253-255): {_listing(odd)}; every value > 0 counts as "
            "anomalous"), stacklevel=3)
    if mostly:
        warnings.warn(PcadWarning(
            f"{len(mostly)} gt mask(s) mark more than {100 * MOSTLY_ANOMALOUS:.0f}% of their "
            f"pixels anomalous (inverted, 255 = normal?): {_listing(mostly)}"), stacklevel=3)


#: the staging folders of :func:`_stage_folder` and :func:`_replace_folder`
_STAGE_NAME = re.compile(r"^\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]+(\.old)?\.tmp$")


def remove_dead_stages(folder: Path) -> list[Path]:
    """Delete the staging folders (``.<name>.<pid>.<random>[.old].tmp``) that an evaluation
    killed before it finished left in ``folder``; those of a process still alive on this host
    are kept. Returns the folders removed.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     mine = Path(tmp) / f".eval.{os.getpid()}.abc.tmp"
        ...     mine.mkdir()
        ...     remove_dead_stages(Path(tmp)), mine.is_dir()
        ([], True)
    """
    from pcad.io.lock import process_alive

    removed = []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.glob(".*.tmp")):
        m = _STAGE_NAME.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and not process_alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _stage_folder(folder: Path, name: str = ".eval") -> Path:
    """A new hidden folder ``<name>.<pid>.<random>.tmp`` inside ``folder`` (created with its
    parents): results are staged on the file system they end on, so they move by rename.
    Staging folders of evaluations that were killed are removed first."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_dead_stages(folder)
    return Path(tempfile.mkdtemp(prefix=f"{name}.{os.getpid()}.", suffix=".tmp", dir=folder))


def _replace_folder(staged: Path, final: Path) -> None:
    """Put the folder ``staged`` at ``final``, removing what was there (moved aside first)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        final.unlink()
    elif final.exists():  # renamed onto a new empty folder: rename(2) allows that
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".old.tmp",
                                    dir=final.parent))
        os.replace(final, old)
    shutil.move(os.fspath(staged), os.fspath(final))
    if old is not None:
        remove_path(old)




def evaluate_run(data: str | os.PathLike[str], category: str, run: str | os.PathLike[str],
                 out: str | os.PathLike[str], progress: bool = True,
                 write_maps: bool = True,
                 maps_root: str | os.PathLike[str] | None = None,
                 device: str | None = None) -> dict[str, Any]:
    """Score every test sample of the category with the run's detector; write the results.

    ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``): where the detector computes,
    whatever device it was trained on; None: the run's own ``device`` option.

    ``maps_root`` (default ``out/maps``) lets several categories share one maps tree; the
    category's folder there (``<maps_root>/<category>``) is replaced as a whole. With
    ``write_maps=False`` no map is written, and stale maps of the category in ``out/maps``
    are removed (``maps_root`` is left alone).

    The run, ``out`` and the test set (:func:`check_test_set`) are checked before the first
    prediction; the results are written as one unit (module docstring).
    """
    from pcad.detectors import load_detector

    det = load_detector(run, device=device)
    test = open_split(data, category, "test", det)
    out = check_out_folder(out)
    for name in ("metrics.json", "scores.csv"):
        if (out / name).is_dir():
            raise InvalidInputError(f"--out: {out / name} is a folder; the results need that "
                                    "name (choose another --out)")
    maps_dir = check_out_folder(out / "maps") if maps_root is None \
        else check_out_folder(maps_root, "maps_root")
    warn_incomplete_dataset(data)
    warn_category_mismatch(run, category)
    check_test_set(test)
    created = not out.exists()
    stage, maps_stage, done = _stage_folder(out), None, False
    try:
        if write_maps:
            maps_stage = stage / "maps" if maps_root is None \
                else _stage_folder(maps_dir, f".{category}")
        metrics = _evaluate_into(det, data, category, run, test, stage, maps_stage, progress)
        _commit(stage, out, maps_stage, maps_dir / category,
                drop_maps=not write_maps and maps_root is None)
        done = True
    finally:
        for folder in (stage, maps_stage):
            if folder is not None:
                remove_path(folder)
        if created and not done:  # a failed evaluation into a new folder leaves none
            with contextlib.suppress(OSError):
                out.rmdir()
    return metrics


def _commit(stage: Path, out: Path, maps_stage: Path | None, maps_final: Path,
            drop_maps: bool) -> None:
    """Move the staged results into ``out``: the old ``metrics.json`` out first, then the maps,
    ``scores.csv``, and the new ``metrics.json`` last."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)  # no results until the new ones are whole
    if maps_stage is not None and maps_stage.is_dir():
        _replace_folder(maps_stage, maps_final)
    elif maps_stage is not None or drop_maps:
        remove_path(maps_final)
    os.replace(stage / "scores.csv", out / "scores.csv")
    os.replace(stage / "metrics.json", out / "metrics.json")


def _at_threshold(run: str | os.PathLike[str], scores: list[float],
                  labels: list[int]) -> dict[str, Any] | None:
    """``metrics.json``'s ``at_threshold``: the confusion counts (TP/FP/TN/FN, precision,
    recall) at the run's calibrated threshold
    (:func:`pcad.calibration.confusion_at_threshold`) and the false-alarm rate it was chosen
    for; None for a run without a calibration."""
    from pcad.calibration import confusion_at_threshold, read_calibration

    cal = read_calibration(run)
    if cal is None:
        return None
    return {**confusion_at_threshold(scores, labels, cal.threshold),
            "calibrated_false_alarm_rate": cal.false_alarm_rate}


def _evaluate_into(det: Any, data: str | os.PathLike[str], category: str,
                   run: str | os.PathLike[str], test: MVTec3DDataset, stage: Path,
                   maps_stage: Path | None, progress: bool) -> dict[str, Any]:
    """Predict every test sample, write the maps to ``maps_stage`` (``<defect>/<stem>.tiff``
    under ``test/``), ``scores.csv`` and ``metrics.json`` to ``stage``; return the metrics."""
    from tqdm import tqdm

    from pcad.metrics import PixelRanking, evaluate

    scores, labels, maps, masks, rows, empty = [], [], [], [], [], []
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
        if sample.xyz is not None and not valid_pixels(sample.xyz).any():
            empty.append(str(sample.paths.get("xyz")))
        if maps_stage is not None:
            _write_map(maps_stage / "test" / sample.defect / f"{sample.stem}.tiff", amap)
    if empty:
        warnings.warn(PcadWarning(
            f"test set: {len(empty)} of {len(test)} xyz files have no measured pixel (all "
            f"(0, 0, 0)): {_listing(empty)}; their scores and maps mean nothing"),
            stacklevel=3)
    ranking = PixelRanking(maps, masks)  # one sort of all pixels, shared by every subset
    metrics = evaluate(scores, labels, maps, masks, ranking=ranking)
    metrics.update(defect_breakdown(scores, labels, maps, masks, [r[2] for r in rows],
                                    det.config.get("holdout_defects") or (), ranking=ranking))
    metrics.update(detector=det.name, category=category, data_root=str(Path(data).resolve()),
                   run=str(Path(run).resolve()), n_test=len(test),
                   latency_ms_per_sample=1000.0 * elapsed / max(len(test), 1),
                   peak_rss_mb=_peak_rss_mb())
    metrics["at_threshold"] = _at_threshold(run, scores, labels)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "category", "defect", "label", "score"])
    writer.writerows(rows)
    with atomic_write(stage / "scores.csv", "w") as fh:
        fh.write(buf.getvalue())
    with atomic_write(stage / "metrics.json", "w") as fh:
        json.dump(metrics, fh, indent=2)
    return metrics
