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


def saved_before(run: str | os.PathLike[str], *options: str) -> dict:
    """Make the run folder ``run`` look saved before ``options`` existed: drop them from its
    ``detector.json`` config; return the edited record (write it back to edit it more)."""
    import json
    from pathlib import Path

    path = Path(run) / "detector.json"
    record = json.loads(path.read_text())
    for key in options:
        del record["config"][key]
    path.write_text(json.dumps(record))
    return record
