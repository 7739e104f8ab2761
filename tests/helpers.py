"""Helpers shared by test modules (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence

from pcad.cli.main import main


def run_pcad(argv: Sequence[str | os.PathLike[str]]) -> tuple[int, str, str]:
    """``pcad ARGV...`` in this process: ``(exit status, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([os.fspath(a) for a in argv])
    return status, out.getvalue(), err.getvalue()
