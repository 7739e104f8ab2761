"""Registered defect types: ``perlin`` (3D-PNAS), ``bump``, ``dent``, ``crack``, ``hole``."""

from synth.defects import blob, crack, hole, perlin  # noqa: F401  (registration)
from synth.defects.base import (
    Defect,
    Displacement,
    SurfaceContext,
    create_defect,
    defect_class,
    list_defects,
    register_defect,
)

__all__ = [
    "Defect",
    "Displacement",
    "SurfaceContext",
    "create_defect",
    "defect_class",
    "list_defects",
    "register_defect",
]
