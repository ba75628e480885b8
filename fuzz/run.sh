#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20) with libFuzzer,
# starting from the committed seed corpus. Fails on the first crash, leak, timeout or
# out-of-memory; prints the executions of each target.
#
#   bash fuzz/run.sh            # CI: ~20 s per target
#   bash fuzz/run.sh 600        # release check: 10 minutes per target
#   bash fuzz/run.sh 60 jwt_verify socket_raw   # some targets only
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer); this machine has a stable
# toolchain, so RUSTC_BOOTSTRAP=1 unlocks them. A crash leaves its input under
# fuzz/artifacts/<target>/; reproduce with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-20}"
shift || true
export RUSTC_BOOTSTRAP=1
# The fuzz workspace has its own target folder (fuzz/target), whatever the caller set.
unset CARGO_TARGET_DIR RUSTFLAGS
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cargo fuzz list)
fi
FUZZ_FLAGS=(--sanitizer address --debug-assertions)
start=$(date +%s)
cargo fuzz build "${FUZZ_FLAGS[@]}"
echo "fuzz: build took $(($(date +%s) - start)) s"
logs=fuzz/target/run-logs
mkdir -p "$logs"
failed=()
summary=()
for t in "${TARGETS[@]}"; do
  # The committed seeds are read-only input; new finds go to a scratch corpus.
  work="fuzz/target/corpus/$t"
  mkdir -p "$work" "fuzz/corpus/$t" "fuzz/artifacts/$t"
  echo "fuzz: $t for ${SECONDS_PER_TARGET} s"
  if cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 \
      -max_len=65536 -print_final_stats=1 >"$logs/$t.log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
    tail -n 40 "$logs/$t.log"
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  summary+=("$(printf '%-20s %-6s %12s executions' "$t" "$status" "$execs")")
done
echo "fuzz: summary (${SECONDS_PER_TARGET} s per target, total $(($(date +%s) - start)) s)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
