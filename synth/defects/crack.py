"""``crack``: a narrow groove along a noise-guided curve on the surface.

In the tangent frame at a seeded centre (PCA of the neighbourhood, normal towards the centre's
normal) a path of length ``length`` starts in a random direction; its heading wanders by up to
``wiggle`` radians, steered by a 1D slice of a seeded Perlin field. Points within ``width / 2``
of the path (measured in the tangent plane) sink along their normals by
``strength * (1 - (2 d / width)^2) * taper(s)``, where ``taper`` fades the groove out at both
ends. Only points facing the centre's side and lying within ``length`` of the centre move.

Example:
    >>> from synth.defects import create_defect
    >>> create_defect("crack").width
    0.015
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.defects.base import Displacement, NoiseDefect, SurfaceContext, param, register_defect
from synth.field import perlin_field
from synth.parameterize import local_axes
from synth.regions import facing_gate

_PATH_SAMPLES = 129
_CHUNK = 4096


def _path(length: float, heading0: float, wiggle: float, noise: np.ndarray) -> np.ndarray:
    """``(S, 2)`` polyline in the tangent plane, centred on the origin."""
    theta = heading0 + wiggle * np.clip(noise / 0.5, -1.0, 1.0)
    ds = length / (len(noise) - 1)
    steps = np.stack([np.cos(theta[:-1]), np.sin(theta[:-1])], axis=1) * ds
    path = np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    return path - path[len(path) // 2]


def distance_to_path(q: np.ndarray, path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of ``q (M, 2)`` to the polyline ``path (S, 2)`` and the normalized arc position
    ``(M,)`` in ``[0, 1]`` of the closest point."""
    a, b = path[:-1], path[1:]
    ab = b - a
    seg_len2 = np.maximum((ab**2).sum(1), 1e-300)
    dist = np.empty(len(q))
    pos = np.empty(len(q))
    n_seg = len(ab)
    for s in range(0, len(q), _CHUNK):
        qq = q[s:s + _CHUNK, None, :]
        t = np.clip(((qq - a) * ab).sum(-1) / seg_len2, 0.0, 1.0)
        d2 = ((a + t[..., None] * ab - qq) ** 2).sum(-1)
        k = d2.argmin(axis=1)
        rows = np.arange(len(k))
        dist[s:s + _CHUNK] = np.sqrt(d2[rows, k])
        pos[s:s + _CHUNK] = (k + t[rows, k]) / n_seg
    return dist, pos


@register_defect("crack")
@dataclass
class CrackDefect(NoiseDefect):
    """A groove along a wandering path; see the module docstring."""

    strength: float = param(0.004, "positive", "groove depth (fraction of the diagonal)")
    length: float = param(0.25, "positive", "path length (fraction of the diagonal)")
    width: float = param(0.015, "positive", "groove width (fraction of the diagonal)")
    wiggle: float = param(0.6, "nonneg", "largest heading change along the path (radians)")
    scale: float = param(2.0, "positive", "noise cells along the path")
    octaves: int = param(2, "int", "fBm octaves of the heading noise", min=1, max=16)
    mode: str = param("local", "choice", "the crack always lies in the local tangent frame",
                      choices=("local",))

    def support(self, diag: float) -> float:
        return self.size(self.length, diag) + self.size(self.width, diag)

    def displace(self, ctx: SurfaceContext) -> Displacement:
        depth = self.size(self.strength, ctx.diag)
        length = self.size(self.length, ctx.diag)
        half_w = 0.5 * self.size(self.width, ctx.diag)
        centre = ctx.pick_centre()
        field_seed = int(ctx.rng.integers(2**31))
        heading0 = float(ctx.rng.uniform(0.0, 2.0 * np.pi))
        n_c = ctx.normals[centre]
        axes = local_axes(ctx.points, centre, 0.5 * length, n_c)
        s = np.linspace(0.0, 1.0, _PATH_SAMPLES)
        noise = perlin_field(np.stack([s, np.zeros_like(s)], 1), self.scale, self.octaves,
                             self.persistence, self.lacunarity, seed=field_seed)
        path = _path(length, heading0, self.wiggle, noise.astype(np.float64))
        rel = ctx.points - ctx.points[centre]
        near = (np.linalg.norm(rel, axis=1) <= length) & facing_gate(ctx.normals, n_c)
        idx = np.flatnonzero(near)
        magnitude = np.zeros(len(ctx.points))
        if idx.size:
            d, pos = distance_to_path(rel[idx] @ axes[:2].T, path)
            profile = np.clip(1.0 - (d / half_w) ** 2, 0.0, None)
            taper = np.clip(1.0 - np.abs(2.0 * pos - 1.0) ** 4, 0.0, None)
            magnitude[idx] = -depth * profile * taper
        info = {"centre_index": centre, "centre": ctx.points[centre].tolist(),
                "field_seed": field_seed, "heading": heading0, "strength_abs": depth,
                "length_abs": length, "width_abs": 2 * half_w}
        return Displacement(magnitude, np.zeros(len(ctx.points), bool), depth, info)
