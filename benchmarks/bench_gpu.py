"""GPU benchmark (issue 13): point ops per CUDA backend, Perlin noise on CUDA, and every
detector's fit time, inference throughput and peak GPU memory at 224 px.

Three parts, each a list of rows (``benchmark, case, value, unit, reference, ratio``):

- **ops**: the op table of issue 13 on seeded uniform clouds in the unit cube (fps 8 x 16384 ->
  1024 and 1 x 100,000 -> 1000; knn 8 x 1024 centres in 16384 points, k=128, and 8 x 16384 in
  16384, k=16; ball query 8 x 1024 in 16384, r=0.05, k=32; three_nn 8 x 16384 to 1024), for
  every backend of ``pcad.ops.available_backends(device, op)`` (a new backend is picked up
  without editing this file). ``value`` is the median milliseconds after one warm-up call
  (CUDA events on the GPU, ``perf_counter`` on the CPU); ``ratio`` is the speed-up over
  ``backend="torch"`` on the same inputs; ``exact`` says whether the indices equal torch's
  (``max_abs_d2``: the largest squared-distance difference).
- **noise**: ``synth.pnoise2`` / ``pnoise3`` (4 octaves) on CUDA tensors in Mpoints/s, against
  the numba CPU backend on the same machine (``max_abs_diff`` on a subset).
- **detectors**: each registered detector fitted on the ``train`` split of a small dataset
  (``--data``, MVTec 3D-AD layout, e.g. the one ``benchmarks/gpu_prepare.sh`` renders) at 224
  px on the device, then timed on the ``test`` split: samples/s with batch 1 (one
  ``predict`` per sample) and batch 32 (``predict_batch`` when the detector has one, else 32
  ``predict`` calls, said in ``note``), and ``torch.cuda.max_memory_allocated`` during fit and
  during inference. m3dm, lsfa and cfm run with the Point-MAE point feature
  (``point_backbone="pointmae"``, no Open3D); btf, fpfh and synthsup need Open3D's FPFH and
  are reported as skipped when ``open3d`` cannot be imported.

Without CUDA, ``run()`` returns one row saying so (``make bench`` on a CPU machine). The op
part takes a device and its cases as arguments, so a test runs it tiny on the CPU.

Standalone (JSON written after each part, so a run killed by a time limit keeps what it did;
the table is printed last)::

    python benchmarks/bench_gpu.py --data .devkit/data --out results.json [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for _p in (str(BENCH_DIR), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402

SEED = 20240613
#: detectors whose only point feature is Open3D's FPFH
FPFH_ONLY = ("btf", "fpfh", "synthsup")
#: detectors run with the Point-MAE point feature
POINTMAE = ("cfm", "lsfa", "m3dm")
#: environment variable naming the dataset of ``run()`` (default: ``.devkit/data`` if present)
DATA_ENV = "PCAD_BENCH_GPU_DATA"

#: the op table of issue 13: (op, label, sizes)
OP_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("fps", "fps 8 x 16384 -> 1024", dict(b=8, n=16384, s=1024)),
    ("fps", "fps 1 x 100000 -> 1000", dict(b=1, n=100_000, s=1000)),
    ("knn", "knn 8 x 1024 in 16384, k=128", dict(b=8, m=1024, n=16384, k=128)),
    ("knn", "knn 8 x 16384 in 16384, k=16", dict(b=8, m=16384, n=16384, k=16)),
    ("ball_query", "ball query 8 x 1024 in 16384, r=0.05, k=32",
     dict(b=8, m=1024, n=16384, k=32, r=0.05)),
    ("three_nn", "three_nn 8 x 16384 to 1024", dict(b=8, m=16384, n=1024)),
]


def _row(benchmark: str, case: str, value: Any, unit: str, reference: str = "-",
         ratio: float | None = None, **extra: Any) -> dict:
    return dict(benchmark=benchmark, case=case, value=value, unit=unit, reference=reference,
                ratio=ratio, **extra)


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int = 10,
              budget_s: float = 2.0) -> tuple[float, list[float], Any]:
    """Median milliseconds of ``fn()`` after one warm-up call, all times, the last result.

    On CUDA each call is timed with ``torch.cuda.Event`` pairs (synchronised); on the CPU with
    ``perf_counter``. At least 3 timed calls, at most ``repeats``, fewer once ``budget_s`` is
    spent.

    Example:
        >>> ms, times, out = time_call(lambda: 1 + 1, torch.device("cpu"), repeats=3)
        >>> len(times), out
        (3, 2)
    """
    out = fn()
    cuda = device.type == "cuda"
    times: list[float] = []
    spent = 0.0
    for i in range(repeats):
        if i >= 3 and spent > budget_s:
            break
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize(device)
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            out = fn()
            ms = (time.perf_counter() - t0) * 1000
        times.append(ms)
        spent += ms / 1000
    return statistics.median(times), times, out


def _cloud(gen: torch.Generator, b: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.rand(b, n, 3, generator=gen).to(device)


def _op_call(op: str, sizes: dict[str, Any], device: torch.device
             ) -> Callable[[str], Any]:
    """A function ``backend -> result`` running ``op`` on seeded inputs of ``sizes``."""
    from pcad.ops import ball_query, fps, knn, three_nn

    gen = torch.Generator().manual_seed(SEED)
    if op == "fps":
        pts = _cloud(gen, sizes["b"], sizes["n"], device)
        return lambda backend: fps(pts, sizes["s"], backend=backend)
    query = _cloud(gen, sizes["b"], sizes["m"], device)
    points = _cloud(gen, sizes["b"], sizes["n"], device)
    if op == "knn":
        return lambda backend: knn(query, points, sizes["k"], backend=backend)
    if op == "ball_query":
        return lambda backend: ball_query(query, points, sizes["r"], sizes["k"], backend=backend)
    if op == "three_nn":
        return lambda backend: three_nn(query, points, backend=backend)
    raise ValueError(f"op: unknown op {op!r}")


def _compare(got: Any, want: Any) -> tuple[bool, float | None]:
    """(indices equal, largest squared-distance difference) of an op's result and torch's."""
    if isinstance(got, torch.Tensor):  # fps: indices only
        return bool(torch.equal(got.cpu(), want.cpu())), None
    d, i = (t.cpu() for t in got)
    wd, wi = (t.cpu() for t in want)
    finite = torch.isfinite(wd) & torch.isfinite(d)
    diff = float((d[finite].double() - wd[finite].double()).abs().max()) if finite.any() else 0.0
    return bool(torch.equal(i, wi)), diff


def run_ops(device: str | torch.device = "cuda",
            cases: Sequence[tuple[str, str, dict[str, Any]]] | None = None,
            backends: Sequence[str] | None = None, repeats: int = 10) -> list[dict]:
    """The op table: one row per (case, backend) on ``device``.

    Args:
        device: where the clouds live (``"cuda"``, ``"cpu"``...).
        cases: ``(op, label, sizes)`` triples (default :data:`OP_CASES`).
        backends: restrict to these backends (default: every available one for the op and
            device; ``"torch"`` always runs, as the reference).
        repeats: timed calls per backend at most.

    Example:
        >>> rows = run_ops("cpu", [("fps", "tiny", dict(b=1, n=64, s=8))], ["torch"], 3)
        >>> rows[0]["case"], rows[0]["exact"], rows[0]["unit"]
        ('torch', True, 'ms')
    """
    from pcad.ops import available_backends

    dev = torch.device(device)
    rows: list[dict] = []
    for op, label, sizes in cases if cases is not None else OP_CASES:
        call = _op_call(op, sizes, dev)
        names = available_backends(dev, op)
        if backends is not None:
            names = [b for b in names if b in backends]
        names = ["torch"] + [b for b in names if b != "torch"]
        ref_ms, want = None, None
        for backend in names:
            try:
                ms, times, out = time_call(lambda b=backend, c=call: c(b), dev, repeats)
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                rows.append(_row(label, backend, None, "ms", note=f"failed: {exc!r}"[:300],
                                 op=op, device=str(dev)))
                continue
            if backend == "torch":
                ref_ms, want = ms, out
            exact, d2 = (True, 0.0) if want is None else _compare(out, want)
            rows.append(_row(label, backend, ms, "ms", "torch" if backend != "torch" else "-",
                             None if ref_ms is None or backend == "torch" else ref_ms / ms,
                             exact=exact, max_abs_d2=d2, times=times, op=op, device=str(dev)))
    return rows


def run_noise(device: str | torch.device = "cuda", n: int = 10_000_000,
              n_numba: int = 2_000_000) -> list[dict]:
    """``synth.pnoise2`` / ``pnoise3`` throughput on ``device`` tensors against numba (CPU).

    Example:
        >>> rows = run_noise("cpu", n=2000, n_numba=1000)
        >>> [r["case"] for r in rows][:2], rows[0]["unit"]
        (['pnoise2 torch cpu', 'pnoise2 numba CPU'], 'Mpoints/s')
    """
    import synth

    dev = torch.device(device)
    rng = np.random.default_rng(SEED)
    rows: list[dict] = []
    for dim, fn in ((2, synth.pnoise2), (3, synth.pnoise3)):
        coords = rng.uniform(-50, 50, (dim, n)).astype(np.float32)
        tens = [torch.from_numpy(c).to(dev) for c in coords]
        ms, times, out = time_call(lambda f=fn, t=tens: f(*t, octaves=4), dev, repeats=5)
        sub = coords[:, :n_numba]
        ms_nb, times_nb, ref = time_call(
            lambda f=fn, s=sub: f(*s, octaves=4, backend="numba"), torch.device("cpu"), 3)
        diff = float(np.abs(out[:n_numba].cpu().numpy() - ref).max())
        gpu_rate, nb_rate = n / ms / 1000, n_numba / ms_nb / 1000
        rows.append(_row(f"pnoise{dim}, 4 octaves", f"pnoise{dim} torch {dev.type}", gpu_rate,
                         "Mpoints/s", "numba CPU", gpu_rate / nb_rate, points=n, times=times,
                         max_abs_diff=diff))
        rows.append(_row(f"pnoise{dim}, 4 octaves", f"pnoise{dim} numba CPU", nb_rate,
                         "Mpoints/s", points=n_numba, times=times_nb,
                         numba_threads=_numba_threads()))
    return rows


def _numba_threads() -> int | None:
    try:
        import numba
    except ImportError:
        return None
    return int(numba.get_num_threads())


def open3d_available() -> bool:
    """Whether ``import open3d`` works here (FPFH needs it)."""
    try:
        import open3d  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken: FPFH detectors are skipped
        return False
    return True


def detector_plan(has_open3d: bool) -> list[tuple[str, dict[str, Any], str | None]]:
    """``(detector, extra options, skip reason or None)`` for every registered detector.

    Example:
        >>> plan = dict((d, (o, s)) for d, o, s in detector_plan(False))
        >>> plan["m3dm"][0], plan["btf"][1] is not None
        ({'point_backbone': 'pointmae'}, True)
    """
    from pcad.detectors import list_detectors

    plan: list[tuple[str, dict[str, Any], str | None]] = []
    for name in list_detectors():
        if name in POINTMAE:
            plan.append((name, {"point_backbone": "pointmae"}, None))
        elif name in FPFH_ONLY and not has_open3d:
            plan.append((name, {}, "needs Open3D (FPFH point feature) and open3d is not "
                                   "importable here"))
        else:
            plan.append((name, {}, None))
    return plan


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _throughput(det: Any, samples: list[Any], batch: int, device: torch.device
                ) -> tuple[float, str]:
    """Samples/s of ``det`` on ``samples`` in batches of ``batch``, and how it was run."""
    batched = getattr(det, "predict_batch", None)
    if batch > 1 and callable(batched):
        how = f"predict_batch of {batch}"

        def infer(chunk: list[Any]) -> None:
            batched(chunk)
    else:
        how = "predict per sample" if batch == 1 else \
            f"no predict_batch: {batch} predict calls"

        def infer(chunk: list[Any]) -> None:
            for s in chunk:
                det.predict(s)
    pool = (samples * (batch // len(samples) + 1))[:max(batch, len(samples))]
    infer(pool[:batch])  # warm-up: kernels compiled, caches filled
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    done = 0
    for lo in range(0, len(pool) - batch + 1, batch):
        infer(pool[lo:lo + batch])
        done += batch
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return done / (time.perf_counter() - t0), how


def run_detectors(data: str | os.PathLike[str], device: str | torch.device = "cuda",
                  category: str | None = None, image_size: int = 224,
                  only: Sequence[str] | None = None, batches: Sequence[int] = (1, 32)
                  ) -> list[dict]:
    """Fit time, inference samples/s and peak GPU memory of each detector on ``data``.

    Args:
        data: an MVTec 3D-AD style dataset folder with ``train`` and ``test`` splits.
        device: the detectors' ``device`` option.
        category: the category (default: the first of the dataset).
        image_size: the detectors' input size.
        only: restrict to these detector names.
        batches: inference batch sizes.
    """
    from pcad.data import list_categories
    from pcad.detectors import create_detector
    from pcad.engine import open_split

    dev = torch.device(device)
    cat = category or list_categories(data)[0]
    rows: list[dict] = []
    for name, extra, skip in detector_plan(open3d_available()):
        if only is not None and name not in only:
            continue
        label = name + "".join(f" ({k}={v})" for k, v in extra.items())
        if skip is not None:
            rows.append(_row(f"detector {label}", "skipped", None, "-", note=skip))
            continue
        try:
            rows += _one_detector(create_detector, open_split, name, label, extra, data, cat,
                                  dev, image_size, batches)
        except Exception as exc:  # noqa: BLE001 - one failure must not lose the others
            rows.append(_row(f"detector {label}", "failed", None, "-",
                             note=f"{type(exc).__name__}: {exc}"[:400]))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _one_detector(create_detector: Callable[..., Any], open_split: Callable[..., Any],
                  name: str, label: str, extra: dict[str, Any], data: Any, cat: str,
                  dev: torch.device, image_size: int, batches: Sequence[int]) -> list[dict]:
    det = create_detector(name, image_size=image_size, device=str(dev), **extra)
    train = list(open_split(data, cat, "train", det))
    test = list(open_split(data, cat, "test", det))
    bench = f"detector {label}"
    _reset_peak(dev)
    t0 = time.perf_counter()
    det.fit(train)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    fit_s = time.perf_counter() - t0
    rows = [_row(bench, f"fit ({len(train)} samples)", fit_s, "s",
                 samples=len(train), peak_gpu_mib=_peak_mib(dev)),
            _row(bench, "peak GPU memory, fit", _peak_mib(dev), "MiB")]
    # the batched path (one backbone / bank call for the batch, device post-processing)
    # against one predict per sample, on this device
    single = [det.predict(x) for x in test]
    together = det.predict_batch(test)
    rel = max(abs(a - b) / max(abs(a), 1e-12)
              for (a, _), (b, _) in zip(single, together, strict=True))
    map_rel = max(float(np.abs(ma - mb).max()) / max(float(np.abs(ma).max()), 1e-12)
                  for (_, ma), (_, mb) in zip(single, together, strict=True))
    rows.append(_row(bench, "predict_batch vs predict: max relative difference", rel, "-",
                     map_max_relative=map_rel))
    _reset_peak(dev)
    for batch in batches:
        rate, how = _throughput(det, test, batch, dev)
        rows.append(_row(bench, f"inference, batch {batch}", rate, "samples/s", note=how,
                         image_size=image_size))
    rows.append(_row(bench, "peak GPU memory, inference", _peak_mib(dev), "MiB"))
    return rows


def _default_data() -> Path | None:
    raw = os.environ.get(DATA_ENV)
    if raw:
        return Path(raw)
    kit = ROOT / ".devkit" / "data"
    return kit if kit.is_dir() else None


def run(quick: bool, data: str | os.PathLike[str] | None = None,
        device: str = "cuda", parts: Sequence[str] = ("ops", "noise", "detectors"),
        only: Sequence[str] | None = None,
        after_part: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Rows for ``benchmarks/run.py``; one "skipped" row when ``device`` is CUDA and CUDA is
    not available. ``quick`` shrinks the noise sizes and the op repeats and times inference
    with batch 1 only. ``data``: the dataset of the detector part (default: ``$PCAD_BENCH_GPU_DATA``
    or ``.devkit/data``; without one that part is one skipped row). ``after_part`` is called
    with the rows so far after each part."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return [_row("gpu", "skipped", None, "-",
                     note="CUDA is not available (torch.cuda.is_available() is False)")]
    rows: list[dict] = []
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        rows.append(_row("environment", "device", props.name, "-",
                         note=f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
                              f"{props.total_memory / 2**30:.0f} GiB"))
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 - Triton missing or broken
        triton_version = None
    rows.append(_row("environment", "triton", triton_version, "-"))
    rows.append(_row("environment", "open3d importable", open3d_available(), "-"))
    steps: dict[str, Callable[[], list[dict]]] = {
        "ops": lambda: run_ops(dev, repeats=5 if quick else 20),
        "noise": lambda: run_noise(dev, *((1_000_000, 200_000) if quick else
                                          (10_000_000, 2_000_000))),
        "detectors": lambda: _detector_part(data, dev, quick, only),
    }
    for part in parts:
        t0 = time.perf_counter()
        try:
            rows += steps[part]()
        except Exception as exc:  # noqa: BLE001 - keep the other parts
            rows.append(_row(part, "failed", None, "-", note=f"{type(exc).__name__}: {exc}"))
        print(f"  bench_gpu {part}: {time.perf_counter() - t0:.1f} s", flush=True)
        if after_part is not None:
            after_part(rows)
    return rows


def _detector_part(data: Any, dev: torch.device, quick: bool,
                   only: Sequence[str] | None) -> list[dict]:
    root = Path(data) if data is not None else _default_data()
    if root is None or not root.is_dir():
        return [_row("detectors", "skipped", None, "-",
                     note=f"no dataset: pass --data or set {DATA_ENV} "
                          "(benchmarks/gpu_prepare.sh renders one to .devkit/data)")]
    return run_detectors(root, dev, only=only, batches=(1,) if quick else (1, 32))


def main(argv: list[str] | None = None) -> int:
    from run import _environment, format_table, write_json_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset for the detector part (MVTec 3D-AD layout)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results_gpu.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument("--parts", default="ops,noise,detectors",
                        help="comma-separated parts among ops, noise, detectors")
    parser.add_argument("--detectors", default=None, help="comma-separated detector names")
    parser.add_argument("--no-tf32", action="store_true",
                        help="float32 convolutions and matrix products without TF32 (torch "
                             "lets cuDNN convolutions use TF32 by default)")
    args = parser.parse_args(argv)
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    only = None if args.detectors is None else [d.strip() for d in args.detectors.split(",")]
    started = time.perf_counter()

    def save(rows: list[dict]) -> None:
        write_json_atomic(args.out, {"quick": args.quick, "device": args.device,
                                     "tf32": not args.no_tf32,
                                     "seconds": round(time.perf_counter() - started, 2),
                                     "environment": _environment(), "rows": rows})

    rows = run(args.quick, args.data, args.device, parts, only, after_part=save)
    save(rows)
    print()
    print(format_table(rows))
    print(f"\nwrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
