#!/usr/bin/env bash
# Create .venv (if missing) and install mtrl with its test, benchmark, Ray and docs extras.
# torch is installed first and pinned to a CPU-capable release so that the plain `torch`
# requirement does not pull a multi-GB CUDA build. Set MTRL_TORCH to choose another torch spec.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "${MTRL_TORCH:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[dev,stl,digits,stats,ray,docs]"
