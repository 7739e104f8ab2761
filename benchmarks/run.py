"""Entry point of ``make bench``: run every ``benchmarks/bench_*.py``, print and save the rows.

Usage:
    python benchmarks/run.py --out benchmarks/results.json [--quick] [--only perlin]

Each ``bench_*.py`` module exposes ``run(quick: bool) -> list[dict]``; a row holds at least
``benchmark``, ``case``, ``value``, ``unit``, ``reference`` and ``ratio`` (``None`` prints as
``-``) and may carry more keys, which go to the JSON file only. The table is printed to stdout;
the JSON file (environment + all rows) is written atomically (temporary file, then
``os.replace``). The exit status is 1 when a module failed (its error is in the JSON file).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
COLUMNS = ("benchmark", "case", "value", "unit", "reference", "ratio")

# Import the source tree (not a possibly stale installed copy) and the bench_* modules.
for _p in (str(BENCH_DIR), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def discover(only: str | None = None) -> list[str]:
    """Names of the ``bench_*.py`` modules next to this file, sorted; ``only`` filters them:
    the module it names exactly (``unified`` or ``bench_unified``) when there is one, else
    every module whose name contains it.

    >>> discover("unified"), discover("bench_loo")
    (['bench_unified'], ['bench_loo'])
    >>> "bench_generalization" in discover("general")
    True
    """
    names = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    if only is None:
        return names
    exact = [n for n in names if n in (only, f"bench_{only}")]
    return exact or [n for n in names if only in n]


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def format_table(rows: list[dict]) -> str:
    """The rows as a plain-text table with the columns of :data:`COLUMNS`."""
    cells = [list(COLUMNS)]
    for r in rows:
        ratio = r.get("ratio")
        cells.append([
            str(r.get("benchmark", "")), str(r.get("case", "")), _num(r.get("value")),
            str(r.get("unit", "")), str(r.get("reference") or "-"),
            "-" if ratio is None else _num(ratio) + "x",
        ])
    widths = [max(len(row[k]) for row in cells) for k in range(len(COLUMNS))]
    right = {2, 5}  # numbers right-aligned
    lines = []
    for i, row in enumerate(cells):
        parts = [c.rjust(w) if k in right else c.ljust(w)
                 for k, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _environment() -> dict:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    for dist in ("numpy", "numba", "torch", "noise"):
        try:  # the installed distribution's version (noise 1.2.2 says __version__ 1.2.1)
            env[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            env[dist] = None
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.json",
                        help="JSON file to write (default: benchmarks/results.json)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller problem sizes (a smoke test, not for reporting)")
    parser.add_argument("--only", default=None,
                        help="run only the bench_*.py module of this name (unified or "
                             "bench_unified), else those whose name contains this text")
    args = parser.parse_args(argv)

    names = discover(args.only)
    if not names:
        print(f"no benchmark module matches {args.only!r} in {BENCH_DIR}", file=sys.stderr)
        return 2
    rows: list[dict] = []
    errors: list[dict] = []
    started = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"running {name} ({'quick' if args.quick else 'full'}) ...", flush=True)
        try:
            module_rows = importlib.import_module(name).run(quick=args.quick)
        except Exception as exc:  # report, keep the other modules' rows
            traceback.print_exc()
            errors.append({"module": name, "error": repr(exc)})
            continue
        for r in module_rows:
            r.setdefault("module", name)
        rows += module_rows
        print(f"  {name}: {len(module_rows)} rows in {time.perf_counter() - t0:.1f} s", flush=True)

    print()
    print(format_table(rows))
    payload = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "modules": names,
        "seconds": round(time.perf_counter() - started, 2),
        "environment": _environment(),
        "errors": errors,
        "rows": rows,
    }
    write_json_atomic(args.out, payload)
    print(f"\nwrote {len(rows)} rows to {args.out}")
    if errors:
        print(f"{len(errors)} module(s) failed: {', '.join(e['module'] for e in errors)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
