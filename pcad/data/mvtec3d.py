"""Reader of datasets in the MVTec 3D-AD layout (the real dataset, pcad's synthetic ones,
converted Eyecandies).

Layout::

    <root>/<category>/{train,validation}/good/{rgb/NNN.png, xyz/NNN.tiff}
    <root>/<category>/test/{good,<defect>}/{rgb/NNN.png, xyz/NNN.tiff, gt/NNN.png}

- xyz files may end in ``.tiff`` or ``.tif``; rgb, xyz and gt pair by file stem.
- gt PNGs: every value > 0 is anomalous (real MVTec masks hold class ids such as 253-255).
  A ``test/good`` sample without a gt file gets an all-False mask; a defective one must have
  its gt.
- Images may be non-square (rope: 900 x 400).
- Folders other than ``rgb``/``xyz``/``gt``/``meta`` inside a defect folder, the category's
  ``calibration/`` and hidden files (``.tmp`` leftovers of atomic writes) are ignored.
- ``meta/<stem>.json`` (datasets written by pcad) is a sample's commit marker, renamed last:
  in a defect folder that has a ``meta/`` folder, a sample without its meta file was cut short
  (a killed ``make-dataset``) and is skipped, with one :class:`~pcad.errors.PcadWarning`
  naming the skipped samples. Without a ``meta/`` folder (the real MVTec 3D-AD) every sample
  is read.
- A dataset with RGB but no ``xyz`` folders reads in RGB-only mode (``modality="auto"``).

Opening a dataset only lists file names; ``dataset[i]`` reads sample ``i``'s files and checks
them (sizes agree, no NaN in xyz). Samples are ordered by defect folder, then by stem
(natural order), both sorted.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io import write_rgb, write_xyz_tiff
    >>> from pcad.data.mvtec3d import MVTec3DDataset
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = pathlib.Path(tmp.name)
    >>> d = root / "bagel" / "train" / "good"
    >>> write_rgb(d / "rgb" / "000.png", np.zeros((4, 6, 3), np.uint8))
    >>> write_xyz_tiff(d / "xyz" / "000.tiff", np.ones((4, 6, 3)))
    >>> ds = MVTec3DDataset(root, "bagel", "train")
    >>> len(ds), ds.modality, ds[0].xyz.shape, ds[0].label
    (1, 'rgb+xyz', (4, 6, 3), 0)
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcad.checks import check_choice
from pcad.data._files import (
    NAN_POLICIES,
    XYZ_EXTENSIONS,
    files_by_stem,
    natural_key,
    read_gt,
    read_rgb_file,
    read_xyz_file,
    visible_dirs,
)
from pcad.data.sample import GOOD, EntryDataset, Sample
from pcad.errors import FileFormatError, InvalidInputError, PcadWarning

__all__ = [
    "MODALITIES",
    "SPLITS",
    "MVTec3DDataset",
    "MVTec3DEntry",
    "list_categories",
    "list_defect_types",
]

SPLITS: tuple[str, ...] = ("train", "validation", "test")
MODALITIES: tuple[str, ...] = ("auto", "rgb", "xyz", "rgb+xyz")
RGB_EXTENSIONS = (".png",)
GT_EXTENSIONS = (".png",)
META_EXTENSIONS = (".json",)
#: the skipped samples a warning names before it says "and N more"
SHOWN_SKIPPED = 10


def _check_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: dataset root is not a folder")
    return path


def list_categories(root: str | os.PathLike[str]) -> list[str]:
    """Categories under ``root``: the folders holding a ``train``, ``validation`` or ``test``
    folder, sorted.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> root = pathlib.Path(tmp.name)
        >>> (root / "tire" / "test").mkdir(parents=True)
        >>> (root / "notes").mkdir()
        >>> list_categories(root)
        ['tire']
        >>> tmp.cleanup()
    """
    base = _check_root(root)
    return [c for c in visible_dirs(base) if any((base / c / s).is_dir() for s in SPLITS)]


def _category_dir(root: Path, category: str) -> Path:
    cats = list_categories(root)
    if not isinstance(category, str) or category not in cats:
        raise InvalidInputError(
            f"category: {category!r} is not in {root}; categories there: "
            f"{', '.join(cats) if cats else '(none)'}"
        )
    return root / category


def list_defect_types(root: str | os.PathLike[str], category: str) -> list[str]:
    """The defect folders of ``<root>/<category>/test`` other than ``good``, sorted."""
    base = _category_dir(_check_root(root), category)
    return [d for d in visible_dirs(base / "test") if d != GOOD]


@dataclass(frozen=True)
class MVTec3DEntry:
    """The files of one sample (not loaded): paths are None where the modality is off or,
    for ``gt``, where the sample has none (training samples, good test samples without gt)."""

    defect: str
    stem: str
    rgb: Path | None
    xyz: Path | None
    gt: Path | None

    @property
    def label(self) -> int:
        return 0 if self.defect == GOOD else 1


class MVTec3DDataset(EntryDataset):
    """One category and split of an MVTec 3D-AD style dataset.

    Args:
        root: the dataset folder (holding one folder per category).
        category: a category of :func:`list_categories`.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        modality: ``"rgb+xyz"``, ``"rgb"`` (``xyz`` left None), ``"xyz"`` (``rgb`` left None)
            or ``"auto"``: every modality whose folders exist (an RGB-only dataset gives
            ``"rgb"``).
        nan: ``"error"`` (default): an xyz file with NaN or infinite coordinates raises
            FileFormatError naming it; ``"zero"``: such pixels become ``(0, 0, 0)``.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        InvalidInputError: unknown ``split``/``modality``/``nan``, or a category or split that
            is not on disk (the message lists what exists).
        FileFormatError: inconsistent folders: a sample with an RGB image and no xyz file (or
            the reverse), a defective test sample without gt, a requested modality without
            its folders, two files with one stem.

    ``dataset[i]`` returns a :class:`~pcad.data.sample.Sample` and raises FileFormatError,
    naming the file, for a corrupt or truncated TIFF/PNG, RGB and xyz of different sizes, a gt
    mask of the wrong size or NaN in xyz.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        category: str,
        split: str = "train",
        modality: str = "auto",
        nan: str = "error",
    ) -> None:
        self.root = _check_root(root)
        self.split = check_choice(split, "split", SPLITS)
        check_choice(modality, "modality", MODALITIES)
        self.nan = check_choice(nan, "nan", NAN_POLICIES)
        cat_dir = _category_dir(self.root, category)
        self.category = category
        split_dir = cat_dir / self.split
        if not split_dir.is_dir():
            present = [s for s in SPLITS if (cat_dir / s).is_dir()]
            raise InvalidInputError(
                f"split: {cat_dir} has no {self.split!r} folder; splits there: "
                f"{', '.join(present) if present else '(none)'}"
            )
        self.split_dir = split_dir
        defects = visible_dirs(split_dir)
        if not defects:
            raise FileFormatError(f"{split_dir}: no defect folders (expected e.g. 'good/')")
        self.defect_folders: list[str] = defects
        self.modality = self._resolve_modality(modality, defects)
        self.entries: list[MVTec3DEntry] = []
        #: ``"<defect>/<stem>"`` of the samples skipped for lack of their meta file
        self.skipped: list[str] = []
        for defect in defects:
            self.entries.extend(self._list_defect(defect))
        if self.skipped:
            shown = ", ".join(self.skipped[:SHOWN_SKIPPED])
            more = (f" and {len(self.skipped) - SHOWN_SKIPPED} more"
                    if len(self.skipped) > SHOWN_SKIPPED else "")
            warnings.warn(PcadWarning(
                f"{split_dir}: skipped {len(self.skipped)} incomplete sample(s) without "
                f"meta/<stem>.json (a sample's last file; the writing was cut short): "
                f"{shown}{more}; rerun pcad make-dataset on this folder to finish them"),
                stacklevel=2)

    # ----------------------------------------------------------------------------------------
    # listing
    # ----------------------------------------------------------------------------------------

    def _resolve_modality(self, modality: str, defects: list[str]) -> str:
        has = {
            m: any((self.split_dir / d / m).is_dir() for d in defects) for m in ("rgb", "xyz")
        }
        if modality == "auto":
            found = [m for m in ("rgb", "xyz") if has[m]]
            if not found:
                raise FileFormatError(
                    f"{self.split_dir}: no rgb/ or xyz/ folder in any of "
                    f"{', '.join(defects)}"
                )
            return "+".join(found)
        for m in modality.split("+"):
            if not has[m]:
                raise FileFormatError(
                    f"{self.split_dir}: modality {modality!r} requested but no defect folder "
                    f"has a {m}/ folder"
                )
        return modality

    def _list_defect(self, defect: str) -> list[MVTec3DEntry]:
        d = self.split_dir / defect
        use = self.modality.split("+")
        found: dict[str, dict[str, Path]] = {}
        if "rgb" in use:
            found["rgb"] = files_by_stem(d / "rgb", RGB_EXTENSIONS)
        if "xyz" in use:
            found["xyz"] = files_by_stem(d / "xyz", XYZ_EXTENSIONS)
        stems = sorted(set().union(*(set(v) for v in found.values())), key=natural_key)
        gts = files_by_stem(d / "gt", GT_EXTENSIONS) if self.split == "test" else {}
        if (d / "meta").is_dir():  # written by pcad: meta/<stem>.json commits a sample
            metas = files_by_stem(d / "meta", META_EXTENSIONS)
            self.skipped.extend(f"{defect}/{s}" for s in stems if s not in metas)
            stems = [s for s in stems if s in metas]
        entries = []
        for stem in stems:
            for role, files in found.items():
                if stem not in files:
                    other = next(r for r in found if r != role)
                    ext = ".png" if role == "rgb" else ".tiff"
                    raise FileFormatError(
                        f"{d / role / (stem + ext)}: missing; {found[other][stem]} has no "
                        f"matching {role} file"
                    )
            gt = gts.get(stem)
            if self.split == "test" and defect != GOOD and gt is None:
                raise FileFormatError(
                    f"{d / 'gt' / (stem + '.png')}: missing; defective test sample {stem!r} "
                    "needs a ground-truth mask"
                )
            entries.append(
                MVTec3DEntry(defect, stem, found.get("rgb", {}).get(stem),
                             found.get("xyz", {}).get(stem), gt)
            )
        return entries

    # ----------------------------------------------------------------------------------------
    # access
    # ----------------------------------------------------------------------------------------

    @property
    def defect_types(self) -> list[str]:
        """Defect folders of this split other than ``good``."""
        return [d for d in self.defect_folders if d != GOOD]

    def load(self, entry: MVTec3DEntry) -> Sample:
        """Read and check one entry's files."""
        rgb = read_rgb_file(entry.rgb) if entry.rgb is not None else None
        xyz = read_xyz_file(entry.xyz, self.nan) if entry.xyz is not None else None
        if rgb is not None and xyz is not None and rgb.shape[:2] != xyz.shape[:2]:
            raise FileFormatError(
                f"{entry.xyz}: xyz is {xyz.shape[0]}x{xyz.shape[1]} (HxW) but the RGB image "
                f"{entry.rgb} is {rgb.shape[0]}x{rgb.shape[1]}"
            )
        ref = xyz if xyz is not None else rgb
        assert ref is not None
        hw = (int(ref.shape[0]), int(ref.shape[1]))
        if entry.gt is not None:
            mask = read_gt(entry.gt)
            if mask.shape != hw:
                raise FileFormatError(
                    f"{entry.gt}: gt mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but the "
                    f"sample's images are {hw[0]}x{hw[1]}"
                )
        else:
            mask = np.zeros(hw, dtype=bool)
        paths = {
            role: p for role, p in (("rgb", entry.rgb), ("xyz", entry.xyz), ("gt", entry.gt))
            if p is not None
        }
        return Sample(
            rgb=rgb, xyz=xyz, mask=mask, label=entry.label, category=self.category,
            defect=entry.defect, split=self.split, paths=paths, stem=entry.stem,
        )

    def __repr__(self) -> str:
        return (
            f"MVTec3DDataset(root={str(self.root)!r}, category={self.category!r}, "
            f"split={self.split!r}, modality={self.modality!r}, samples={len(self)})"
        )
