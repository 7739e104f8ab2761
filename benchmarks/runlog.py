"""What several benchmarks share: the JSON-lines file of finished runs that lets an
interrupted benchmark resume (``PCAD_BENCH_RUNS``), the folder its rendered datasets are kept
in (``PCAD_BENCH_DATA``), and the ``--table FILE`` entry point that
prints a benchmark's README table from a ``benchmarks/run.py`` output.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> log = Path(tempfile.mkdtemp()) / "runs.jsonl"
    >>> append_run(log, {"detector": "btf", "seed": 0})
    >>> append_run(None, {"detector": "lost"})  # no file: nothing kept
    >>> load_runs(log)
    [{'detector': 'btf', 'seed': 0}]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def load_runs(path: Path | None) -> list[dict[str, Any]]:
    """The runs kept in the JSON-lines file ``path`` (``[]`` when it is None or absent); a
    truncated last line (an interrupted write) is ignored.

    >>> load_runs(None)
    []
    """
    if path is None or not path.is_file():
        return []
    runs = []
    for line in path.read_text().splitlines():
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return runs


def data_root(tmp: str | Path) -> Path:
    """Where a benchmark renders its datasets: ``$PCAD_BENCH_DATA`` when set (kept: the
    generator resumes a complete dataset without rendering it again; one folder per benchmark
    and workload), else ``tmp`` (its temporary folder).

    >>> os.environ.pop("PCAD_BENCH_DATA", None) and None
    >>> data_root("/tmp/x")
    PosixPath('/tmp/x')
    """
    kept = os.environ.get("PCAD_BENCH_DATA")
    return Path(kept) if kept else Path(tmp)


def child_env() -> dict[str, str]:
    """The environment of a benchmark's child process: this one's, with
    ``OMP_WAIT_POLICY=PASSIVE`` unless set. OpenMP threads that spin while they wait took the
    CPU from a run beside them (an onenip training step with one other run on the two cores:
    1.4 s spinning, 0.23 s passive), which inflates every time a child reports.

    >>> os.environ.pop("OMP_WAIT_POLICY", None) and None
    >>> child_env()["OMP_WAIT_POLICY"]
    'PASSIVE'
    """
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def append_run(path: Path | None, run: dict[str, Any]) -> None:
    """Keep ``run`` as one line of ``path`` (nothing when ``path`` is None)."""
    if path is not None:
        with path.open("a") as f:
            f.write(json.dumps(run) + "\n")


def table_main(render_table: Callable[[list[dict]], str], doc: str,
               argv: list[str] | None = None) -> int:
    """``--table FILE``: print ``render_table`` of the rows in ``FILE`` (a ``benchmarks/run.py``
    output, ``{"rows": [...]}``, or a bare list of rows); ``doc``'s first line is the help."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True,
                        help="JSON file written by benchmarks/run.py: print its README table")
    args = parser.parse_args(argv)
    payload = json.loads(args.table.read_text())
    print(render_table(payload.get("rows", payload) if isinstance(payload, dict) else payload))
    return 0


def setting_row(bench: str, runs: list[dict[str, Any]], detectors: list[str],
                seeds: list[int] | tuple[int, ...], counts: dict[str, Any],
                **where: Any) -> dict[str, Any]:
    """The JSON ``setting`` row of a benchmark: what it ran (``where``: its parts or meshes),
    the sample counts and every run's raw record.

    >>> setting_row("b", [], ["btf"], (0,), {"size": (64, 64)}, parts=["gear"])["counts"]
    {'size': [64, 64]}
    """
    return {"benchmark": bench, "case": "setting", "value": None, "unit": "", "reference": None,
            "ratio": None, **where, "seeds": list(seeds), "detectors": detectors,
            "counts": {k: list(v) if isinstance(v, tuple) else v for k, v in counts.items()},
            "runs": runs}


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of ``values``.

    >>> mean_sd([1.0, 3.0])
    (2.0, 1.4142135623730951)
    """
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd
