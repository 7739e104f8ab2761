"""Atomic file writes: a reader never sees a half-written file.

Data is written to a temporary file in the destination directory, flushed to disk with
``fsync`` and then renamed onto the final path with :func:`os.replace`, which is atomic on POSIX
and Windows. If anything fails, the temporary file is removed and a file that already existed at
the final path is left untouched.

A temporary file is named ``.<name>.<pid>-<host>.<random>.tmp[<ext>]`` after the process that
writes it (``<host>`` is :func:`pcad.io.lock.host_id`): a process killed before it could clean up
leaves such files behind, and :func:`is_stale_temp` tells them from the files of a writer that
is still at work (see its rules), so that a resumed run removes only the dead one's.

Example:
    >>> import tempfile, pathlib
    >>> from pcad.io.atomic import atomic_write, atomic_save
    >>> tmpdir = tempfile.TemporaryDirectory()
    >>> d = pathlib.Path(tmpdir.name)
    >>> with atomic_write(d / "sub" / "a.txt", "w") as f:
    ...     _ = f.write("hello")
    >>> (d / "sub" / "a.txt").read_text()
    'hello'
    >>> atomic_save(d / "b.txt", lambda tmp: tmp.write_text("world"))
    >>> sorted(p.name for p in d.iterdir())
    ['b.txt', 'sub']
    >>> tmpdir.cleanup()
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from pcad.io.lock import host_id, process_alive

__all__ = ["atomic_group", "atomic_save", "atomic_write", "is_stale_temp", "is_temp_name",
           "remove_path", "stale_temps", "temp_owner"]

_MODES = ("w", "wt", "wb")
#: ``.<name>.<pid>-<host>.<random>.tmp[<ext>]`` (the random part is tempfile's: [a-z0-9_])
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[a-z0-9_]+\.tmp(\.[^.]*)?$")
#: a temporary file of another host untouched for this long is stale (seconds)
FOREIGN_TEMP_AGE = 3600.0


def _current_umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # not thread-safe, only used where /proc is missing
    os.umask(mask)
    return mask


def _final_permissions(final: Path) -> int:
    """Permission bits the finished file gets: those of the file it replaces, else 0o666 & ~umask.

    :func:`tempfile.mkstemp` creates files readable by their owner only; without this step an
    atomic write would silently make the output private.
    """
    try:
        return stat.S_IMODE(final.stat().st_mode)
    except OSError:
        return 0o666 & ~_current_umask()


def _fsync_dir(directory: Path) -> None:
    """Flush the directory entry of a rename to disk (best effort; not possible on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def remove_path(path: str | os.PathLike[str]) -> None:
    """Delete a file, link or folder tree (a link itself, never what it points to); nothing
    when it does not exist.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp()) / "x"
        >>> (d / "y").mkdir(parents=True)
        >>> remove_path(d); remove_path(d); d.exists()
        False
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _temp_beside(final: Path, suffix: str) -> Path:
    """A new empty file ``.<name>.<pid>-<host>.<random><suffix>`` beside ``final`` (created)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}-{host_id()}.",
                                    suffix=suffix, dir=final.parent)
    os.close(fd)
    return Path(tmp_name)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` looks like a temporary file of this module (hidden, with ``.tmp``).

    Example:
        >>> is_temp_name(".000.png.4242-0a1b2c3d.k3j_x0ab.tmp.png"), is_temp_name("000.png")
        (True, False)
    """
    return name.startswith(".") and ".tmp" in name


def temp_owner(name: str) -> tuple[int, str] | None:
    """``(pid, host id)`` of the process that created the temporary file ``name``; None for a
    name without them (written by a pcad older than the pid tags, or not ours).

    Example:
        >>> temp_owner(".000.png.4242-0a1b2c3d.k3j_x0ab.tmp.png")
        (4242, '0a1b2c3d')
        >>> temp_owner(".000.png.k3j_x0ab.tmp.png") is None
        True
    """
    m = _TEMP_NAME.match(name)
    return (int(m["pid"]), m["host"]) if m else None


def is_stale_temp(path: str | os.PathLike[str], *, own_stale: bool = False,
                  now: float | None = None) -> bool:
    """Whether the temporary file ``path`` was left by a writer that is gone.

    Rules: a file of a process of this host is stale when that process is dead (or, with
    ``own_stale=True``, when it is the calling process: pass it at start-up, before this
    process writes anything, since a pid is reused after a restart, e.g. pid 1 in a container);
    a file of another host is stale when untouched for :data:`FOREIGN_TEMP_AGE` seconds (its
    process cannot be looked up from here); a name without a pid tag is stale (an older pcad's).
    Only call this while holding the folder's lock (:func:`pcad.io.lock.folder_lock`).

    Example:
        >>> import os
        >>> from pcad.io.lock import host_id
        >>> mine = f".a.png.{os.getpid()}-{host_id()}.x1.tmp.png"
        >>> is_stale_temp(mine), is_stale_temp(mine, own_stale=True)
        (False, True)
    """
    p = Path(path)
    owner = temp_owner(p.name)
    if owner is None:
        return True
    pid, host = owner
    if host != host_id():
        try:
            age = (time.time() if now is None else now) - p.lstat().st_mtime
        except FileNotFoundError:
            return False
        return age >= FOREIGN_TEMP_AGE
    if pid == os.getpid():
        return own_stale
    return not process_alive(pid)


def stale_temps(root: str | os.PathLike[str], *, own_stale: bool = False) -> list[Path]:
    """The stale temporary files (:func:`is_stale_temp`) anywhere under the folder ``root``;
    links are never listed."""
    return [p for p in sorted(Path(root).rglob(".*.tmp*"))
            if is_temp_name(p.name) and p.is_file() and not p.is_symlink()
            and is_stale_temp(p, own_stale=own_stale)]


@contextlib.contextmanager
def _replacing(path: str | os.PathLike[str], suffix: str) -> Iterator[tuple[Path, Path]]:
    """Yield ``(tmp, final)``: a new temporary file beside ``path`` that replaces ``path``
    (with its permissions) when the block ends without error, and is removed otherwise."""
    final = Path(path)
    perms = _final_permissions(final)
    tmp = _temp_beside(final, suffix)
    try:
        yield tmp, final
        os.chmod(tmp, perms)
        os.replace(tmp, final)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(final.parent)


def _write_nonempty(tmp: Path, writer: Callable[[Path], None]) -> bool:
    """Run ``writer(tmp)``; False if it left no data, else fsync the file and return True."""
    writer(tmp)
    try:
        size = tmp.stat().st_size
    except FileNotFoundError:
        size = 0
    if size == 0:
        return False
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    return True


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without error.

    Args:
        path: final destination; missing parent directories are created.
        mode: ``"wb"`` (binary, default), ``"w"`` or ``"wt"`` (UTF-8 text, ``"\\n"`` newlines).

    Yields:
        The open file object of the temporary file ``.<name>.<pid>-<host>.<random>.tmp`` next
        to ``path``.

    On an exception inside the block the temporary file is deleted, ``path`` is left as it was
    and the exception propagates.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "x.bin"
        >>> with atomic_write(p) as f:
        ...     _ = f.write(b"\\x00\\x01")
        >>> p.read_bytes()
        b'\\x00\\x01'
        >>> tmp.cleanup()
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write: mode must be one of {_MODES}, got {mode!r}")
    with _replacing(path, ".tmp") as (tmp, _):
        # reopen by name (not os.fdopen) so that ``f.name`` is a path: tifffile and others use it
        if "b" in mode:
            f: IO[Any] = open(tmp, "wb")
        else:
            f = open(tmp, "w", encoding="utf-8", newline="\n")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_save(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Atomically create ``path`` with a library function that wants a file name.

    ``writer`` is called with a temporary path in the same directory that has the same
    extension as ``path`` (``.<name>.<pid>-<host>.<random>.tmp<ext>``, e.g.
    ``.cloud.ply.4242-0a1b2c3d.k3j_x.tmp.ply``)
    because open3d, tifffile and PIL choose the format from the extension. After ``writer``
    returns, the temporary file is fsynced and renamed onto ``path``.

    Args:
        path: final destination; missing parent directories are created.
        writer: writes the file at the path it is given and raises on failure. A writer that
            returns without creating a non-empty file (open3d returns False instead of
            raising) makes atomic_save raise :class:`OSError`.

    On any exception the temporary file is removed and ``path`` is left untouched.

    Example:
        >>> import tempfile, pathlib
        >>> import numpy as np
        >>> tmpdir = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmpdir.name) / "a.npy"
        >>> atomic_save(p, lambda tmp: np.save(tmp, np.arange(3)))
        >>> np.load(p).tolist()
        [0, 1, 2]
        >>> tmpdir.cleanup()
    """
    with _replacing(path, f".tmp{Path(path).suffix}") as (tmp, final):
        if not _write_nonempty(tmp, writer):
            raise OSError(f"{final}: the writer produced no data (temporary file {tmp.name})")


@contextlib.contextmanager
def atomic_group() -> Iterator[Callable[[str | os.PathLike[str], Callable[[Path], None]], None]]:
    """Write several files as one unit: all are staged, then renamed in order at the end.

    Inside the ``with`` block, ``stage(path, writer)`` writes one file to a temporary name
    beside ``path`` (same extension, as :func:`atomic_save`). When the block ends without an
    error every staged file is renamed onto its final path in the order staged (put a commit
    marker, such as a sample's ``meta.json``, last); on an error every temporary file is removed
    and no final path is touched.

    Example:
        >>> import tempfile, pathlib
        >>> tmpdir = tempfile.TemporaryDirectory()
        >>> d = pathlib.Path(tmpdir.name)
        >>> with atomic_group() as stage:
        ...     stage(d / "a.txt", lambda tmp: tmp.write_text("a"))
        ...     stage(d / "b.txt", lambda tmp: tmp.write_text("b"))
        >>> sorted(p.name for p in d.iterdir())
        ['a.txt', 'b.txt']
        >>> tmpdir.cleanup()
    """
    staged: list[tuple[Path, Path]] = []

    def stage(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
        final = Path(path)
        tmp = _temp_beside(final, f".tmp{final.suffix}")
        staged.append((tmp, final))
        if not _write_nonempty(tmp, writer):
            raise OSError(f"{final}: the writer produced no data")

    try:
        yield stage
    except BaseException:
        for tmp, _ in staged:
            _remove_quietly(tmp)
        raise
    try:
        for tmp, final in staged:
            os.chmod(tmp, _final_permissions(final))
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in staged:
            _remove_quietly(tmp)
        raise
    for directory in {final.parent for _, final in staged}:
        _fsync_dir(directory)
