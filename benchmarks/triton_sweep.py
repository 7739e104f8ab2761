"""Tune the Triton kernels of ``pcad.ops`` on a GPU: time block-size variants of each op.

Not a ``bench_*`` module (``make bench`` does not run it): run it on a new GPU to check or
re-choose the defaults of :mod:`pcad.ops._triton` (its host functions take the block sizes
and warp counts as keyword arguments)::

    python benchmarks/triton_sweep.py --out sweep.json

For each of issue 13's op shapes it times every variant (``{}``: the defaults) with
``triton.testing.do_bench`` (median of repeated launches after warm-up, CUDA events), the
pure-torch backend as the
reference, and checks each variant's output against the reference on the same seeded uniform
clouds (``exact``: indices and distances equal). The table goes to stdout, sorted by op then
time; the JSON file holds every row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pcad.ops import ball_query, fps, knn, three_nn  # noqa: E402

FPS_VARIANTS = [dict(), dict(block=512), dict(block=2048, num_warps=8),
                dict(registers=False), dict(registers=False, max_groups=1)]
KNN_VARIANTS = [dict(), *(dict(bq=bq, bp=bp, num_warps=w) for bq, bp, w in (
    (8, 32, 2), (16, 16, 1), (8, 16, 1), (32, 32, 2), (16, 64, 4)))]
KNN_BIG_K_VARIANTS = [dict(), *(dict(bq=bq, bp=bp, num_warps=w) for bq, bp, w in (
    (4, 32, 1), (8, 16, 1), (16, 32, 4)))]
BALL_VARIANTS = [dict(), *(dict(bq=bq, bp=bp, num_warps=w) for bq, bp, w in (
    (16, 128, 2), (32, 64, 2), (16, 64, 1)))]


def cloud(batch: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, 3, generator=g).cuda()


def bench(fn) -> float:  # noqa: ANN001
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def same(a, b) -> bool:  # noqa: ANN001
    if isinstance(a, tuple):
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    return torch.equal(a, b)


def sweep_op(name: str, run, variants: list[dict], host_fn: str) -> list[dict]:  # noqa: ANN001
    """Rows for one op shape: the torch reference, then each variant of ``host_fn``."""
    import pcad.ops._triton as kernels

    want = run("torch")
    ref_ms = bench(lambda: run("torch"))
    rows = [dict(op=name, variant="torch", ms=ref_ms, exact=True, speedup=1.0)]
    original = getattr(kernels, host_fn)
    for v in variants:
        def patched(*a, _v=v, **kw):  # noqa: ANN002, ANN003, ANN202
            return original(*a, **{**kw, **_v})
        setattr(kernels, host_fn, patched)
        try:
            t0 = time.perf_counter()
            got = run("triton")
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            ms = bench(lambda: run("triton"))
            rows.append(dict(op=name, variant=json.dumps(v), ms=ms, exact=same(got, want),
                             speedup=ref_ms / ms, first_call_s=first))
        except Exception as exc:  # a variant that does not compile is reported, not fatal
            rows.append(dict(op=name, variant=json.dumps(v), ms=None, exact=False,
                             speedup=None, error=repr(exc)[:200]))
        finally:
            setattr(kernels, host_fn, original)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("triton_sweep: no CUDA device")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    p16, p100 = cloud(8, 16384, 0), cloud(1, 100_000, 1)
    c1024, u16 = cloud(8, 1024, 2), cloud(8, 16384, 3)
    rows: list[dict] = []
    rows += sweep_op("fps 8x16384->1024", lambda b: fps(p16, 1024, backend=b),
                     FPS_VARIANTS, "fps_triton")
    rows += sweep_op("fps 1x100000->1000", lambda b: fps(p100, 1000, backend=b),
                     FPS_VARIANTS, "fps_triton")
    rows += sweep_op("knn 8x16384 in 16384 k=16", lambda b: knn(p16, p16, 16, backend=b),
                     KNN_VARIANTS, "knn_triton")
    rows += sweep_op("knn 8x1024 in 16384 k=128", lambda b: knn(c1024, p16, 128, backend=b),
                     KNN_BIG_K_VARIANTS, "knn_triton")
    rows += sweep_op("ball 8x1024 in 16384 r=0.05 k=32",
                     lambda b: ball_query(c1024, p16, 0.05, 32, backend=b),
                     BALL_VARIANTS, "ball_triton")
    rows += sweep_op("three_nn 8x16384 to 1024", lambda b: three_nn(u16, c1024, backend=b),
                     KNN_VARIANTS, "knn_triton")
    if args.out:
        args.out.write_text(json.dumps(dict(device=torch.cuda.get_device_name(), rows=rows),
                                       indent=1))
    for r in sorted(rows, key=lambda r: (r["op"], r["ms"] if r["ms"] is not None else 1e9)):
        ms = "failed" if r["ms"] is None else f"{r['ms']:.3f}"
        sp = "-" if r.get("speedup") is None else f"{r['speedup']:.1f}x"
        print(f"{r['op']:34s} {r['variant']:48s} {ms:>9s} ms {sp:>8s} exact={r['exact']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
