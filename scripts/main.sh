#!/usr/bin/env bash
# The main job on a fresh machine: build, replay every golden and conformance trace
# with the simulator (field-by-field identity), show the 13-step seed run, then the GPU
# executor where a CUDA driver exists (`gpu info` and `gpu selftest`; without a driver
# `gpu info` prints its one line and the GPU part is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/specreplay
shopt -s nullglob
traces=(traces/*.json traces/conformance/*/*)
"$bin" replay "${traces[@]}" | tail -n 3
"$bin" show traces/vllm_ngram_13step.json
if "$bin" gpu info; then
    "$bin" gpu selftest
fi
