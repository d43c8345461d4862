#!/usr/bin/env bash
# Everything a commit must pass: formatting, clippy with warnings denied, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --workspace -- -D warnings
CI=true bash scripts/test.sh
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
