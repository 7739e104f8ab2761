"""Unified (multi-class) runs: one model trained on several categories, evaluated on each.

``pcad train --categories all|A B ...`` fits one detector on the training samples of every
listed category (:func:`pcad.engine.train` with a list); ``pcad eval --categories ...``
evaluates each category with that one model (:func:`evaluate_categories`) and writes::

    <out>/metrics.json            the means over categories (i_auroc, p_auroc, aupro {limit},
                                  ViTAD's i_ap ... aupro_0.3 and mad, n_test summed), then
                                  detector, run, data_root, categories and per_category
                                  (each category's whole metrics.json object)
    <out>/scores.csv              every category's test scores
    <out>/<category>/metrics.json, scores.csv   the category's own evaluation
    <out>/maps/<category>/test/<defect>/NNN.tiff

Example:
    >>> import pathlib, tempfile
    >>> from synth.dataset import DatasetConfig, generate
    >>> from pcad.multiclass import resolve_categories
    >>> tmp = tempfile.TemporaryDirectory()
    >>> data = pathlib.Path(tmp.name)
    >>> for cat in ("plate", "gear"):
    ...     (data / cat / "train" / "good").mkdir(parents=True)
    >>> resolve_categories(data, ["all"]), resolve_categories(data, ["plate"])
    (['gear', 'plate'], ['plate'])
    >>> tmp.cleanup()
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pcad.errors import InvalidInputError, PcadWarning

#: the name that selects every category of a dataset
ALL = "all"


def resolve_categories(data: str | os.PathLike[str], categories: Sequence[str]) -> list[str]:
    """The category names ``categories`` stands for: ``["all"]`` every category under
    ``data`` (sorted), else the names given (duplicates dropped, order kept).

    Raises:
        InvalidInputError: no name, or a name that is not a category of ``data`` (the message
            lists those that exist).
    """
    from pcad.data import list_categories

    names = list(dict.fromkeys(str(c) for c in categories))
    if not names:
        raise InvalidInputError("--categories: give at least one category name, or all")
    found = list_categories(data)
    if names == [ALL]:
        if not found:
            raise InvalidInputError(f"--categories all: {data} holds no category")
        return found
    missing = [c for c in names if c not in found]
    if missing:
        raise InvalidInputError(
            f"--categories: {', '.join(missing)} not in {data}; categories there: "
            f"{', '.join(found) if found else '(none)'} (or all)")
    return names


def warn_mixed_sizes(samples: Mapping[str, Sequence[Any]], config: Mapping[str, Any]) -> None:
    """One :class:`~pcad.errors.PcadWarning` when the categories' samples (``{category:
    samples}``, each sample with a ``shape`` ``(H, W)``) do not all have one image size: every
    image is resized to the model's input size (``config["image_size"]``)."""
    sizes: dict[str, list[str]] = {}
    for cat, items in samples.items():
        shapes = sorted({tuple(s.shape) for s in items if len(getattr(s, "shape", ())) == 2})
        sizes[cat] = [f"{h}x{w}" for h, w in shapes]
    if len({sz for v in sizes.values() for sz in v}) > 1:
        size = config.get("image_size")
        to = f"{size}x{size}" if isinstance(size, int) else "the model's input size"
        listing = "; ".join(f"{c} {', '.join(v)}" for c, v in sizes.items())
        warnings.warn(PcadWarning(
            f"unified run: the categories have different image sizes ({listing}); every "
            f"image is resized to {to}"), stacklevel=3)


def evaluate_categories(data: str | os.PathLike[str], categories: Sequence[str],
                        run: str | os.PathLike[str], out: str | os.PathLike[str],
                        progress: bool = True, write_maps: bool = True,
                        device: str | None = None) -> dict[str, Any]:
    """Evaluate the run on every category of ``categories`` (``["all"]`` or names,
    :func:`resolve_categories`) with :func:`pcad.engine.evaluate_run`; write the layout of the
    module docstring into ``out`` and return the top-level object.

    The categories and their test sets are checked before the first prediction; everything
    is staged in a hidden folder beside ``out`` and moved in (``metrics.json`` last) only when
    every category is done, so a failure leaves ``out`` as it was.
    """
    from pcad.checks import check_out_folder
    from pcad.detectors import load_detector
    from pcad.engine import check_test_set, evaluate_run, open_split
    from pcad.io import atomic_write
    from pcad.metrics import mean_metrics

    cats = resolve_categories(data, categories)
    out = check_out_folder(out)
    det = load_detector(run, device=device)
    for cat in cats:  # before the long work: every test set can be evaluated
        check_test_set(open_split(data, cat, "test", det))
    del det
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp",
                                  dir=out.parent))
    try:
        blocks, rows = {}, []
        for cat in cats:
            blocks[cat] = evaluate_run(data, cat, run, stage / cat, progress=progress,
                                       write_maps=write_maps, maps_root=stage / "maps",
                                       device=device)
            with open(stage / cat / "scores.csv", newline="") as fh:
                rows += list(csv.reader(fh))[1:]
        first = blocks[cats[0]]
        top = {**mean_metrics(blocks), "latency_ms_per_sample": sum(
            b["latency_ms_per_sample"] for b in blocks.values()) / len(blocks),
            "detector": first.get("detector"), "run": first.get("run"),
            "data_root": first.get("data_root"), "categories": cats, "per_category": blocks}
        with atomic_write(stage / "scores.csv", "w") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "category", "defect", "label", "score"])
            writer.writerows(rows)
        with atomic_write(stage / "metrics.json", "w") as fh:
            json.dump(top, fh, indent=2)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").unlink(missing_ok=True)  # no results until the new ones are whole
        for item in sorted(stage.iterdir(), key=lambda p: p.name == "metrics.json"):
            target = out / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(item, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return top
