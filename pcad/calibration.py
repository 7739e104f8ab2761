"""Decision thresholds calibrated on good validation samples, and normalized scores.

``pcad train`` scores the category's ``validation/good`` samples with the fitted detector and
records a :class:`Calibration` in the run's ``train.json`` (key ``"calibration"``):

- ``threshold``: the ``1 - false_alarm_rate`` quantile of the validation scores (numpy's
  linear interpolation): a sample is a ``defect`` when its raw score is **above** it, so about
  ``false_alarm_rate`` of good samples like the validation ones raise a false alarm (with few
  validation samples the quantile is close to their maximum);
- ``normalization``: the map from raw scores to ``[0, 1]`` (:meth:`Calibration.normalize`).

**The normalization is an algebraic sigmoid**, ``n(s) = 0.5 + 0.5 * z / (1 + |z|)`` with
``z = (s - threshold) / scale``, anchored at the validation scores: the threshold maps to
exactly 0.5 and the validation median to 0.1 (``scale = (threshold - median) / 4``). Why this
and not a piecewise-linear or a logistic map: raw scores are unbounded (0.4-1.4 on one run,
~100 on another), and a piecewise-linear map onto ``[0, 1]`` must clip somewhere, which ties
every score beyond the clip; a logistic is strictly increasing in theory but reaches 1.0 in
float64 about 37 scales above the threshold, and defects often score that far from a tight
validation distribution, so it would tie them too. The algebraic sigmoid approaches 0 and 1
only polynomially (``1 - n = 0.5 / (1 + z)``): it stays strictly increasing in float64 up to
``z ~ 1e15``, so rankings (hence I-AUROC) are unchanged, and it needs no maximum. When the
threshold equals the median (all validation scores equal, or one sample), ``scale`` falls
back to ``max(|threshold| * 0.05, 1e-12)``.

:func:`confusion_at_threshold` gives the confusion counts of labelled scores at a threshold
(what ``pcad eval`` reports beside the threshold-free metrics).

Example:
    >>> cal = Calibration.from_scores([1.0, 2.0, 3.0, 4.0, 5.0], false_alarm_rate=0.25)
    >>> cal.threshold, round(float(cal.normalize(cal.threshold)), 6)
    (4.0, 0.5)
    >>> round(float(cal.normalize(3.0)), 6)          # the validation median
    0.1
    >>> cal.decide([3.9, 4.0, 4.1])
    ['ok', 'ok', 'defect']
    >>> confusion_at_threshold([0.1, 0.9, 0.6, 0.2], [0, 1, 0, 1], 0.5)["fp"]
    1
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcad.errors import FileFormatError, InvalidInputError

__all__ = ["CALIBRATION_KEY", "DEFAULT_FALSE_ALARM_RATE", "MEDIAN_LEVEL", "Calibration",
           "check_false_alarm_rate", "confusion_at_threshold", "read_calibration"]

#: the false-alarm rate ``pcad train`` calibrates for unless told otherwise (1 %)
DEFAULT_FALSE_ALARM_RATE = 0.01
#: the normalized score the validation median maps to
MEDIAN_LEVEL = 0.1
#: the key of the calibration record in a run's ``train.json``
CALIBRATION_KEY = "calibration"
#: the run record that holds it (written by :func:`pcad.engine.train`)
TRAIN_RECORD = "train.json"


def check_false_alarm_rate(value: Any) -> float:
    """A false-alarm rate in ``(0, 1)`` as a float.

    Example:
        >>> check_false_alarm_rate("0.05")
        0.05
    """
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"false_alarm_rate: expected a number in (0, 1), got "
                                f"{value!r}") from None
    if not (0.0 < rate < 1.0):
        raise InvalidInputError(f"false_alarm_rate: expected a number in (0, 1) (0.01 = 1 % "
                                f"of good samples flagged), got {rate:g}")
    return rate


@dataclass(frozen=True)
class Calibration:
    """A run's decision threshold and score normalization (module docstring).

    Attributes:
        threshold: raw-score threshold; ``score > threshold`` is a defect.
        scale: the normalization's scale (> 0, raw-score units).
        false_alarm_rate: the rate the threshold was chosen for.
        n_validation: the good validation samples it was computed from.
        median: their median raw score.
    """

    threshold: float
    scale: float
    false_alarm_rate: float
    n_validation: int
    median: float

    @classmethod
    def from_scores(cls, scores: Any, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE
                    ) -> Calibration:
        """Calibrate on ``(N,)`` raw scores of good validation samples (N >= 1, finite)."""
        rate = check_false_alarm_rate(false_alarm_rate)
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.size == 0:
            raise InvalidInputError("validation scores: none to calibrate a threshold on")
        if not np.isfinite(s).all():
            raise InvalidInputError("validation scores: NaN or infinite values")
        threshold = float(np.quantile(s, 1.0 - rate))
        median = float(np.median(s))
        # n(median) = MEDIAN_LEVEL <=> |z| = (1 - 2 L) / (2 L) at the median (4 for L = 0.1)
        scale = (threshold - median) * 2.0 * MEDIAN_LEVEL / (1.0 - 2.0 * MEDIAN_LEVEL)
        if not scale > 0:
            scale = max(abs(threshold) * 0.05, 1e-12)
        return cls(threshold, float(scale), rate, int(s.size), median)

    def normalize(self, scores: Any) -> np.ndarray:
        """Raw scores (any shape) -> ``[0, 1]`` float64, ``threshold`` -> 0.5, strictly
        increasing (module docstring)."""
        z = (np.asarray(scores, dtype=np.float64) - self.threshold) / self.scale
        return 0.5 + 0.5 * z / (1.0 + np.abs(z))

    def decide(self, scores: Any) -> list[str]:
        """``"defect"`` where the raw score is above the threshold, else ``"ok"``."""
        return ["defect" if float(v) > self.threshold else "ok"
                for v in np.asarray(scores, dtype=np.float64).reshape(-1)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``train.json``'s ``calibration``)."""
        return {"threshold": self.threshold, "false_alarm_rate": self.false_alarm_rate,
                "n_validation": self.n_validation, "split": "validation/good",
                "normalization": {"kind": "algebraic-sigmoid", "center": self.threshold,
                                  "scale": self.scale, "median": self.median,
                                  "median_maps_to": MEDIAN_LEVEL}}

    @classmethod
    def from_dict(cls, record: Any, source: str = TRAIN_RECORD) -> Calibration:
        """The calibration of a ``to_dict`` record, checked (FileFormatError naming
        ``source``)."""
        try:
            norm = record["normalization"]
            values = (record["threshold"], norm["scale"], record["false_alarm_rate"],
                      record["n_validation"], norm["median"])
            if norm.get("kind") != "algebraic-sigmoid":
                raise ValueError(f"normalization kind {norm.get('kind')!r} (expected "
                                 "algebraic-sigmoid)")
            t, scale, rate, n, med = (float(v) for v in values)
            if not all(math.isfinite(v) for v in (t, scale, rate, med)) or scale <= 0:
                raise ValueError("non-finite value or non-positive scale")
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise FileFormatError(f"{source}: bad 'calibration' record ({exc})") from None
        return cls(t, scale, rate, int(n), med)


