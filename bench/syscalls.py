"""System calls per request, by call, of one Warden process under load: a figure that
moves little with the noise of a shared machine, unlike time.

Starts Warden as bench.py does (the same configuration, models and token), runs h2load
on BlazeFace (gRPC at 32 in flight, REST JSON at 16), and while it runs counts the
gateway's (or the backend's) system calls with `strace -c -f` for a few seconds; the
requests Warden counted in that window divide them. strace slows the process it
watches, so only the counts are read, never the times.

    .venv/bin/python bench/syscalls.py                     # the gateway, configuration as is
    .venv/bin/python bench/syscalls.py --side backend
    .venv/bin/python bench/syscalls.py --limits 'h2_stream_window_bytes = 65536' \\
        --limits 'h2_stream_window_bytes = 262144'        # one run per setting, same load

Each `--limits` is TOML added to the `[limits]` table of the configuration bench.py
writes; without one, the configuration is bench.py's.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402


def counts(pid, seconds):
    """{syscall: calls} of `pid` and its threads over `seconds`."""
    out = subprocess.run(["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-p", str(pid)],
                         capture_output=True, text=True).stderr
    calls = {}
    for line in out.splitlines():
        f = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total" and f[3].isdigit():
            calls[f[-1]] = int(f[3])
    return calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=["gateway", "backend"], default="gateway")
    ap.add_argument("--limits", action="append", default=[],
                    help="TOML lines added to [limits]; one run per --limits")
    ap.add_argument("--seconds", type=int, default=3, help="how long strace counts")
    args = ap.parse_args()
    settings = args.limits or [""]
    write_config = B.Warden.write_config
    bench_args = argparse.Namespace(duration=10, sweep_duration=8, warmup=3, only="", instr_rps=4,
                                    instr_requests=200, instr_warmup=50, instr_rounds=2, baseline=None)
    for extra in settings:
        def patched(self, *a, _extra=extra, **k):
            write_config(self, *a, **k)
            p = self.workdir / "warden.toml"
            p.write_text(p.read_text().replace("[limits]\n", "[limits]\n" + _extra.strip() + "\n", 1))
        B.Warden.write_config = patched
        b = B.Bench(bench_args)
        b.warden.start()
        try:
            for kind, load in [("grpc", b.grpc("blazeface", 4, 8, "syscalls.grpc")),
                               ("json", b.rest("blazeface", "json", 4, 4, "syscalls.json"))]:
                cmd = load.cmd(B.OUT / "raw" / f"syscalls.{kind}.log")
                cmd[cmd.index("-D") + 1] = str(args.seconds + 8)
                client = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    time.sleep(4)
                    ok0, _ = B.admin_metrics()
                    calls = counts(b.warden.pids[args.side], args.seconds)
                    ok1, _ = B.admin_metrics()
                finally:
                    client.wait()
                n = max(ok1 - ok0, 1)
                top = sorted(calls.items(), key=lambda kv: -kv[1])
                per = ", ".join(f"{name} {c / n:.1f}" for name, c in top if c / n >= 0.05)
                print(f"{extra.strip() or 'as configured'} | blazeface {kind} | {n:.0f} requests | "
                      f"{args.side} per request: {per}", flush=True)
        finally:
            b.warden.stop()
            B.Warden.write_config = write_config


if __name__ == "__main__":
    main()
