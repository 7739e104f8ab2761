"""Where a defect goes: seeded centres on the surface, radial falloffs and threshold masks.

Example:
    >>> import numpy as np
    >>> from synth.regions import falloff
    >>> falloff(np.array([0.0, 0.5, 1.0, 2.0]), "cosine").round(3).tolist()
    [1.0, 0.5, 0.0, 0.0]
"""

from __future__ import annotations

import numpy as np

from pcad.errors import InvalidInputError

FALLOFFS = ("cosine", "gaussian", "linear", "poly", "hard")


def falloff(t: np.ndarray, kind: str = "cosine") -> np.ndarray:
    """Radial weight in ``[0, 1]`` of the normalized distance ``t`` (1 at 0, 0 for ``t >= 1``).

    ``cosine``: ``(1 + cos(pi t)) / 2``; ``gaussian``: ``exp(-t^2 / (2 * 0.35^2))`` cut at 1;
    ``linear``: ``1 - t``; ``poly``: ``1 - t^4``; ``hard``: 1 inside.
    """
    t = np.asarray(t, dtype=np.float64)
    inside = t < 1.0
    tc = np.clip(t, 0.0, 1.0)
    if kind == "cosine":
        w = 0.5 * (1.0 + np.cos(np.pi * tc))
    elif kind == "gaussian":
        w = np.exp(-(tc**2) / (2 * 0.35**2))
    elif kind == "linear":
        w = 1.0 - tc
    elif kind == "poly":
        w = 1.0 - tc**4
    elif kind == "hard":
        w = np.ones_like(tc)
    else:
        raise InvalidInputError(f"falloff: expected one of {FALLOFFS}, got {kind!r}")
    return np.where(inside, w, 0.0)


def pick_centre(n_points: int, rng: np.random.Generator,
                candidates: np.ndarray | None = None) -> int:
    """A uniformly drawn point index: the defect's centre on the sampled surface.

    ``candidates`` (indices) restricts the draw, for example to the points a camera sees.
    """
    if candidates is None:
        return int(rng.integers(n_points))
    return int(candidates[rng.integers(len(candidates))])


def facing_gate(normals: np.ndarray, centre_normal: np.ndarray) -> np.ndarray:
    """``(N,) bool``: points whose normal faces the same side as the centre's (n . n_c > 0).

    Keeps a defect on the side of a thin part where it was placed (AF3AD's one-sided gate).
    """
    return normals @ centre_normal > 0.0


def irregular_radius(radius: float, field01: np.ndarray, irregularity: float) -> np.ndarray:
    """Per-point radius ``radius * (1 + irregularity * (2 g - 1))`` for a noise ``g`` in [0, 1]."""
    return radius * (1.0 + irregularity * (2.0 * field01.astype(np.float64) - 1.0))
