"""synth: 3D-PNAS Perlin noise and geometric defects with exact ground truth.

Example:
    >>> import numpy as np
    >>> from synth import apply_defect, list_defects, pnoise2
    >>> list_defects(kind="geometric")
    ['bump', 'crack', 'dent', 'hole', 'perlin']
    >>> float(pnoise2(3.0, 7.0))
    0.0
"""

from synth.apply import apply_defect, apply_defect_to_mesh, apply_to_scan
from synth.defects import Defect, create_defect, defect_info, list_defects, register_defect
from synth.field import perlin_field
from synth.perlin import pnoise2, pnoise3
from synth.result import DefectResult, gt_rule
from synth.supervision import DefectSource, SyntheticAnomaly

__all__ = [
    "Defect",
    "DefectResult",
    "DefectSource",
    "SyntheticAnomaly",
    "apply_defect",
    "apply_defect_to_mesh",
    "apply_to_scan",
    "create_defect",
    "defect_info",
    "gt_rule",
    "list_defects",
    "perlin_field",
    "pnoise2",
    "pnoise3",
    "register_defect",
]
