#!/usr/bin/env bash
# Wheels the GPU machine lacks (Python 3.12 there; it has torch, numpy, scipy, cv2, onnx,
# onnxruntime, click, joblib, tqdm, pytest): PyAV and pydicom at this venv's versions,
# into .whl/ (kept out of git). About 38 MB, under the 64 MiB a device call carries.
# Usage: bash benchmarks/gpu_wheels.sh [PYTHON]   (PYTHON: the venv's, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
av=$("$PY" -c 'import av; print(av.__version__)')
dcm=$("$PY" -c 'import pydicom; print(pydicom.__version__)')
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "av==$av" "pydicom==$dcm"
ls -l .whl
