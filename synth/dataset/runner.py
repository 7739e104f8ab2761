"""Generate a dataset: prepare the folder, skip finished samples, run the rest in parallel.

Workers: ``workers=1`` runs in-process; ``workers>1`` uses a process pool (spawn) whose workers
exit when the parent dies (``kill -9`` included: ``PR_SET_PDEATHSIG`` on Linux, elsewhere a
check of the parent pid between samples and every second); a Dask ``scheduler`` address runs the
same tasks on a distributed cluster whose workers see the same output folder. Each sample is
independent and seeded by its own key, so the bytes on disk do not depend on any of these
choices.

The configuration is checked completely before anything is written. The run holds the output
folder's lock (:mod:`synth.dataset.output`: a second run into the same ``--out`` is refused),
removes the temporary files of dead writers, writes ``dataset.json`` (``"complete": false``)
and rewrites it when every sample exists; a rerun with the same configuration resumes and
rewrites every sample without its ``meta`` file (the commit marker, renamed last), including
one whose other files a kill left behind.

Example:
    >>> import tempfile
    >>> from synth.dataset import DatasetConfig, generate
    >>> cfg = DatasetConfig(categories=("plate",), train=1, validation=0, test_good=0,
    ...                     test_defect=1, defects=("dent",), size=(48, 48))
    >>> tmp = tempfile.TemporaryDirectory()
    >>> generate(cfg, tmp.name, progress=False)["written"]
    2
    >>> tmp.cleanup()
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pcad.checks import check_int
from pcad.errors import DegenerateGeometryError, InvalidInputError
from pcad.io import atomic_write
from synth.dataset.config import GENERATOR_VERSION, DatasetConfig, SampleTask
from synth.dataset.output import claim_record, has_samples, locked_output, read_record
from synth.dataset.sample import (
    make_sample,
    remove_stale_temps,
    sample_paths,
    user_mesh,
    write_sample,
)
from synth.render import Camera


def _dataset_record(cfg: DatasetConfig, complete: bool, counts: dict[str, Any]) -> dict:
    return {"generator": "pcad", "generator_version": GENERATOR_VERSION, "complete": complete,
            "config": cfg.to_json(), "counts": counts}


def prepare_root(root: Path, cfg: DatasetConfig) -> None:
    """Check that the existing, locked folder ``root`` is empty, holds this very dataset or no
    sample yet (:func:`synth.dataset.output.claim_record`); write ``dataset.json`` and the
    camera calibration. Raises InvalidInputError when the folder holds something else, with
    a one-line error naming both values when only ``--conditions`` differs."""
    cam = Camera.for_size(*cfg.size).to_json() if cfg.format == "mvtec3d" else None
    old = read_record(root)
    if old is not None and isinstance(old.get("config"), dict) and has_samples(root):
        mine = cfg.to_json()
        theirs = dict(old["config"])
        was = theirs.pop("conditions", "standard")
        if was != cfg.conditions and {k: v for k, v in mine.items() if k != "conditions"} \
                == theirs:
            raise InvalidInputError(
                f"{root}: holds a dataset made with --conditions {was}; this run asks for "
                f"--conditions {cfg.conditions}: resume with --conditions {was}, or choose "
                "another --out")
    claim_record(root, cfg.to_json(), _dataset_record(cfg, False, {}))
    if cam is not None:
        for cat in cfg.categories:
            path = root / cat.name / "calibration" / "camera_parameters.json"
            if not path.exists():
                with atomic_write(path, "w") as fh:
                    json.dump(cam, fh, indent=2)


def check_categories(cfg: DatasetConfig) -> None:
    """Load every user mesh once, before anything is written (clear errors early)."""
    for cat in cfg.categories:
        if cat.mesh is None:
            continue
        mesh = user_mesh(cat.mesh)
        if len(mesh.faces) == 0 or float(mesh.area) <= 0:
            raise DegenerateGeometryError(f"{cat.mesh}: empty or zero-area mesh")


def run_task(cfg: DatasetConfig, root: str, task: SampleTask) -> dict[str, Any]:
    """Make and write one sample (the unit of work of every backend)."""
    t0 = time.perf_counter()
    sample = make_sample(task, cfg)
    write_sample(sample, sample_paths(Path(root), task, cfg))
    return {"category": task.category.name, "split": task.split, "index": task.index,
            "n_anomalous": int(sample.meta.get("n_anomalous", 0)),
            "seconds": time.perf_counter() - t0}


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, file=sys.stderr, unit="sample",
                dynamic_ncols=True)


#: pid of a pool worker's parent (set by :func:`_worker_init`; None outside pool workers)
_PARENT_PID: int | None = None
_PR_SET_PDEATHSIG = 1


def _parent_gone() -> bool:
    return _PARENT_PID is not None and os.getppid() != _PARENT_PID


def _exit_if_orphan() -> None:
    """Exit the worker at once when its parent died (its pid changes: the orphan is
    re-parented). Temporary files left behind carry this pid and are removed on resume."""
    if _parent_gone():
        os._exit(1)


def _watch_parent() -> None:
    while True:
        time.sleep(1.0)
        _exit_if_orphan()


def _set_parent_death_signal() -> bool:
    """Ask Linux to send SIGTERM to this process when its parent dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _worker_init(parent: int) -> None:
    """Start-up of a pool worker: die with the parent ``parent`` (module docstring)."""
    global _PARENT_PID
    _PARENT_PID = parent
    if not _set_parent_death_signal():
        threading.Thread(target=_watch_parent, name="pcad-parent-watch", daemon=True).start()
    _exit_if_orphan()  # the parent may have died before the signal was set


