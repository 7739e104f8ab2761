"""The detector registry: ``register_detector``, ``create_detector``, ``list_detectors``,
``detector_info``, ``load_detector`` (the API of every pcad registry,
:class:`pcad.registry.Registry`).

This module imports no detector: each detector module registers its class with
:func:`register_detector` when imported, and :mod:`pcad.detectors` imports the built-in ones.
Registering a name that another class holds raises, unless ``overwrite=True``.

Example:
    >>> from pcad.detectors import create_detector, detector_info, list_detectors
    >>> list_detectors()  # doctest: +NORMALIZE_WHITESPACE
    ['btf', 'cfm', 'fader', 'fpfh', 'hetnet', 'lsfa', 'm3dm', 'onenip', 'patchcore-rgb', 'pbas',
     'prototypes-ot', 'synthsup', 'uniad', 'vitad']
    >>> create_detector("patchcore-rgb", coreset_ratio=0.05).config["coreset_ratio"]
    0.05
    >>> detector_info("btf").obj.modalities
    ('rgb', 'xyz')
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pcad.detectors.base import RUN_FILE, Detector, read_run_record
from pcad.errors import InvalidInputError
from pcad.registry import Entry, Registry

__all__ = ["DETECTORS", "create_detector", "detector_info", "list_detectors", "load_detector",
           "register_detector"]

#: every registered detector class, by name
DETECTORS: Registry[type[Detector]] = Registry("detector")


def register_detector(name: str, *, overwrite: bool = False,
                      **info: Any) -> Callable[[type[Detector]], type[Detector]]:
    """Class decorator registering a :class:`~pcad.detectors.base.Detector` subclass as
    ``name`` (which becomes its ``name`` attribute); ``info`` is kept in its entry.

    Raises:
        InvalidInputError: ``name`` is not a non-empty string, the class is not a Detector, or
            another class holds ``name`` and ``overwrite`` is false.
    """
    register = DETECTORS.register(name, overwrite=overwrite, **info)

    def wrap(cls: type[Detector]) -> type[Detector]:
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise InvalidInputError(f"register_detector({name!r}): expected a Detector "
                                    f"subclass, got {cls!r}")
        register(cls)
        cls.name = name
        return cls

    return wrap


def list_detectors(pattern: str | None = None) -> list[str]:
    """Registered detector names, sorted, optionally filtered by a shell ``pattern``."""
    return DETECTORS.names(pattern)


def detector_info(name: str) -> Entry[type[Detector]]:
    """The registry entry of ``name`` (``.obj``: the class, ``.description``: its summary);
    an unknown name raises InvalidInputError listing the known ones."""
    return DETECTORS.info(name)


def create_detector(name: str, **config: Any) -> Detector:
    """A new, unfitted detector ``name`` with ``config`` (unknown keys are an error)."""
    return detector_info(name).obj(**config)


def load_detector(path: str | os.PathLike[str], expect: str | None = None,
                  device: str | None = None) -> Detector:
    """Load a fitted detector saved by :meth:`Detector.save` in the folder ``path``.

    ``device``: where it computes (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``), whatever
    device it was trained on; None keeps the run's own option (:meth:`Detector.load`).

    ``expect`` checks that the run was made by that detector. Every run file is checked as it
    is read (:func:`~pcad.detectors.base.read_run_record`, the detector's ``load``): a damaged
    or edited run raises a :class:`~pcad.errors.PcadError` naming the file, never another
    exception.

    Raises:
        InvalidInputError: not a run folder, a run of another detector than ``expect``, an
            unknown detector, or a file of the run missing.
        FileFormatError: a run file is truncated, not of its format, or holds values that do
            not fit (the message names the file and what is wrong).
    """
    folder = Path(path)
    record = read_run_record(folder)
    name = record["detector"]
    if expect is not None and name != expect:
        raise InvalidInputError(f"{folder}: a run of detector {name!r}, not {expect!r}")
    try:
        cls = detector_info(name).obj
    except InvalidInputError as exc:
        raise InvalidInputError(f"{folder / RUN_FILE}: {exc}") from None
    return cls.load(folder, device=device)
