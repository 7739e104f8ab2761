"""One dataset sample on one page: its cloud with the ground truth, RGB, depth and meta.

A sample of the MVTec 3D-AD layout is ``<root>/<category>/<split>/<kind>/{rgb,xyz,gt,meta}/
NNN.*``; :func:`find_sample` accepts any of its files (or ``<kind folder>/NNN``) and finds the
others. Unorganized clouds (Real3D-AD ``.pcd``, ``.ply``, ``x y z label`` text...) are shown
with their labels as the ground truth, and an xyz TIFF outside an ``xyz/`` folder (what
``pcad synth`` writes) with its ``<stem>_gt.png`` (:func:`scan_files`).

Example:
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> from pcad.io import write_rgb, write_xyz_tiff
    >>> from viz.sample import find_sample, write_sample_page
    >>> tmp = tempfile.TemporaryDirectory()
    >>> kind = pathlib.Path(tmp.name) / "gear" / "test" / "dent"
    >>> yy, xx = np.mgrid[:8, :8].astype(np.float32)
    >>> write_xyz_tiff(kind / "xyz" / "000.tiff", np.stack([xx, yy, np.ones_like(xx)], -1))
    >>> write_rgb(kind / "rgb" / "000.png", np.zeros((8, 8, 3), np.uint8))
    >>> files = find_sample(kind / "rgb" / "000.png")
    >>> files.label, files.xyz.name, files.gt is None
    ('gear/test/dent/000', '000.tiff', True)
    >>> write_sample_page(files.xyz, pathlib.Path(tmp.name) / "sample.html").name
    'sample.html'
    >>> tmp.cleanup()
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcad.errors import FileFormatError, InvalidInputError
from viz.colors import colorize
from viz.html import figure_div, html_page, write_html
from viz.maps import anomaly_map_figure, overlay_image, png_data_uri
from viz.report_info import display_path

#: Sub-folder of each file kind of a sample, and the extensions tried, in order.
SAMPLE_FILES: dict[str, tuple[str, ...]] = {
    "rgb": (".png", ".jpg", ".jpeg"), "xyz": (".tiff", ".tif"), "gt": (".png",),
    "meta": (".json",),
}


@dataclass(frozen=True)
class SampleFiles:
    """The files of one MVTec-layout sample (None where absent) and where it sits."""

    folder: Path  #: ``<root>/<category>/<split>/<kind>``
    stem: str
    rgb: Path | None
    xyz: Path | None
    gt: Path | None
    meta: Path | None

    @property
    def label(self) -> str:
        """``category/split/kind/stem`` (as much of it as the path holds)."""
        parts = self.folder.parts[-3:]
        return "/".join([*parts, self.stem])


def find_sample(path: str | os.PathLike[str]) -> SampleFiles:
    """The sample a path belongs to: one of its ``rgb/xyz/gt/meta`` files, or
    ``<kind folder>/<stem>`` without a sub-folder or extension.

    Raises:
        FileNotFoundError: nothing of the sample exists.
        InvalidInputError: the path is a folder (give one of the sample's files).
    """
    p = Path(path)
    if p.is_dir():
        raise InvalidInputError(f"{p}: a folder; give one of a sample's files, e.g. "
                                f"{p}/xyz/000.tiff")
    if p.parent.name in SAMPLE_FILES and p.suffix:
        folder, stem = p.parent.parent, p.stem
    else:
        folder, stem = p.parent, p.name.split(".")[0]
    found: dict[str, Path | None] = {}
    for kind, exts in SAMPLE_FILES.items():
        found[kind] = next((folder / kind / f"{stem}{e}" for e in exts
                            if (folder / kind / f"{stem}{e}").is_file()), None)
    if not any(found.values()):
        raise FileNotFoundError(f"{p}: no such sample (looked for {folder}/{{rgb,xyz,gt,meta}}/"
                                f"{stem}.*)")
    return SampleFiles(folder=folder, stem=stem, **found)


def scan_files(path: str | os.PathLike[str]) -> SampleFiles:
    """A scan outside the MVTec layout, as ``pcad synth`` writes it: the xyz TIFF ``path``
    and its mask ``<stem>_gt.png`` beside it (None when absent).

    Example:
        >>> scan_files("out/scan_bump.tiff").gt is None
        True
    """
    p = Path(path)
    gt = p.with_name(p.stem + "_gt.png")
    return SampleFiles(folder=p.parent, stem=p.stem, rgb=None, xyz=p,
                       gt=gt if gt.is_file() else None, meta=None)


def depth_image(xyz: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """``(H, W, 3) uint8`` colours of the z channel of an organized cloud (near = bright,
    1st-99th percentile), invalid pixels white."""
    from pcad.checks import valid_pixels

    z = xyz[..., 2].astype(np.float64)
    valid = valid_pixels(xyz)
    if not valid.any():
        return np.full((*z.shape, 3), 255, np.uint8)
    lo, hi = np.percentile(z[valid], [1, 99])
    out = colorize(-z, cmap, -hi, -lo if hi > lo else -lo + 1e-9)
    out[~valid] = 255
    return out


def _images_block(files: SampleFiles, xyz: np.ndarray | None, gt: np.ndarray | None) -> str:
    from pcad.io import read_rgb

    tiles = []
    if files.rgb is not None:
        tiles.append(("RGB + gt contour", overlay_image(read_rgb(files.rgb), None, gt)))
    if xyz is not None:
        tiles.append(("depth + gt contour", overlay_image(depth_image(xyz), None, gt)))
    if gt is not None:
        g = np.where(gt[..., None], np.uint8(255), np.uint8(0)).repeat(3, axis=2)
        tiles.append((f"gt mask ({int(gt.sum())} px)", g))
    cards = "".join(
        f'<div class="card"><img src="{png_data_uri(im)}" width="{min(384, im.shape[1] * 2)}"'
        f' alt="{html.escape(n)}"><div class="cap">{html.escape(n)}</div></div>'
        for n, im in tiles)
    return f'<div class="cards">{cards}</div>'


def sample_html(path: str | os.PathLike[str], *, max_points: int = 40000) -> str:
    """The HTML page of one sample (see the module docstring)."""
    from pcad.io import SUPPORTED_POINT_EXTENSIONS, read_mask_png, read_points, read_xyz_tiff

    p = Path(path)
    if p.suffix.lower() in SUPPORTED_POINT_EXTENSIONS and p.is_file():
        data = read_points(p)
        mask = data.mask
        fig = anomaly_map_figure(data.points, data.points[:, 2], mask, colorscale="Viridis",
                                 max_points=max_points, value_name="z",
                                 title=f"{p.name}: {len(data.points)} points"
                                 + (f", {int(mask.sum())} anomalous" if mask is not None
                                    else ""))
        body = f"<h1>{html.escape(display_path(p))}</h1>" + figure_div(fig, height="640px")
        return html_page(body, title=p.name)
    standalone = (p.suffix.lower() in SAMPLE_FILES["xyz"] and p.is_file()
                  and p.parent.name != "xyz")
    files = scan_files(p) if standalone else find_sample(p)
    xyz = read_xyz_tiff(files.xyz) if files.xyz is not None else None
    gt = read_mask_png(files.gt) if files.gt is not None else None
    meta: dict[str, Any] | None = None
    if files.meta is not None:
        try:
            meta = json.loads(files.meta.read_text())
        except (OSError, ValueError) as exc:
            raise FileFormatError(f"{files.meta}: not valid JSON ({exc})") from None
    label = p.name if standalone else files.label
    parts = [f"<h1>{html.escape(label)}</h1>",
             f'<p class="muted">{html.escape(display_path(files.folder))}</p>']
    missing = [k for k in SAMPLE_FILES if getattr(files, k) is None]
    if missing and not standalone:
        parts.append(f'<p class="note">missing: {", ".join(missing)}</p>')
    if xyz is not None:
        if gt is not None and gt.shape != xyz.shape[:2]:
            raise InvalidInputError(f"{files.gt}: mask {gt.shape} and xyz {xyz.shape[:2]} "
                                    "differ in size")
        from pcad.checks import valid_pixels

        n_valid = int(valid_pixels(xyz).sum())
        if n_valid:
            fig = anomaly_map_figure(xyz, xyz[..., 2], gt, colorscale="Viridis",
                                     max_points=max_points, value_name="z",
                                     title=f"xyz: {n_valid} measured pixels"
                                     + (f", {int(gt.sum())} anomalous" if gt is not None
                                        else ""))
            parts.append(figure_div(fig, height="600px"))
        else:
            parts.append('<p class="note">the xyz file has no measured pixel</p>')
    parts.append("<h2>Images</h2>" + _images_block(files, xyz, gt))
    if meta is not None:
        parts.append("<h2>Meta</h2><details><summary>meta.json</summary><pre>"
                     + html.escape(json.dumps(meta, indent=1)) + "</pre></details>")
    return html_page("\n".join(parts), title=label)


def write_sample_page(path: str | os.PathLike[str], out: str | os.PathLike[str],
                      **kwargs: Any) -> Path:
    """Write :func:`sample_html` of ``path`` to ``out`` (atomically) and return ``out``."""
    return write_html(out, sample_html(path, **kwargs))
