"""Write a :class:`~synth.result.DefectResult` to disk (atomically), format by extension.

Unorganized results: ``.ply`` (label and ``dx dy dz`` offsets as vertex properties, normals),
``.pcd``, ``.npz`` (arrays ``points``, ``mask``, ``offsets``, ``normals``), ``.txt``/``.xyz``
(Real3D-AD ``x y z label``). Organized results: ``.tiff``/``.tif`` (3-channel float32 xyz, plus
the 0/255 mask as ``<stem>_gt.png`` beside it) or ``.npz`` with ``(H, W, ...)`` arrays.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from synth import apply_defect
    >>> from synth.writers import write_result
    >>> p = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    >>> tmp = tempfile.TemporaryDirectory()
    >>> out = pathlib.Path(tmp.name) / "bump.npz"
    >>> [f.name for f in write_result(out, apply_defect(p, "bump", seed=0))]
    ['bump.npz']
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pcad.errors import FileFormatError
from pcad.io import (
    atomic_group,
    atomic_save,
    write_labeled_txt,
    write_mask_png,
    write_points,
    write_xyz_tiff,
)
from synth.result import DefectResult

UNORGANIZED_EXTENSIONS = (".ply", ".pcd", ".npz", ".txt", ".xyz")
ORGANIZED_EXTENSIONS = (".tiff", ".tif", ".npz")


def _save_npz(path: Path, result: DefectResult) -> None:
    arrays = dict(points=result.points, mask=result.mask, offsets=result.offsets,
                  normals=result.normals, removed=result.removed)
    atomic_save(path, lambda tmp: np.savez(tmp, **arrays))


def write_result(path: str | os.PathLike[str], result: DefectResult) -> list[Path]:
    """Write ``result`` to ``path`` and return the files written (all or none on error)."""
    path = Path(path)
    ext = path.suffix.lower()
    allowed = ORGANIZED_EXTENSIONS if result.organized else UNORGANIZED_EXTENSIONS
    kind = "an organized" if result.organized else "an unorganized"
    if ext not in allowed:
        raise FileFormatError(
            f"{path}: cannot write {kind} result as {ext or '(no extension)'!r}; "
            f"use one of {', '.join(allowed)}")
    if ext == ".npz":
        _save_npz(path, result)
        return [path]
    if result.organized:
        gt = path.with_name(path.stem + "_gt.png")
        with atomic_group() as stage:
            stage(gt, lambda tmp: write_mask_png(tmp, result.mask))
            stage(path, lambda tmp: write_xyz_tiff(tmp, result.points))
        return [path, gt]
    if ext in (".txt", ".xyz"):
        write_labeled_txt(path, result.points, result.mask)
        return [path]
    write_points(path, result.points, mask=result.mask, offsets=result.offsets,
                 normals=result.normals)
    return [path]
