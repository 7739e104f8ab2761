"""Registered defect types: geometric ``perlin`` (3D-PNAS), ``bump``, ``dent``, ``crack``,
``hole``; the appearance and composite names are registered by their generators
(:mod:`synth.defects.base` lists them all)."""

from synth.defects import blob, crack, hole, perlin  # noqa: F401  (registration)
from synth.defects.base import (
    Defect,
    Displacement,
    SurfaceContext,
    create_defect,
    defect_info,
    defect_parameters,
    list_defects,
    register_defect,
)

__all__ = [
    "Defect",
    "Displacement",
    "SurfaceContext",
    "create_defect",
    "defect_info",
    "defect_parameters",
    "list_defects",
    "register_defect",
]
