"""pcad: 3D industrial anomaly synthesis, datasets, detection and visualization.

The distribution installs three import packages:

- ``pcad``: data types, file I/O, geometry, checks and the ``pcad`` command line.
- ``synth``: Perlin noise, surface parameterizations and geometric defects (3D-PNAS).
- ``viz``: plotly figures of clouds and defects.
"""

from pcad.errors import DegenerateGeometryError, FileFormatError, InvalidInputError, PcadError

__version__ = "0.1.0"

__all__ = [
    "DegenerateGeometryError",
    "FileFormatError",
    "InvalidInputError",
    "PcadError",
    "__version__",
]
