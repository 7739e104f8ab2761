"""One writer per output folder: a lock file, and whether a process that wrote a file lives.

:func:`folder_lock` holds ``<folder>/.pcad-lock`` for the duration of a ``with`` block. The file
records the holder (``{"pid": ..., "host": ..., "started": ...}``) so that a second run can name
it when it refuses. On Linux and other POSIX systems the lock is an ``fcntl.flock`` on that
file: the kernel drops it when the holder dies, however it dies (``kill -9`` included), so a lock
left by a dead process is taken over without any guessing. Where ``flock`` is missing (Windows)
or not supported by the file system, the file is created with ``O_CREAT | O_EXCL`` and a lock
whose pid is dead on this host is taken over. The lock file is removed when the block ends.

:func:`process_alive` and :func:`host_id` tell the temporary files of :mod:`pcad.io.atomic`
(named after the process that writes them) of a live writer from a dead one's.

Example:
    >>> import tempfile, pathlib
    >>> from pcad.io.lock import folder_lock, FolderLockedError
    >>> tmp = tempfile.TemporaryDirectory()
    >>> d = pathlib.Path(tmp.name)
    >>> with folder_lock(d) as lock:
    ...     print(lock.name)
    ...     try:
    ...         with folder_lock(d):
    ...             pass
    ...     except FolderLockedError as exc:
    ...         print("refused:", "in use by pcad (pid" in str(exc))
    .pcad-lock
    refused: True
    >>> (d / ".pcad-lock").exists()
    False
    >>> tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pcad.errors import InvalidInputError

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "FolderLockedError", "folder_lock", "host_id", "process_alive"]

#: name of the lock file inside the locked folder (hidden: dataset readers skip it)
LOCK_NAME = ".pcad-lock"
#: errors of ``flock`` on a file system that does not support it (fall back to O_EXCL)
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class FolderLockedError(InvalidInputError):
    """Another live process holds the folder's lock."""


def host_id() -> str:
    """Eight hex digits naming this host (a CRC-32 of its host name), stable across processes.

    Example:
        >>> len(host_id()), host_id() == host_id()
        (8, True)
    """
    return f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')):08x}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead).

    Example:
        >>> import os
        >>> process_alive(os.getpid())
        True
    """
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate the process
        return _windows_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    try:  # a zombie (killed, not yet reaped) writes nothing more
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _windows_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _holder_record() -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "host_id": host_id(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _refusal(folder: Path, holder: dict[str, Any]) -> FolderLockedError:
    pid = holder.get("pid", "unknown")
    host = holder.get("host", "this host")
    since = f", since {holder['started']}" if holder.get("started") else ""
    return FolderLockedError(
        f"{folder}: in use by pcad (pid {pid} on {host}{since}); wait for that run to finish "
        f"or choose another --out (a lock left by a dead process is taken over; if that "
        f"process is gone for good, delete {folder / LOCK_NAME})")


def _flock(folder: Path, path: Path) -> int | None:
    """Lock ``path`` with flock; the open descriptor, or None where flock is unsupported."""
    assert fcntl is not None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _refusal(folder, _read_holder(path)) from None
            if exc.errno in _NO_FLOCK:
                return None
            raise
        # the holder before us may have removed the file between our open and our flock:
        # the lock is ours only if the path still names the file we locked
        try:
            same = os.path.samestat(os.stat(path), os.fstat(fd))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, _holder_record())
            return fd
        os.close(fd)


def _exclusive_create(folder: Path, path: Path) -> None:
    """Create ``path`` with O_EXCL; take over a lock whose holder is dead on this host."""
    for _ in range(8):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            pid = holder.get("pid")
            same_host = holder.get("host_id") == host_id()
            if not (isinstance(pid, int) and same_host and pid != os.getpid()
                    and not process_alive(pid)):
                raise _refusal(folder, holder) from None
            # stale: move it aside under a unique name, so that two takers cannot both win
            aside = path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, aside)
                os.unlink(aside)
            continue
        try:
            os.write(fd, _holder_record())
        finally:
            os.close(fd)
        return
    raise _refusal(folder, _read_holder(path))


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the lock of the existing folder ``folder`` inside the ``with`` block.

    Raises :class:`FolderLockedError` (one line naming the holder's pid and host) when a live
    process holds it. Yields the lock file's path; the file is removed at the end.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    fd = _flock(folder, path) if fcntl is not None else None
    if fd is None:
        _exclusive_create(folder, path)
    try:
        yield path
    finally:
        # remove the file while still holding the lock: a process that opened it meanwhile
        # sees that the path no longer names the file it locked, and starts again
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if fd is not None:
            os.close(fd)
