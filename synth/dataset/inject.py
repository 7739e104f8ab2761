"""Inject mode: geometric defects on the good scans of an existing MVTec 3D-AD-layout dataset.

For every category of ``source`` (real MVTec 3D-AD or ours), the good scans (``test/good``,
else ``train/good``, :func:`good_scans`) are cycled through; each new test sample takes one and
applies a geometric defect to its foreground with :func:`synth.apply_to_scan` (pixels off the
background plane; sizes relative to the object, centre on the object), :func:`inject_sample`.
The RGB image is copied unchanged: this mode changes geometry only. The ground truth is the
synthesizer's mask (holes included). ``train``, ``validation``, ``test/good`` and
``calibration`` are copied so that the output is a complete dataset. The output folder follows
the rules of :mod:`synth.dataset.output` (locked for the run, refused when it holds another
dataset's samples) and a resumed run removes only dead writers' temporary files.

Example:
    >>> from synth.dataset.inject import find_categories
    >>> find_categories("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FileNotFoundError: /nonexistent: no such folder
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcad.checks import check_int
from pcad.errors import InvalidInputError
from pcad.geometry import foreground_mask
from pcad.io import atomic_group, atomic_write, read_xyz_tiff, write_mask_png, write_xyz_tiff
from synth.apply import apply_to_scan
from synth.dataset.config import sample_seed
from synth.dataset.output import claim_record, locked_output
from synth.dataset.sample import remove_stale_temps, width
from synth.defects import list_defects

XYZ_SUFFIXES = (".tiff", ".tif")


def find_categories(source: str | Path) -> list[str]:
    """Category folders of an MVTec 3D-AD-layout root (those with good xyz scans)."""
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    cats = sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (good_scans(p) or (p / "train" / "good" / "xyz").is_dir()))
    if not cats:
        raise InvalidInputError(f"{root}: no MVTec 3D-AD category (<category>/train/good/xyz or "
                                "<category>/test/good/xyz) found")
    return cats


def good_scans(cat_dir: str | Path) -> list[Path]:
    """The good xyz scans of a category folder that defects go onto: ``test/good/xyz``, else
    ``train/good/xyz`` (sorted; empty when neither holds a ``.tiff``/``.tif``)."""
    cat_dir = Path(cat_dir)
    for split in ("test", "train"):
        d = cat_dir / split / "good" / "xyz"
        if d.is_dir():
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in XYZ_SUFFIXES)
            if files:
                return files
    return []


@dataclass(frozen=True)
class InjectConfig:
    """What defines an injected dataset's bytes (written to ``dataset.json``)."""

    source: str
    defects: tuple[str, ...] = ("bump", "dent", "crack", "hole")
    test_defect: int = 4
    seed: int = 0
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", str(Path(self.source).resolve()))
        check_int(self.test_defect, "--test-defect", minimum=0)
        check_int(self.seed, "--seed", minimum=0)
        geometric = list_defects(kind="geometric")
        for d in self.defects:
            if d not in geometric:
                raise InvalidInputError(f"--defects: inject mode takes geometric defects "
                                        f"{geometric}, got {d!r}")


def _copy_good(src: Path, dst: Path) -> None:
    for sub in ("train", "validation", "test/good", "calibration"):
        s = src / sub
        if s.is_dir() and not (dst / sub).exists():
            tmp = dst / (sub.replace("/", "_") + ".copying")
            if tmp.exists():
                shutil.rmtree(tmp)
            shutil.copytree(s, tmp)
            (dst / sub).parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(dst / sub)


class ScanCache:
    """The last good scan read, with its foreground computed once (``cache[path]``).

    A good scan is the source of one test sample per defect type; its background-plane fit
    does not depend on the defect. Only the last scan is kept, so memory stays at one scan:
    callers visit the defects of one source scan one after the other.

    Example:
        >>> cache = ScanCache()
        >>> cache.path is None
        True
    """

    def __init__(self) -> None:
        self.path: Path | None = None
        self.scan: tuple[np.ndarray, np.ndarray] | None = None

    def __getitem__(self, src: Path) -> tuple[np.ndarray, np.ndarray]:
        """``(xyz (H, W, 3) float32, foreground (H, W) bool)`` of the scan file ``src``."""
        if self.scan is None or self.path != src:
            xyz = read_xyz_tiff(src)
            self.path, self.scan = src, (xyz, foreground_mask(xyz))
        return self.scan


