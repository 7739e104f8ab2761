"""Acquisition conditions of a rendered sample: how widely pose, light, exposure and the
background mat vary (``pcad make-dataset --conditions``).

``standard`` is the renderer's own jitter (the ranges every dataset had before conditions
existed; a sample rendered under it is byte-identical to one rendered without ``conditions``).
``strong`` widens every range, for a robustness split whose test samples are taken under other
conditions than the training samples (the setting of HetNet):

============================  ==============================  ===================================
quantity                      standard                        strong
============================  ==============================  ===================================
in-plane rotation             any angle                       any angle (already full)
tilt off the lying pose       U(0, tilt_deg) = 0-6 deg        U(0, 3 x tilt_deg) = 0-18 deg
centre shift (x, y)           U(-0.05, 0.05) of the view      U(-0.12, 0.12) of the view
distance (part span)          fill = 0.65 of the image        fill x U(0.8, 1.1) = 0.52-0.715
light elevation               55 +- 20 deg                    55 +- 30 deg (25-85 deg)
light azimuth                 any                             any
light intensity               0.85 +- 0.10                    0.85 +- 0.35 (0.5-1.2)
ambient                       0.25 +- 0.05                    0.25 +- 0.12
exposure (x linear radiance)  1                               log-uniform in [0.6, 1.6]
gain (x sensor noise sigma)   1                               U(1.0, 2.5)
mat texture                   one per category                one per sample
mat brightness                grey-green (0.32, 0.34, 0.33)   x U(0.6, 1.5), each channel also
                                                              x U(0.8, 1.25) (tint)
mat texture contrast          0.15                            U(0.10, 0.45)
mat height                    touches the part's back         lowered by U(0, 0.1) x diagonal
============================  ==============================  ===================================

The light ranges scale with the sensor's ``light_jitter`` in both, as before. Strong draws its
extra values (distance, exposure, gain, mat) from a stream of its own, ``SeedSequence([seed,
CONDITIONS_KEY])``; the pose and light streams draw the same number of values with wider
bounds, so the result is as deterministic as the standard one.

Example:
    >>> conditions_for("standard").is_standard, conditions_for("strong").tilt_factor
    (True, 3.0)
    >>> import numpy as np
    >>> draw = conditions_for("strong").draw(seed=0)
    >>> 0.6 <= draw["exposure"] <= 1.6 and 1.0 <= draw["gain"] <= 2.5
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pcad.checks import check_choice

#: the names of ``--conditions``
CONDITIONS: tuple[str, ...] = ("standard", "strong")
#: second key of the strong conditions' own random stream
CONDITIONS_KEY = 0x5712


@dataclass(frozen=True)
class Conditions:
    """Ranges of one acquisition setting (module docstring's table). Every ``(lo, hi)`` pair
    is the range of a uniform draw (``exposure``: log-uniform); ``(1, 1)`` draws nothing."""

    name: str = "standard"
    tilt_factor: float = 1.0                     # x sensor.tilt_deg
    shift: float = 0.05                          # centre shift, fraction of the view
    fill_scale: tuple[float, float] = (1.0, 1.0)
    light_elevation_deg: float = 20.0            # +- around 55 deg
    light_intensity: float = 0.1                 # +- around 0.85
    light_ambient: float = 0.05                  # +- around 0.25
    exposure: tuple[float, float] = (1.0, 1.0)
    gain: tuple[float, float] = (1.0, 1.0)
    mat_brightness: tuple[float, float] = (1.0, 1.0)
    mat_tint: tuple[float, float] = (1.0, 1.0)
    mat_contrast: tuple[float, float] = (0.15, 0.15)
    mat_drop: tuple[float, float] = (0.0, 0.0)   # x the part's diagonal
    mat_per_sample: bool = False

    @property
    def is_standard(self) -> bool:
        """Whether these are the renderer's own ranges (nothing extra is drawn)."""
        return self == Conditions()

    def draw(self, seed: int) -> dict[str, Any]:
        """The sample's extra values (distance factor, exposure, gain, mat) from the strong
        stream of ``seed``; the identity values (and no draw) under standard."""
        if self.is_standard:
            return {"fill_scale": 1.0, "exposure": 1.0, "gain": 1.0, "mat_brightness": 1.0,
                    "mat_tint": [1.0, 1.0, 1.0], "mat_contrast": 0.15, "mat_drop": 0.0,
                    "mat_seed": None}
        rng = np.random.default_rng(np.random.SeedSequence([seed, CONDITIONS_KEY]))
        lo, hi = np.log(self.exposure)
        return {"fill_scale": float(rng.uniform(*self.fill_scale)),
                "exposure": float(np.exp(rng.uniform(lo, hi))),
                "gain": float(rng.uniform(*self.gain)),
                "mat_brightness": float(rng.uniform(*self.mat_brightness)),
                "mat_tint": rng.uniform(*self.mat_tint, size=3).tolist(),
                "mat_contrast": float(rng.uniform(*self.mat_contrast)),
                "mat_drop": float(rng.uniform(*self.mat_drop)),
                "mat_seed": int(rng.integers(0, 2**31 - 1)) if self.mat_per_sample else None}


STRONG = Conditions(name="strong", tilt_factor=3.0, shift=0.12, fill_scale=(0.8, 1.1),
                    light_elevation_deg=30.0, light_intensity=0.35, light_ambient=0.12,
                    exposure=(0.6, 1.6), gain=(1.0, 2.5), mat_brightness=(0.6, 1.5),
                    mat_tint=(0.8, 1.25), mat_contrast=(0.10, 0.45), mat_drop=(0.0, 0.1),
                    mat_per_sample=True)


def conditions_for(name: str) -> Conditions:
    """The :class:`Conditions` named ``name`` (one of :data:`CONDITIONS`); InvalidInputError
    otherwise."""
    check_choice(name, "--conditions", CONDITIONS)
    return STRONG if name == "strong" else Conditions()


__all__ = ["CONDITIONS", "CONDITIONS_KEY", "STRONG", "Conditions", "conditions_for"]
