"""Make one dataset sample (arrays in memory) and write it in the chosen layout.

MVTec 3D-AD layout (``format="mvtec3d"``)::

    <root>/<category>/{train,validation}/good/{rgb/NNN.png, xyz/NNN.tiff, meta/NNN.json}
    <root>/<category>/test/{good,<defect>}/{rgb/NNN.png, xyz/NNN.tiff, gt/NNN.png, meta/NNN.json}

Real3D-AD style (``format="real3d"``): complete training prototypes sampled on the part's
surface and partial test scans (the rendered view) with per-point labels::

    <root>/<category>/train/NNN.pcd
    <root>/<category>/test/<kind>_NNN.pcd + <root>/<category>/gt/<kind>_NNN.txt  (x y z label)
    <root>/<category>/meta/<split>_NNN.json

A sample's files are written as one unit (:func:`pcad.io.atomic_group`) with its ``meta.json``
renamed last: a sample whose meta file exists is complete.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from pcad.errors import DegenerateGeometryError
from pcad.io import (
    atomic_group,
    read_mesh,
    sample_mesh,
    write_labeled_txt,
    write_mask_png,
    write_points,
    write_rgb,
    write_xyz_tiff,
)
from pcad.io.atomic import stale_temps
from synth.dataset.config import DatasetConfig, SampleTask, sample_seed
from synth.objects import make_object, object_texture
from synth.render import Camera, render_sample

MAX_ATTEMPTS = 8
USER_LOOK = {"albedo": (0.62, 0.62, 0.64), "kind": "metal"}


@functools.lru_cache(maxsize=16)
def user_mesh(path: str) -> trimesh.Trimesh:
    """The user's mesh file ``path``, read once per process (the 16 most recent are kept)."""
    return read_mesh(path)


def part_mesh(task: SampleTask, cfg: DatasetConfig, seed: int) -> tuple[trimesh.Trimesh, dict]:
    """The sample's mesh (a seeded variant of a built-in part, or the user's mesh) and look."""
    cat = task.category
    if cat.mesh is None:
        return make_object(cat.name, seed=seed, variation=cfg.variation), object_texture(cat.name)
    return user_mesh(cat.mesh), dict(USER_LOOK)


def width(count: int) -> int:
    """Digits of the file index: at least 3, as MVTec 3D-AD."""
    return max(3, len(str(max(count - 1, 0))))


@dataclass
class Sample:
    """A made sample: arrays by file role (``rgb``, ``xyz``, ``gt``, ``points``, ``labels``)
    and its ``meta``."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def render_task(task: SampleTask, cfg: DatasetConfig, mesh: trimesh.Trimesh, look: dict,
                seed: int):
    """Render the task's part with ``seed`` exactly as :func:`make_sample` does (one attempt):
    the category's background mat, this seed's defect sizes and the split's conditions."""
    return render_sample(mesh, Camera.for_size(*cfg.size), seed, task.defect,
                         sensor=cfg.sensor,
                         background_seed=sample_seed(cfg.seed, task.category.name,
                                                     "background", 0),
                         colour=look["albedo"], material=look["kind"],
                         params_by_type=cfg.draw_params(seed),
                         conditions=cfg.conditions_of(task.split))


