"""Download, verify and extract dataset archives; nothing half-done is ever left in place.

- :func:`download` fetches a URL with :mod:`urllib` into ``DEST.part``, resuming an earlier
  ``.part`` with an HTTP ``Range: bytes=N-`` request, verifies the checksum and only then
  renames the file to ``DEST``. A wrong checksum deletes the ``.part`` and raises
  :class:`ChecksumError`; an interrupted transfer keeps the ``.part`` for the next call (and
  retries by itself ``retries`` times).
- :func:`verify` checks a file's SHA-256 (or MD5, for datasets that publish only that). With
  no checksum known it refuses, unless the caller explicitly allows an unverified file.
- :func:`extract` unpacks ``.tar``, ``.tar.gz``, ``.tar.xz``, ``.tar.bz2`` and ``.zip``
  (recognised by content, not by name: the Eyecandies ``.zip`` files are tar archives) into a
  temporary sibling folder and renames it onto the destination when everything is out. Members
  with absolute paths, ``..`` components, links leaving the archive (followed through the
  archive's own symlinks, without relying on :mod:`tarfile`'s extraction filter), paths through
  a symlink or device files are refused before anything is written, and so are archives over
  the caps :data:`MAX_EXTRACT_BYTES` / :data:`MAX_EXTRACT_MEMBERS` or the free disk space.

Example:
    >>> import hashlib, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> verify(p, hashlib.sha256(b"abc").hexdigest()) == hashlib.sha256(b"abc").hexdigest()
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from pcad.checks import check_int

try:
    import lzma

    _LZMA_ERRORS: tuple[type[Exception], ...] = (lzma.LZMAError,)
except ImportError:  # pragma: no cover - a Python built without lzma reads no .tar.xz
    _LZMA_ERRORS = ()

__all__ = [
    "ChecksumError",
    "DownloadError",
    "DownloadInterrupted",
    "ExtractError",
    "FetchError",
    "MAX_EXTRACT_BYTES",
    "MAX_EXTRACT_MEMBERS",
    "archive_kind",
    "download",
    "extract",
    "file_digest",
    "verify",
]

CHUNK = 1 << 20


class FetchError(RuntimeError):
    """Base class of the errors of this module."""


class DownloadError(FetchError):
    """The transfer failed (network error, HTTP error, interrupted, an HTML page instead of
    the file)."""


class DownloadInterrupted(DownloadError):
    """The transfer stopped part-way; the ``.part`` file is kept and the next call resumes."""


class ChecksumError(FetchError):
    """The file's checksum differs from the expected one, or no checksum was given."""


class ExtractError(FetchError):
    """The archive is corrupt, of an unknown kind, or holds an unsafe member."""


# --------------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------------


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _normalize_hex(value: str | None, name: str, length: int) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    if len(v) != length or any(c not in "0123456789abcdef" for c in v):
        raise ValueError(f"{name}: expected {length} hexadecimal digits, got {value!r}")
    return v


