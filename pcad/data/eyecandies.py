"""Convert the raw Eyecandies dataset to the MVTec 3D-AD layout.

Raw layout (eyecan-ai, as read by M3DM's and CFM's ``preprocess_eyecandies.py``)::

    <raw>/<Category>/{train,val,test_public}/data/<id>_image_{0..5}.png   six lightings
                                                 <id>_depth.png           16-bit depth
                                                 <id>_info_depth.yaml     normalization: {min, max}
                                                 <id>_pose.txt            4x4 matrix
                                                 <id>_mask.png            anomaly mask (test)
                                                 ... (17 files per sample)

Depth in metres is ``png / 65535 * (max - min) + min``. It is back-projected with a pinhole
camera, focal length 711.11 px and principal point at the image centre ``(W / 2, H / 2)`` (the
same camera for every image, as M3DM), giving camera coordinates; with ``frame="world"``
(default, as M3DM) they are then mapped by the inverse of the pose matrix (M3DM computes
``inv(K @ pose) @ (u, v, 1, 1/z) * z``, which treats the pose as world-to-camera).

Output (MVTec 3D-AD layout, readable with :class:`~pcad.data.mvtec3d.MVTec3DDataset`)::

    <out>/<Category>/train/good/{rgb/NNN.png, xyz/NNN.tiff}          from train/
    <out>/<Category>/validation/good/{rgb,xyz}                       from val/
    <out>/<Category>/test/{good,bad}/{rgb,xyz,gt}                    from test_public/

A test sample is ``bad`` when its mask has any non-zero pixel (as M3DM). The RGB image is
``_image_4`` by default (as M3DM). Each sample's files are written as one unit, xyz last, so an
interrupted conversion resumes where it stopped.

Differences from M3DM: M3DM then removes the background with a rotation and thresholds
hard-wired to 512 x 512 images (its background pixels end up at one constant point rather
than at (0, 0, 0) unless that rotation is the identity, and its axes are permuted and scaled
by ``[0.1, -0.1, 0.1]``). Here the xyz stays in metres in the chosen frame; pass
``remove_plane=True`` to zero the background plane with
:func:`pcad.data.preprocess.remove_background_plane`. M3DM's ``os.path.join(root,
'/train/data')`` bug (the category is dropped) does not apply.

Example:
    >>> import numpy as np
    >>> from pcad.data.eyecandies import backproject_depth
    >>> xyz = backproject_depth(np.full((4, 6), 0.5, np.float32), focal_length=10.0)
    >>> xyz.shape, float(xyz[2, 3, 0]), float(xyz[0, 0, 2])
    ((4, 6, 3), 0.0, 0.5)
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pcad.checks import check_choice, check_int, check_positive
from pcad.data._files import guarded, natural_key, read_gt, read_rgb_file
from pcad.data.sample import GOOD
from pcad.errors import FileFormatError, InvalidInputError
from pcad.io import atomic_group, write_mask_png, write_rgb, write_xyz_tiff
from pcad.io.organized import check_pixel_count

__all__ = [
    "EYECANDIES_CATEGORIES",
    "FOCAL_LENGTH",
    "RAW_SPLITS",
    "ConversionReport",
    "backproject_depth",
    "convert_eyecandies",
    "find_raw_root",
    "list_raw_categories",
    "list_raw_ids",
    "read_depth",
    "read_depth_info",
    "read_pose",
]

EYECANDIES_CATEGORIES: tuple[str, ...] = (
    "CandyCane", "ChocolateCookie", "ChocolatePraline", "Confetto", "GummyBear",
    "HazelnutTruffle", "LicoriceSandwich", "Lollipop", "Marshmallow", "PeppermintCandy",
)  # fmt: skip

FOCAL_LENGTH = 711.11
RAW_SPLITS: dict[str, str] = {"train": "train", "val": "validation", "test_public": "test"}
BAD = "bad"
FRAMES = ("world", "camera")

_DEPTH_FILE = re.compile(r"^(\d+)_depth\.png$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# reading raw files
# --------------------------------------------------------------------------------------------


def _parse_min_max(text: str, path: Path) -> tuple[float, float]:
    """``normalization: {min, max}`` from a YAML file (PyYAML when installed, else a tiny
    parser of that one mapping in block or flow style)."""
    data: Any = None
    try:
        import yaml

        data = yaml.safe_load(text)
    except ImportError:
        data = None
    except Exception as exc:
        raise FileFormatError(f"{path}: not valid YAML: {type(exc).__name__}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("normalization"), dict):
        norm = data["normalization"]
        lo, hi = norm.get("min"), norm.get("max")
    else:
        block = re.search(r"normalization\s*:(.*)", text, re.DOTALL)
        body = block.group(1) if block else ""
        lo_m = re.search(r"\bmin\s*:\s*([-+0-9.eE]+)", body)
        hi_m = re.search(r"\bmax\s*:\s*([-+0-9.eE]+)", body)
        lo = lo_m.group(1) if lo_m else None
        hi = hi_m.group(1) if hi_m else None
    try:
        lo_f, hi_f = float(lo), float(hi)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise FileFormatError(
            f"{path}: expected 'normalization: {{min: <m>, max: <m>}}' with numbers"
        ) from None
    if not (np.isfinite(lo_f) and np.isfinite(hi_f)) or hi_f < lo_f:
        raise FileFormatError(f"{path}: invalid depth normalization min={lo_f}, max={hi_f}")
    return lo_f, hi_f


def read_depth_info(path: str | os.PathLike[str]) -> tuple[float, float]:
    """``(min, max)`` depth in metres from an ``_info_depth.yaml`` file."""
    p = Path(path)

    def read(q: Path) -> tuple[float, float]:
        try:
            text = q.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise FileFormatError(f"{q}: not a text file") from None
        return _parse_min_max(text, q)

    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    return guarded(read, p)


def _read_depth_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        check_pixel_count(path, img.height, img.width)  # from the header, before decoding
        img.load()
        if img.mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
            raise FileFormatError(
                f"{path}: expected a 16-bit grayscale depth PNG, got mode {img.mode!r}"
            )
        arr = np.asarray(img)
    if arr.ndim != 2 or 0 in arr.shape:
        raise FileFormatError(f"{path}: expected a 2-D depth image, got shape {arr.shape}")
    return arr.astype(np.float64)


def read_depth(
    depth_png: str | os.PathLike[str], info_yaml: str | os.PathLike[str]
) -> np.ndarray:
    """``(H, W) float32`` depth in metres: ``png / 65535 * (max - min) + min``."""
    p = Path(depth_png)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    raw = guarded(_read_depth_png, p)
    lo, hi = read_depth_info(info_yaml)
    return (raw / 65535.0 * (hi - lo) + lo).astype(np.float32)


def read_pose(path: str | os.PathLike[str]) -> np.ndarray:
    """``(4, 4) float64`` pose matrix from a whitespace-separated text file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")

    def read(q: Path) -> np.ndarray:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                m = np.loadtxt(q, dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise FileFormatError(f"{q}: cannot parse the pose matrix: {exc}") from None
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise FileFormatError(f"{q}: expected a finite 4x4 pose matrix, got shape {m.shape}")
        if abs(np.linalg.det(m)) < 1e-12:
            raise FileFormatError(f"{q}: the pose matrix is singular")
        return m

    return guarded(read, p)


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------


def backproject_depth(
    depth: Any,
    focal_length: float = FOCAL_LENGTH,
    principal_point: tuple[float, float] | None = None,
    pose: Any = None,
) -> np.ndarray:
    """Organized ``(H, W, 3) float32`` cloud of a depth map.

    Pixel ``(row v, column u)`` with depth ``z > 0`` becomes ``((u - cx) z / f, (v - cy) z / f,
    z)`` in camera coordinates, mapped by ``inv(pose)`` when ``pose`` (4x4, world-to-camera as
    M3DM uses it) is given. Pixels with ``z <= 0`` or a non-finite depth become ``(0, 0, 0)``.

    Args:
        depth: ``(H, W)`` depth.
        focal_length: in pixels (Eyecandies: 711.11).
        principal_point: ``(cx, cy)`` in pixels; default ``(W / 2, H / 2)`` as M3DM.
        pose: optional ``(4, 4)`` matrix.
    """
    z = np.asarray(depth, dtype=np.float64)
    if z.ndim != 2 or 0 in z.shape:
        raise InvalidInputError(f"depth: expected a non-empty (H, W) array, got shape {z.shape}")
    f = check_positive(focal_length, "focal_length")
    h, w = z.shape
    cx, cy = (w / 2.0, h / 2.0) if principal_point is None else map(float, principal_point)
    v, u = np.mgrid[:h, :w].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    zz = np.where(valid, z, 0.0)
    cam = np.stack([(u - cx) * zz / f, (v - cy) * zz / f, zz], axis=-1)
    if pose is not None:
        m = np.asarray(pose, dtype=np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise InvalidInputError(f"pose: expected a finite (4, 4) matrix, got {m.shape}")
        inv = np.linalg.inv(m)
        cam = cam @ inv[:3, :3].T + inv[:3, 3]
    out = cam.astype(np.float32)
    out[~valid] = 0.0
    # a valid point that lands exactly on (0, 0, 0) would read as missing; nudge it
    hit = valid & ~np.any(out != 0, axis=-1)
    if hit.any():
        out[hit] = np.float32(np.finfo(np.float32).tiny)
    return out


# --------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------


def _is_category(path: Path) -> bool:
    return any((path / s / "data").is_dir() for s in RAW_SPLITS)


def list_raw_categories(raw_root: str | os.PathLike[str]) -> list[str]:
    """Folders of ``raw_root`` holding ``train/data``, ``val/data`` or ``test_public/data``."""
    root = Path(raw_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    names = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((n for n in names if _is_category(root / n)), key=natural_key)


def find_raw_root(path: str | os.PathLike[str], max_depth: int = 3) -> Path:
    """The folder under ``path`` (itself or up to ``max_depth`` levels down) that holds the
    raw category folders; the Eyecandies archives extract into a nested ``Eyecandies/``."""
    start = Path(path)
    frontier = [start]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            if list_raw_categories(d):
                return d
            nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
        frontier = nxt
    raise FileFormatError(
        f"{start}: no raw Eyecandies category (a folder with train/data, val/data or "
        "test_public/data) found"
    )


def list_raw_ids(data_dir: str | os.PathLike[str]) -> list[str]:
    """Sample ids (``"000"``, ``"07"``...) of a raw ``data`` folder: those with a depth PNG."""
    d = Path(data_dir)
    if not d.is_dir():
        return []
    ids = [m.group(1) for p in d.iterdir() if (m := _DEPTH_FILE.match(p.name))]
    return sorted(ids, key=natural_key)


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """What :func:`convert_eyecandies` did: samples written and skipped (already complete),
    by ``(category, split, defect)``."""

    written: dict[tuple[str, str, str], int] = field(default_factory=dict)
    skipped: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def add(self, key: tuple[str, str, str], wrote: bool) -> None:
        target = self.written if wrote else self.skipped
        target[key] = target.get(key, 0) + 1

    @property
    def n_written(self) -> int:
        return sum(self.written.values())


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileFormatError(f"{path}: missing file of a raw Eyecandies sample")
    return path


def convert_eyecandies(
    raw_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    categories: Iterable[str] | None = None,
    *,
    splits: Iterable[str] = tuple(RAW_SPLITS),
    image_index: int = 4,
    frame: str = "world",
    focal_length: float = FOCAL_LENGTH,
    remove_plane: bool = False,
    plane_distance: float = 0.005,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert raw Eyecandies categories to the MVTec 3D-AD layout under ``out_root``.

    Args:
        raw_root: folder of the raw categories (or a folder above it, see
            :func:`find_raw_root`).
        out_root: output dataset root.
        categories: raw category names to convert; default all found.
        splits: raw splits among ``train``, ``val``, ``test_public``; missing ones are skipped.
        image_index: which of the six lightings ``_image_<k>.png`` becomes ``rgb`` (M3DM: 4).
        frame: ``"world"`` (apply the pose, as M3DM) or ``"camera"`` (no pose file needed).
        focal_length: pinhole focal length in pixels.
        remove_plane: zero the background plane (:func:`~pcad.data.preprocess.
            remove_background_plane` with M3DM's options but ``plane_distance`` metres).
        overwrite: rewrite samples whose xyz file already exists (default: skip them).

    Raises:
        FileFormatError: a missing or unreadable raw file (named), images of different sizes.
        InvalidInputError: unknown category, split, frame or image index.
    """
    root = find_raw_root(raw_root)
    found = list_raw_categories(root)
    cats = found if categories is None else list(categories)
    for c in cats:
        if c not in found:
            raise InvalidInputError(
                f"categories: {c!r} is not in {root}; categories there: "
                f"{', '.join(found) if found else '(none)'}"
            )
    split_list = [check_choice(s, "splits", tuple(RAW_SPLITS)) for s in splits]
    k = check_int(image_index, "image_index", minimum=0, maximum=5)
    check_choice(frame, "frame", FRAMES)
    out = Path(out_root)
    report = ConversionReport()
    for cat in cats:
        for raw_split in split_list:
            data = root / cat / raw_split / "data"
            for sid in list_raw_ids(data):
                _convert_one(
                    data, sid, out / cat, raw_split, k, frame, focal_length, remove_plane,
                    plane_distance, overwrite, report, cat,
                )
    return report


def _convert_one(
    data: Path, sid: str, out_cat: Path, raw_split: str, k: int, frame: str,
    focal_length: float, remove_plane: bool, plane_distance: float, overwrite: bool,
    report: ConversionReport, cat: str,
) -> None:
    split = RAW_SPLITS[raw_split]
    stem = sid.zfill(3)
    is_test = split == "test"
    mask = read_gt(_need(data / f"{sid}_mask.png")) if is_test else None
    defect = BAD if mask is not None and mask.any() else GOOD
    base = out_cat / split / defect
    xyz_path = base / "xyz" / f"{stem}.tiff"
    key = (cat, split, defect)
    if xyz_path.exists() and not overwrite:
        report.add(key, wrote=False)
        return
    depth = read_depth(_need(data / f"{sid}_depth.png"), _need(data / f"{sid}_info_depth.yaml"))
    pose = read_pose(_need(data / f"{sid}_pose.txt")) if frame == "world" else None
    xyz = backproject_depth(depth, focal_length, pose=pose)
    rgb_src = _need(data / f"{sid}_image_{k}.png")
    rgb = read_rgb_file(rgb_src)
    if rgb.shape[:2] != xyz.shape[:2]:
        raise FileFormatError(
            f"{rgb_src}: image is {rgb.shape[0]}x{rgb.shape[1]} but the depth map is "
            f"{xyz.shape[0]}x{xyz.shape[1]}"
        )
    if mask is not None and mask.shape != xyz.shape[:2]:
        raise FileFormatError(
            f"{data / f'{sid}_mask.png'}: mask is {mask.shape[0]}x{mask.shape[1]} but the "
            f"depth map is {xyz.shape[0]}x{xyz.shape[1]}"
        )
    if remove_plane:
        from pcad.data.preprocess import PreprocessOptions, remove_background_plane

        xyz = remove_background_plane(xyz, PreprocessOptions(plane_distance=plane_distance))
    with atomic_group() as stage:
        stage(base / "rgb" / f"{stem}.png", lambda tmp: write_rgb(tmp, rgb))
        if mask is not None:
            stage(base / "gt" / f"{stem}.png", lambda tmp: write_mask_png(tmp, mask))
        stage(xyz_path, lambda tmp: write_xyz_tiff(tmp, xyz))
    report.add(key, wrote=True)
