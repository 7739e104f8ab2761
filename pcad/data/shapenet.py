"""Reader of Anomaly-ShapeNet (v2).

Layout (Chopper-233/Anomaly-ShapeNet, extracted as ``dataset/pcd``)::

    <root>/<category>/train/*template*.pcd     4 training templates
    <root>/<category>/test/<name>.pcd          e.g. 1_bulge.pcd, ashtray0_positive0.pcd
    <root>/<category>/GT/<name>.txt            "x,y,z,label" rows, comma-separated

A test file named ``positive`` (or ``good``) is a good sample. See
:mod:`pcad.data.pointclouds` for the loading rules.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io import write_labeled_txt, write_points
    >>> from pcad.data.shapenet import AnomalyShapeNetDataset
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = pathlib.Path(tmp.name)
    >>> pts = np.random.default_rng(0).random((40, 3))
    >>> write_points(root / "bag0" / "test" / "bag0_positive0.pcd", pts)
    >>> write_labeled_txt(root / "bag0" / "GT" / "bag0_positive0.txt", pts, pts[:, 0] < 0, sep=",")
    >>> s = AnomalyShapeNetDataset(root, "bag0", "test")[0]
    >>> s.defect, s.label, int(s.mask.sum())
    ('good', 0, 0)
    >>> tmp.cleanup()
"""

from __future__ import annotations

from typing import ClassVar

from pcad.data.pointclouds import PointCloudDataset
from pcad.data.sample import GOOD

__all__ = ["AnomalyShapeNetDataset"]


class AnomalyShapeNetDataset(PointCloudDataset):
    """One category and split (``"train"``/``"test"``) of Anomaly-ShapeNet; see
    :class:`~pcad.data.pointclouds.PointCloudDataset` for arguments and errors."""

    GT_DIRS: ClassVar[tuple[str, ...]] = ("GT", "gt")
    GOOD_WORDS: ClassVar[tuple[str, ...]] = ("positive", GOOD)
    NAME: ClassVar[str] = "Anomaly-ShapeNet"
