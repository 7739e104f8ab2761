"""The detector contract: :class:`Detector`, its run folder (:data:`RUN_FILE`), its capabilities.

A detector is fitted on good samples and maps a test sample to an image score and an anomaly
map at the sample's own resolution:

    det.fit(train_samples); score, amap = det.predict(sample)   # amap: (H, W) float32

Samples are :class:`pcad.data.Sample` objects (``rgb (H, W, 3) uint8`` and/or
``xyz (H, W, 3) float32``). A detector declares, as class attributes, what the engine needs to
know about it:

- ``modalities``: the inputs it needs (``"rgb"``, ``"xyz"``); a sample without one of them is a
  clear error;
- ``supports_distributed``: it trains under ``torchrun`` (:mod:`pcad.distributed`);
- ``needs_defect_source``: it trains on synthetic defects made by a defect source that
  :func:`pcad.engine.train` builds from ``synth`` (``synthsup``).

:func:`upsample_map` turns a patch-score grid into a map at the sample's resolution.

Example:
    >>> from pcad.detectors.base import Detector
    >>> Detector.supports_distributed, Detector.needs_defect_source, Detector.modalities
    (False, False, ())
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from pcad.errors import InvalidInputError
from pcad.io import atomic_write

__all__ = ["MODALITY_NAMES", "RUN_FILE", "Detector", "upsample_map"]

MODALITY_NAMES = {"rgb": "RGB images", "xyz": "organized point clouds (xyz)"}
#: the record of a saved run (written last by :meth:`Detector.save`)
RUN_FILE = "detector.json"


class Detector:
    """Base class: configuration, modality checks, persistence, capabilities.

    Subclasses set :attr:`name` (by :func:`~pcad.detectors.registry.register_detector`),
    :attr:`modalities`, :attr:`defaults` (every option with its default) and the capability
    flags, and implement ``fit``, ``predict`` and the ``_save_state`` / ``_load_state`` pair.
    """

    name: ClassVar[str] = "base"
    #: the inputs a sample must have (``"rgb"``, ``"xyz"``)
    modalities: ClassVar[tuple[str, ...]] = ()
    #: every option and its default (an unknown option is an error)
    defaults: ClassVar[dict[str, Any]] = {}
    #: trains under torchrun: sharded features, data-parallel steps (pcad.distributed)
    supports_distributed: ClassVar[bool] = False
    #: ``fit`` needs a defect source (``fit(samples, defect_source=...)``; pcad train builds
    #: one from synth)
    needs_defect_source: ClassVar[bool] = False

    def __init__(self, **config: Any) -> None:
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise InvalidInputError(f"detector {self.name!r}: unknown option(s) {unknown}; "
                                    f"accepted: {sorted(self.defaults)}")
        # paths as strings, so that the config can be saved as JSON
        config = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in config.items()}
        self.config: dict[str, Any] = {**self.defaults, **config}
        self.fitted = False

    # --- checks ---------------------------------------------------------------------------

    def check_sample(self, sample: Any, where: str) -> None:
        """Raise when ``sample`` lacks a modality this detector needs."""
        for m in self.modalities:
            if getattr(sample, m, None) is None:
                path = getattr(sample, "path", None)
                raise InvalidInputError(
                    f"{where}: detector {self.name!r} needs {MODALITY_NAMES[m]}, but sample "
                    f"{path or '?'} has none (an RGB-only dataset works with patchcore-rgb)")

    def _train_list(self, samples: Iterable[Any]) -> list[Any]:
        items = list(samples)
        if not items:
            raise InvalidInputError(f"detector {self.name!r}: the training set is empty")
        for s in items:
            self.check_sample(s, "training set")
        return items

    # --- interface ------------------------------------------------------------------------

    def fit(self, samples: Iterable[Any], progress: bool = False) -> Detector:  # pragma: no cover
        raise NotImplementedError

    def predict(self, sample: Any) -> tuple[float, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _require_fit(self) -> None:
        if not self.fitted:
            raise InvalidInputError(f"detector {self.name!r}: call fit() (or load a run) first")

    # --- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted detector into the folder ``path`` (record written last)."""
        self._require_fit()
        try:  # serialize first: nothing is written for a config that cannot be saved
            text = json.dumps({"detector": self.name, "config": self.config,
                               "state": self._state_record()}, indent=2)
        except TypeError as exc:
            bad = [k for k, v in self.config.items() if not isinstance(
                v, (str, int, float, bool, type(None), list, dict))]
            raise InvalidInputError(
                f"detector {self.name!r}: option(s) {bad} cannot be saved ({exc}); pass "
                "weights as a file path to save the run") from None
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_state(folder)
        with atomic_write(folder / RUN_FILE, "w") as fh:
            fh.write(text)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Detector:
        """The run saved by :meth:`save` in the folder ``path`` (made by this class)."""
        folder = Path(path)
        record = json.loads((folder / RUN_FILE).read_text())
        if record.get("detector") != cls.name:
            raise InvalidInputError(f"{folder}: a run of detector {record.get('detector')!r}, "
                                    f"not {cls.name!r}")
        det = cls(**record["config"])
        det._load_state(folder, record.get("state", {}))
        det.fitted = True
        return det

    def _save_state(self, folder: Path) -> None:  # pragma: no cover
        raise NotImplementedError

    def _state_record(self) -> dict[str, Any]:
        return {}

    def _load_state(self, folder: Path, state: dict[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError


def upsample_map(patch_scores: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A ``(h, w)`` patch-score grid to an ``(H, W) float32`` map: bilinear + Gaussian blur
    (PatchCore's ``sigma = 4`` at 224 pixels, scaled to the output size).

    Example:
        >>> import numpy as np
        >>> upsample_map(np.ones((4, 4)), (30, 40), sigma=4.0).shape
        (30, 40)
    """
    t = torch.from_numpy(np.ascontiguousarray(patch_scores, dtype=np.float32))[None, None]
    up = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    if sigma > 0:
        up = gaussian_filter(up, sigma=sigma * max(shape) / 224.0, mode="nearest")
    return up.astype(np.float32)