def make_sample(task: SampleTask, cfg: DatasetConfig) -> Sample:
    """Render (or sample) one sample; deterministic in ``(cfg.seed, category, split, index)``.

    A defective sample whose defect the camera does not show (empty ground truth) is redrawn
    from a derived seed, up to ``MAX_ATTEMPTS`` times; ``meta["attempt"]`` records which.
    """
    seed = sample_seed(cfg.seed, task.category.name, task.split, task.index)
    mesh, look = part_mesh(task, cfg, seed)
    meta: dict[str, Any] = {"category": task.category.name, "split": task.split,
                            "index": task.index, "sample_seed": seed,
                            "object": task.category.mesh or f"builtin:{task.category.name}",
                            "variation": cfg.variation if task.category.mesh is None else 0.0}
    if cfg.format == "real3d" and task.defect is None and not task.split.startswith("test"):
        pts, nrm, _ = sample_mesh(mesh, cfg.points, seed)
        return Sample({"points": pts, "normals": nrm}, meta)
    rendered = None
    for attempt in range(MAX_ATTEMPTS):
        s = seed if attempt == 0 else int(
            np.random.SeedSequence([seed, attempt]).generate_state(1)[0])
        rendered = render_task(task, cfg, mesh, look, s)
        visible = rendered.gt
        if cfg.format == "real3d":  # only object pixels with a measurement become points
            visible = visible & rendered.object_mask & np.any(rendered.xyz != 0, axis=-1)
        if task.defect is None or visible.any():
            meta["attempt"] = attempt
            break
    else:
        raise DegenerateGeometryError(
            f"{task.category.name} {task.split} {task.index}: the defect stayed invisible in "
            f"{MAX_ATTEMPTS} attempts; use larger defects or a larger image")
    meta.update(rendered.meta)
    if cfg.format == "real3d":
        keep = rendered.object_mask & np.any(rendered.xyz != 0, axis=-1)
        return Sample({"points": rendered.xyz[keep], "labels": rendered.gt[keep]}, meta)
    arrays = {"rgb": rendered.rgb, "xyz": rendered.xyz}
    if task.split.startswith("test"):
        arrays["gt"] = rendered.gt
    return Sample(arrays, meta)


def sample_paths(root: Path, task: SampleTask, cfg: DatasetConfig) -> dict[str, Path]:
    """Final paths of the sample's files by role; ``meta`` comes last (the commit marker)."""
    counts = dict(cfg.splits())
    stem = f"{task.index:0{width(counts[task.split])}d}"
    base = root / task.category.name
    if cfg.format == "mvtec3d":
        d = base / task.split
        paths = {"rgb": d / "rgb" / f"{stem}.png", "xyz": d / "xyz" / f"{stem}.tiff"}
        if task.split.startswith("test"):
            paths["gt"] = d / "gt" / f"{stem}.png"
        paths["meta"] = d / "meta" / f"{stem}.json"
        return paths
    split, kind = task.split.split("/")
    if split == "test":
        paths = {"points": base / "test" / f"{kind}_{stem}.pcd",
                 "labels": base / "gt" / f"{kind}_{stem}.txt"}
    else:
        paths = {"points": base / split / f"{stem}.pcd"}
    paths["meta"] = base / "meta" / f"{split}_{kind}_{stem}.json"
    return paths


def remove_stale_temps(root: Path) -> int:
    """Delete the temporary files (``.<name>.<pid>-<host>.<random>.tmp[<ext>]``,
    :mod:`pcad.io.atomic`) that a killed run left under ``root``, so that a resumed dataset
    holds no stray files; those of a writer still alive are kept
    (:func:`pcad.io.atomic.is_stale_temp`). Call it at start-up, holding ``root``'s lock and
    before this process writes a sample. Returns how many were removed."""
    n = 0
    for p in stale_temps(root, own_stale=True):
        p.unlink(missing_ok=True)
        n += 1
    return n


def write_sample(sample: Sample, paths: dict[str, Path]) -> None:
    """Write every file of ``sample`` as one unit (meta last)."""
    a = sample.arrays
    with atomic_group() as stage:
        for role, path in paths.items():
            if role == "rgb":
                stage(path, lambda tmp: write_rgb(tmp, a["rgb"]))
            elif role == "xyz":
                stage(path, lambda tmp: write_xyz_tiff(tmp, a["xyz"]))
            elif role == "gt":
                stage(path, lambda tmp: write_mask_png(tmp, a["gt"]))
            elif role == "points":
                stage(path, lambda tmp: write_points(tmp, a["points"], normals=a.get("normals")))
            elif role == "labels":
                stage(path, lambda tmp: write_labeled_txt(tmp, a["points"], a["labels"]))
            elif role == "meta":
                text = json.dumps(sample.meta, indent=1, sort_keys=True)
                stage(path, lambda tmp, text=text: tmp.write_text(text))
