"""Start-up time of the command line: ``pcad --help`` and ``pcad info`` against ``python -c
pass``.

Two measures per case, each the median of ``repeats`` fresh processes:

- ``wall``: the subprocess's wall time (interpreter start included);
- ``import``: the cumulative import time ``python -X importtime`` reports for the imports
  the command makes (the sum of the top-level entries), the number issue 17 bounds by 1 s.

``reference`` is the same measure for ``python -c pass``; ``ratio`` is value / reference.

Usage: ``python benchmarks/run.py --only cli_startup [--quick]``.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time

CASES = {
    "pcad --help": "from pcad.cli.main import main; import sys; sys.exit(main(['--help']))",
    "pcad info": "from pcad.cli.main import main; import sys; sys.exit(main(['info']))",
    "pcad train --help": ("from pcad.cli.main import main; import sys; "
                          "sys.exit(main(['train', '--help']))"),
}
REFERENCE = "pass"
_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def _once(code: str) -> tuple[float, float]:
    """(wall seconds, top-level cumulative import seconds) of one ``python -X importtime``."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0,):
        raise RuntimeError(f"{code!r} exited {proc.returncode}: {proc.stderr[-300:]}")
    total_us = 0
    for line in proc.stderr.splitlines():
        m = _LINE.match(line)
        if m and len(m.group(3)) == 1:  # a top-level import (one space of indent)
            total_us += int(m.group(2))
    return wall, total_us / 1e6


def _median(code: str, repeats: int) -> tuple[float, float]:
    runs = [_once(code) for _ in range(repeats)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))


def run(quick: bool) -> list[dict]:
    repeats = 3 if quick else 7
    ref_wall, ref_import = _median(REFERENCE, repeats)
    rows = []
    for case, code in CASES.items():
        wall, imp = _median(code, repeats)
        rows.append({"benchmark": "cli_startup", "case": f"{case}: import", "value": imp,
                     "unit": "s", "reference": ref_import,
                     "ratio": imp / ref_import if ref_import else None,
                     "within_1s": imp < 1.0, "repeats": repeats})
        rows.append({"benchmark": "cli_startup", "case": f"{case}: wall", "value": wall,
                     "unit": "s", "reference": ref_wall,
                     "ratio": wall / ref_wall if ref_wall else None, "repeats": repeats})
    return rows


if __name__ == "__main__":  # pragma: no cover
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['case']:<32} {row['value']:.3f} {row['unit']} "
              f"(python -c pass {row['reference']:.3f})")
