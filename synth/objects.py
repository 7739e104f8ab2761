"""Built-in procedural industrial parts: meshes made in code, seeded shape variation.

Each part is a function ``(rng, variation) -> trimesh.Trimesh`` registered by name. With
``variation=0`` it returns the nominal part; otherwise its dimensions are jittered by up to that
fraction, drawn from ``rng``, so that good samples differ as real parts do.

Example:
    >>> from synth.objects import list_objects, make_object
    >>> list_objects()
    ['bracket', 'flange', 'pin', 'plate', 'ring', 'washer']
    >>> make_object("washer").is_watertight
    True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import trimesh

from pcad.checks import check_positive
from pcad.errors import InvalidInputError

_PARTS: dict[str, Callable[[np.random.Generator, float], trimesh.Trimesh]] = {}


def _part(name: str):
    def wrap(fn):
        _PARTS[name] = fn
        return fn

    return wrap


def _j(rng: np.random.Generator, value: float, variation: float) -> float:
    return value * (1.0 + variation * rng.uniform(-1.0, 1.0))


@_part("washer")
def _washer(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    r_out = _j(rng, 30.0, v)
    return trimesh.creation.annulus(r_min=_j(rng, 0.45, v) * r_out, r_max=r_out,
                                    height=_j(rng, 4.0, v), sections=96)


@_part("pin")
def _pin(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    return trimesh.creation.capsule(height=_j(rng, 40.0, v), radius=_j(rng, 6.0, v),
                                    count=[48, 48])


@_part("ring")
def _ring(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    return trimesh.creation.torus(major_radius=_j(rng, 25.0, v), minor_radius=_j(rng, 6.0, v),
                                  major_sections=96, minor_sections=32)


@_part("plate")
def _plate(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=[_j(rng, 80.0, v), _j(rng, 50.0, v), _j(rng, 5.0, v)])


@_part("bracket")
def _bracket(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    a, h, t, w = _j(rng, 60.0, v), _j(rng, 40.0, v), _j(rng, 5.0, v), _j(rng, 30.0, v)
    profile = np.array([[0, 0], [a, 0], [a, h], [a - t, h], [a - t, t], [0, t]])
    tris = np.array([[0, 1, 4], [0, 4, 5], [1, 2, 3], [1, 3, 4]])
    mesh = trimesh.creation.extrude_triangulation(profile, tris, height=w)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    return mesh


def _revolve(profile: list[tuple[float, float]]) -> trimesh.Trimesh:
    """Solid of revolution about z of a closed (r, z) profile given counter-clockwise."""
    line = np.asarray(profile + [profile[0]], dtype=np.float64)
    return trimesh.creation.revolve(line, sections=96)


@_part("flange")
def _flange(rng: np.random.Generator, v: float) -> trimesh.Trimesh:
    r = _j(rng, 35.0, v)
    r_in, r_hub = 0.3 * r, _j(rng, 0.5, v) * r
    t, hub = _j(rng, 6.0, v), _j(rng, 14.0, v)
    return _revolve([(r_in, 0.0), (r, 0.0), (r, t), (r_hub, t), (r_hub, t + hub),
                     (r_in, t + hub)])


def list_objects() -> list[str]:
    """Names of the built-in parts, sorted."""
    return sorted(_PARTS)


def make_object(name: str, seed: int | np.random.Generator = 0,
                variation: float = 0.0) -> trimesh.Trimesh:
    """Build the part ``name`` (millimetre units), its dimensions jittered by ``variation``."""
    if name not in _PARTS:
        raise InvalidInputError(f"object: unknown built-in part {name!r}; "
                                f"expected one of {list_objects()}")
    variation = check_positive(variation, "variation", allow_zero=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return _PARTS[name](rng, variation)
