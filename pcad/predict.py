"""Apply a trained run to new, unlabelled scans (what ``pcad predict`` runs).

Inputs (:func:`collect_scans`) are files or folders:

- an xyz TIFF (``.tiff``/``.tif``, an organized ``(H, W, 3) float32`` cloud) with its RGB image
  found beside it: in the MVTec 3D-AD layout ``<dir>/xyz/NNN.tiff`` pairs with
  ``<dir>/rgb/NNN.png``, else ``NNN.tiff`` pairs with ``NNN.png`` in the same folder;
- an RGB image (``.png``/``.jpg``/``.jpeg``/``.bmp``), paired with its xyz the same way (for
  RGB-only detectors the image alone);
- a folder: every such scan under it (recursively; ``gt/``, ``meta/``, ``calibration/`` and
  hidden entries are skipped), e.g. a dataset split folder (``<root>/<category>/test``) whose
  labels are ignored.

Only the modalities the run's detector needs are read; a scan that lacks one is an error naming
the file, raised before anything is predicted.

For each scan (in input order) the run's detector gives a raw image score and an anomaly map;
with the run's calibration (:mod:`pcad.calibration`, recorded by ``pcad train``) the score is
also normalized to ``[0, 1]`` (the threshold at 0.5) and decided ``ok``/``defect``; a run
without one gets raw scores and no decision. Written in ``out``:

- ``maps/<name>.tiff``: the raw anomaly map, ``(H, W) float32`` at the scan's resolution;
- ``overlays/<name>.png``: the map over the RGB image (or the depth, without one): the map
  normalized like the score (the calibration's sigmoid: pixels above 0.5 are above the
  threshold; without a calibration the map's own min-max), on a black-red-yellow ramp;
- ``predictions.csv``: ``name,rgb,xyz,score,normalized_score,decision`` per scan;
- ``predictions.json``: the run, detector, calibration and the same rows (written last).

The results are written as one unit: staged in a hidden folder inside ``out``, then moved into
place (``maps/`` and ``overlays/`` replace earlier ones, the JSON summary last); a failure (a
bad file, an interrupted run) leaves ``out`` as it was and no new folder.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from pcad.io import write_rgb
    >>> from pcad.predict import collect_scans
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> write_rgb(tmp / "good" / "rgb" / "000.png", np.zeros((8, 8, 3), np.uint8))
    >>> [(s.name, s.rgb.name, s.xyz) for s in collect_scans([tmp], ("rgb",))]
    [('good_000', '000.png', None)]
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcad.errors import FileFormatError, InvalidInputError

__all__ = ["RGB_SUFFIXES", "SKIPPED_FOLDERS", "XYZ_SUFFIXES", "Scan", "collect_scans",
           "load_scan", "overlay", "predict_run"]

RGB_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
XYZ_SUFFIXES = (".tiff", ".tif")
#: folders skipped when a folder is searched for scans (ground truth, commit markers, MVTec's
#: camera calibration)
SKIPPED_FOLDERS = ("gt", "meta", "calibration")
#: the summary's columns
COLUMNS = ("name", "rgb", "xyz", "score", "normalized_score", "decision")


@dataclass(frozen=True)
class Scan:
    """One input scan: its output ``name`` and files (None: that modality is not read)."""

    name: str
    rgb: Path | None
    xyz: Path | None

    @property
    def path(self) -> Path:
        """The scan's main file (xyz, else RGB)."""
        return self.xyz if self.xyz is not None else self.rgb  # type: ignore[return-value]


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "xyz" if suffix in XYZ_SUFFIXES else "rgb" if suffix in RGB_SUFFIXES else None


def _key(path: Path) -> tuple[Path, str]:
    """Files of one scan share this: ``(<dir>, stem)`` for ``<dir>/{rgb,xyz}/stem.*`` and
    for ``<dir>/stem.*``."""
    folder = path.parent.parent if path.parent.name in ("rgb", "xyz") else path.parent
    return folder, path.stem


