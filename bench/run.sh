#!/usr/bin/env bash
# Warden's benchmark in one command, from a fresh clone:
#   bash bench/run.sh [bench.py options, e.g. --duration 30 or --only throughput,overhead]
# Fetches the load generators (Debian: nghttp2-client for h2load, haproxy for the peer,
# valgrind for the instructions-per-request count),
# the OpenVINO runtime, models and Python environment (scripts/setup.sh), the peer
# (MLServer 1.7.1, bench/peer/setup.sh), builds Warden in release, runs every comparison
# and writes bench/out/report.md, bench/out/results.json and PNG plots.
# Takes about 15 minutes on 2 cores (most of it the release build, on a first run).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v callgrind_control >/dev/null 2>&1 || need+=(valgrind)
if ((${#need[@]})); then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash scripts/setup.sh
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
bash bench/peer/setup.sh
# warden-stages: the gateway and backend in one unsandboxed process, for callgrind only
# (bench/stages; never shipped).
cargo build --release --locked -p warden -p warden-stages
exec .venv/bin/python bench/bench.py "$@"
