"""RGB image of a ray-cast scene: procedural albedo, Lambert + Blinn-Phong lighting, noise.

Albedo comes from a seeded Perlin texture evaluated in the *object's* frame (so the texture
sticks to the part whatever its pose) modulating the part's base colour, or from a user texture
image mapped by planar projection; the background plane gets its own low-contrast texture.
The light direction and intensity are jittered per sample within limits.

Example:
    >>> from synth.render.shading import Lighting
    >>> Lighting.sample(__import__("numpy").random.default_rng(0)).direction.shape
    (3,)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.field import perlin_field
from synth.render.scene import OBJECT, PLANE

MATERIALS = {
    # name: (texture contrast, texture scale per diagonal, specular weight, shininess)
    "metal": (0.10, 6.0, 0.45, 40.0),
    "plastic": (0.06, 3.0, 0.20, 20.0),
    "organic": (0.15, 8.0, 0.05, 8.0),
}


@dataclass
class Lighting:
    """A directional light (unit ``direction`` pointing from the scene to the light, camera
    frame), its ``intensity`` and the ``ambient`` term."""

    direction: np.ndarray
    intensity: float
    ambient: float

    @classmethod
    def sample(cls, rng: np.random.Generator, jitter: float = 1.0, elevation_deg: float = 20.0,
               intensity: float = 0.1, ambient: float = 0.05) -> Lighting:
        """Light from the camera side: elevation 55 +- ``elevation_deg`` degrees (35-75 by
        default), any azimuth, intensity 0.85 +- ``intensity``, ambient 0.25 +- ``ambient``;
        each spread times ``jitter``."""
        elev = np.radians(55.0 + jitter * rng.uniform(-elevation_deg, elevation_deg))
        azim = rng.uniform(0.0, 2.0 * np.pi) * jitter
        d = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), -np.sin(elev)])
        return cls(d, float(0.85 + jitter * rng.uniform(-intensity, intensity)),
                   float(0.25 + jitter * rng.uniform(-ambient, ambient)))


def texture_image_albedo(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Sample an ``(h, w, 3) uint8`` texture at planar coordinates ``coords (N, 2)`` in
    [0, 1) (wrapped), nearest neighbour; returns ``(N, 3)`` floats in [0, 1]."""
    h, w = image.shape[:2]
    uv = np.mod(coords, 1.0)
    rows = np.minimum((uv[:, 1] * h).astype(np.int64), h - 1)
    cols = np.minimum((uv[:, 0] * w).astype(np.int64), w - 1)
    return image[rows, cols, :3].astype(np.float64) / 255.0


def albedo(points_obj: np.ndarray, diag: float, colour: np.ndarray, material: str,
           seed: int, texture: np.ndarray | None = None) -> np.ndarray:
    """``(N, 3)`` albedo of object points given in the object's frame."""
    contrast, scale, _, _ = MATERIALS[material]
    if texture is not None:
        return texture_image_albedo(texture, points_obj[:, :2] / diag)
    g = perlin_field(points_obj / diag, scale, 4, 0.5, 2.0, seed=seed).astype(np.float64)
    streak = perlin_field(points_obj[:, :2] / diag * [1.0, 12.0], scale, 2, 0.5, 2.0,
                          seed=seed + 1).astype(np.float64) if material == "metal" else 0.0
    factor = 1.0 + contrast * (g / 0.3) + 0.5 * contrast * streak
    return np.clip(colour[None, :] * factor[:, None], 0.0, 1.0)


def shade(geometry: np.ndarray, normals: np.ndarray, directions: np.ndarray,
          albedo_map: np.ndarray, light: Lighting, material: str) -> np.ndarray:
    """``(H, W, 3)`` linear radiance in [0, 1] from per-pixel normals and albedo."""
    _, _, spec_w, shininess = MATERIALS[material]
    to_light = -light.direction
    n = normals
    lambert = np.clip((n * to_light).sum(-1), 0.0, None)
    view = -directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    half = view + to_light
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    spec = np.clip((n * half).sum(-1), 0.0, None) ** shininess
    spec = np.where(geometry == OBJECT, spec_w * spec, 0.1 * spec)
    rgb = albedo_map * (light.ambient + light.intensity * lambert)[..., None]
    rgb = rgb + (light.intensity * spec)[..., None]
    rgb[geometry == -1] = 0.0
    return np.clip(rgb, 0.0, 1.0)


#: the background mat's colour (linear RGB) and texture contrast
MAT_COLOUR = (0.32, 0.34, 0.33)
MAT_CONTRAST = 0.15


def background_albedo(points: np.ndarray, scale_len: float, seed: int,
                      colour: tuple[float, float, float] | np.ndarray = MAT_COLOUR,
                      contrast: float = MAT_CONTRAST) -> np.ndarray:
    """``(N, 3)`` mat texture of the background plane (grey-green by default)."""
    g = perlin_field(points[:, :2] / scale_len, 3.0, 3, 0.5, 2.0, seed=seed).astype(np.float64)
    base = np.asarray(colour, np.float64)
    return np.clip(base[None, :] * (1.0 + contrast * g[:, None] / 0.3), 0.0, 1.0)


def to_uint8(rgb: np.ndarray, rng: np.random.Generator, noise_sigma: float) -> np.ndarray:
    """Gamma-encode, add Gaussian sensor noise (in 8-bit steps) and quantize."""
    srgb = np.power(np.clip(rgb, 0.0, 1.0), 1 / 2.2) * 255.0
    if noise_sigma > 0:
        srgb = srgb + rng.normal(0.0, noise_sigma, size=srgb.shape)
    return np.clip(np.rint(srgb), 0, 255).astype(np.uint8)


__all__ = ["MATERIALS", "MAT_COLOUR", "MAT_CONTRAST", "PLANE", "Lighting", "albedo",
           "background_albedo", "shade", "to_uint8"]
