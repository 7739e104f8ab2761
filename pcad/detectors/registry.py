"""Detector registry: ``register_detector``, ``create``, ``list_detectors``, ``load_detector``.

Example:
    >>> from pcad.detectors import create, list_detectors
    >>> list_detectors()
    ['btf', 'cfm', 'fpfh', 'lsfa', 'm3dm', 'patchcore-rgb', 'synthsup']
    >>> create("patchcore-rgb", coreset_ratio=0.05).config["coreset_ratio"]
    0.05
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcad.errors import InvalidInputError

if TYPE_CHECKING:
    from pcad.detectors.base import Detector

_REGISTRY: dict[str, type[Detector]] = {}
RUN_FILE = "detector.json"


def register_detector(name: str):
    """Class decorator registering a :class:`~pcad.detectors.base.Detector` under ``name``."""

    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_builtins() -> None:
    import pcad.detectors.cfm  # noqa: F401  (registration)
    import pcad.detectors.lsfa  # noqa: F401  (registration)
    import pcad.detectors.m3dm  # noqa: F401  (registration)
    import pcad.detectors.synthsup  # noqa: F401  (registration)
    from pcad.detectors import memory_bank  # noqa: F401  (registration)


def list_detectors(pattern: str | None = None) -> list[str]:
    """Registered detector names, sorted, optionally filtered by a glob ``pattern``."""
    _load_builtins()
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def detector_class(name: str) -> type[Detector]:
    """The class registered as ``name``; unknown names list the known ones."""
    _load_builtins()
    if name not in _REGISTRY:
        raise InvalidInputError(f"detector: unknown {name!r}; expected one of {list_detectors()}")
    return _REGISTRY[name]


def create(name: str, **config: Any) -> Detector:
    """A new, unfitted detector ``name`` with ``config`` (unknown keys are an error)."""
    return detector_class(name)(**config)


def load_detector(path: str | os.PathLike[str], expect: str | None = None) -> Detector:
    """Load a fitted detector saved by :meth:`Detector.save` in the folder ``path``.

    ``expect`` checks that the run was made by that detector.
    """
    folder = Path(path)
    meta = folder / RUN_FILE
    if not meta.is_file():
        raise InvalidInputError(f"{folder}: not a detector run (no {RUN_FILE})")
    try:
        record = json.loads(meta.read_text())
        name = record["detector"]
    except (ValueError, KeyError) as exc:
        raise InvalidInputError(f"{meta}: unreadable detector record ({exc})") from None
    if expect is not None and name != expect:
        raise InvalidInputError(f"{folder}: a run of detector {name!r}, not {expect!r}")
    return detector_class(name).load(folder)
