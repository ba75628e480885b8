#!/usr/bin/env bash
# Mutation testing of Warden's security core with cargo-mutants (crates.io): each
# mutant (a function body replaced, an operator flipped, a condition negated) is built
# and the tests of its crate are run against it; a mutant no test notices is "missed".
#
#   bash scripts/mutants.sh                          # every file of the security core
#   bash scripts/mutants.sh gateway/src/limits/rate.rs [more files]
#   bash scripts/mutants.sh --in-diff origin/main    # only mutants on lines changed since
#
# Output: mutants.out/ (cargo-mutants' own: outcomes.json, caught.txt, missed.txt,
# timeout.txt, unviable.txt) and a count per file on standard output. Exit 1 if a
# missed mutant is not listed in tests/mutants-allowed.txt (one mutant per line, as
# cargo-mutants names it, then " # " and why it is equivalent or harmless).
#
# Tests: the unit tests of the mutated file's crate (`cargo nextest run -p <crate>`).
# The end-to-end tests in tests/ run the `warden` binary, which a mutant's build does not
# relink, so they are not part of a run; a module whose only guard is end to end shows
# up here as missed and is either covered by a unit test or listed with the end-to-end
# test that covers it. docs/testing.md explains how to read a run.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo mutants --version >/dev/null 2>&1; then
  cargo install cargo-mutants --locked --version 27.1.0
fi
export RUSTFLAGS="${RUSTFLAGS:--D warnings}"

# The modules that decide who gets in and what they may do.
CORE=(
  gateway/src/auth/jwt.rs gateway/src/auth/mtls.rs gateway/src/auth/mod.rs
  gateway/src/authz.rs gateway/src/refusal.rs gateway/src/pipeline.rs
  gateway/src/limits/quota.rs gateway/src/limits/rate.rs gateway/src/logsafe.rs
  gateway/src/audit.rs gateway/src/catalog.rs gateway/src/front/protoscan.rs
  sandbox/src/seccomp.rs sandbox/src/landlock.rs sandbox/src/lib.rs
  signing/src/lib.rs signing/src/bundle.rs signing/src/key.rs signing/src/manifest.rs
  signing/src/tree.rs shared/src/wire.rs shared/src/remote.rs
)

args=()
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --in-diff) git diff "$2" -- "${CORE[@]}" > target/mutants.diff; args+=(--in-diff target/mutants.diff); shift 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
mkdir -p target
[ ${#files[@]} -eq 0 ] && files=("${CORE[@]}")
for f in "${files[@]}"; do args+=(--file "$f"); done

# The crates the files belong to: their unit tests are what runs.
packages=$(for f in "${files[@]}"; do
  case "$f" in
    gateway/*) echo warden-gateway ;; sandbox/*) echo warden-sandbox ;;
    signing/*) echo warden-signing ;; shared/*) echo warden-shared ;;
    backend/*) echo warden-backend ;; fetcher/*) echo warden-fetcher ;;
  esac
done | sort -u)
for p in $packages; do args+=(--package "$p"); done

status=0
# Only what git tracks is copied into the mutants' build folder (not the runtime,
# models or fuzz builds).
cargo mutants --test-tool nextest --test-workspace false --no-shuffle --jobs 1 --gitignore true \
  --minimum-test-timeout 60 --output target "${args[@]}" || status=$?
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts; anything else is an
# error of the run itself.
case $status in 0 | 2 | 3) ;; *) exit "$status" ;; esac

out=target/mutants.out
echo "== per file: caught / missed / unviable / timeout"
for f in "${files[@]}"; do
  c=$(grep -c "^$f:" "$out/caught.txt" || true)
  m=$(grep -c "^$f:" "$out/missed.txt" || true)
  u=$(grep -c "^$f:" "$out/unviable.txt" || true)
  t=$(grep -c "^$f:" "$out/timeout.txt" || true)
  echo "$f: $c / $m / $u / $t"
done
allowed=$(sed -e 's/ # .*//' -e '/^#/d' -e '/^$/d' tests/mutants-allowed.txt)
new=$(grep -vxF -f <(printf '%s\n' "$allowed") "$out/missed.txt" || true)
if [ -n "$new" ]; then
  echo "== missed mutants not in tests/mutants-allowed.txt:"
  echo "$new"
  exit 1
fi
echo "== no missed mutant outside tests/mutants-allowed.txt"
