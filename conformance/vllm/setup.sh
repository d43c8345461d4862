#!/usr/bin/env bash
# Creates conformance/vllm/.venv with vLLM 0.12.0 (CPU-only machine is fine: only the
# CPU-side bookkeeping code is driven). About 4 minutes and 10 GB.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install --upgrade pip
.venv/bin/pip install "vllm==0.12.0"
.venv/bin/python -c "import vllm; print('vllm', vllm.__version__)"
