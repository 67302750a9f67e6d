#!/usr/bin/env bash
# Compiles the CUDA kernels without a GPU (DESIGN.md build notes): needs a venv whose torch is a
# CUDA build matching the system nvcc (torch 2.14.1 = CUDA 13.0), plus cmake>=3.26 and ninja.
# Usage: PYTHON=/path/to/cuda-venv/bin/python tools/cuda_compile_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:?set PYTHON to the python of a venv with a CUDA build of torch}
# The toolkit root: CUDA_HOME, else /usr/local/cuda (nvcc on PATH may be a wrapper script elsewhere).
CUDA_ROOT=${CUDA_HOME:-/usr/local/cuda}
[ -f "$CUDA_ROOT/include/cuda_runtime.h" ] || { echo "no CUDA toolkit at $CUDA_ROOT (set CUDA_HOME)" >&2; exit 1; }
export PATH="$CUDA_ROOT/bin:$PATH"
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
NVRTC=$(ls "$SITE"/nvidia/cu*/lib/libnvrtc.so.* 2>/dev/null | head -n 1 || true)
export PATH="$(dirname "$PY"):$PATH" CUDACXX="$CUDA_ROOT/bin/nvcc" TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
BIDFCL_BUILD_DIR=${BIDFCL_BUILD_DIR:-build/cuda} BIDFCL_WITH_CUDA=ON PYTHON="$PY" tools/dev_build.sh \
  -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT" ${NVRTC:+-DCUDA_nvrtc_LIBRARY="$NVRTC"}
echo "CUDA compile check: built $(ls "${BIDFCL_BUILD_DIR:-build/cuda}"/_C*.so)"
