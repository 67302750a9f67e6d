#!/usr/bin/env bash
# In-place developer build: compiles the extension into build/dev and drops _C*.so next to the
# Python sources, so `PYTHONPATH=python pytest` runs against it without installing.
# Usage: tools/dev_build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BUILD=${BIDFCL_BUILD_DIR:-build/dev}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$PY")" \
  -DBIDFCL_WITH_CUDA="${BIDFCL_WITH_CUDA:-OFF}" "$@" >/dev/null
cmake --build "$BUILD" -j "${BIDFCL_BUILD_JOBS:-2}"
# Only the default (CPU, runnable here) build is dropped into the source tree; a CUDA compile
# check in another build dir must not replace the module this machine can import.
if [ "${BIDFCL_WITH_CUDA:-OFF}" = "OFF" ]; then cp -f "$BUILD"/_C*.so "$BUILD"/_build_record.py python/bidfcl/; fi
