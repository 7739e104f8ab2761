"""Colour maps on numpy arrays: values to ``uint8`` RGB, NaN in a distinct colour.

Example:
    >>> import numpy as np
    >>> from viz.colors import colorize
    >>> colorize(np.array([0.0, 1.0, np.nan])).tolist()[2]
    [255, 0, 255]
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Colour of NaN / infinite values in every figure and image (magenta: in no colour scale).
NAN_RGB: tuple[int, int, int] = (255, 0, 255)
NAN_COLOUR = "rgb(255,0,255)"
#: Colour of ground-truth contours on images and of ground-truth markers in 3D: cyan, a colour
#: in none of the perceptual maps used for values (inferno for anomaly maps, viridis for
#: heights), so the ground truth never reads as a score.
GT_RGB: tuple[int, int, int] = (0, 230, 255)
GT_COLOUR = "rgb(0,230,255)"
#: Colour map of anomaly maps everywhere (perceptually uniform, dark = normal).
MAP_CMAP = "inferno"


def finite_range(values: np.ndarray, vmin: float | None = None,
                 vmax: float | None = None) -> tuple[float, float]:
    """``(lo, hi)`` of the finite values (``(0, 1)`` when there are none), with the given
    bounds taking precedence; ``hi > lo`` always.

    Example:
        >>> finite_range(np.array([2.0, np.nan, 5.0])), finite_range(np.array([3.0]))
        ((2.0, 5.0), (3.0, 3.000003))
    """
    v = np.asarray(values, dtype=np.float64)
    fin = v[np.isfinite(v)]
    lo = float(fin.min()) if vmin is None and fin.size else (0.0 if vmin is None else vmin)
    hi = float(fin.max()) if vmax is None and fin.size else (1.0 if vmax is None else vmax)
    if not hi > lo:
        hi = lo + (abs(lo) * 1e-6 or 1e-6)
    return float(lo), float(hi)


def colormap_lut(name: str = "inferno", n: int = 256) -> np.ndarray:
    """``(n, 3) uint8`` lookup table of the matplotlib colour map ``name``."""
    import matplotlib

    names = {n.lower(): n for n in matplotlib.colormaps}  # case-insensitive: Inferno, YlOrRd
    cmap = matplotlib.colormaps[names.get(name.lower(), name)]
    return (np.asarray(cmap(np.linspace(0.0, 1.0, n)))[:, :3] * 255 + 0.5).astype(np.uint8)


def colorize(values: Any, cmap: str = "inferno", vmin: float | None = None,
             vmax: float | None = None, nan_rgb: tuple[int, int, int] = NAN_RGB) -> np.ndarray:
    """``(..., 3) uint8`` colours of ``values (...)`` through ``cmap`` between ``vmin`` and
    ``vmax`` (default: the finite range); NaN and inf get ``nan_rgb``."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = finite_range(v, vmin, vmax)
    lut = colormap_lut(cmap)
    ok = np.isfinite(v)
    t = np.clip((np.where(ok, v, lo) - lo) / (hi - lo), 0.0, 1.0)
    out = lut[np.round(t * (len(lut) - 1)).astype(np.intp)]
    out[~ok] = nan_rgb
    return out


def colorbar_image(cmap: str = MAP_CMAP, width: int = 256, height: int = 14) -> np.ndarray:
    """``(height, width, 3) uint8``: the colour map ``cmap`` from low (left) to high (right).

    Example:
        >>> colorbar_image(width=4, height=2).shape
        (2, 4, 3)
    """
    return np.repeat(colormap_lut(cmap, width)[None], height, axis=0)


def plotly_colorscale(name: str) -> str:
    """The plotly name of a matplotlib-style colour map name (``inferno`` -> ``Inferno``)."""
    return name[:1].upper() + name[1:]
