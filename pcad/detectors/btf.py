"""BTF's detectors (Horwitz & Hoshen, "Back to the Feature", 3D-ADS): ``fpfh`` and ``btf``.

Both are PatchCore memory-bank detectors (:class:`~pcad.detectors.patchcore.PatchMemoryDetector`)
whose image score is the map's maximum over the part (``image_score="auto"``).

- ``fpfh``: FPFH of the organized cloud (background plane removed, resized with nearest
  neighbour to ``image_size``) averaged over the patch grid
  (:func:`~pcad.detectors.patches.fpfh_patches`): BTF's 3D-only detector.
Both take ``device`` (``"auto"``: CUDA when available; ``"cpu"``, ``"cuda"``, ``"cuda:N"``):
the backbone, the greedy coreset and the nearest-neighbour search run there; FPFH stays an
Open3D feature on the CPU.

- ``btf``: RGB backbone features and FPFH, concatenated per patch in one bank (BTF's RGB +
  FPFH). Each modality is divided by its mean feature norm on the training set, so that
  neither dominates the distance by its units alone (BTF concatenates raw features; the
  scaling is pcad's). One bank, so one score source: a patch's score is its distance to the
  nearest bank feature in the concatenated space, ``min_j sqrt(d_rgb,j^2 + d_xyz,j^2)``, which
  is non-decreasing in each half's distances (no weights to invert; covered by
  ``tests/test_monotone_fusion.py``, a stronger bump never scores lower there).

The sample's foreground (background-plane fit) is computed once per prediction and shared by
the FPFH features and the image score (:class:`~pcad.detectors.patches.SampleForeground`).

Example:
    >>> from pcad.detectors import create_detector
    >>> det = create_detector("btf", image_size=112)
    >>> det.modalities
    ('rgb', 'xyz')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcad.detectors.patchcore import PatchCoreRGB, PatchMemoryDetector
from pcad.detectors.patches import SampleForeground, fpfh_patches
from pcad.detectors.registry import register_detector

__all__ = ["BTFDetector", "FPFHDetector"]


@register_detector("fpfh")
class FPFHDetector(PatchMemoryDetector):
    """BTF's 3D-only detector: FPFH patch features in a PatchCore bank."""

    modalities = ("xyz",)

    def patch_features(self, sample: Any, foreground: SampleForeground | None = None
                       ) -> dict[str, np.ndarray]:
        return {"xyz": fpfh_patches(sample.xyz, self.config["image_size"], self.grid,
                                    foreground=foreground)}


@register_detector("btf")
class BTFDetector(PatchCoreRGB):
    """BTF's multimodal detector: RGB backbone + FPFH patch features in one bank."""

    modalities = ("rgb", "xyz")

    def point_features(self, sample: Any, foreground: SampleForeground | None = None
                       ) -> dict[str, np.ndarray]:
        return {"xyz": fpfh_patches(sample.xyz, self.config["image_size"], self.grid,
                                    foreground=foreground)}
