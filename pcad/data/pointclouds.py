"""Shared reader of point-cloud anomaly datasets (Real3D-AD, Anomaly-ShapeNet).

Both datasets store, per category::

    <root>/<category>/train/*.pcd              training clouds (templates / prototypes)
    <root>/<category>/test/<name>.pcd          test clouds
    <root>/<category>/<gt>/<name>.txt          per-point ground truth: x y z label

and differ in the ground-truth folder (``gt`` / ``GT``), its separator (spaces / commas) and
the word that marks a good test sample (``good`` / ``positive``). The subclasses in
:mod:`pcad.data.real3d` and :mod:`pcad.data.shapenet` set those.

The defect type is parsed from the file stem: ``_``-separated tokens, trailing digits removed,
numeric tokens and the category name dropped (``12_bulge`` → ``bulge``,
``ashtray0_positive3`` → ``good``, pcad's ``crack_004`` → ``crack``).

Points of a test sample with a ground-truth file come from that file, as the official
Real3D-AD loader does (``points_from="gt"``); ``points_from="pcd"`` reads the ``.pcd`` and
requires the ground truth to have as many rows. A good test sample without a ground-truth
file gets an all-False mask. Points are returned as stored (no centring or scaling).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from pcad.checks import check_choice
from pcad.data._files import files_by_stem, guarded, natural_key, visible_dirs
from pcad.data.sample import GOOD, EntryDataset, Sample
from pcad.errors import FileFormatError, InvalidInputError
from pcad.io import read_points

__all__ = ["PointCloudDataset", "PointEntry", "parse_defect_type"]

_TRAILING_DIGITS = re.compile(r"\d+$")
POINTS_FROM = ("gt", "pcd")


def parse_defect_type(stem: str, category: str, good_words: tuple[str, ...] = (GOOD,)) -> str:
    """Defect type named in a file stem; ``"good"`` for any of ``good_words``; ``""`` if none.

    Example:
        >>> parse_defect_type("12_bulge", "duck"), parse_defect_type("crack_004", "gear")
        ('bulge', 'crack')
        >>> parse_defect_type("ashtray0_positive2", "ashtray0", ("good", "positive"))
        'good'
    """
    cat = _TRAILING_DIGITS.sub("", category).lower()
    words = []
    for token in stem.split("_"):
        word = _TRAILING_DIGITS.sub("", token)
        if word and word.lower() != cat:
            words.append(word)
    name = "_".join(words)
    return GOOD if name.lower() in good_words else name


@dataclass(frozen=True)
class PointEntry:
    """The files of one sample (not loaded); ``gt`` is None for training samples and good test
    samples without a ground-truth file."""

    defect: str
    stem: str
    points: Path
    gt: Path | None

    @property
    def label(self) -> int:
        return 0 if self.defect == GOOD else 1


class PointCloudDataset(EntryDataset):
    """Base reader; use :class:`~pcad.data.real3d.Real3DDataset` or
    :class:`~pcad.data.shapenet.AnomalyShapeNetDataset`.

    Args:
        root: the folder holding one folder per category.
        category: a category of :meth:`list_categories`.
        split: ``"train"`` or ``"test"``.
        points_from: ``"gt"`` (default) or ``"pcd"``, see the module docstring.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        InvalidInputError: unknown split or ``points_from``, or a category/split not on disk
            (the message lists what exists).
        FileFormatError: a test file whose name has no defect type, or a defective test sample
            without its ground-truth file.

    ``dataset[i]`` raises FileFormatError naming the file for a corrupt or truncated PCD, a
    ground truth that is not ``x y z label`` with 0/1 labels, or (``points_from="pcd"``) a
    point count that differs from the ground truth's.
    """

    GT_DIRS: ClassVar[tuple[str, ...]] = ("gt",)
    GOOD_WORDS: ClassVar[tuple[str, ...]] = (GOOD,)
    SPLITS: ClassVar[tuple[str, ...]] = ("train", "test")
    NAME: ClassVar[str] = "point-cloud dataset"

    def __init__(
        self,
        root: str | os.PathLike[str],
        category: str,
        split: str = "test",
        points_from: str = "gt",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dataset root is not a folder")
        self.split = check_choice(split, "split", self.SPLITS)
        self.points_from = check_choice(points_from, "points_from", POINTS_FROM)
        cats = self.list_categories(self.root)
        if not isinstance(category, str) or category not in cats:
            raise InvalidInputError(
                f"category: {category!r} is not in {self.root}; categories there: "
                f"{', '.join(cats) if cats else '(none)'}"
            )
        self.category = category
        cat_dir = self.root / category
        split_dir = cat_dir / self.split
        if not split_dir.is_dir():
            present = [s for s in self.SPLITS if (cat_dir / s).is_dir()]
            raise InvalidInputError(
                f"split: {cat_dir} has no {self.split!r} folder; splits there: "
                f"{', '.join(present) if present else '(none)'}"
            )
        self.split_dir = split_dir
        self.entries: list[PointEntry] = self._list(cat_dir)

    @classmethod
    def list_categories(cls, root: str | os.PathLike[str]) -> list[str]:
        """Folders of ``root`` that hold a ``train`` or ``test`` folder, sorted."""
        base = Path(root)
        if not base.is_dir():
            raise FileNotFoundError(f"{base}: dataset root is not a folder")
        return [c for c in visible_dirs(base) if any((base / c / s).is_dir() for s in cls.SPLITS)]

    def _gt_dir(self, cat_dir: Path) -> Path:
        for name in self.GT_DIRS:
            if (cat_dir / name).is_dir():
                return cat_dir / name
        return cat_dir / self.GT_DIRS[0]

    def _list(self, cat_dir: Path) -> list[PointEntry]:
        clouds = files_by_stem(self.split_dir, (".pcd",))
        if not clouds:
            raise FileFormatError(f"{self.split_dir}: no .pcd files")
        stems = sorted(clouds, key=natural_key)
        if self.split == "train":
            return [PointEntry(GOOD, s, clouds[s], None) for s in stems]
        gt_dir = self._gt_dir(cat_dir)
        gts = files_by_stem(gt_dir, (".txt",))
        entries = []
        for s in stems:
            defect = parse_defect_type(s, self.category, self.GOOD_WORDS)
            if not defect:
                raise FileFormatError(
                    f"{clouds[s]}: cannot tell the defect type from the file name; expected "
                    f"'<id>_<type>.pcd' with type one of {', '.join(self.GOOD_WORDS)} or a "
                    "defect name"
                )
            gt = gts.get(s)
            if gt is None and defect != GOOD:
                raise FileFormatError(
                    f"{gt_dir / (s + '.txt')}: missing; defective test sample {clouds[s].name} "
                    "needs its per-point ground truth"
                )
            entries.append(PointEntry(defect, s, clouds[s], gt))
        entries.sort(key=lambda e: (natural_key(e.defect), natural_key(e.stem)))
        return entries

    @property
    def defect_types(self) -> list[str]:
        """Defect types of this split other than ``good``, sorted."""
        return sorted({e.defect for e in self.entries} - {GOOD}, key=natural_key)

    def _read_gt(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        data = guarded(read_points, path)
        if data.mask is None:
            raise FileFormatError(
                f"{path}: expected 'x y z label' rows (4 columns) in the ground truth"
            )
        return data.points, data.mask

    def load(self, entry: PointEntry) -> Sample:
        """Read one entry's files."""
        paths = {"points": entry.points}
        if entry.gt is None:
            points = guarded(read_points, entry.points).points
            mask = np.zeros(points.shape[0], dtype=bool)
        else:
            paths["gt"] = entry.gt
            gt_points, mask = self._read_gt(entry.gt)
            if self.points_from == "gt":
                points = gt_points
            else:
                points = guarded(read_points, entry.points).points
                if points.shape[0] != mask.shape[0]:
                    raise FileFormatError(
                        f"{entry.gt}: {mask.shape[0]} ground-truth rows but {entry.points} "
                        f"holds {points.shape[0]} points"
                    )
        return Sample(
            rgb=None, xyz=None, points=points, mask=mask, label=entry.label,
            category=self.category, defect=entry.defect, split=self.split, paths=paths,
            stem=entry.stem,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, category={self.category!r}, "
            f"split={self.split!r}, samples={len(self)})"
        )