def verify(
    path: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    md5: str | None = None,
    allow_unverified: bool = False,
) -> str:
    """Check ``path`` against ``sha256`` (preferred) or ``md5``; return its SHA-256.

    Raises:
        ChecksumError: the digest differs, or neither checksum is given and
            ``allow_unverified`` is False (an unknown checksum is never accepted silently).
        FileNotFoundError: no such file.
    """
    p = Path(path)
    want_sha = _normalize_hex(sha256, "sha256", 64)
    want_md5 = _normalize_hex(md5, "md5", 32)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    if want_sha is None and want_md5 is None and not allow_unverified:
        raise ChecksumError(
            f"{p}: no checksum to verify it against; pass --sha256 HEX (or --md5 HEX), or "
            "--no-verify to accept the file unverified"
        )
    got = file_digest(p, "sha256")
    if want_sha is not None and got != want_sha:
        raise ChecksumError(f"{p}: SHA-256 mismatch: expected {want_sha}, got {got}")
    if want_md5 is not None:
        got_md5 = file_digest(p, "md5")
        if got_md5 != want_md5:
            raise ChecksumError(f"{p}: MD5 mismatch: expected {want_md5}, got {got_md5}")
    return got


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _content_range_start(value: str | None) -> int | None:
    """Start byte of a ``Content-Range: bytes START-END/TOTAL`` header."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def _transfer(
    url: str, part: Path, timeout: float, progress: Callable[[int, int | None], None] | None
) -> None:
    """Fetch ``url`` into ``part``, appending from its current size when the server honours
    the range. Raises DownloadError on any failure, keeping what was written."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "pcad-data-scripts/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # nothing left to fetch: the .part is complete (verified next)
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect: {type(exc).__name__}: {reason}") from None
    with resp:
        ctype = resp.headers.get("Content-Type", "")
        if ctype.lower().startswith("text/html"):
            raise DownloadError(
                f"{url}: the server sent an HTML page, not the file (a login, licence or "
                "Google Drive confirmation page?); download it in a browser and pass its "
                "direct link with --url, or the file with --archive"
            )
        status = resp.status
        if status == 206 and _content_range_start(resp.headers.get("Content-Range")) == offset:
            mode = "ab"
        elif status == 200:
            mode, offset = "wb", 0  # the server ignored the range: start over
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {status} for a range request")
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = None if expected is None else offset + expected
        got = 0
        with open(part, mode) as f:
            try:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
                    if progress is not None:
                        progress(offset + got, total)
            except (OSError, http.client.HTTPException, ValueError, EOFError) as exc:
                f.flush()  # IncompleteRead, connection reset, timeout
                raise DownloadInterrupted(
                    f"{url}: transfer interrupted after {offset + got} bytes "
                    f"({type(exc).__name__}); {part.name} is kept and the next call resumes"
                ) from None
            f.flush()
            os.fsync(f.fileno())
    if expected is not None and got < expected:
        raise DownloadInterrupted(
            f"{url}: transfer interrupted after {offset + got} of {total} bytes; "
            f"{part.name} is kept and the next call resumes"
        )


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    md5: str | None = None,
    resume: bool = True,
    allow_unverified: bool = False,
    retries: int = 2,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and verify it; returns ``dest``.

    The bytes go to ``dest + ".part"``; the file is renamed to ``dest`` only after its
    checksum matched. An existing ``dest`` is verified and kept (no download).

    Args:
        url: ``http://`` or ``https://`` URL.
        dest: final file path; parent folders are created.
        sha256: expected SHA-256 (hex). ``md5``: expected MD5, for datasets publishing only
            that. With neither, ``allow_unverified=True`` is required.
        resume: continue an existing ``.part`` (Range request); False starts over.
        retries: automatic resumes after an interrupted transfer within this call.
        timeout: socket timeout in seconds.
        backoff: seconds to wait before the first retry (doubled each time).
        progress: called as ``progress(bytes_so_far, total_or_None)``.

    Raises:
        ChecksumError: wrong checksum (the ``.part`` is deleted), or no checksum given.
        DownloadError: network or HTTP failure; after an interruption the ``.part`` is kept
            so that calling again resumes.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"url: expected an http:// or https:// URL, got {url!r}")
    target = Path(dest)
    sha = _normalize_hex(sha256, "sha256", 64)
    md = _normalize_hex(md5, "md5", 32)
    if sha is None and md is None and not allow_unverified:
        raise ChecksumError(
            f"{url}: no checksum known for it; pass --sha256 HEX (or --md5 HEX), or "
            "--no-verify to accept the download unverified"
        )
    if target.exists():
        verify(target, sha, md5=md, allow_unverified=allow_unverified)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(target)
    if not resume:
        _remove(part)
    attempt = 0
    while True:
        try:
            _transfer(url, part, timeout, progress)
            break
        except DownloadInterrupted:
            if attempt >= retries:
                raise
            attempt += 1
            time.sleep(backoff * 2 ** (attempt - 1))
    try:
        verify(part, sha, md5=md, allow_unverified=allow_unverified)
    except ChecksumError as exc:
        _remove(part)
        raise ChecksumError(f"{url}: {exc}; the download was deleted") from None
    os.replace(part, target)
    return target


# --------------------------------------------------------------------------------------------
# extract
# --------------------------------------------------------------------------------------------

#: Default caps of :func:`extract` against decompression bombs: the total size the members
#: declare (what extraction writes) and their number. Both are read from the archive's headers
#: before anything is written; the registered datasets' archives stay far below them. Pass
#: ``max_bytes``/``max_members`` (``get_dataset --max-extract-gib/--max-extract-members``)
#: for a larger archive.
MAX_EXTRACT_BYTES = 256 * 2**30
MAX_EXTRACT_MEMBERS = 1_000_000
#: Symlinks followed while resolving one path before it counts as a loop (Linux's limit).
MAX_LINK_HOPS = 40


def archive_kind(path: str | os.PathLike[str]) -> str:
    """``"zip"`` or ``"tar"`` (any compression), from the file's content."""
    p = Path(path)
    if zipfile.is_zipfile(p):
        return "zip"
    try:
        with tarfile.open(p, "r:*"):
            return "tar"
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ExtractError(
            f"{p}: not a supported archive (.tar[.gz|.xz|.bz2] or .zip): {exc}"
        ) from None


def _is_absolute(name: str) -> bool:
    return name.startswith("/") or (len(name) > 1 and name[1] == ":")


