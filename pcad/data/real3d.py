"""Reader of Real3D-AD (and pcad's ``format="real3d"`` datasets).

Layout (M-3LAB/Real3D-AD)::

    <root>/<category>/train/*.pcd             4 training prototypes ("*template*.pcd")
    <root>/<category>/test/<id>_<type>.pcd    type: good, bulge, sink, ...
    <root>/<category>/gt/<id>_<type>.txt      "x y z label" rows, space-separated, label 0/1

pcad's generator writes ``test/<type>_NNN.pcd`` + ``gt/<type>_NNN.txt`` and a ``meta/``
folder, which is ignored. See :mod:`pcad.data.pointclouds` for the loading rules.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io import write_labeled_txt, write_points
    >>> from pcad.data.real3d import Real3DDataset
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = pathlib.Path(tmp.name)
    >>> pts = np.random.default_rng(0).random((50, 3))
    >>> write_points(root / "duck" / "test" / "0_bulge.pcd", pts)
    >>> write_labeled_txt(root / "duck" / "gt" / "0_bulge.txt", pts, pts[:, 0] > 0.9)
    >>> s = Real3DDataset(root, "duck", "test")[0]
    >>> s.defect, s.label, s.points.shape, s.mask.dtype
    ('bulge', 1, (50, 3), dtype('bool'))
    >>> tmp.cleanup()
"""

from __future__ import annotations

from typing import ClassVar

from pcad.data.pointclouds import PointCloudDataset
from pcad.data.sample import GOOD

__all__ = ["REAL3D_CATEGORIES", "Real3DDataset"]

REAL3D_CATEGORIES: tuple[str, ...] = (
    "airplane", "candybar", "car", "chicken", "diamond", "duck",
    "fish", "gemstone", "seahorse", "shell", "starfish", "toffees",
)  # fmt: skip


class Real3DDataset(PointCloudDataset):
    """One category and split (``"train"``/``"test"``) of Real3D-AD; see
    :class:`~pcad.data.pointclouds.PointCloudDataset` for arguments and errors."""

    GT_DIRS: ClassVar[tuple[str, ...]] = ("gt", "GT")
    GOOD_WORDS: ClassVar[tuple[str, ...]] = (GOOD,)
    NAME: ClassVar[str] = "Real3D-AD"
