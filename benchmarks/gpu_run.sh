#!/usr/bin/env bash
# The one device command of issue 13's GPU check, run from the repository root on a GPU machine
# with python3 (torch + CUDA, Triton, numba, numpy, scipy, tifffile, pillow) and no registry:
#
#     bash benchmarks/gpu_run.sh
#
# It installs the wheels carried in .devkit/whl (benchmarks/gpu_prepare.sh fills .devkit), runs
# the CUDA and Triton tests of tests/test_ops.py and tests/test_ops_triton.py (the Triton
# kernels compiled), benchmarks/triton_sweep.py (block-size variants of the Triton kernels) and
# benchmarks/bench_gpu.py on .devkit/data. Everything it writes goes to $OUT (default
# /tmp/pcad-gpu): nvidia-smi.txt, test_ops.log, sweep.json/sweep.log, bench_gpu.log and gpu.json
# (rewritten after each benchmark part, so a part cut short by its time limit keeps the
# others). About 6.5 minutes at most: 80 s of tests, 70 s of sweep, 220 s of benchmark.
set -u
OUT=${OUT:-/tmp/pcad-gpu}
mkdir -p "$OUT"
if ls .devkit/whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .devkit/whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
(nvidia-smi; python3 -c 'import torch, triton; print(torch.__version__, torch.version.cuda,
triton.__version__, torch.cuda.get_device_name())') > "$OUT/nvidia-smi.txt" 2>&1
echo "== tests/test_ops.py tests/test_ops_triton.py"
timeout 80 python3 -m pytest -q -p no:cacheprovider -rs -k "cuda or triton" \
    tests/test_ops.py tests/test_ops_triton.py > "$OUT/test_ops.log" 2>&1
echo "pytest exit status $?"; tail -n 15 "$OUT/test_ops.log"
echo "== benchmarks/triton_sweep.py"
timeout 70 python3 benchmarks/triton_sweep.py --out "$OUT/sweep.json" > "$OUT/sweep.log" 2>&1
echo "sweep exit status $?"; tail -n 40 "$OUT/sweep.log"
echo "== benchmarks/bench_gpu.py"
timeout 220 python3 benchmarks/bench_gpu.py --data .devkit/data --out "$OUT/gpu.json" \
    > "$OUT/bench_gpu.log" 2>&1
status=$?
echo "bench_gpu exit status $status"; tail -n 80 "$OUT/bench_gpu.log"
exit $status
