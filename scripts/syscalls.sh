#!/usr/bin/env bash
# Measures the system calls Warden's two processes make once sandboxed, on real
# inferences, and diffs them against the seccomp allow-lists in policies/.
#
# How: the end-to-end inference tests (tests/foundation.rs, tests/protocol.rs: IR, ONNX
# and TFLite models, f32, bf16 and int8 weights, fixed and dynamic shapes, several versions, REST and
# gRPC, binary tensors), plus hot reload of a certificate and a policy (tests/reload.rs)
# (with audit writing), are run with WARDEN_BIN pointing at a wrapper
# that starts `warden` under `strace -f`; each server is stopped with SIGTERM, so the
# graceful-stop path is traced too. scripts/syscalls.py then keeps, for the backend and
# the gateway, the calls made after each entered its sandbox (its first seccomp call)
# and in the threads created afterwards, with the arguments the policies filter on
# (socket families, clone flags, ioctl/fcntl/prctl requests, mmap/mprotect protections).
# WARDEN_SYSCALLS_TESTS overrides the nextest filter.
#
# Output: target/syscalls/report.txt. Exit 1 if a measured call is not allowed by the
# policy (a new OpenVINO, tokio or glibc needs something new: review it, then add it to
# policies/*.toml with the reason). Run it after upgrading any of them; CI runs it.
#
# Tracing changes timing, not the calls made, but a run only sees the paths it takes:
# a call on a rare path (an error path, a model format not in .models) can be missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v strace >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq strace >/dev/null
fi
OUT="${WARDEN_SYSCALLS_OUT:-$PWD/target/syscalls}"
FILTER="${WARDEN_SYSCALLS_TESTS:-test(real_models_match_the_independent_reference) | test(an_int8_model_with_dynamic_int64_inputs_matches_the_reference) | test(real_kserve_clients_work_unchanged) | test(version_policies_choose_what_is_served) | test(bf16_round_trips_through_the_binary_extension) | test(malformed_bodies_are_400_and_the_server_keeps_serving) | test(a_rotated_certificate_is_used_by_new_handshakes_while_old_connections_go_on) | test(an_invalid_policy_keeps_the_old_one_and_a_valid_one_takes_over)}"
# The same build as scripts/test.sh (same packages, targets and so features): a no-op
# after it, where `-p warden` alone would rebuild every crate whose features differ.
cargo build --workspace --all-targets
REAL="${CARGO_TARGET_DIR:-$PWD/target}/debug/warden"
rm -rf "$OUT" && mkdir -p "$OUT"
cat > "$OUT/warden-traced" <<WRAP
#!/bin/sh
# -f: every process and thread; -qq: no attach/exit noise; -s 24: enough for argv[1]
# (the role), little of any buffer. A signal for this wrapper (the tests stop their
# server with SIGTERM) goes to the traced warden, so it stops as it would untraced
# (strace itself would only detach and leave it running).
strace -f -qq -s 24 -o "$OUT/trace.\$\$" "$REAL" "\$@" &
st=\$!
fwd() { for c in \$(cat /proc/\$st/task/*/children 2>/dev/null); do kill -"\$1" "\$c"; done; }
trap 'fwd TERM' TERM
trap 'fwd INT' INT
trap 'fwd HUP' HUP
wait \$st
rc=\$?
while kill -0 \$st 2>/dev/null; do wait \$st; rc=\$?; done
exit \$rc
WRAP
chmod 755 "$OUT/warden-traced"
status=0
WARDEN_BIN="$OUT/warden-traced" cargo nextest run -p warden-tests --test foundation --test protocol --test reload \
  --no-fail-fast -E "$FILTER" || status=$?
if [ "$status" != 0 ]; then
  echo "warning: some traced tests failed (exit $status); the trace covers what ran" >&2
fi
python3 scripts/syscalls.py "$OUT"/trace.* \
  --policy backend=policies/sandbox.toml \
  --policy gateway=policies/gateway-sandbox.toml | tee "$OUT/report.txt"
