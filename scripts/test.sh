#!/usr/bin/env bash
# Sets up and runs the whole test suite: unit tests of every crate and the end-to-end
# tests in tests/, which start the real binary with real TLS, real models and the real
# sandbox (run as root so the backend can drop to uid 5000, as in production).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RUSTFLAGS="${RUSTFLAGS:--D warnings}"
cargo build --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
