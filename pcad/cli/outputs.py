"""One overwrite policy for every command that writes an output folder or file.

- :func:`add_overwrite_flag`: the ``--overwrite`` flag (and, for ``pcad train``, ``--resume``).
- :func:`check_out`: before the long work, refuse an existing non-empty ``--out`` unless
  ``overwrite`` (or ``reuse``, e.g. ``--resume``) is given, with one line naming the folder and
  the flag.
- :func:`replacing`: write the new result into a hidden staging folder next to ``--out`` and
  put it in place only when it is complete: a failure leaves the old result exactly as it was.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = Path(tempfile.mkdtemp())
    >>> (tmp / "run").mkdir(); (tmp / "run" / "old.txt").write_text("old")
    3
    >>> check_out(tmp / "run", overwrite=False, what="run folder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pcad.errors.InvalidInputError: --out: the run folder .../run is not empty; pass --overwrite ...
    >>> with replacing(tmp / "run", overwrite=True) as stage:
    ...     _ = (stage / "new.txt").write_text("new")
    >>> sorted(p.name for p in (tmp / "run").iterdir())
    ['new.txt']
    >>> shutil.rmtree(tmp)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pcad.errors import InvalidInputError
from pcad.io.atomic import remove_path

__all__ = ["add_overwrite_flag", "check_out", "is_nonempty", "replacing"]


def add_overwrite_flag(parser: argparse.ArgumentParser, what: str = "--out") -> None:
    """Add ``--overwrite`` (replace an existing non-empty ``what`` once the new result is
    complete) to ``parser``."""
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace an existing non-empty {what} (the old one is kept until "
                             "the new result is complete); without it such a folder is refused")


def is_nonempty(path: str | os.PathLike[str]) -> bool:
    """True for an existing file, or a folder holding anything (hidden entries included)."""
    p = Path(path)
    if p.is_dir():
        return any(p.iterdir())
    return p.exists() or p.is_symlink()


def check_out(path: str | os.PathLike[str], overwrite: bool, what: str = "output folder",
              flag: str = "--out", reuse: bool = False) -> Path:
    """``path`` as a Path a command may write; a one-line
    :class:`~pcad.errors.InvalidInputError` when it exists and is not empty, unless
    ``overwrite`` or ``reuse`` (the command continues what is there, e.g. ``--resume``).
    Call it before the long work."""
    out = Path(path)
    if not overwrite and not reuse and is_nonempty(out):
        state = "is not empty" if out.is_dir() else "exists"
        raise InvalidInputError(
            f"{flag}: the {what} {out} {state}; pass --overwrite to replace it, or choose "
            f"another {flag}")
    return out


def _sibling(final: Path, suffix: str) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=suffix,
                                 dir=final.parent))


@contextlib.contextmanager
def replacing(final: str | os.PathLike[str], overwrite: bool, what: str = "output folder",
              in_place: bool = False) -> Iterator[Path]:
    """The folder to write a result to: ``final`` itself when it is new or empty, else (with
    ``overwrite``) a hidden staging folder ``.<name>.<pid>.<random>.tmp`` beside it that
    replaces ``final`` when the block ends without error; on an error it is removed and
    ``final`` is left as it was. Without ``overwrite`` a non-empty ``final`` is refused
    (:func:`check_out`).

    ``in_place`` (for results that record their own paths, e.g. ``pcad sensitivity``): the
    old folder is moved aside (``.<name>.<pid>.<random>.old.tmp``), the block writes ``final``
    itself, and on an error the partial new folder is removed and the old one moved back."""
    from pcad.checks import check_out_folder

    final = check_out_folder(final)  # a file there, an unwritable parent: their own errors
    check_out(final, overwrite, what)
    if not is_nonempty(final):
        yield final
        return
    if in_place:
        old = _sibling(final, ".old.tmp")
        os.replace(final, old)  # onto an empty folder: rename(2) allows that
        try:
            yield final
        except BaseException:
            remove_path(final)
            os.replace(old, final)
            raise
        remove_path(old)
        return
    stage = _sibling(final, ".tmp")
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if final.is_dir() and not final.is_symlink():
        old = _sibling(final, ".old.tmp")
        os.replace(final, old)  # onto an empty folder: rename(2) allows that
    else:
        final.unlink()
    os.replace(stage, final)
    if old is not None:
        remove_path(old)
