#!/usr/bin/env bash
# Mutation testing of Warden's security core with cargo-mutants (crates.io): each
# mutant (a function body replaced, an operator flipped, a condition negated) is built
# and the tests of its crate are run against it; a mutant no test notices is "missed".
#
#   bash scripts/mutants.sh                          # every file of the security core
#   bash scripts/mutants.sh gateway/src/limits/rate.rs [more files]
#   bash scripts/mutants.sh --in-diff origin/main    # only mutants on lines changed since
#   bash scripts/mutants.sh --ci                     # CI's slice (below)
#   bash scripts/mutants.sh --in-place FILE...       # mutate this tree, in its target/
#   bash scripts/mutants.sh --in-place FILE -- -F 'load_policy'   # more cargo-mutants options
#
# By default the tree is copied (what git tracks) and built from scratch (6-10 minutes
# on 2 cores before the first mutant); --in-place mutates the files in this tree one
# at a time and builds in its own target folder, which is quick when that is built
# already, but do not edit the files under test while it runs.
#
# Output: target/mutants.out/ (cargo-mutants' own: outcomes.json, caught.txt,
# missed.txt, timeout.txt, unviable.txt) and a count per file on standard output. Exit 1
# if a missed mutant is not listed in tests/mutants-allowed.txt (one mutant per line, as
# cargo-mutants names it, then " # " and why it is equivalent or harmless).
#
# Tests: the unit and integration tests of the mutated file's crate (for the sandbox and
# signing also the backend's), `cargo nextest run -p <crate>`.
# The end-to-end tests in tests/ run the `warden` binary, which a mutant's build does not
# relink, so they are not part of a run; a module whose only guard is end to end shows
# up here as missed and is either covered by a unit test or listed with the end-to-end
# test that covers it. docs/testing.md explains how to read a run.
#
# --ci: the mutants on the security-core lines changed since tests/mutants-base (the
# commit the committed report in docs/testing.md was made at), in place in the tree CI
# has just built and tested (so no baseline build), under a time cap of
# WARDEN_MUTANTS_MINUTES (default 10). No changed line: nothing is built or run. A cap
# hit is reported in a banner with how many mutants were left untested; a missed
# mutant among those tested fails as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:--D warnings}"

# The modules that decide who gets in and what they may do.
CORE=(
  gateway/src/auth/jwt.rs gateway/src/auth/mtls.rs gateway/src/auth/mod.rs
  gateway/src/authz.rs gateway/src/refusal.rs gateway/src/pipeline.rs
  gateway/src/limits/quota.rs gateway/src/limits/rate.rs gateway/src/logsafe.rs
  gateway/src/audit.rs gateway/src/catalog.rs gateway/src/front/protoscan.rs
  sandbox/src/seccomp.rs sandbox/src/landlock.rs sandbox/src/lib.rs
  signing/src/lib.rs signing/src/bundle.rs signing/src/key.rs signing/src/manifest.rs
  signing/src/tree.rs shared/src/wire.rs shared/src/frames.rs shared/src/remote.rs
)

args=()
extra=()
files=()
base=""
ci=0
inplace=0
while [ $# -gt 0 ]; do
  case "$1" in
    --in-diff) base="$2"; shift 2 ;;
    --in-place) inplace=1; shift ;;
    --ci) ci=1; base=$(sed -e 's/#.*//' tests/mutants-base | tr -d '[:space:]'); shift ;;
    --) shift; extra=("$@"); break ;;
    *) files+=("$1"); shift ;;
  esac
