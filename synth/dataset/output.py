"""The output folder of ``make-dataset`` (both modes): one run at a time, ``dataset.json`` checks.

Rules, shared by :func:`synth.dataset.generate` and :func:`synth.dataset.inject.inject`:

- :func:`locked_output` creates the folder and holds its lock (:func:`pcad.io.lock.folder_lock`,
  ``<out>/.pcad-lock``) for the whole run: a second run into the same folder is refused with
  the first one's pid; a lock left by a dead process is taken over. A run into an empty or new
  folder that fails before any sample exists removes what it wrote (``dataset.json``, camera
  files, the folder if it created it).
- :func:`claim_record` accepts the folder when it is empty, when its ``dataset.json`` has the
  same configuration (the run resumes), or when it holds no sample yet (:func:`has_samples`):
  a start that failed (``"complete": false``, nothing but ``dataset.json`` and camera files)
  never blocks a rerun with a corrected configuration. A folder with samples of another
  configuration, or files and no ``dataset.json``, is refused.

Example:
    >>> import tempfile, pathlib
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = pathlib.Path(tmp.name) / "ds"
    >>> with locked_output(root):
    ...     claim_record(root, {"seed": 1}, {"config": {"seed": 1}, "complete": False})
    >>> with locked_output(root):  # no sample yet: another configuration may take the folder
    ...     claim_record(root, {"seed": 2}, {"config": {"seed": 2}, "complete": False})
    >>> sorted(p.name for p in root.iterdir())
    ['dataset.json']
    >>> tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pcad.errors import InvalidInputError
from pcad.io import atomic_write
from pcad.io.lock import LOCK_NAME, folder_lock

__all__ = ["claim_record", "has_samples", "locked_output", "read_record"]

RECORD = "dataset.json"
#: files a run writes before its first sample (besides dataset.json)
CAMERA_FILE = ("calibration", "camera_parameters.json")


def _is_setup_file(root: Path, p: Path) -> bool:
    rel = p.relative_to(root).parts
    return rel == (RECORD,) or (len(rel) == 3 and rel[1:] == CAMERA_FILE)


def has_samples(root: Path) -> bool:
    """Whether ``root`` holds any visible file besides ``dataset.json`` and the camera files
    (``<category>/calibration/camera_parameters.json``); hidden files (the lock, temporaries)
    do not count."""
    return any(p.is_file() and not p.name.startswith(".") and not _is_setup_file(root, p)
               for p in root.rglob("*"))


def _remove_setup(root: Path) -> None:
    """Remove ``dataset.json``, the camera files and the folders left empty (no sample)."""
    for p in sorted(root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_file() and not p.is_symlink() and _is_setup_file(root, p):
            p.unlink(missing_ok=True)
        elif p.is_dir() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.rmdir()  # only when empty


@contextlib.contextmanager
def locked_output(root: Path) -> Iterator[Path]:
    """Create ``root`` (parents too) and hold its lock inside the block (module docstring)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"{root}: exists and is not a folder")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(root):
            fresh = not any(p.name != LOCK_NAME for p in root.iterdir())
            try:
                yield root
            except BaseException:
                if fresh and not has_samples(root):  # only what this run wrote
                    _remove_setup(root)
                raise
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                root.rmdir()  # only when empty
        raise


def read_record(root: Path) -> dict[str, Any] | None:
    """``root/dataset.json`` as a dict; None when absent; InvalidInputError when unreadable."""
    path = root / RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: unreadable ({exc}); not touching this folder") \
            from None
    if not isinstance(record, dict):
        raise InvalidInputError(f"{path}: not a dataset record (a JSON object); "
                                "not touching this folder")
    return record


def claim_record(root: Path, config: dict[str, Any], record: dict[str, Any]) -> None:
    """Check that the locked folder ``root`` may hold the dataset ``config`` (module
    docstring) and write ``record`` as its ``dataset.json`` unless the same configuration is
    there already. Raises InvalidInputError otherwise, before writing anything."""
    old = read_record(root)
    if old is not None and old.get("config") == config:
        return
    if old is not None:
        if has_samples(root):
            raise InvalidInputError(
                f"{root}: holds a different dataset (its dataset.json has another "
                "configuration); choose another --out or delete it")
        _remove_setup(root)  # a failed start of another configuration: start afresh
        root.mkdir(parents=True, exist_ok=True)
    elif any(p.name != LOCK_NAME for p in root.iterdir()):
        raise InvalidInputError(f"{root}: folder is not empty and has no dataset.json; "
                                "choose an empty or new --out")
    with atomic_write(root / RECORD, "w") as fh:
        json.dump(record, fh, indent=2)