def read_calibration(run: str | os.PathLike[str]) -> Calibration | None:
    """The calibration recorded in ``run/train.json``, or None (no record, no validation
    split at training time, or a run saved by ``Detector.save`` alone).

    Raises:
        FileFormatError: a calibration record that is present but damaged.
    """
    path = Path(run) / TRAIN_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cal = record.get(CALIBRATION_KEY) if isinstance(record, dict) else None
    if cal is None:
        return None
    return Calibration.from_dict(cal, str(path))


def confusion_at_threshold(scores: Any, labels: Any, threshold: float) -> dict[str, Any]:
    """Confusion counts of ``(N,)`` raw scores with ``(N,)`` labels (1 = defect) when a
    score above ``threshold`` means defect.

    Returns:
        ``tp, fp, tn, fn`` (ints), ``precision`` and ``recall`` (None when undefined),
        ``false_alarm_rate`` (FP / good samples; None without good samples) and
        ``threshold``.

    Example:
        >>> c = confusion_at_threshold([0.1, 0.9, 0.6, 0.2], [0, 1, 0, 1], 0.5)
        >>> c["tp"], c["fp"], c["tn"], c["fn"], c["precision"], c["recall"]
        (1, 1, 1, 1, 0.5, 0.5)
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise InvalidInputError(f"scores and labels: {s.size} scores but {y.size} labels")
    pred = s > float(threshold)
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    tn, fn = int(np.sum(~pred & ~y)), int(np.sum(~pred & y))
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "false_alarm_rate": fp / (fp + tn) if fp + tn else None}


def calibrate_detector(det: Any, samples: Any, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
                       progress: bool = False) -> Calibration | None:
    """Score the good samples of ``samples`` (e.g. a validation split) with the fitted ``det``
    and calibrate on their scores; None when there is no good sample among them."""
    from tqdm import tqdm

    rate = check_false_alarm_rate(false_alarm_rate)
    scores = [det.predict(s)[0] for s in tqdm(samples, disable=not progress,
                                              desc="calibrate", unit="sample")
              if getattr(s, "label", 0) == 0]
    return Calibration.from_scores(scores, rate) if scores else None