done
mkdir -p target
if [ -n "$base" ]; then
  if ! git cat-file -e "$base^{commit}" 2>/dev/null; then
    echo "== MUTANTS: the base $base is not in this clone's history (shallow clone?): the slice cannot run" >&2
    exit 1
  fi
  # Only the core files that changed, and only their changed lines.
  mapfile -t files < <(git diff --name-only "$base" -- "${CORE[@]}")
  if [ ${#files[@]} -eq 0 ]; then
    echo "== mutants: no security-core file changed since $base: nothing to run"
    exit 0
  fi
  git diff "$base" -- "${files[@]}" > target/mutants.diff
  args+=(--in-diff target/mutants.diff)
fi
[ ${#files[@]} -eq 0 ] && files=("${CORE[@]}")
for f in "${files[@]}"; do args+=(--file "$f"); done

if ! cargo mutants --version >/dev/null 2>&1; then
  cargo install cargo-mutants --locked --version 27.1.0
fi
if cargo nextest --version >/dev/null 2>&1; then
  args+=(--test-tool nextest)
fi

# The crates the files belong to (what is mutated), and the crates whose tests run
# against each mutant: the file's own, and for the sandbox and signing also the
# backend's, whose tests link them (its hostile battery enters the backend's real plan
# in forked children, backend/tests/sandbox.rs; it verifies signed models).
packages=$(for f in "${files[@]}"; do
  case "$f" in
    gateway/*) echo warden-gateway ;; sandbox/*) echo warden-sandbox ;;
    signing/*) echo warden-signing ;; shared/*) echo warden-shared ;;
    backend/*) echo warden-backend ;; fetcher/*) echo warden-fetcher ;;
  esac
done | sort -u)
tested=$(for p in $packages; do
  echo "$p"
  case "$p" in warden-sandbox | warden-signing) echo warden-backend ;; esac
done | sort -u)
for p in $packages; do args+=(--package "$p"); done
for p in $tested; do args+=(--test-package "$p"); done

out=target/mutants.out
cap=()
if [ $ci = 1 ]; then
  total=$(cargo mutants --list "${args[@]}" | wc -l)
  echo "== mutants: $total mutant(s) on the security-core lines changed since $base"
  if [ "$total" = 0 ]; then
    exit 0
  fi
  minutes="${WARDEN_MUTANTS_MINUTES:-10}"
  # CI has just built and passed every test of this tree: mutate it in place, in the
  # build folder it already has (no copy, no baseline build or run).
  args+=(--baseline skip --timeout 300)
  cap=(timeout --signal=INT --kill-after=60 "${minutes}m")
  inplace=1
fi
# A mutant that replaces a function's body leaves its parameters unused, which
# RUSTFLAGS=-D warnings turns into a build error: the mutant would count as "unviable"
# and never be tested. A copy is built from scratch anyway, so there cargo-mutants caps
# the lints; in place, a changed RUSTFLAGS would rebuild every dependency, so instead
# the crates under test get `#![allow(unused)]` at the start of their first line (line
# numbers unchanged) for the run.
if [ $inplace = 1 ]; then
  args+=(--in-place)
  [ $ci = 1 ] || args+=(--minimum-test-timeout 60)
  roots=()
  for p in $packages; do roots+=("${p#warden-}/src/lib.rs"); done
  # cargo-mutants puts each file back after its mutants; this also puts back the
  # crate roots, a file a cap or a ^C cut in the middle of a mutant, and the proptest
  # regression files, where a property test a mutant failed saves its case.
  mapfile -t regressions < <(git ls-files '*proptest-regressions/*')
  mapfile -t untracked < <(git ls-files --others --exclude-standard '*proptest-regressions/*')
  backup=$(mktemp -d)
  for f in "${files[@]}" "${roots[@]}" "${regressions[@]}"; do
    mkdir -p "$backup/$(dirname "$f")"
    cp "$f" "$backup/$f"
  done
  restore() {
    for f in "${files[@]}" "${roots[@]}" "${regressions[@]}"; do
      cmp -s "$backup/$f" "$f" || cp "$backup/$f" "$f"
    done
    # (grep finds nothing to remove most times: that is not a failure of the run.)
    git ls-files --others --exclude-standard '*proptest-regressions/*' |
      { grep -vxF -f <(printf '%s\n' "${untracked[@]}" "") || true; } | xargs -r rm -f
    rm -rf "$backup"
  }
  trap restore EXIT
  for r in "${roots[@]}"; do sed -i '1s/^/#![allow(unused)] /' "$r"; done
else
  # Only what git tracks is copied into the mutants' build folder (not the runtime,
  # models or fuzz builds).
  args+=(--gitignore true --minimum-test-timeout 60 --cap-lints true)
fi

status=0
"${cap[@]}" cargo mutants --test-workspace false --no-shuffle --output target \
  "${args[@]}" "${extra[@]}" || status=$?
capped=0
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts; `timeout` 124 (or
# 137 if it had to kill) when the cap was hit; anything else is an error of the run.
case $status in
  0 | 2 | 3) ;;
  124 | 137) capped=1 ;;
  *) exit "$status" ;;
esac

echo "== per file: caught / missed / unviable / timeout"
for f in "${files[@]}"; do
  c=$(grep -c "^$f:" "$out/caught.txt" || true)
  m=$(grep -c "^$f:" "$out/missed.txt" || true)
  u=$(grep -c "^$f:" "$out/unviable.txt" || true)
  t=$(grep -c "^$f:" "$out/timeout.txt" || true)
  echo "$f: $c / $m / $u / $t"
done
if [ $capped = 1 ]; then
  tested=$(cat "$out"/{caught,missed,unviable,timeout}.txt 2>/dev/null | wc -l)
  echo "=================================================================="
  echo "== MUTANTS SLICE CUT BY ITS ${minutes}-MINUTE CAP: $tested of $total mutants"
  echo "== tested, $((total - tested)) NOT TESTED. Run them before merging:"
  echo "==   bash scripts/mutants.sh --in-diff $base"
  echo "=================================================================="
fi
allowed=$(sed -e 's/ # .*//' -e '/^#/d' -e '/^$/d' tests/mutants-allowed.txt)
new=$(grep -vxF -f <(printf '%s\n' "$allowed") "$out/missed.txt" || true)
if [ -n "$new" ]; then
  echo "== missed mutants not in tests/mutants-allowed.txt:"
  echo "$new"
  exit 1
fi
echo "== no missed mutant outside tests/mutants-allowed.txt"