def inject_sample(src: Path, category: str, defect: str, index: int, seed: int,
                  scans: ScanCache | None = None,
                  **params: Any) -> tuple[np.ndarray, np.ndarray, Path | None, dict[str, Any]]:
    """Test sample ``index`` of ``test/<defect>``: the scan ``src`` with the defect on its
    foreground (:func:`synth.apply_to_scan` with ``seed`` and ``params``).

    ``scans`` reuses scans and foregrounds already computed (the result is the same).

    Returns ``xyz (H, W, 3) float32``, ``gt (H, W) bool``, the RGB image next to the scan
    (``<split>/rgb/<stem>.*``, copied unchanged; None when absent) and the sample's ``meta``
    (``params`` are recorded in it too).
    """
    xyz, fg = (scans if scans is not None else ScanCache())[src]
    res = apply_to_scan(xyz, defect, seed=seed, foreground=fg, **params)
    rgb_src = next((p for p in (src.parent.parent / "rgb").glob(src.stem + ".*")), None)
    meta = {"category": category, "split": f"test/{defect}", "index": index,
            "sample_seed": seed, "source_xyz": str(src),
            "source_rgb": str(rgb_src) if rgb_src else None, "defect": defect, **params,
            "geometric": res.params, "n_anomalous": int(res.mask.sum())}
    return res.points, res.mask, rgb_src, meta


def write_injected(base: Path, stem: str, rgb_src: Path | None, xyz: np.ndarray,
                   gt: np.ndarray, meta: dict[str, Any]) -> None:
    """One injected sample under ``base`` (``test/<defect>``) as a unit: ``rgb/<stem>.*``
    (copied from ``rgb_src``), ``xyz/<stem>.tiff``, ``gt/<stem>.png``, then
    ``meta/<stem>.json``."""
    text = json.dumps(meta, indent=1, sort_keys=True)
    with atomic_group() as stage:
        if rgb_src is not None:
            stage(base / "rgb" / f"{stem}{rgb_src.suffix.lower()}",
                  lambda tmp: shutil.copyfile(rgb_src, tmp))
        stage(base / "xyz" / f"{stem}.tiff", lambda tmp: write_xyz_tiff(tmp, xyz))
        stage(base / "gt" / f"{stem}.png", lambda tmp: write_mask_png(tmp, gt))
        stage(base / "meta" / f"{stem}.json", lambda tmp: tmp.write_text(text))


def inject(cfg: InjectConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Write the injected dataset to ``out`` (resumable; see the module docstring)."""
    from tqdm import tqdm

    source, root = Path(cfg.source), Path(out)
    cats = find_categories(source)
    if cfg.categories:
        missing = sorted(set(cfg.categories) - set(cats))
        if missing:
            raise InvalidInputError(f"--categories: {missing} not in {source} ({cats})")
        cats = [c for c in cats if c in cfg.categories]
    goods = {c: good_scans(source / c) for c in cats}
    empty = [c for c in cats if not goods[c]]
    if empty and cfg.test_defect > 0:
        raise InvalidInputError(f"{source / empty[0]}: no good scan to put defects on "
                                f"(no {'/'.join(XYZ_SUFFIXES)} file in test/good/xyz or "
                                "train/good/xyz)")
    record = {"generator": "pcad", "mode": "inject", "config": asdict(cfg)}
    record["config"]["defects"] = list(cfg.defects)
    record["config"]["categories"] = list(cfg.categories)
    # Same runner rules as generate: one run per folder, dead writers' temporaries removed.
    with locked_output(root) as root:
        claim_record(root, record["config"], {**record, "complete": False})
        meta_path = root / "dataset.json"
        remove_stale_temps(root)
        with atomic_write(meta_path, "w") as fh:
            json.dump({**record, "complete": False}, fh, indent=2)
        # Sample i of every defect type starts from the same good scan: visit them together.
        jobs = [(c, d, i) for c in cats for i in range(cfg.test_defect) for d in cfg.defects]
        t0 = time.perf_counter()
        written = 0
        for c in cats:
            _copy_good(source / c, root / c)
        scans = ScanCache()
        for c, d, i in tqdm(jobs, disable=not progress, unit="sample"):
            stem = f"{i:0{width(cfg.test_defect)}d}"
            base = root / c / "test" / d
            if (base / "meta" / f"{stem}.json").exists():
                continue
            src = goods[c][i % len(goods[c])]
            seed = sample_seed(cfg.seed, c, f"test/{d}", i)
            xyz, gt, rgb_src, meta = inject_sample(src, c, d, i, seed, scans)
            write_injected(base, stem, rgb_src, xyz, gt, meta)
            written += 1
        with atomic_write(meta_path, "w") as fh:
            json.dump({**record, "complete": True}, fh, indent=2)
    return {"root": str(root), "categories": cats, "written": written,
            "seconds": time.perf_counter() - t0}