def _partner(path: Path, kind: str) -> Path | None:
    """The file of modality ``kind`` that belongs with ``path`` (None if there is none)."""
    folder, stem = _key(path)
    suffixes = XYZ_SUFFIXES if kind == "xyz" else RGB_SUFFIXES
    for d in (folder / kind, folder):
        for suffix in suffixes:
            for cand in (d / (stem + suffix), d / (stem + suffix.upper())):
                if cand.is_file() and cand != path:
                    return cand
    return None


def _walk(root: Path, exclude: frozenset[Path] = frozenset()) -> list[Path]:
    """Scan files under ``root``, sorted, skipping hidden entries, :data:`SKIPPED_FOLDERS`
    and the folders ``exclude`` (resolved paths: the results folder)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and d.lower() not in SKIPPED_FOLDERS
                             and (Path(dirpath) / d).resolve() not in exclude)
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if not f.startswith(".") and _kind(p) is not None:
                found.append(p)
    return found


def collect_scans(inputs: Sequence[str | os.PathLike[str]], modalities: Sequence[str],
                  exclude: Sequence[str | os.PathLike[str]] = ()) -> list[Scan]:
    """The scans of ``inputs`` (files or folders; module docstring), each with the files of
    ``modalities`` (``"rgb"``, ``"xyz"``), in input order, each scan once. Folders
    ``exclude`` (e.g. the results folder, whose overlays are PNGs) are not searched.

    Names: a file's stem, prefixed by its folder path relative to a folder input
    (``good/xyz/000.tiff`` under ``test/`` -> ``good_000``) or, for a file input in the
    MVTec layout, by the folder above ``xyz/``/``rgb/`` (``crack/xyz/000.tiff`` ->
    ``crack_000``); a repeated name gets ``-1``,
    ``-2``... appended.

    Raises:
        InvalidInputError: no input, a path that does not exist, a file of another kind, a
            folder without scans, a scan without a modality the detector needs (naming it).
    """
    if not inputs:
        raise InvalidInputError("INPUT: give at least one scan file or folder")
    need = tuple(modalities)
    skip = frozenset(Path(p).resolve() for p in exclude)
    seen: dict[tuple[Path, str], Scan] = {}
    names: dict[str, int] = {}
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            files = _walk(root, skip)
            if not files:
                raise InvalidInputError(f"{root}: no scan files (xyz {'/'.join(XYZ_SUFFIXES)} "
                                        f"or RGB {'/'.join(RGB_SUFFIXES)}) in this folder")
        elif root.is_file():
            if _kind(root) is None:
                raise InvalidInputError(
                    f"{root}: not a scan file (expected an xyz {'/'.join(XYZ_SUFFIXES)} or an "
                    f"RGB {'/'.join(RGB_SUFFIXES)} file, or a folder of them)")
            files = [root]
        else:
            raise InvalidInputError(f"{root}: no such file or folder")
        for f in files:
            key = _key(f)
            if key in seen:
                continue
            paths: dict[str, Path | None] = {}
            for kind in ("rgb", "xyz"):
                if kind not in need:
                    paths[kind] = None
                elif _kind(f) == kind:
                    paths[kind] = f
                else:
                    paths[kind] = _partner(f, kind)
                    if paths[kind] is None:
                        what = "xyz TIFF" if kind == "xyz" else "RGB image"
                        raise InvalidInputError(
                            f"{f}: no {what} for this scan (looked for {key[1]}.* in "
                            f"{key[0] / kind} and {key[0]}); the run's detector needs "
                            f"{' and '.join(need)}")
            if root.is_dir():
                rel = key[0].relative_to(root).parts if key[0] != root else ()
                base = "_".join((*rel, key[1]))
            elif f.parent.name in ("rgb", "xyz"):  # <dir>/xyz/000.tiff -> <dir>_000
                base = f"{key[0].name}_{key[1]}"
            else:
                base = key[1]
            n = names.get(base, 0)
            names[base] = n + 1
            name = base if n == 0 else f"{base}-{n}"
            seen[key] = Scan(name, paths["rgb"], paths["xyz"])
    return list(seen.values())


def load_scan(scan: Scan, category: str = "") -> Any:
    """The :class:`~pcad.data.Sample` of ``scan`` (label 0, an all-False mask); xyz pixels
    with NaN or infinite coordinates become ``(0, 0, 0)`` (no measurement).

    Raises:
        FileFormatError: an unreadable file, or RGB and xyz of different sizes (naming it).
    """
    from pcad.data import Sample
    from pcad.io import read_rgb, read_xyz_tiff

    def read(fn: Any, path: Path) -> np.ndarray:
        try:
            return fn(path)
        except (FileFormatError, InvalidInputError) as exc:
            raise FileFormatError(exc if str(path) in str(exc) else f"{path}: {exc}") from None
        except FileNotFoundError:
            raise
        except Exception as exc:  # a truncated TIFF, a PIL error...
            raise FileFormatError(f"{path}: cannot read the file: {type(exc).__name__}: "
                                  f"{exc}") from None

    rgb = None if scan.rgb is None else read(read_rgb, scan.rgb)
    xyz = None if scan.xyz is None else read(lambda p: read_xyz_tiff(p, nan="zero"), scan.xyz)
    if rgb is not None and xyz is not None and rgb.shape[:2] != xyz.shape[:2]:
        raise FileFormatError(f"{scan.xyz}: xyz is {xyz.shape[0]}x{xyz.shape[1]} (HxW) but the "
                              f"RGB image {scan.rgb} is {rgb.shape[0]}x{rgb.shape[1]}")
    ref = xyz if xyz is not None else rgb
    assert ref is not None
    paths = {k: p for k, p in (("rgb", scan.rgb), ("xyz", scan.xyz)) if p is not None}
    return Sample(rgb=rgb, xyz=xyz, mask=np.zeros(ref.shape[:2], bool), label=0,
                  category=category, defect="unknown", split="predict", paths=paths,
                  stem=scan.path.stem)


#: the overlay's colour ramp: black, red, yellow, white at 0, 1/3, 2/3, 1
_RAMP = np.array([[0, 0, 0], [230, 30, 20], [255, 220, 0], [255, 255, 255]], np.float64)


def overlay(heat: np.ndarray, rgb: np.ndarray | None, xyz: np.ndarray | None = None,
            alpha: float = 0.6) -> np.ndarray:
    """An ``(H, W, 3) uint8`` picture of ``heat`` (``(H, W)`` values in ``[0, 1]``) blended
    over ``rgb`` (or the depth of ``xyz`` in gray; black without either), each pixel's
    weight ``alpha * heat``.

    Example:
        >>> import numpy as np
        >>> pic = overlay(np.array([[0.0, 1.0]]), np.full((1, 2, 3), 100, np.uint8))
        >>> pic.shape, pic.dtype, pic[0, 0].tolist()
        ((1, 2, 3), dtype('uint8'), [100, 100, 100])
    """
    h = np.clip(np.nan_to_num(np.asarray(heat, np.float64)), 0.0, 1.0)
    if rgb is not None:
        base = rgb.astype(np.float64)
    elif xyz is not None:
        z = xyz[..., 2].astype(np.float64)
        valid = np.any(xyz != 0, axis=-1)
        g = np.zeros_like(z)
        if valid.any():
            lo, hi = z[valid].min(), z[valid].max()
            g[valid] = 255.0 * (1.0 - (z[valid] - lo) / (hi - lo if hi > lo else 1.0))
        base = np.repeat(g[..., None], 3, axis=-1)
    else:
        base = np.zeros((*h.shape, 3))
    pos = h * (len(_RAMP) - 1)
    colour = np.stack([np.interp(pos, np.arange(len(_RAMP)), _RAMP[:, c]) for c in range(3)],
                      axis=-1)
    w = (alpha * h)[..., None]
    return np.clip((1.0 - w) * base + w * colour, 0, 255).round().astype(np.uint8)


def _heat(amap: np.ndarray, cal: Any) -> np.ndarray:
    if cal is not None:
        return cal.normalize(amap)
    lo, hi = float(np.min(amap)), float(np.max(amap))
    return (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap, dtype=np.float64)


def predict_run(run: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]],
                out: str | os.PathLike[str], progress: bool = True,
                category: str | None = None, device: str | None = None,
                exclude: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """Predict every scan of ``inputs`` with the run ``run``; write the results to ``out``
    (module docstring). Returns the summary written to ``predictions.json``.

    ``category``: the category of the scans when known; a run trained on another one gives a
    :class:`~pcad.errors.PcadWarning` (:func:`pcad.engine.warn_category_mismatch`).
    ``device``: where the detector computes (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``;
    None: the run's own option). ``out`` and the folders ``exclude`` are not searched for
    scans.

    The run, the inputs and ``out`` are checked before the first prediction.
    """
    import tifffile
    from tqdm import tqdm

    from pcad.calibration import read_calibration
    from pcad.checks import check_out_folder
    from pcad.detectors import load_detector
    from pcad.engine import remove_dead_stages, run_category, warn_category_mismatch
    from pcad.io import write_rgb

    det = load_detector(run, device=device)
    cal = read_calibration(run)
    scans = collect_scans(inputs, det.modalities, exclude=(out, *exclude))
    out = check_out_folder(out)
    for name in ("predictions.csv", "predictions.json"):
        if (out / name).is_dir():
            raise InvalidInputError(f"--out: {out / name} is a folder; the results need that "
                                    "name (choose another --out)")
    if category is not None:
        warn_category_mismatch(run, category, action="applied to")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    remove_dead_stages(out)
    stage = Path(tempfile.mkdtemp(prefix=f".predict.{os.getpid()}.", suffix=".tmp", dir=out))
    done = False
    try:
        rows = []
        (stage / "maps").mkdir()
        (stage / "overlays").mkdir()
        for scan in tqdm(scans, disable=not progress, desc="predict", unit="scan"):
            sample = load_scan(scan, category or run_category(run) or "")
            score, amap = det.predict(sample)
            amap = np.asarray(amap, dtype=np.float32)
            tifffile.imwrite(stage / "maps" / f"{scan.name}.tiff", amap)
            write_rgb(stage / "overlays" / f"{scan.name}.png",
                      overlay(_heat(amap, cal), sample.rgb, sample.xyz))
            rows.append({"name": scan.name,
                         "rgb": None if scan.rgb is None else str(scan.rgb),
                         "xyz": None if scan.xyz is None else str(scan.xyz),
                         "score": float(score),
                         "normalized_score": None if cal is None
                         else float(cal.normalize(score)),
                         "decision": None if cal is None else cal.decide([score])[0]})
        summary = {"run": str(Path(run).resolve()), "detector": det.name,
                   "category": run_category(run),
                   "calibration": None if cal is None else cal.to_dict(),
                   "n": len(rows),
                   "n_defect": sum(r["decision"] == "defect" for r in rows),
                   "predictions": rows}
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow(["" if r[c] is None else r[c] for c in COLUMNS])
        (stage / "predictions.csv").write_text(buf.getvalue(), encoding="utf-8")
        (stage / "predictions.json").write_text(json.dumps(summary, indent=2),
                                                encoding="utf-8")
        _commit(stage, out)
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not done:  # a failed prediction into a new folder leaves none
            with contextlib.suppress(OSError):
                out.rmdir()
    return summary


def _commit(stage: Path, out: Path) -> None:
    """Move the staged results into ``out``: the old summary out first, then the folders,
    the CSV and the JSON summary last."""
    (out / "predictions.json").unlink(missing_ok=True)
    for folder in ("maps", "overlays"):
        final = out / folder
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.is_dir():
            shutil.rmtree(final)
        if (stage / folder).is_dir():
            os.replace(stage / folder, final)
    os.replace(stage / "predictions.csv", out / "predictions.csv")
    os.replace(stage / "predictions.json", out / "predictions.json")
