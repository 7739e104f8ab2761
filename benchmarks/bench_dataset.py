"""Dataset generation throughput: samples per second and peak memory, 1 and 2 workers.

Each case runs ``synth.dataset.generate`` in a fresh child process (so that its peak resident
memory can be read with ``getrusage(RUSAGE_CHILDREN)``: the largest of that process and its
pool workers) on the default sample mix (train 10, validation 2, test good 4, and 4 per defect
type for the six default defects). ``samples/s`` is the generator's own rate (pool start-up
included); the target of issue 3 is 8 samples/s at 256x256 on two cores.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys
from synth.dataset import DatasetConfig, generate
cats, h, w, workers, out, counts = json.loads(sys.argv[1])
cfg = DatasetConfig(categories=tuple(cats), size=(h, w), **counts)
print(json.dumps(generate(cfg, out, workers=workers, progress=False)))
"""


def _case(cats: list[str], size: tuple[int, int], workers: int, counts: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        arg = json.dumps([cats, size[0], size[1], workers, str(Path(tmp) / "ds"), counts])
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return {"report": report, "wall": wall, "peak_mb": max(peak, before) / 1024.0}


def run(quick: bool) -> list[dict]:
    full = dict(train=10, validation=2, test_good=4, test_defect=4)
    small = dict(train=4, validation=1, test_good=2, test_defect=1)
    plans = [((256, 256), ["gear", "cookie"], small if quick else full),
             ((800, 800), ["gear"], dict(train=2, validation=0, test_good=1, test_defect=1)
              if quick else small)]
    rows = []
    for size, cats, counts in plans:
        base_rate = None
        for workers in (1, 2):
            r = _case(cats, size, workers, counts)
            rate = r["report"]["samples_per_second"]
            label = f"{size[0]}x{size[1]}, {workers} worker{'s' if workers > 1 else ''}"
            rows.append({"benchmark": "make-dataset", "case": label, "value": rate,
                         "unit": "samples/s", "reference": "1 worker" if base_rate else None,
                         "ratio": rate / base_rate if base_rate else None,
                         "samples": r["report"]["written"], "wall_s": r["wall"],
                         "target_samples_per_s": 8.0 if size == (256, 256) else None})
            rows.append({"benchmark": "make-dataset", "case": label + " peak RSS",
                         "value": r["peak_mb"], "unit": "MB", "reference": None, "ratio": None})
            base_rate = base_rate or rate
    return rows
