"""Static copies of the registries' names that the command-line parsers show as choices.

Building the parser must not import torch, the detectors or ``synth`` (``pcad --help`` and
``pcad info`` start in well under a second), so the choices come from these tuples and
``tests/test_cli_config.py`` holds each one equal to its registry: adding a detector or a defect
type is one line here as well.

Example:
    >>> "btf" in DETECTORS and "perlin" in GEOMETRIC_DEFECTS
    True
"""

from __future__ import annotations

#: :func:`pcad.detectors.list_detectors`
DETECTORS: tuple[str, ...] = ("btf", "cfm", "fader", "fpfh", "hetnet", "lsfa", "m3dm", "onenip",
                              "patchcore-rgb", "pbas", "prototypes-ot", "synthsup", "uniad",
                              "vitad")
#: the detectors whose class has ``supports_distributed`` (train data-parallel under torchrun)
DISTRIBUTED_DETECTORS: tuple[str, ...] = ("btf", "cfm", "fpfh", "lsfa", "m3dm", "patchcore-rgb")
#: :func:`synth.defects.list_defects` with ``kind="geometric"``
GEOMETRIC_DEFECTS: tuple[str, ...] = ("bump", "crack", "dent", "hole", "perlin")
#: :func:`synth.render.render_defects`: the defect types of a rendered dataset
RENDER_DEFECTS: tuple[str, ...] = ("bump", "crack", "dent", "hole", "perlin", "contamination",
                                   "combined")
#: :data:`synth.dataset.config.DEFAULT_DEFECTS`
DATASET_DEFAULT_DEFECTS: tuple[str, ...] = ("bump", "dent", "crack", "hole", "contamination",
                                            "combined")
#: :attr:`synth.dataset.inject.InjectConfig.defects`
INJECT_DEFAULT_DEFECTS: tuple[str, ...] = ("bump", "dent", "crack", "hole")
#: :data:`synth.supervision.DEFECT_TYPES`: synthsup's synthetic defect types
SUPERVISION_DEFECTS: tuple[str, ...] = ("bump", "dent", "crack", "hole", "perlin", "texture",
                                        "colour", "graft", "scratch", "blur")
#: :data:`synth.render.conditions.CONDITIONS`: ``make-dataset --conditions``
DATASET_CONDITIONS: tuple[str, ...] = ("standard", "strong")
#: :data:`synth.dataset.config.MAX_SIDE`
DATASET_MAX_SIDE = 4096
#: :data:`synth.dataset.config.MAX_POINTS`
DATASET_MAX_POINTS = 5_000_000
