"""PatchCore coreset: time and peak memory of ``pcad.memory.greedy_coreset`` vs bank size.

Workload: banks of N seeded Gaussian features of dimension 1152 (float32, the M3DM/LSFA point
feature width), coreset ratio 0.01 (N / 100 greedy selections), random projection to 128
dimensions, ``memory_budget_mb=256``, torch on the CPU with **one thread** by default
(``PCAD_BENCH_THREADS=N`` to change; 0 = torch's default). The greedy loop is one pass over
the projected bank per selection, bound by memory bandwidth; on a busy 2-core machine two
OpenMP threads were up to 8x slower than one (barriers wait for a descheduled thread), so one
thread gives the stable numbers. Full run: N = 100k, 300k, 1M; ``--quick``: 10k, 30k, 100k.

Each size runs in a fresh child process, so that its resident memory can be read: the bank is
built first (in place, chunk by chunk), then the RSS is read (``/proc/self/statm``), the coreset
runs, and the peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) gives the coreset's **peak extra
memory** (tracemalloc cannot see torch allocations). It is compared with the model of
``coreset_memory_bytes``: ``N * (128 + 3) * 4`` bytes (projected bank, norms, distances, one
buffer) plus the 256 MB chunk budget (ratio = measured / model, at most 1 when the bound
holds). A least-squares line through the sizes gives the extra memory per million features
(linear growth: the model says 524 MB per million).

Reference row (the smallest size only): the same selection written as the public PatchCore
code does (rvorias/ind_knn_ad, reused by BTF and M3DM): project the whole bank at once, then
per iteration ``torch.linalg.norm(z - z[last], dim=1)`` over the whole projected bank.

``PCAD_BENCH_MAX_SELECT=K`` (environment) caps the number of greedy selections per size: the
memory peak is reached in the first iteration, and the time is then projection time plus the
measured per-selection time times N / 100 (the rows say "extrapolated").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DIM = 1152
RATIO = 0.01
PROJ = 128
BUDGET_MB = 256.0
SEED = 20240611
#: torch CPU threads in the children (``PCAD_BENCH_THREADS``; 0 = torch's default).
THREADS = int(os.environ.get("PCAD_BENCH_THREADS", "1"))

CHILD = r"""
import json, os, resource, sys, time
import torch
from pcad.memory.coreset import _start_and_matrix, greedy_coreset

n, dim, ratio, proj, budget, seed, mode, max_select, threads = json.loads(sys.argv[1])
if threads:
    torch.set_num_threads(threads)
page = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

torch.manual_seed(0)
g = torch.Generator().manual_seed(seed)
t0 = time.perf_counter()
bank = torch.empty(n, dim)
for s in range(0, n, 1 << 16):
    bank[s:s + (1 << 16)].normal_(generator=g)
gen_s = time.perf_counter() - t0
k_full = max(1, int(n * ratio))
k = k_full if not max_select else min(k_full, max_select)
base_rss, base_peak = rss(), peak()
proj_s = None
if mode == "pcad":
    if k < k_full:  # time the projection alone, to extrapolate only the greedy loop
        t0 = time.perf_counter()
        greedy_coreset(bank, n=1, projection_dim=proj, seed=0, memory_budget_mb=budget)
        proj_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx = greedy_coreset(bank, n=k, projection_dim=proj, seed=0, memory_budget_mb=budget)
    secs = time.perf_counter() - t0
else:  # the public PatchCore code's way (ind_knn_ad): whole-bank ops per iteration
    t0 = time.perf_counter()
    start, w = _start_and_matrix(n, dim, proj, 0)
    z = bank @ w
    last = z[start:start + 1]
    chosen = [start]
    min_d = torch.linalg.norm(z - last, dim=1, keepdim=True)
    for _ in range(k - 1):
        d = torch.linalg.norm(z - last, dim=1, keepdim=True)
        min_d = torch.minimum(d, min_d)
        i = int(torch.argmax(min_d))
        last = z[i:i + 1]
        min_d[i] = 0
        chosen.append(i)
    secs = time.perf_counter() - t0
    idx = chosen
print(json.dumps(dict(gen_s=gen_s, base_rss=base_rss, base_peak=base_peak, peak=peak(),
                      secs=secs, proj_s=proj_s, k=k, k_full=k_full, unique=len(set(list(idx))),
                      threads=torch.get_num_threads())))
