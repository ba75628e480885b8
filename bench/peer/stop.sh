#!/usr/bin/env bash
# Stops the benchmark peer started by bench/peer/start.sh WORKDIR: HAProxy and
# MLServer (with every process MLServer started), found by WORKDIR's pid files.
# Waits until they have exited (SIGTERM, then SIGKILL after PEER_STOP_TIMEOUT s,
# default 20). Safe to run when nothing is running.
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 WORKDIR" >&2
  exit 2
fi
work=$1
timeout=${PEER_STOP_TIMEOUT:-20}

# The pid in FILE, if that process is alive and its command line names WHAT
# (a stale pid file must not make us signal an unrelated process).
live_pid() {
  local file=$1 what=$2 pid
  [[ -f "$file" ]] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$what" || return 1
  echo "$pid"
}

# PID and all its descendants.
tree() {
  local pid=$1 kid
  echo "$pid"
  for kid in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
    tree "$kid"
  done
}

wait_gone() {
  local deadline=$((SECONDS + timeout)) p alive
  while :; do
    alive=()
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    ((${#alive[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      kill -KILL "${alive[@]}" 2>/dev/null
      sleep 0.5
      return 0
    fi
    sleep 0.2
  done
}

if pid=$(live_pid "$work/haproxy.pid" haproxy); then
  kill -TERM "$pid" 2>/dev/null
  wait_gone "$pid"
  echo "peer/stop.sh: haproxy $pid stopped"
fi
rm -f "$work/haproxy.pid"

if pid=$(live_pid "$work/mlserver.pid" mlserver); then
  pids=($(tree "$pid"))
  # start.sh runs MLServer as a session leader: its process group holds its children.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  wait_gone "${pids[@]}"
  # Anything that left the group (or was started since) and is still there.
  left=()
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
  ((${#left[@]})) && kill -KILL "${left[@]}" 2>/dev/null
  echo "peer/stop.sh: mlserver $pid stopped (${#pids[@]} process(es))"
fi
rm -f "$work/mlserver.pid"
exit 0
