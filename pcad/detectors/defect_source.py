"""What a detector that trains on synthesized defects shares (``synthsup``, ``onenip``): the
checks of its ``holdout_defects`` / ``defect_types`` / ``textures`` options and the keyword
arguments of the defect source :func:`pcad.engine.train` builds for it
(:class:`synth.supervision.DefectSource`; :mod:`pcad.detectors` never imports ``synth``).

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("onenip", holdout_defects="crack", defect_types=["bump", "bump"])
    >>> sorted(det.defect_source_options().items())
    [('holdout', ['crack']), ('seed', 0), ('textures', None), ('types', ['bump'])]
"""

from __future__ import annotations

from typing import Any, ClassVar

from pcad.errors import InvalidInputError


def name_list(value: Any, key: str) -> list[str]:
    """``value`` (one name or a list of names) as a list without repeats, or a one-line
    InvalidInputError naming ``key``.

    >>> name_list("crack", "holdout_defects")
    ['crack']
    """
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{key}: expected a list of defect type names, got {value!r}")
    return list(dict.fromkeys(value))


class DefectSourceMixin:
    """For a :class:`~pcad.detectors.base.Detector` whose ``config`` has ``holdout_defects``,
    ``defect_types``, ``textures`` and ``seed``: :meth:`check_source_options` in ``__init__``,
    :meth:`defect_source_options` for the engine."""

    needs_defect_source: ClassVar[bool] = True
    config: dict[str, Any]

    def check_source_options(self) -> None:
        """Check and normalise the three options in :attr:`config` (one-line errors)."""
        c = self.config
        c["holdout_defects"] = name_list(c["holdout_defects"], "holdout_defects")
        if c["defect_types"] is not None:
            c["defect_types"] = name_list(c["defect_types"], "defect_types")
        if c["textures"] is not None and not isinstance(c["textures"], str):
            raise InvalidInputError(f"textures: expected a folder path, got {c['textures']!r}")

    def defect_source_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`synth.supervision.DefectSource` for this configuration
        (what :func:`pcad.engine.train` builds the source from)."""
        opts: dict[str, Any] = {"holdout": list(self.config["holdout_defects"]),
                                "textures": self.config["textures"], "seed": self.config["seed"]}
        if self.config["defect_types"] is not None:
            opts["types"] = list(self.config["defect_types"])
        return opts
