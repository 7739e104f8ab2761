"""The result of applying a defect: points, exact ground truth, offsets and every parameter used.

Ground-truth rule (the mask is exactly this, and ``tests/test_defects.py`` checks it):

    a point is anomalous  <=>  ||offset|| >= threshold  or  it borders removed structure

where ``offset`` is the float32 displacement vector stored in :attr:`DefectResult.offsets`,
``threshold = gt_threshold * peak strength`` (both in ``params``; absolute units), and "borders
removed structure" means, for an unorganized cloud, lying within ``params["rim"]`` of a removed
point, and for an organized grid, being a pixel made invalid by the defect. Pixels that had no
measurement in the input are never anomalous.

Example:
    >>> import numpy as np
    >>> from synth.result import gt_rule
    >>> gt_rule(np.array([[0, 0, 0.2], [0, 0, 0.01]], np.float32), 0.05).tolist()
    [True, False]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: :meth:`DefectResult.degenerate`: a result with more than this share of its points anomalous
MAX_ANOMALOUS_SHARE = 0.5
#: :meth:`DefectResult.degenerate`: largest offset, as a share of the bounding-box diagonal
MAX_OFFSET_SHARE = 0.1


def gt_rule(offsets: np.ndarray, threshold: float) -> np.ndarray:
    """``(...,) bool``: displacement norm (float64 of the float32 offsets) >= ``threshold``."""
    norm = np.linalg.norm(np.asarray(offsets, np.float64), axis=-1)
    return norm >= threshold


@dataclass
class DefectResult:
    """Output of :func:`synth.apply_defect`.

    Unorganized input ``(N, 3)``: ``points (M, 3) float32`` with ``M = N - len(removed)`` (the
    removed points are dropped, the others keep their order), ``mask (M,) bool``,
    ``offsets (M, 3) float32``, ``normals (M, 3) float32``, ``removed (R,) int64`` indices into
    the *input* cloud.

    Organized input ``(H, W, 3)``: ``points (H, W, 3) float32`` (removed pixels set to zero),
    ``mask (H, W) bool``, ``offsets (H, W, 3)``, ``normals (H, W, 3)``, ``removed (R,) int64``
    flat pixel indices.

    ``params`` holds every parameter actually used, in relative and absolute units, plus the seed.
    """

    points: np.ndarray
    mask: np.ndarray
    offsets: np.ndarray
    normals: np.ndarray
    removed: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def organized(self) -> bool:
        """True when the result is an organized ``(H, W, 3)`` grid."""
        return self.points.ndim == 3

    @property
    def n_anomalous(self) -> int:
        """Number of anomalous points (pixels)."""
        return int(self.mask.sum())

    @property
    def max_offset(self) -> float:
        """Largest displacement norm, in the input's units."""
        if self.offsets.size == 0:
            return 0.0
        return float(np.linalg.norm(self.offsets.reshape(-1, 3).astype(np.float64), axis=1).max())

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: counts, largest offset, defect name and parameters."""
        n = int(self.params.get("n_valid", self.mask.size))
        return {
            "n_points": n,  # measured pixels for an organized grid
            "n_anomalous": self.n_anomalous,
            "n_removed": int(self.removed.size),
            "max_offset": self.max_offset,
            "defect": self.params.get("defect"),
            "params": self.params,
            "seed": self.params.get("seed"),
        }

    def degenerate(self) -> dict[str, str]:
        """Why the result is hardly a defect, ``{reason: message}`` (empty when it is one):
        ``"most_anomalous"`` more than
        :data:`MAX_ANOMALOUS_SHARE` of the points anomalous, ``"large_offset"`` an offset
        larger than :data:`MAX_OFFSET_SHARE` of the bounding-box diagonal (``params["diag"]``),
        or ``"none_anomalous"`` no anomalous point. ``pcad synth`` warns with these.

        Example:
            >>> import numpy as np
            >>> r = DefectResult(np.zeros((4, 3), np.float32), np.ones(4, bool),
            ...                  np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32),
            ...                  np.zeros(0, np.int64), {"diag": 1.0})
            >>> r.degenerate()
            {'most_anomalous': '4 of 4 points anomalous (more than half)'}
        """
        n = int(self.params.get("n_valid", self.mask.size))
        unit = "pixels" if self.organized else "points"
        out: dict[str, str] = {}
        if self.n_anomalous == 0:
            out["none_anomalous"] = f"no anomalous {unit[:-1]}"
        elif self.n_anomalous > MAX_ANOMALOUS_SHARE * n:
            out["most_anomalous"] = f"{self.n_anomalous} of {n} {unit} anomalous (more than half)"
        diag = float(self.params.get("diag", 0.0))
        if diag > 0 and self.max_offset > MAX_OFFSET_SHARE * diag:
            out["large_offset"] = (f"largest offset {self.max_offset:.4g} is "
                                   f"{100 * self.max_offset / diag:.0f}% of the bounding-box "
                                   f"diagonal {diag:.4g} (more than "
                                   f"{100 * MAX_OFFSET_SHARE:.0f}%)")
        return out

