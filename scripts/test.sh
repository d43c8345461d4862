#!/usr/bin/env bash
# The README's test command: every test of the workspace, debug assertions on. Installs
# NVRTC for the kernel compile test first (executor/tests/nvrtc_compile.rs): pip's
# nvidia-cuda-nvrtc==13.0.88, the GPU host's NVRTC build (wheel layout
# nvidia/cu13/lib/libnvrtc.so.13 + libnvrtc-builtins.so.13.0), cached in .cache/nvrtc.
# No GPU or CUDA toolkit is needed; GPU tests are reported as ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
nvrtc_dir=.cache/nvrtc
if [ -z "$(find "$nvrtc_dir" -name libnvrtc.so.13 2>/dev/null | head -n 1)" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$nvrtc_dir" nvidia-cuda-nvrtc==13.0.88
fi
nvrtc_lib=$(dirname "$(find "$nvrtc_dir" -name libnvrtc.so.13 | head -n 1)")
export LD_LIBRARY_PATH="$PWD/$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "NVRTC: $nvrtc_lib"
# Debian's Chromium for the report browser test (tests/report_browser.rs), which fails
# rather than skips without it. Skipped when present; SPECREPLAY_CHROMIUM names another.
if [ -z "${SPECREPLAY_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
cargo test --workspace "$@"
