#!/usr/bin/env python3
"""Reads `strace -f` logs of `warden serve` runs and reports, per process (backend,
gateway), the system calls made AFTER the process entered its sandbox (from its first
seccomp(2) call on, and in every thread it created afterwards; the sandbox's own set-up
calls, seccomp and landlock_*, are left out), with the arguments the seccomp policy
filters on. Then diffs them against the allow-lists in
policies/. Exit status 1 if a measured call is not allowed by the policy.

Usage: syscalls.py TRACE... --policy backend=policies/sandbox.toml \
                            --policy gateway=policies/gateway-sandbox.toml
"""
import argparse
import os
import collections
import re
import sys
import tomllib

LINE = re.compile(r"^(\d+)\s+(.*)$")
CALL = re.compile(r"^([a-z_0-9]+)\((.*)$")
RESUMED = re.compile(r"^<\.\.\. ([a-z_0-9]+) resumed>(.*)$")
RESULT = re.compile(r"\)\s+=\s+(-?\d+|\?)")
ROLE = re.compile(r'^execve\("[^"]*", \["[^"]*"(?:\.\.\.)?, "([a-z-]+)"')
# The sandbox's own set-up, made while entering it.
SETUP = {"seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"}
# Arguments the policies filter on: call -> (argument index, how to show it).
FILTERED = {"socket": 0, "clone": 0, "ioctl": 1, "mmap": 2, "mprotect": 2, "prctl": 0,
            "madvise": 2, "fcntl": 1, "socketpair": 0, "futex": 1, "arch_prctl": 0}


def split_args(text):
    """Top-level comma split of strace's argument text."""
    out, depth, cur, quote = [], 0, "", False
    for i, ch in enumerate(text):
        if quote:
            cur += ch
            if ch == '"' and text[i - 1] != "\\":
                quote = False
            continue
        if ch == '"':
            quote = True
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            if depth == 0:
                out.append(cur.strip())
                return out
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    out.append(cur.strip())
    return out


def parse(paths):
    role = {}          # pid -> role
    boxed = set()      # pids inside a sandbox
    calls = collections.defaultdict(collections.Counter)   # role -> call -> count
    args = collections.defaultdict(lambda: collections.defaultdict(set))
    pending = {}       # pid -> call name with an unfinished clone
    for path in paths:
        with open(path, errors="replace") as f:
            for raw in f:
                m = LINE.match(raw.rstrip("\n"))
                if not m:
                    continue
                pid, rest = int(m.group(1)), m.group(2)
                c = CALL.match(rest)
                r = RESUMED.match(rest)
                if c:
                    name, body = c.group(1), c.group(2)
                elif r:
                    name, body = r.group(1), r.group(2)
                else:
                    continue
                if name == "execve" and c:
                    rm = ROLE.match(rest)
                    if rm:
                        role[pid] = rm.group(1)
                if name == "seccomp" and c:
                    boxed.add(pid)
                if name in ("clone", "clone3", "fork", "vfork"):
                    res = RESULT.search(rest)
                    if res and res.group(1).isdigit() and int(res.group(1)) > 0:
                        child = int(res.group(1))
                        # The child's own lines can come before this result.
                        if pid in role and child not in role:
                            role[child] = role[pid]
                        if pid in boxed:
                            boxed.add(child)
                if c and pid in boxed and pid in role and name not in SETUP:
                    calls[role[pid]][name] += 1
                    if name in FILTERED:
                        a = split_args(body)
                        i = FILTERED[name]
                        if name == "clone":
                            a = [x for x in a if x.startswith("flags=")] or a
                            i = 0
                        if len(a) > i:
                            args[role[pid]][name].add(a[i].replace(" <unfinished ...>", ""))
    return calls, args


def policy_names(path):
    with open(path, "rb") as f:
        p = tomllib.load(f)
    allow = {e["name"] for e in p.get("allow", [])}
    errno = {e["name"]: e.get("errno", "?") for e in p.get("errno", [])}
    kill = {e["name"] for e in p.get("kill", [])}
    return allow, errno, kill


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--policy", action="append", default=[], help="ROLE=FILE")
    o = ap.parse_args()
    calls, args = parse(o.traces)
    policies = dict(p.split("=", 1) for p in o.policy)
    bad = 0
    for who in sorted(calls):
        seen = calls[who]
        print(f"== {who}: {len(seen)} distinct system calls after entering the sandbox")
        for name, n in sorted(seen.items()):
            extra = ""
            if name in args[who]:
                vals = sorted(args[who][name])
                extra = "   args: " + " | ".join(vals[:12]) + (" ..." if len(vals) > 12 else "")
            print(f"   {name:<24} {n:>8}{extra}")
        if who not in policies or not os.path.exists(policies[who]):
            continue
        allow, errno, kill = policy_names(policies[who])
        missing = sorted(set(seen) - allow - set(errno))
        killed = sorted(set(seen) & kill)
        unused = sorted(allow - set(seen))
        refused = sorted(n for n in set(seen) & set(errno))
        print(f"-- {who} vs {policies[who]}")
        print(f"   made but NOT allowed (would fail with EPERM): {' '.join(missing) or '-'}")
        print(f"   made and on the KILL list (would kill the process): {' '.join(killed) or '-'}")
        print(f"   made and answered with a fixed errno (by design): "
              f"{' '.join(f'{n}={errno[n]}' for n in refused) or '-'}")
        print(f"   allowed but not seen in this run: {' '.join(unused) or '-'}")
        bad += len(missing) + len(killed)
    if not calls:
        print("no sandboxed process found in the traces", file=sys.stderr)
        return 2
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
