"""Inference time per sample of the unified detectors against btf's, measured side by side in
one process (issue 14's target: ``vitad``, ``uniad`` and ``onenip`` at most btf's time per
sample).

Workload: two built-in categories (``gear``, ``plate``) as the demo set has them: 30 good
training samples each, 224 x 224, seed 0; the test set 4 good and 2 of each of the six
default defect types per category (16 per category). Each detector (``btf`` and those of
:data:`DETECTORS` that are registered; ``PCAD_BENCH_DETECTORS`` chooses) is fitted twice: on
``gear`` alone (``per category``, evaluated on gear's test set) and on both (``unified``, one
model, evaluated on both test sets). It keeps its defaults except ``epochs=1`` for the learned
ones: the number of epochs changes the weights, not the work of a prediction (the calibration
and standardisation are fitted as by default). Then every test sample is predicted once, one
at a time (:meth:`~pcad.detectors.base.Detector.predict`, what ``pcad eval`` times: the
backbone, the point features, the network or bank search, the map), after one warm-up
prediction that is not counted; the value is the mean milliseconds per sample.
``PCAD_BENCH_THREADS`` torch threads (default 2: the issue's two cores). Nothing else should
run meanwhile. ``PCAD_BENCH_DATA=DIR`` keeps the rendered dataset.
``--quick``: 96 px, 4 training samples, 1 good and 1 defective test sample per category.

Rows: per (detector, setting) ``ms/sample`` with ``ratio`` = btf's ms / the detector's (1 or
more meets the target; btf's own row has 1), ``fit_s`` in the JSON.

``run(quick)`` returns the rows that ``benchmarks/run.py`` prints and saves.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_unified import selected  # noqa: E402
from runlog import data_root  # noqa: E402

REFERENCE = "btf"
DETECTORS = ("vitad", "uniad", "onenip")
CATEGORIES = ("gear", "plate")
FULL = {"train": 30, "validation": 1, "test_good": 4, "test_defect": 2, "size": (224, 224)}
QUICK = {"train": 4, "validation": 1, "test_good": 1, "test_defect": 1, "size": (96, 96)}
SETTINGS = {"per category": CATEGORIES[:1], "unified": CATEGORIES}


def _options(name: str, quick: bool) -> dict[str, Any]:
    """The options a detector is fitted with here: one epoch for the learned ones."""
    from pcad.detectors.registry import detector_info

    opts: dict[str, Any] = {}
    if "epochs" in detector_info(name).obj.defaults:  # the class's, no detector built
        opts["epochs"] = 1
    if quick:
        opts["image_size"] = 96
    return opts


def predict_ms(det: Any, samples: list[Any]) -> float:
    """Mean milliseconds of ``det.predict`` over ``samples`` (one warm-up call first).

    >>> class Slow:
    ...     def predict(self, s):
    ...         time.sleep(0.01)
    >>> predict_ms(Slow(), [0, 1]) >= 10.0
    True
    """
    det.predict(samples[0])
    t0 = time.perf_counter()
    for s in samples:
        det.predict(s)
    return 1000.0 * (time.perf_counter() - t0) / len(samples)


def _measure(data: str, name: str, cats: tuple[str, ...], work: Path, quick: bool
             ) -> dict[str, float]:
    from pcad.engine import open_split, train

    t0 = time.perf_counter()
    det = train(data, list(cats) if len(cats) > 1 else cats[0], name, work, _options(name, quick),
                progress=False)
    fit_s = time.perf_counter() - t0
    samples = [s for c in cats for s in open_split(data, c, "test", det)]
    return {"ms": predict_ms(det, samples), "fit_s": fit_s, "n": len(samples)}


def run(quick: bool) -> list[dict]:
    import torch

    from pcad.detectors import list_detectors
    from synth.dataset import DatasetConfig, generate

    names = [REFERENCE] + [d for d in selected(DETECTORS, "PCAD_BENCH_DETECTORS",
                                               list_detectors()) if d != REFERENCE]
    threads = int(os.environ.get("PCAD_BENCH_THREADS", "2"))
    before = torch.get_num_threads()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = data_root(Path(tmp) / "data") / ("inference-quick" if quick else "inference")
        generate(DatasetConfig(categories=CATEGORIES, seed=0, **(QUICK if quick else FULL)),
                 root, workers=2, progress=False)
        torch.set_num_threads(threads)  # after the generator (numba resets the count)
        try:
            for setting, cats in SETTINGS.items():
                ref = None
                for name in names:
                    m = _measure(str(root), name, cats, Path(tmp) / "runs" / setting / name,
                                 quick)
                    ref = m["ms"] if name == REFERENCE else ref
                    rows.append({"benchmark": "inference time",
                                 "case": f"{name}, {setting} ({'+'.join(cats)}), "
                                         f"{m['n']} test samples, {threads} threads",
                                 "value": m["ms"], "unit": "ms/sample",
                                 "reference": f"{REFERENCE} {ref:.0f} ms",
                                 "ratio": ref / m["ms"], "fit_s": m["fit_s"],
                                 "detector": name, "setting": setting})
        finally:
            torch.set_num_threads(before)
    return rows


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=1))
