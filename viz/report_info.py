"""What a report says about each category: detector, data, sizes, and the decision threshold.

- :func:`display_path`: a path as a reader should see it (relative to the report, the working
  folder or the home folder; never a long absolute temporary path).
- :func:`run_threshold`: the calibrated threshold a training run records (``train.json``'s
  ``calibration``, written by ``pcad train``), or None: absent, unreadable or damaged records
  are tolerated (the report then falls back on the F1-optimal threshold).
- :func:`f1_optimal_threshold`: the threshold of the best image-level F1 of the scores.
- :func:`decision_counts`: TP/FP/TN/FN when ``score > threshold`` means defect.

Example:
    >>> t = f1_optimal_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    >>> 0.2 < t < 0.8, decision_counts([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], t)["fp"]
    (True, 0)
    >>> display_path("/somewhere/else/data/set", base="/somewhere/else/report")
    '../data/set'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Threshold:
    """A decision threshold on raw image scores (``score > value`` means defect)."""

    value: float
    kind: str  #: ``"calibrated"`` (from the run) or ``"F1-optimal"`` (from the test scores)
    false_alarm_rate: float | None = None  #: the target rate of a calibrated threshold
    n_validation: int | None = None  #: good validation samples it was calibrated on

    def describe(self) -> str:
        """One line, e.g. ``0.412 (calibrated on 5 good validation samples at 1 % false
        alarms)``."""
        if self.kind == "calibrated":
            extra = []
            if self.n_validation is not None:
                extra.append(f"on {self.n_validation} good validation samples")
            if self.false_alarm_rate is not None:
                extra.append(f"at {100 * self.false_alarm_rate:.3g} % false alarms")
            return f"{self.value:.4g} (calibrated{' ' if extra else ''}{' '.join(extra)})"
        return (f"{self.value:.4g} (F1-optimal on the test scores: the run records no "
                "calibrated threshold)")


def display_path(path: str | os.PathLike[str] | None,
                 base: str | os.PathLike[str] | None = None) -> str:
    """``path`` relative to ``base`` (at most two ``..``), else to the working folder, else to
    ``~``, else its last two components after ``…/``; ``"–"`` for None."""
    if path is None or str(path) == "":
        return "–"
    p = Path(os.path.abspath(path))
    if base is not None:
        rel = os.path.relpath(p, os.path.abspath(base))
        if rel.split(os.sep).count("..") <= 2 and os.path.commonpath(
                [str(p), os.path.abspath(base)]) != os.sep:
            return rel
    for root, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(p.relative_to(root))
        except ValueError:
            continue
    return "…/" + "/".join(p.parts[-2:])


def run_threshold(train_run: str | os.PathLike[str] | None) -> Threshold | None:
    """The calibrated threshold recorded in the training run ``train_run`` (``train.json``'s
    ``calibration``), or None when there is none or it cannot be read."""
    if train_run is None or not Path(train_run).is_dir():
        return None
    try:
        from pcad.calibration import read_calibration
    except ImportError:  # an older pcad without calibration
        return None
    try:
        cal = read_calibration(train_run)
    except Exception:  # noqa: BLE001 - a damaged record: the report falls back, it does not fail
        return None
    if cal is None or not np.isfinite(cal.threshold):
        return None
    return Threshold(float(cal.threshold), "calibrated", float(cal.false_alarm_rate),
                     int(cal.n_validation))


def f1_optimal_threshold(scores: Any, labels: Any) -> float | None:
    """The threshold (midway between two distinct scores) whose decisions ``score > t`` give
    the best image F1 on ``scores (N,)`` with ``labels (N,)``; None without an anomalous or
    without a finite score."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    if not y.any() or not len(s):
        return None
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]  # the last index of each run of equal scores
    f1 = 2 * tp / (tp + fp + y.sum())
    f1 = np.where(last, f1, -1.0)
    k = int(np.argmax(f1))
    below = s[k + 1] if k + 1 < len(s) else s[k] - max(abs(s[k]) * 1e-6, 1e-12)
    return float((s[k] + below) / 2)


def decision_counts(scores: Any, labels: Any, threshold: float) -> dict[str, int]:
    """``tp, fp, tn, fn`` of the decisions ``score > threshold`` (NaN scores count as
    ``defect``: a detector that cannot score an image does not accept it)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    pred = ~(s <= threshold)
    return {"tp": int(np.sum(pred & y)), "fp": int(np.sum(pred & ~y)),
            "tn": int(np.sum(~pred & ~y)), "fn": int(np.sum(~pred & y))}


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None (absent, unreadable, not an object)."""
    try:
        v = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return v if isinstance(v, dict) else None


def find_train_run(value: Any, *bases: Path) -> Path | None:
    """The training run folder named by an eval ``metrics.json``'s ``run`` (as written, or
    its last two components under each of ``bases``, e.g. a moved result tree)."""
    if not isinstance(value, str) or not value:
        return None
    p = Path(value)
    cands = [p] + [b / p for b in bases if not p.is_absolute()]
    cands += [b / Path(*p.parts[-2:]) for b in bases if len(p.parts) >= 2]
    return next((c for c in cands if (c / "train.json").is_file()
                 or (c / "detector.json").is_file()), None)
