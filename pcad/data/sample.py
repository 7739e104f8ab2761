"""One dataset sample, whatever the dataset: an organized RGB + xyz scan or a point cloud.

Readers load a sample's files when it is indexed (``dataset[i]``), not when the dataset is
opened; opening only lists file names. A :class:`Sample` holds plain numpy arrays.

Example:
    >>> import numpy as np

from pcad.errors import InvalidInputError
    >>> from pcad.data.sample import Sample
    >>> s = Sample(rgb=None, xyz=np.zeros((2, 3, 3), np.float32), mask=np.zeros((2, 3), bool),
    ...            label=0, category="bagel", defect="good", split="test")
    >>> s.kind, s.shape, s.is_anomalous
    ('organized', (2, 3), False)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pcad.errors import InvalidInputError

__all__ = ["GOOD", "EntryDataset", "Sample", "SampleKind"]

GOOD = "good"

SampleKind = Literal["organized", "points"]


@dataclass(eq=False)
class Sample:
    """A loaded sample.

    Attributes:
        rgb: ``(H, W, 3) uint8`` colour image, or None (xyz-only reading, point datasets).
        xyz: ``(H, W, 3) float32`` organized cloud, ``(0, 0, 0)`` = no measurement, or None
            (RGB-only datasets, point datasets).
        points: ``(N, 3) float32`` unorganized cloud (Real3D-AD, Anomaly-ShapeNet), or None.
        mask: ground truth, True = anomalous: ``(H, W) bool`` for organized samples (all
            False for good and training samples), ``(N,) bool`` for point clouds.
        label: 0 for a good sample, 1 for an anomalous one.
        category: the category (folder) name.
        defect: ``"good"`` or the defect type (the folder name, or parsed from the file name).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        paths: the files read, by role (``"rgb"``, ``"xyz"``, ``"gt"``, ``"points"``).
        stem: the file stem shared by the sample's files (``"000"``, ``"12_bulge"``...).
    """

    rgb: np.ndarray | None
    xyz: np.ndarray | None
    mask: np.ndarray | None
    label: int
    category: str
    defect: str
    split: str
    points: np.ndarray | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    stem: str = ""

    @property
    def kind(self) -> SampleKind:
        """``"points"`` for an unorganized cloud, else ``"organized"`` (xyz and/or RGB)."""
        return "points" if self.points is not None else "organized"

    @property
    def shape(self) -> tuple[int, ...]:
        """``(H, W)`` of an organized sample, ``(N,)`` of a point cloud."""
        if self.points is not None:
            return (int(self.points.shape[0]),)
        img = self.xyz if self.xyz is not None else self.rgb
        if img is None:
            return tuple(self.mask.shape) if self.mask is not None else ()
        return (int(img.shape[0]), int(img.shape[1]))

    @property
    def is_anomalous(self) -> bool:
        """True for a sample with a defect (``label == 1``)."""
        return self.label == 1

    @property
    def path(self) -> Path | None:
        """The sample's main file: xyz, else points, else RGB."""
        for role in ("xyz", "points", "rgb"):
            if role in self.paths:
                return self.paths[role]
        return None


class EntryDataset:
    """Indexing shared by the readers: ``entries`` (listed without reading files, each with
    a ``label``) and ``load(entry) -> Sample`` give ``len``, iteration, ``[i]`` and ``labels``."""

    entries: list

    def load(self, entry) -> Sample:  # pragma: no cover - each reader defines it
        raise NotImplementedError

    @property
    def labels(self) -> np.ndarray:
        """``(len,) int64``: 0 good, 1 anomalous, without reading any file."""
        return np.array([e.label for e in self.entries], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int) -> Sample:
        n = len(self.entries)
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise InvalidInputError(f"index: expected an integer, got {index!r}")
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        return self.load(self.entries[int(index)])

