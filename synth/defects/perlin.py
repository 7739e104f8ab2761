"""``perlin``: the 3D-PNAS defect: a Perlin field pushes the surface along its normals.

As published, the field covers the whole surface (``region="global"``, ``mode="global"``: one
PCA plane, field min-max normalized to [0, 1], displacement ``strength * g * n``). pcad adds a
``ball`` region (a seeded centre and radius with a falloff) and a DRAEM-style ``threshold``
region (only where the normalized field exceeds ``threshold``, ramping from 0 at the edge), and
``signed`` fields (``2 g - 1``: bumps and dents at once).

Example:
    >>> from synth.defects import create_defect
    >>> d = create_defect("perlin", strength=0.02, octaves=6)
    >>> d.region, d.mode
    ('global', 'global')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.defects.base import Displacement, NoiseDefect, SurfaceContext, param, register_defect
from synth.regions import facing_gate, falloff


@register_defect("perlin")
@dataclass
class PerlinDefect(NoiseDefect):
    """3D-PNAS Perlin displacement; see the module docstring."""

    strength: float = param(0.02, "positive", "peak displacement (fraction of the diagonal)")
    mode: str = param("global", "choice", "surface parameterization",
                      choices=("global", "local", "volumetric"))
    region: str = param("global", "choice", "where the field acts",
                        choices=("global", "ball", "threshold"))
    radius: float = param(0.15, "positive", "radius of the ball region (fraction of diagonal)")
    threshold: float = param(0.6, "fraction", "field level above which the threshold region "
                             "acts")
    signed: bool = param(False, "bool", "use 2g-1 (bumps and dents) instead of g in [0, 1]")

    def support(self, diag: float) -> float | None:
        return self.size(self.radius, diag) if self.region == "ball" else None

    def displace(self, ctx: SurfaceContext) -> Displacement:
        strength = self.size(self.strength, ctx.diag)
        radius = self.size(self.radius, ctx.diag)
        centre, g, info = self.centre_and_field(ctx, radius)
        g = g.astype(np.float64)
        if self.region == "threshold":
            t = min(self.threshold, 1.0 - 1e-6)
            amp = np.clip((g - t) / (1.0 - t), 0.0, None)
            if self.signed:
                amp = amp * np.where(ctx.rng.random() < 0.5, -1.0, 1.0)
        else:
            amp = 2.0 * g - 1.0 if self.signed else g
        if self.region == "ball":
            d = np.linalg.norm(ctx.points - ctx.points[centre], axis=1)
            amp = amp * falloff(d / radius, self.falloff)
            amp = amp * facing_gate(ctx.normals, ctx.normals[centre])
        info.update(strength_abs=strength, radius_abs=radius)
        return Displacement(strength * amp, np.zeros(len(g), bool), strength, info)
