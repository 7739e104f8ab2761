"""Inference time of each detector's head on the same frozen features (issue 15: ``pbas`` must be
the fastest detector at inference on the same features).

The detectors that score pcad's shared stride-8 patch grid
(:class:`~pcad.detectors.patches.MultimodalFeatures`: EfficientNet-Lite0 for RGB, FPFH for
points) pay the same feature extraction per sample; what differs is what they do with the
features. Here every detector is fitted on one dataset (the built-in ``gear``, seed 0, 224 x
224, 8 good training samples, 4 good and 1 of each default defect type in the test set; a
detector that trains a network trains ``epochs=2``, which does not change its inference), then
its extractor is replaced by :class:`CachedFeatures`, which returns the features computed once
per test sample, the part mask (the background-plane fit) is given the same way
(:func:`cached_foregrounds`), and ``predict`` is timed on the test set (``predict_ms``: the
best of ``repeats`` passes, one torch thread). What every one of them then does besides its
head, the map's upsampling and blur and its maximum over the part, is timed alone
(``post-processing``) and taken off: ``value`` is the head's milliseconds per sample,
``ratio`` against ``pbas``'s in the same run. The ``features`` row is the extraction every
one of them adds per sample (RGB backbone, FPFH, foreground).

``hetnet`` runs its second teacher (EfficientNet-Lite2) inside its head, so its time includes
that network; ``onenip`` is left out by default (its fit synthesizes and extracts four defective
variants per training sample, minutes per part): ``PCAD_BENCH_DETECTORS=onenip,pbas`` adds it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH = "heads"
REFERENCE = "pbas"
#: detectors on the shared patch grid, in the table's order
DETECTORS = ("pbas", "prototypes-ot", "fader", "uniad", "vitad", "hetnet", "m3dm", "lsfa")
FULL = {"train": 8, "validation": 0, "test_good": 4, "test_defect": 1, "size": (224, 224)}
QUICK = {"train": 4, "validation": 0, "test_good": 1, "test_defect": 1, "size": (64, 64)}


class CachedFeatures:
    """A :class:`~pcad.detectors.patches.MultimodalFeatures` stand-in that computes each
    sample's features once (keyed by the sample object) and then returns them: what a head
    costs without the extraction.

    >>> class Fake:
    ...     calls = 0
    ...     grid = (2, 2)
    ...     def __call__(self, sample, where="sample", foreground=None):
    ...         Fake.calls += 1
    ...         return ("rgb", "pts", "fg")
    >>> cached, s = CachedFeatures(Fake()), object()
    >>> cached(s) == cached(s, "test sample"), Fake.calls, cached.grid
    (True, 1, (2, 2))
    """

    def __init__(self, inner: Any) -> None:
        self.__dict__["_inner"] = inner
        self.__dict__["_memo"] = {}

    def _get(self, kind: str, obj: Any, make: Any) -> Any:
        memo, key = self.__dict__["_memo"], (kind, id(obj))
        if key not in memo:
            memo[key] = (obj, make())  # the object stays alive: its id is not reused
        return memo[key][1]

    def __call__(self, sample: Any, where: str = "sample", foreground: Any = None) -> Any:
        return self._get("all", sample, lambda: self._inner(sample, where, foreground))

    def batch(self, samples: Any, where: str = "sample", foregrounds: Any = None) -> list:
        fores = list(foregrounds) if foregrounds is not None else [None] * len(samples)
        return [self(s, where, f) for s, f in zip(samples, fores, strict=True)]

    def rgb(self, image: Any) -> Any:
        return self._get("rgb", image, lambda: self._inner.rgb(image))

    def points_checked(self, sample: Any, where: str, foreground: Any = None) -> Any:
        return self._get("pts", sample,
                         lambda: self._inner.points_checked(sample, where, foreground))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_inner"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__dict__["_inner"], name, value)


def selected_detectors() -> list[str]:
    """:data:`DETECTORS` among the registered ones, or ``$PCAD_BENCH_DETECTORS`` (comma list;
    an unknown name is a ValueError); the reference ``pbas`` is always measured."""
    from pcad.detectors import list_detectors

    names = list_detectors()
    only = os.environ.get("PCAD_BENCH_DETECTORS")
    wanted = ([n.strip() for n in only.split(",") if n.strip()] if only
              else [n for n in DETECTORS if n in names])
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ValueError(f"PCAD_BENCH_DETECTORS: unknown detector(s) {unknown}; known: {names}")
    return [REFERENCE] + [n for n in wanted if n != REFERENCE]


def cache_features(det: Any) -> None:
    """Replace ``det``'s patch-grid extractor by a :class:`CachedFeatures` of it."""
    for attr in ("_features", "features"):
        inner = det.__dict__.get(attr)
        if inner is not None and not isinstance(inner, CachedFeatures):
            det.__dict__[attr] = CachedFeatures(inner)
            return
    raise TypeError(f"detector {det.name!r} has no shared patch-grid extractor")


@contextlib.contextmanager
def cached_foregrounds():
    """Within the block, the detectors' ``SampleForeground(xyz, size)`` returns one object
    per cloud and size (its background-plane fit done once): the part mask every
    ``predict`` needs is then given, like the features."""
    import pcad.detectors.multimodal as multimodal
    import pcad.detectors.tokens as tokens
    from pcad.detectors.patches import SampleForeground

    memo: dict[tuple[int, Any], tuple[Any, Any]] = {}

    def made(xyz: Any, image_size: Any = None) -> Any:
        key = (id(xyz), image_size)
        if key not in memo:
            memo[key] = (xyz, SampleForeground(xyz, image_size))
        return memo[key][1]

    with mock.patch.object(tokens, "SampleForeground", made), \
            mock.patch.object(multimodal, "SampleForeground", made):
        yield


