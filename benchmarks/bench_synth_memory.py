"""``pcad synth`` on large clouds: peak resident memory and time against the number of points.

Workload: a seeded noisy unit sphere (radial noise 1e-3) of N points, saved as a float32
``.npy`` (written chunk by chunk through a memory map, so the parent stays small), then
``pcad synth CLOUD -o OUT.ply --defect bump --seed 0`` in a fresh child process per size: the
whole command, reading, normal estimation (k = 30, oriented outward), the defect and the PLY
writer. Full run: N = 0.5M, 1M, 2M, 5M; ``--quick``: 0.1M, 0.3M, 1M.

Peak memory is the child's own ``ru_maxrss`` (``os.wait4`` on its pid: one child, not the
largest of all children so far). Rows per size: peak RSS (reference: the 2 GB target of issue
18 at 5M points, ratio = peak / 2 GB), wall seconds (user + system CPU seconds in the JSON
file). A least-squares line through the sizes gives the memory per point (its intercept is the
interpreter and the imported libraries, about 130 MB) and the peak it projects at 5M; the
target is below 2 GB at 5M, i.e. a slope below about 400 bytes per point. Before issue 18 the
command took 6.6 GB at 5M (1.3 KB per point: all neighbours and graph edges at once).

Run alone: ``python benchmarks/run.py --only synth_memory --out /tmp/synth_memory.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
#: the target of issue 18: ``pcad synth`` on 5M points under 2 GB
TARGET_N = 5_000_000
TARGET_MB = 2048.0
CHILD = "import sys; from pcad.cli.main import main; sys.exit(main(sys.argv[1:]))"


def write_sphere(path: Path, n: int, seed: int = SEED, chunk: int = 1 << 20) -> None:
    """Write a noisy unit sphere of ``n`` points as a float32 ``(n, 3)`` ``.npy``, in chunks."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 3))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        p = rng.normal(size=(m, 3))
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        p *= (1.0 + 1e-3 * rng.standard_normal(m))[:, None]
        out[s : s + m] = p
    out.flush()
    del out


def _peak_bytes(ru: object) -> float:
    maxrss = float(ru.ru_maxrss)  # type: ignore[attr-defined]
    return maxrss if sys.platform == "darwin" else maxrss * 1024.0  # bytes on macOS, KB else


def run_synth(cloud: Path, out: Path) -> dict:
    """Run ``pcad synth`` on ``cloud`` in a child; its peak RSS (bytes), wall and CPU seconds."""
    cmd = [sys.executable, "-c", CHILD, "synth", str(cloud), "-o", str(out), "--defect", "bump",
           "--seed", str(SEED), "--json"]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=stdout, stderr=stderr)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        text, err = stdout.read().decode(), stderr.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"pcad synth failed ({proc.returncode}): {err.strip()[-2000:]}")
    report = json.loads(text.strip().splitlines()[-1])
    return dict(peak=_peak_bytes(ru), wall=wall, cpu=ru.ru_utime + ru.ru_stime,
                n_anomalous=report["n_anomalous"], n_points=report["n_points"])


def _label(n: int) -> str:
    return f"{n / 1e6:g}M"


def run(quick: bool) -> list[dict]:
    sizes = (100_000, 300_000, 1_000_000) if quick else (500_000, 1_000_000, 2_000_000,
                                                           5_000_000)
    mb = 2.0**20
    bench = "pcad synth (bump, k=30 outward normals)"
    rows: list[dict] = []
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            cloud = Path(tmp) / f"sphere_{n}.npy"
            write_sphere(cloud, n)
            r = run_synth(cloud, Path(tmp) / "out.ply")
            cloud.unlink()
            peaks.append(r["peak"])
            info = dict(n=n, cpu_s=r["cpu"], n_anomalous=r["n_anomalous"],
                        bytes_per_point=r["peak"] / n)
            rows.append(dict(benchmark=bench, case=f"{_label(n)}: peak RSS", value=r["peak"] / mb,
                             unit="MB", reference="2 GB target (at 5M)",
                             ratio=r["peak"] / mb / TARGET_MB, **info))
            rows.append(dict(benchmark=bench, case=f"{_label(n)}: time", value=r["wall"],
                             unit="s", reference="-", ratio=None, **info))
    x = np.asarray(sizes, float)
    y = np.asarray(peaks)
    slope, icpt = np.polyfit(x, y, 1)
    fit = np.polyval([slope, icpt], x)
    ss_tot = float(((y - y.mean()) ** 2).sum()) or 1.0
    r2 = 1.0 - float(((y - fit) ** 2).sum()) / ss_tot
    target_slope = TARGET_MB * mb / TARGET_N
    rows.append(dict(benchmark=bench, case="peak RSS per point (linear fit)", value=slope,
                     unit="B/point", reference=f"2 GB / 5M = {target_slope:.0f} B/point",
                     ratio=slope / target_slope, intercept_mb=icpt / mb, r_squared=r2,
                     sizes=list(sizes), peaks_mb=[p / mb for p in peaks],
                     note="peak = intercept + slope * N"))
    projected = (icpt + slope * TARGET_N) / mb
    rows.append(dict(benchmark=bench, case="5M: peak RSS projected by the fit", value=projected,
                     unit="MB", reference="2 GB target", ratio=projected / TARGET_MB))
    return rows

