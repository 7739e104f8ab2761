"""Anomaly detectors in a registry: ``create_detector(name, **config)``, ``list_detectors()``.

The package imports one way: :mod:`~pcad.detectors.base` (the :class:`Detector` contract),
:mod:`~pcad.detectors.registry`, the shared :mod:`~pcad.detectors.patches` (patch features,
foreground) and :mod:`~pcad.detectors.training` (losses, schedule, training loop), then one
module per detector, which registers itself; the imports below load the built-in ones (adding
a detector is one new module and one line here).

Example:
    >>> from pcad.detectors import create_detector, list_detectors
    >>> "btf" in list_detectors()
    True
    >>> create_detector("btf", image_size=64).modalities
    ('rgb', 'xyz')
"""

from pcad.detectors.base import Detector
from pcad.detectors.registry import (
    create_detector,
    detector_info,
    list_detectors,
    load_detector,
    register_detector,
)

# the built-in detectors, one line each: importing a detector's module registers it
# isort: off
from pcad.detectors import patchcore  # noqa: F401  (patchcore-rgb)
from pcad.detectors import btf  # noqa: F401  (fpfh, btf)
from pcad.detectors import cfm  # noqa: F401
from pcad.detectors import m3dm  # noqa: F401
from pcad.detectors import lsfa  # noqa: F401
from pcad.detectors import synthsup  # noqa: F401
from pcad.detectors import vitad  # noqa: F401
from pcad.detectors import prototypes_ot  # noqa: F401  (prototypes-ot)
from pcad.detectors import uniad  # noqa: F401
from pcad.detectors import pbas  # noqa: F401
from pcad.detectors import fader  # noqa: F401
from pcad.detectors import hetnet  # noqa: F401
from pcad.detectors import onenip  # noqa: F401
# isort: on

__all__ = ["Detector", "create_detector", "detector_info", "list_detectors", "load_detector",
           "register_detector"]
