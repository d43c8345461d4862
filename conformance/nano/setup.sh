#!/usr/bin/env bash
# Prepares the nano-vllm conformance harness:
#   * .venv with the two packages nano-vllm's block manager imports (xxhash, numpy);
#   * upstream/ : nano-vllm at the pinned commit (never committed; git-ignored).
# NANOVLLM_MIRROR=<git dir> takes the source from a local git mirror instead of cloning.
# No torch, transformers or flash-attn: driver.py stubs their imports (see its docstring).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
COMMIT=2f214426530e2841e7d24c73ee0dfa914d62df56
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet xxhash numpy
if [ ! -f upstream/nanovllm/engine/block_manager.py ]; then
  rm -rf upstream && mkdir -p upstream
  if [ -n "${NANOVLLM_MIRROR:-}" ]; then
    git --git-dir="$NANOVLLM_MIRROR" archive "$COMMIT" | tar -x -C upstream
  else
    tmp="$(mktemp -d)"
    git clone --quiet https://github.com/GeeeekExplorer/nano-vllm "$tmp/nano-vllm"
    git -C "$tmp/nano-vllm" archive "$COMMIT" | tar -x -C upstream
    rm -rf "$tmp"
  fi
fi
.venv/bin/python -c "import xxhash, numpy; print('xxhash', xxhash.VERSION, 'numpy', numpy.__version__)"
echo "nano-vllm source: $here/upstream (commit $COMMIT); export NANOVLLM_SRC to use another checkout"