def _pool_task(cfg: DatasetConfig, root: str, task: SampleTask) -> dict[str, Any]:
    """:func:`run_task` in a pool worker, which first checks that its parent still lives."""
    _exit_if_orphan()
    return run_task(cfg, root, task)


def _run_local(cfg: DatasetConfig, root: Path, tasks: list[SampleTask], workers: int,
               bar) -> Iterable[dict]:
    if workers == 1:
        for t in tasks:
            yield run_task(cfg, str(root), t)
            bar.update()
        return
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_pool_task, cfg, str(root), t) for t in tasks]
        try:
            for fut in futures:
                yield fut.result()
                bar.update()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _run_dask(cfg: DatasetConfig, root: Path, tasks: list[SampleTask], scheduler: str,
              bar) -> Iterable[dict]:
    from dask.distributed import Client, as_completed

    with Client(scheduler, timeout=30) as client:
        futures = client.map(run_task, [cfg] * len(tasks), [str(root)] * len(tasks), tasks,
                             pure=False)
        for fut in as_completed(futures):
            yield fut.result()
            bar.update()


def generate(cfg: DatasetConfig, out: str | os.PathLike[str], workers: int = 1,
             scheduler: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Generate (or resume) the dataset ``cfg`` in ``out``; returns a small report."""
    workers = check_int(workers, "--workers", minimum=1)
    check_categories(cfg)
    with locked_output(Path(out)) as root:
        prepare_root(root, cfg)
        remove_stale_temps(root)
        plan = cfg.plan()
        todo = [t for t in plan if not sample_paths(root, t, cfg)["meta"].exists()]
        t0 = time.perf_counter()
        results = []
        with _progress(len(todo), progress) as bar:
            runner = (_run_dask(cfg, root, todo, scheduler, bar) if scheduler
                      else _run_local(cfg, root, todo, workers, bar))
            for r in runner:
                results.append(r)
        elapsed = time.perf_counter() - t0
        counts: dict[str, Any] = {}
        for t in plan:
            counts.setdefault(t.category.name, {}).setdefault(t.split, 0)
            counts[t.category.name][t.split] += 1
        with atomic_write(root / "dataset.json", "w") as fh:
            json.dump(_dataset_record(cfg, True, counts), fh, indent=2)
    return {"root": str(root), "planned": len(plan), "skipped": len(plan) - len(todo),
            "written": len(results), "seconds": elapsed,
            "samples_per_second": len(results) / elapsed if elapsed > 0 and results else 0.0}
