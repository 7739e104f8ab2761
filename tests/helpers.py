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


BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "benchmarks")


@contextlib.contextmanager
def bench_module(name: str):
    """``benchmarks/<name>.py`` imported as a module (the folder on ``sys.path`` meanwhile,
    for its sibling imports such as ``runlog``)."""
    import importlib
    import sys

    sys.path.insert(0, BENCH_DIR)
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(BENCH_DIR)