def head_ms(det: Any, samples: list, repeats: int) -> float:
    """Milliseconds per sample of ``det.predict`` with the features and the part mask given:
    the best of ``repeats`` timed passes after one pass that fills the caches."""
    cache_features(det)
    with cached_foregrounds():
        for s in samples:
            det.predict(s)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for s in samples:
                det.predict(s)
            best = min(best, (time.perf_counter() - t0) / len(samples))
    return best * 1e3


def post_ms(samples: list, image_size: int, repeats: int, sigma: float = 4.0) -> float:
    """Milliseconds per sample of what every patch-grid ``predict`` does besides its head,
    the part mask given: the map's upsampling and blur and the maximum over the part."""
    import numpy as np

    from pcad.detectors.base import upsample_map
    from pcad.detectors.patches import SampleForeground, foreground_max

    grid = np.zeros((image_size // 8, image_size // 8), np.float32)
    fores = [SampleForeground(s.xyz, image_size) for s in samples]
    for fore in fores:
        fore.part()  # the mask given, as in head_ms
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s, fore in zip(samples, fores, strict=True):
            foreground_max(upsample_map(grid, s.shape, sigma), s.xyz, foreground=fore)
        best = min(best, (time.perf_counter() - t0) / len(samples))
    return best * 1e3


def feature_ms(samples: list, image_size: int) -> float:
    """Milliseconds per sample of the shared extraction (RGB backbone + FPFH + foreground)."""
    from pcad.detectors.patches import FPFH_NEIGHBOURS, MultimodalFeatures

    # the learned heads' extraction (tokens.ModalityPatchesMixin: BTF's FPFH neighbours)
    feats = MultimodalFeatures("heads", image_size=image_size, fpfh_neighbours=FPFH_NEIGHBOURS)
    feats(samples[0])  # the backbone is built on first use
    t0 = time.perf_counter()
    for s in samples:
        feats(s)
    return (time.perf_counter() - t0) / len(samples) * 1e3


def run(quick: bool) -> list[dict]:
    import torch

    from pcad.detectors import create_detector
    from pcad.engine import open_split
    from synth.dataset import DatasetConfig, generate

    counts = QUICK if quick else FULL
    size = counts["size"][0]
    repeats = 1 if quick else 5
    torch.set_num_threads(1)
    rows: list[dict] = []
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate(DatasetConfig(categories=("gear",), seed=0, **counts), str(root), workers=1,
                 progress=False)
        for name in selected_detectors():
            det = create_detector(name, image_size=size)
            if "epochs" in det.config:  # inference does not depend on it
                det = create_detector(name, image_size=size, epochs=2)
            train = list(open_split(root, "gear", "train", det))
            test = list(open_split(root, "gear", "test", det))
            det.fit(train)
            times[name] = head_ms(det, test, repeats)
            print(f"  heads: {name}: {times[name]:.1f} ms/sample", flush=True)
        post = post_ms(test, size, repeats)
        feats = feature_ms(test, size)
    ref = max(times[REFERENCE] - post, 1e-3)
    for name, ms in times.items():
        head = max(ms - post, 1e-3)
        rows.append({"benchmark": BENCH, "case": f"{name} head", "value": head,
                     "unit": "ms/sample", "reference": ref, "ratio": head / ref,
                     "predict_ms": ms})
    for case, ms in (("post-processing", post), ("features", feats)):
        rows.append({"benchmark": BENCH, "case": case, "value": ms, "unit": "ms/sample",
                     "reference": None, "ratio": None})
    return rows


def render_table(rows: list[dict]) -> str:
    """The README table: per detector, ``predict`` ms/sample with the features given, the
    head's share (minus the shared post-processing) and its ratio to pbas's, fastest first;
    then the shared post-processing and feature extraction.

    >>> print(render_table([
    ...     {"benchmark": "heads", "case": "a head", "value": 2.0, "ratio": 2.0,
    ...      "predict_ms": 12.0},
    ...     {"benchmark": "heads", "case": "pbas head", "value": 1.0, "ratio": 1.0,
    ...      "predict_ms": 11.0},
    ...     {"benchmark": "heads", "case": "post-processing", "value": 10.0, "ratio": None},
    ...     {"benchmark": "heads", "case": "features", "value": 300.0, "ratio": None}]))
    | detector | predict ms/sample (features given) | head ms/sample | head vs pbas |
    |---|---|---|---|
    | pbas | 11.0 | 1.0 | 1.00 |
    | a | 12.0 | 2.0 | 2.00 |
    | (post-processing, every detector) | 10.0 | - | - |
    | (features, every detector) | 300.0 | - | - |
    """
    rows = [r for r in rows if r.get("benchmark") == BENCH]
    heads = sorted((r for r in rows if r["case"].endswith(" head")), key=lambda r: r["value"])
    lines = ["| detector | predict ms/sample (features given) | head ms/sample | head vs pbas |",
             "|---|---|---|---|"]
    lines += [f"| {r['case'][:-5]} | {r['predict_ms']:.1f} | {r['value']:.1f} | "
              f"{r['ratio']:.2f} |" for r in heads]
    lines += [f"| ({r['case']}, every detector) | {r['value']:.1f} | - | - |"
              for case in ("post-processing", "features") for r in rows if r["case"] == case]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from runlog import table_main

    return table_main(render_table, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
