"""``bump`` and ``dent``: a signed Perlin blob in a region around a seeded centre.

Displacement along the normal: ``sign * strength * falloff(d / r(p)) * (1 - m + m * g(p))``,
where ``d`` is the distance to the centre, ``r(p) = radius * (1 + irregularity * (2 g - 1))``
makes the outline irregular, ``m`` (``modulation``) lets the noise shape the relief, and only
points facing the centre's side move (thin parts keep their back intact).

Example:
    >>> from synth.defects import create_defect
    >>> create_defect("bump").sign, create_defect("dent").sign
    (1.0, -1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from synth.defects.base import Displacement, NoiseDefect, SurfaceContext, param, register_defect
from synth.regions import facing_gate, falloff, irregular_radius


@dataclass
class BlobDefect(NoiseDefect):
    """Common part of bump and dent."""

    sign: ClassVar[float] = 1.0

    strength: float = param(0.01, "positive", "peak height/depth (fraction of the diagonal)")
    radius: float = param(0.1, "positive", "blob radius (fraction of the diagonal)")
    scale: float = param(3.0, "positive", "noise lattice cells per bbox diagonal")
    octaves: int = param(3, "int", "fBm octaves", min=1, max=16)
    irregularity: float = param(0.3, "nonneg", "relative radius variation by the noise")
    modulation: float = param(0.3, "nonneg", "share of the relief shaped by the noise")

    def support(self, diag: float) -> float:
        return self.size(self.radius, diag) * (1.0 + min(self.irregularity, 0.9))

    def displace(self, ctx: SurfaceContext) -> Displacement:
        strength = self.size(self.strength, ctx.diag)
        radius = self.size(self.radius, ctx.diag)
        centre, g, info = self.centre_and_field(ctx, radius)
        r = irregular_radius(radius, g, min(self.irregularity, 0.9))
        d = np.linalg.norm(ctx.points - ctx.points[centre], axis=1)
        w = falloff(d / r, self.falloff) * facing_gate(ctx.normals, ctx.normals[centre])
        m = min(self.modulation, 1.0)
        magnitude = self.sign * strength * w * (1.0 - m + m * g)
        info.update(strength_abs=strength, radius_abs=radius)
        return Displacement(magnitude, np.zeros(len(g), bool), strength, info)


@register_defect("bump")
@dataclass
class BumpDefect(BlobDefect):
    """Material raised along the outward normal."""

    sign: ClassVar[float] = 1.0


@register_defect("dent")
@dataclass
class DentDefect(BlobDefect):
    """Material pushed in, against the normal."""

    sign: ClassVar[float] = -1.0