"""


def _child(n: int, mode: str, max_select: int | None) -> dict:
    arg = json.dumps([n, DIM, RATIO, PROJ, BUDGET_MB, SEED, mode, max_select, THREADS])
    out = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def run(quick: bool) -> list[dict]:
    from pcad.memory.coreset import coreset_memory_bytes

    sizes = (10_000, 30_000, 100_000) if quick else (100_000, 300_000, 1_000_000)
    cap_env = os.environ.get("PCAD_BENCH_MAX_SELECT")
    max_select = int(cap_env) if cap_env else None
    mb = 2.0**20
    rows: list[dict] = []
    ref = _child(sizes[0], "naive", max_select)
    ref_extra = (ref["peak"] - ref["base_rss"]) / mb
    ref_secs = ref["secs"] * (ref["k_full"] / ref["k"])  # projection is a small share here
    thr = f"{THREADS} thr" if THREADS else "default threads"
    bench = f"coreset {DIM}-d, ratio {RATIO}, proj {PROJ}, {thr}"
    rows.append(dict(
        benchmark=bench, case=f"{_label(sizes[0])}: time, public PatchCore loop (reference)"
        + (" (extrapolated)" if ref["k"] < ref["k_full"] else ""),
        value=ref_secs, unit="s", reference="-", ratio=None, n=sizes[0], selections=ref["k"],
        extrapolated=ref["k"] < ref["k_full"], peak_extra_mb=ref_extra,
        note="whole-bank projection + torch.linalg.norm(z - last) per iteration"))
    rows.append(dict(
        benchmark=bench, case=f"{_label(sizes[0])}: peak extra memory, public PatchCore loop",
        value=ref_extra, unit="MB", reference="-", ratio=None, n=sizes[0]))
    extras = []
    for n in sizes:
        r = _child(n, "pcad", max_select)
        extra = (r["peak"] - r["base_rss"]) / mb
        model = coreset_memory_bytes(n, DIM, PROJ, BUDGET_MB) / mb
        extras.append(extra)
        capped = r["k"] < r["k_full"]
        if capped:
            loop = r["secs"] - r["proj_s"]
            secs = r["proj_s"] + loop * (r["k_full"] - 1) / max(r["k"] - 1, 1)
        else:
            secs = r["secs"]
        info = dict(n=n, dim=DIM, selections=r["k_full"], measured_selections=r["k"],
                    extrapolated=capped, seconds_measured=r["secs"], projection_s=r["proj_s"],
                    bank_mb=n * DIM * 4 / mb, rss_before_mb=r["base_rss"] / mb,
                    peak_before_mb=r["base_peak"] / mb, peak_rss_mb=r["peak"] / mb,
                    model_extra_mb=model, unique_indices=r["unique"], threads=r["threads"],
                    bank_generation_s=r["gen_s"])
        tag = " (extrapolated)" if capped else ""
        is_ref = n == sizes[0]
        rows.append(dict(benchmark=bench, case=f"{_label(n)}: time, pcad greedy_coreset{tag}",
                         value=secs, unit="s",
                         reference="public loop" if is_ref else "-",
                         ratio=ref_secs / secs if is_ref else None, **info))
        rows.append(dict(benchmark=bench, case=f"{_label(n)}: peak extra memory, pcad",
                         value=extra, unit="MB", reference="model (N*131*4 B + budget)",
                         ratio=extra / model, **info))
        rows.append(dict(benchmark=bench, case=f"{_label(n)}: peak RSS incl. the bank",
                         value=r["peak"] / mb, unit="MB", reference="-", ratio=None,
                         bank_mb=n * DIM * 4 / mb, n=n))
    slope, icpt = np.polyfit(np.asarray(sizes, float), np.asarray(extras), 1)
    fit = np.polyval([slope, icpt], np.asarray(sizes, float))
    ss_res = float(((np.asarray(extras) - fit) ** 2).sum())
    ss_tot = float(((np.asarray(extras) - np.mean(extras)) ** 2).sum()) or 1.0
    model_per_m = (PROJ + 3) * 4 * 1e6 / mb
    rows.append(dict(benchmark=bench, case="extra memory per 1M features (linear fit)",
                     value=slope * 1e6, unit="MB/M", reference=f"model {model_per_m:.0f} MB/M",
                     ratio=slope * 1e6 / model_per_m, intercept_mb=icpt,
                     r_squared=1 - ss_res / ss_tot, sizes=list(sizes), extras_mb=extras,
                     note="peak extra = intercept + slope * N"))
    return rows


if __name__ == "__main__":  # python benchmarks/bench_memory.py [--quick]
    sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    for row in run("--quick" in sys.argv):
        print(row["case"], round(row["value"], 3), row["unit"], row.get("ratio"))
    print(f"{time.perf_counter() - t0:.1f} s")
