"""``hole``: points removed inside an irregular region (pixels made invalid in a grid).

The region is a ball of radius ``r(p) = radius * (1 + irregularity * (2 g - 1))`` around a
seeded centre, with ``g`` a seeded Perlin field, restricted to points facing the centre's side.
In an unorganized cloud the removed points are dropped and the points within ``rim`` mean point
spacings of the removed ones are anomalous (they border removed structure); in an organized
grid the removed pixels become ``(0, 0, 0)`` and are anomalous in the mask.

Example:
    >>> from synth.defects import create_defect
    >>> create_defect("hole", radius=0.03).radius
    0.03
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.defects.base import Displacement, NoiseDefect, SurfaceContext, param, register_defect
from synth.regions import facing_gate, irregular_radius


@register_defect("hole")
@dataclass
class HoleDefect(NoiseDefect):
    """Removed material; see the module docstring."""

    radius: float = param(0.06, "positive", "hole radius (fraction of the diagonal)")
    irregularity: float = param(0.3, "nonneg", "relative radius variation by the noise")
    scale: float = param(3.0, "positive", "noise lattice cells per bbox diagonal")
    octaves: int = param(3, "int", "fBm octaves", min=1, max=16)
    rim: float = param(1.5, "nonneg", "anomalous border width, in mean point spacings "
                       "(unorganized clouds)")

    def support(self, diag: float) -> float:
        return self.size(self.radius, diag) * (1.0 + min(self.irregularity, 0.9))

    def displace(self, ctx: SurfaceContext) -> Displacement:
        radius = self.size(self.radius, ctx.diag)
        centre, g, info = self.centre_and_field(ctx, radius)
        r = irregular_radius(radius, g, min(self.irregularity, 0.9))
        d = np.linalg.norm(ctx.points - ctx.points[centre], axis=1)
        removed = (d < r) & facing_gate(ctx.normals, ctx.normals[centre])
        removed[centre] = True
        info.update(radius_abs=radius)
        return Displacement(np.zeros(len(d)), removed, radius, info)