def _safe_name(name: str, archive: Path) -> str:
    """The member's normalized relative POSIX path, or ExtractError when it is unsafe."""
    n = name.replace("\\", "/")
    if _is_absolute(n):
        raise ExtractError(f"{archive}: member {name!r} has an absolute path; refused")
    norm = posixpath.normpath(n)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{norm}/":
        raise ExtractError(f"{archive}: member {name!r} points outside the folder; refused")
    return norm


def _resolve(path: str, symlinks: dict[str, str]) -> str | None:
    """Where ``path`` (relative to the extraction folder) leads once every component that is
    one of the archive's ``symlinks`` (``{casefolded name: target}``) is followed, as the
    operating system would: the normalized relative path, ``""`` for the folder itself, or
    None when it leaves the folder (``..`` above the top, an absolute target, or more than
    :data:`MAX_LINK_HOPS` links: a loop).

    Example:
        >>> _resolve("a/b/c", {"a/b": ".."})  # a/b is the top folder: c is at the top
        'c'
        >>> _resolve("a/b/../x", {"a/b": ".."}) is None  # textually "a/x", really outside
        True
    """
    todo = path.replace("\\", "/").split("/")[::-1]  # a stack: next component last
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                return None
            done.pop()
            continue
        target = symlinks.get("/".join([*done, part]).casefold())
        if target is None:
            done.append(part)
            continue
        hops += 1
        target = target.replace("\\", "/")
        if hops > MAX_LINK_HOPS or _is_absolute(target):
            return None
        todo.extend(target.split("/")[::-1])  # relative to the link's folder: ``done``
    return "/".join(done)


def _read_tar_members(
    tf: tarfile.TarFile, archive: Path, max_bytes: int, max_members: int
) -> list[tarfile.TarInfo]:
    """The members, read header by header, within the caps."""
    members: list[tarfile.TarInfo] = []
    total = 0
    for m in tf:
        if len(members) >= max_members:
            raise ExtractError(
                f"{archive}: at least {len(members) + 1} members, more than "
                f"max_members={max_members}; refused"
            )
        members.append(m)
        if m.isreg():
            total += m.size
            if total > max_bytes:
                raise ExtractError(
                    f"{archive}: the members unpack to at least {total} bytes, more than "
                    f"max_bytes={max_bytes}; refused"
                )
    return members


def _check_tar(
    tf: tarfile.TarFile, archive: Path, max_bytes: int, max_members: int
) -> tuple[list[tarfile.TarInfo], int]:
    """The members and their total size, after refusing every unsafe one.

    Link members are checked here, not by ``tarfile``'s extraction filter (absent before
    Python 3.10.12/3.11.4): each symlink's and hard link's target is resolved through the
    archive's own symlinks, both those declared before it and all of them, and must stay in
    the folder; a member whose path goes through a symlink, or that shares a symlink's name,
    is refused; a hard link must name an earlier file of the archive.
    """
    members = _read_tar_members(tf, archive, max_bytes, max_members)
    names = [_safe_name(m.name, archive) for m in members]
    all_links: dict[str, str] = {}
    counts: dict[str, int] = {}
    for m, name in zip(members, names, strict=True):
        key = name.casefold()
        counts[key] = counts.get(key, 0) + 1
        if m.issym():
            all_links[key] = m.linkname
    declared: dict[str, str] = {}
    files: set[str] = set()
    for m, name in zip(members, names, strict=True):
        key = name.casefold()
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise ExtractError(f"{archive}: member {m.name!r} is a device or FIFO; refused")
        parts = key.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in all_links:
                raise ExtractError(
                    f"{archive}: member {m.name!r} goes through the symlink "
                    f"{'/'.join(name.split('/')[:i])!r}; refused"
                )
        if key in all_links and counts[key] > 1:
            raise ExtractError(
                f"{archive}: member {m.name!r} appears {counts[key]} times, as a symlink and "
                "again; refused"
            )
        if (m.issym() or m.islnk()) and name == ".":
            raise ExtractError(f"{archive}: link {m.name!r} replaces the folder; refused")
        if m.issym() or m.islnk():
            target = m.linkname.replace("\\", "/")
            where = posixpath.join(posixpath.dirname(name), target) if m.issym() else target
            ends = [None if _is_absolute(target) else _resolve(where, links)
                    for links in (declared, all_links)]
            if None in ends:
                raise ExtractError(
                    f"{archive}: link {m.name!r} -> {m.linkname!r} leaves the folder "
                    "(followed through the archive's symlinks) or loops; refused"
                )
            if m.islnk() and (ends[0] or "").casefold() not in files:
                raise ExtractError(
                    f"{archive}: hard link {m.name!r} -> {m.linkname!r} names no earlier file "
                    "of the archive; refused"
                )
        if m.issym():
            declared[key] = m.linkname
        elif m.isreg() or m.islnk():
            files.add(key)
    return members, sum(m.size for m in members if m.isreg())


