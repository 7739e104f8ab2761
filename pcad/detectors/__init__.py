"""Anomaly detectors in a registry: ``create(name, **config)``, ``list_detectors()``.

Example:
    >>> from pcad.detectors import list_detectors
    >>> "btf" in list_detectors()
    True
"""

from pcad.detectors.base import Detector
from pcad.detectors.registry import (
    create,
    detector_class,
    list_detectors,
    load_detector,
    register_detector,
)

__all__ = ["Detector", "create", "detector_class", "list_detectors", "load_detector",
           "register_detector"]
