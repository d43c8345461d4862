#!/usr/bin/env bash
# The main job on a fresh machine: build, replay every golden and conformance trace
# with the simulator (field-by-field identity), then show the 13-step seed run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/specreplay
shopt -s nullglob
traces=(traces/*.json traces/conformance/vllm-0.12.0/*)
"$bin" replay "${traces[@]}" | tail -n 3
"$bin" show traces/vllm_ngram_13step.json