def _check_zip(
    zf: zipfile.ZipFile, archive: Path, max_bytes: int, max_members: int
) -> tuple[list[zipfile.ZipInfo], int]:
    """The members and their total size, after refusing unsafe ones (absolute paths, ``..``,
    symlinks, which :mod:`zipfile` would write as small files anyway) and over the caps."""
    infos = zf.infolist()
    if len(infos) > max_members:
        raise ExtractError(
            f"{archive}: {len(infos)} members, more than max_members={max_members}; refused"
        )
    total = 0
    for info in infos:
        _safe_name(info.filename, archive)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ExtractError(f"{archive}: member {info.filename!r} is a link; refused")
        total += info.file_size  # zipfile writes at most this many bytes, then checks the CRC
    if total > max_bytes:
        raise ExtractError(
            f"{archive}: the members unpack to {total} bytes, more than "
            f"max_bytes={max_bytes}; refused"
        )
    return infos, total


def _check_space(archive: Path, folder: Path, total: int) -> None:
    free = shutil.disk_usage(folder).free
    if total > free:
        raise ExtractError(
            f"{archive}: the members unpack to {total} bytes, but only {free} bytes are free "
            f"on the disk of {folder.parent}; refused"
        )


def _extract_into(
    archive: Path, kind: str, folder: Path, max_bytes: int, max_members: int
) -> None:
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            infos, total = _check_zip(zf, archive, max_bytes, max_members)
            _check_space(archive, folder, total)
            zf.extractall(folder, members=infos)  # a CRC mismatch raises BadZipFile
        return
    with tarfile.open(archive, "r:*") as tf:
        members, total = _check_tar(tf, archive, max_bytes, max_members)
        _check_space(archive, folder, total)
        if hasattr(tarfile, "data_filter"):  # a second line of defence where it exists
            tf.extractall(folder, members=members, filter="data")
        else:  # Python 3.10.0-3.10.11, 3.11.0-3.11.3: _check_tar alone
            tf.extractall(folder, members=members)


def extract(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_bytes: int = MAX_EXTRACT_BYTES,
    max_members: int = MAX_EXTRACT_MEMBERS,
) -> Path:
    """Extract ``archive`` into the folder ``dest``, all or nothing; returns ``dest``.

    The archive is unpacked into a hidden temporary sibling of ``dest``, which is renamed to
    ``dest`` only when every member is out; on any error the temporary folder is deleted and
    ``dest`` is untouched. Every member is checked before anything is written (see
    :func:`_check_tar`): links are followed through the archive's own symlinks, without
    relying on :mod:`tarfile`'s extraction filter (which is still applied where it exists).

    Args:
        archive: a ``.tar[.gz|.xz|.bz2]`` or ``.zip`` file (recognised by content).
        dest: the folder to create.
        overwrite: replace an existing ``dest``.
        max_bytes: refuse an archive whose members unpack to more bytes than this
            (:data:`MAX_EXTRACT_BYTES`, 256 GiB, by default), or to more than the disk holds.
        max_members: refuse an archive with more members (:data:`MAX_EXTRACT_MEMBERS`).

    Raises:
        ExtractError: unknown or corrupt archive, an unsafe member (absolute path, ``..``,
            a link leaving the folder, a path through a symlink, a device file), over a cap,
            or ``dest`` exists and ``overwrite`` is False.
        InvalidInputError: ``max_bytes`` or ``max_members`` is not a positive integer.

    Example:
        >>> import io, tarfile, tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with tarfile.open(d / "a.tar", "w") as tf:
        ...     info = tarfile.TarInfo("pkg/link")
        ...     info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        ...     tf.addfile(info)
        >>> try:
        ...     extract(d / "a.tar", d / "out")
        ... except ExtractError as exc:
        ...     print(str(exc).split(": ", 1)[1].split(" (")[0])
        link 'pkg/link' -> '../../etc/passwd' leaves the folder
    """
    max_bytes = check_int(max_bytes, "max_bytes")
    max_members = check_int(max_members, "max_members")
    src = Path(archive)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    target = Path(dest)
    if target.exists() and not overwrite:
        raise ExtractError(f"{target}: already exists; pass overwrite=True to replace it")
    kind = archive_kind(src)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extract", dir=target.parent))
    try:
        try:
            _extract_into(src, kind, tmp, max_bytes, max_members)
        except ExtractError:
            raise
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError,
                zlib.error, *_LZMA_ERRORS) as exc:  # corrupt or truncated compressed data
            raise ExtractError(
                f"{src}: extraction failed ({type(exc).__name__}: {exc}); nothing was kept"
            ) from None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
