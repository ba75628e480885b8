#!/usr/bin/env bash
# Sets up and runs the whole test suite: unit tests of every crate and the end-to-end
# tests in tests/, which start the real binary with real TLS, real models and the real
# sandbox (run as root so the backend can drop to uid 5000, as in production).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The gateway's and backend's modules are layered: no two import each other in a circle.
python3 scripts/check-module-cycles.py gateway/src backend/src
export RUSTFLAGS="${RUSTFLAGS:--D warnings}"
cargo build --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# The container image: built from the Dockerfile with the binary just built, run the way
# OVMS's documentation runs OVMS, and checked from outside (scripts/container-test.sh).
# Needs root and podman (it installs podman itself); WARDEN_CONTAINER_TEST=0 skips it.
if [ "${WARDEN_CONTAINER_TEST:-1}" != "0" ]; then
  bash scripts/container-test.sh
fi
# The system calls real inferences make inside the sandbox, diffed against the seccomp
# allow-lists in policies/ (scripts/syscalls.sh): fails if a call the processes make is
# not allowed, so a new OpenVINO, tokio or glibc shows its needs here rather than in
# production. WARDEN_SYSCALLS=0 skips it.
if [ "${WARDEN_SYSCALLS:-1}" != "0" ]; then
  bash scripts/syscalls.sh
fi
# Time-boxed fuzzing of every parser that sees untrusted input (fuzz/run.sh): fails on
# any crash. WARDEN_FUZZ_SECONDS=0 skips it; a release check runs it longer.
if [ "${WARDEN_FUZZ_SECONDS:-10}" != "0" ]; then
  bash fuzz/run.sh "${WARDEN_FUZZ_SECONDS:-10}"
fi
# Mutation testing of the security-core lines this change touched (scripts/mutants.sh
# --ci): the mutants on lines changed since tests/mutants-base, in place in the tree
# just built, capped at WARDEN_MUTANTS_MINUTES (default 10; 0 skips). Fails on a missed
# mutant not in tests/mutants-allowed.txt; a cap hit prints a banner saying how many
# were not tested. Last, so that its banner ends the log and its in-place builds touch
# nothing a later step uses.
if [ "${WARDEN_MUTANTS_MINUTES:-10}" != "0" ]; then
  bash scripts/mutants.sh --ci
fi
