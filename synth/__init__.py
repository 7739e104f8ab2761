"""synth: 3D-PNAS Perlin noise and geometric defects with exact ground truth.

Example:
    >>> import numpy as np
    >>> from synth import pnoise2
    >>> float(pnoise2(0.5, 0.25)) == float(pnoise2(np.float32(0.5), np.float32(0.25)))
    True
"""

from synth.field import perlin_field
from synth.perlin import pnoise2, pnoise3

__all__ = ["perlin_field", "pnoise2", "pnoise3"]
