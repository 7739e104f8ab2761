"""Seeded Perlin fields over 2D or 3D coordinates.

The ``noise`` package has no seed: its ``base`` argument only shifts each octave's lattice by
``base`` cells along the diagonal (with one octave ``pnoise2(x, y, base=b) == pnoise2(x + b, y +
b)``; with more, every octave moves by ``b`` cells of its own size), and only ``base`` 0 and 1
stay inside its tables. pcad's seed therefore transforms the *coordinates*: a ``numpy`` generator
seeded with ``seed`` draws a random rotation (one angle in 2D, a uniform rotation in 3D) and a
random offset in ``[0, 256)`` per axis (256 is the lattice period, so every offset gives a
distinct field and coordinates stay small enough for float32). Fractional offsets also move the
lattice points, where Perlin noise is exactly zero, off any regular grid of the input. Then

    field(c) = pnoise(R @ (c * scale) + offset, octaves, persistence, lacunarity)

``scale`` is the lattice frequency: the number of noise cells per unit of the coordinates.
pcad's defects pass coordinates divided by the object's bounding-box diagonal, so there
``scale`` counts noise cells per object diagonal whatever the object's size.

Example:
    >>> import numpy as np
    >>> from synth.field import perlin_field
    >>> c = np.random.default_rng(0).uniform(size=(1000, 2))
    >>> f = perlin_field(c, scale=4.0, octaves=4, seed=7)
    >>> f.shape, f.dtype, bool(np.array_equal(f, perlin_field(c, 4.0, 4, seed=7)))
    ((1000,), dtype('float32'), True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from pcad.checks import check_int, check_positive
from pcad.errors import InvalidInputError
from synth.perlin import pnoise2, pnoise3

LATTICE_PERIOD = 256.0


def seeded_transform(dim: int, seed: int | np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The rotation ``(dim, dim)`` and offset ``(dim,)`` (float64) that ``seed`` stands for."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if dim == 2:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -s], [s, c]])
    else:
        rot = Rotation.random(random_state=rng).as_matrix()
    offset = rng.uniform(0.0, LATTICE_PERIOD, size=dim)
    return rot, offset


def perlin_field(coords: Any, scale: float = 4.0, octaves: int = 4, persistence: float = 0.5,
                 lacunarity: float = 2.0, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Seeded fBm Perlin noise at each coordinate.

    Args:
        coords: ``(N, 2)`` or ``(N, 3)`` coordinates (2D uses ``pnoise2``, 3D ``pnoise3``).
        scale: lattice cells per unit of ``coords`` (> 0).
        octaves, persistence, lacunarity: as in ``noise.pnoise2``.
        seed: int or ``numpy.random.Generator``; picks the rotation and offset (module doc).

    Returns:
        ``(N,) float32`` raw noise values (roughly within +-0.9, narrower with more octaves).
    """
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] not in (2, 3):
        raise InvalidInputError(f"coords: expected shape (N, 2) or (N, 3), got {c.shape}")
    if not np.isfinite(c).all():
        raise InvalidInputError("coords: NaN or infinite values")
    scale = check_positive(scale, "scale")
    octaves = check_int(octaves, "octaves", 1, 16)
    persistence = check_positive(persistence, "persistence")
    lacunarity = check_positive(lacunarity, "lacunarity")
    rot, offset = seeded_transform(c.shape[1], seed)
    q = (c * scale) @ rot.T + offset
    kw = dict(octaves=octaves, persistence=persistence, lacunarity=lacunarity)
    if c.shape[1] == 2:
        return pnoise2(q[:, 0], q[:, 1], **kw)
    return pnoise3(q[:, 0], q[:, 1], q[:, 2], **kw)


def normalize01(values: np.ndarray) -> np.ndarray:
    """Min-max normalize to ``[0, 1]`` (float32), as 3D-PNAS does; a constant field gives zeros."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 0:
        return np.zeros(v.shape, np.float32)
    return ((v - lo) / (hi - lo)).astype(np.float32)
