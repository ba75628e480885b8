"""Instructions per request, split by stage: a figure that does not move with noise.

Timings on a shared 2-core machine move by tens of percent from run to run; the number
of instructions a request costs does not. This section (bench.py `--only instructions`)
counts them with valgrind's callgrind:

  - `warden-stages` (bench/stages) runs the real gateway and backend, wired by the same
    code as `warden gateway` / `warden backend`, in one process and without the sandbox
    (valgrind needs executable mappings, which the gateway's seccomp policy forbids);
  - it runs under `valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes`,
    with the tiny `addn` model on real OpenVINO;
  - h2load (TLS 1.3, HTTP/2, ES256 JWT as everywhere in the bench) warms each path up,
    then, with instrumentation on (`callgrind_control -i on`), sends exactly N1, then N2
    requests at a fixed pace, then N1 at half that pace, on one connection each, and
    each run is dumped (`callgrind_control -d`);
  - the dumps are split by thread (gateway threads / backend threads, by the code they
    ran) and by stage (function-name patterns below); the figure per request is the
    difference between the first two runs over N2 - N1, so the connection's own cost
    (the TLS handshake, HTTP/2 preface) drops out and is reported apart, per
    connection, less the work that follows the clock (see `per_request`).

Stages do not overlap: each function's own (self) instructions go to the stage its name
matches (first pattern that matches); a function no pattern names (malloc, memcpy, a
generic helper) is shared out among the stages of its callers, in proportion to the
instructions of each call (callgrind's call graph; as gprof does). What no stage claims
(the tokio scheduler's own loop, thread start) is "runtime and other". valgrind counts
user-space instructions only: the kernel's side of the TCP and Unix sockets is not in it.
"""
import collections
import glob
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

# (stage, regex on "object:function"), first match wins; the order puts the inner layer
# first (rustls before hyper, prost before tonic).
# Work a clock starts, not a request (file polls, key reloads): under valgrind a request
# takes ~100 times longer, so these would pass for per-request cost. Shown, not totalled.
BACKGROUND = "background (timed polls; not in the total)"
# A verified token is cached for a minute (auth::jwt::CACHE_TTL): under valgrind a window
# of a few hundred requests may or may not hold the one re-verification a minute brings.
JWT_REFILL = "JWT signature check (cache refill, once a minute; not in the total)"
NOT_PER_REQUEST = (BACKGROUND, JWT_REFILL)
GATEWAY_STAGES = [
    (BACKGROUND, r"warden_gateway::(housekeeping|reload)|JwtAuthority::refresh|AuditLog::retry|RateLimits::housekeeping"),
    (JWT_REFILL, r"jsonwebtoken::"),
    # aws-lc (the crypto under rustls and jsonwebtoken) is named by neither: its
    # instructions go to whichever of the two called it.
    ("TLS (rustls)", r"rustls"),
    ("auth (JWT, cached)", r"warden_gateway::auth|jsonwebtoken"),
    ("audit", r"warden_gateway::audit"),
    ("decode (request)", r"warden_gateway::front::\S*(decode|parse|protoscan|tensor|split_body|head_len|Params|EncodeSeed|Bounded)"
                         r"|warden_gateway::front::json::put|warden_gateway::front::\S*normalize"),
    ("encode (response)", r"warden_gateway::front::\S*(render|RawAsJson|Element|from_proto|rendered|grpc_wire::(ok|frame|status))"),
    ("socket to backend (frames, tonic client for the rest)", r"warden_gateway::backend_client|warden_shared::frames"
                                                r"|grpc_inference_service_client|tonic::client"
                                                r"|tonic::codec|tokio::net::unix|hyper_util::client|tower::"),
    ("HTTP/2 + gRPC framing (hyper, h2)", r"\bh2::|hyper::|hyper_util::|\bhttp::|http_body|tonic::|warden_gateway::conn"
                                         r"|warden_gateway::front::grpc_wire|warden_gateway::front::(rest|grpc)::(handle|head|route|method)"),
    ("pipeline (policy, limits, metrics)", r"warden_gateway::(pipeline|authz|limits|metrics|stats|catalog|state|refusal|peer|logsafe)"
                                           r"|governor|dashmap"),
    ("runtime (tokio)", r"tokio::|mio::"),
]
BACKEND_STAGES = [
    (BACKGROUND, r"warden_backend::(watch_repository|load_models|model_specs)|warden_shared::repository"
                 r"|folder_stamp|changed_on_disk|differs_from"),
    ("OpenVINO call", r"libopenvino|libtbb|openvino::|openvino_sys::|warden_backend::model::ModelVersion::run"),
    ("decode (request) + checks", r"prost::\S*(merge|decode)|warden_shared::proto::\S*(merge|decode)|warden_backend::validate"),
    ("encode (response)", r"prost::\S*(encode|encoded_len)|warden_shared::proto::\S*(encode|encoded_len)"),
    ("service (model lookup, response)", r"warden_backend::"),
    ("socket (frames)", r"warden_shared::frames|tokio::net::unix"),
    ("HTTP/2 + gRPC framing (hyper, h2, tonic)", r"\bh2::|hyper::|hyper_util::|\bhttp::|http_body|tonic::|tower::"),
    ("runtime (tokio)", r"tokio::|mio::"),
]
OTHER = "runtime and other"
BACKEND_MARK = re.compile(r"warden_backend::|libopenvino|libtbb")
GATEWAY_MARK = re.compile(r"warden_gateway::")


def parse(path):
    """One callgrind dump: {fn: self Ir}, {(caller, callee): inclusive Ir}, {fn: object}."""
    names = {"fn": {}, "ob": {}, "fl": {}}
    selfc, edges, objects = collections.Counter(), collections.Counter(), {}
    fn = ob = callee = None
    cob = None
    pending = False

    def name(kind, text):
        m = re.match(r"\((\d+)\)(?: (.*))?$", text)
        if not m:
            return text
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), m.group(1))

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending:
                    edges[(fn, callee)] += cost
                    pending = False
                else:
                    selfc[fn] += cost
                continue
            key, _, val = line.partition("=")
            if key == "fn":
                fn = name("fn", val)
                objects.setdefault(fn, ob)
                cob = None
            elif key == "ob":
                ob = name("ob", val)
            elif key == "cob":
                cob = name("ob", val)
            elif key == "cfn":
                callee = name("fn", val)
                objects.setdefault(callee, cob or ob)
            elif key == "calls":
                pending = True
            elif key in ("fl", "fi", "fe", "cfi", "cfl"):
                name("fl", val)
    return selfc, edges, objects


def attribute(selfc, edges, objects, stages):
    """Self instructions by stage; unnamed functions inherit their callers' stages."""
    patterns = [(s, re.compile(p)) for s, p in stages]
    fns = set(selfc) | {g for _, g in edges} | {f for f, _ in edges}
    label = {}
    for f in fns:
        text = f"{objects.get(f) or ''}:{f}"
        label[f] = next((s for s, p in patterns if p.search(text)), None)
    callers = collections.defaultdict(list)
    for (f, g), c in edges.items():
        if f != g and c > 0:
            callers[g].append((f, c))
    dist = {f: {label[f] or OTHER: 1.0} for f in fns}
    for _ in range(40):
        for f in fns:
            if label[f] or not callers[f]:
                continue
            total = sum(c for _, c in callers[f])
            d = collections.Counter()
            for g, c in callers[f]:
                for s, w in dist[g].items():
                    d[s] += w * c / total
            dist[f] = d
    out = collections.Counter()
    for f, c in selfc.items():
        for s, w in dist[f].items():
            out[s] += c * w
    return out


def split_dump(prefix):
    """All thread files of one dump: {"gateway"|"backend"|"unattributed": {stage: Ir}}."""
    res = {"gateway": collections.Counter(), "backend": collections.Counter(),
           "unattributed": collections.Counter()}
    for path in sorted(glob.glob(f"{prefix}-*")) or [prefix]:
        selfc, edges, objects = parse(path)
        text = "\n".join(f"{objects.get(f) or ''}:{f}" for f in selfc if selfc[f])
        gw, be = bool(GATEWAY_MARK.search(text)), bool(BACKEND_MARK.search(text))
        side = "gateway" if gw and not be else "backend" if be and not gw else "unattributed"
        if side == "unattributed":
            res[side][OTHER] += sum(selfc.values())
        else:
            res[side].update(attribute(selfc, edges, objects,
                                       GATEWAY_STAGES if side == "gateway" else BACKEND_STAGES))
    return res


class Stages:
    """warden-stages under callgrind, driven with h2load."""

    def __init__(self, binary, workdir, config, url_port, log):
        self.binary, self.workdir, self.config, self.port, self.log = binary, workdir, config, url_port, log
        self.cg = workdir / "callgrind"
        self.proc = None

    def start(self, ready):
        if self.cg.exists():
            shutil.rmtree(self.cg)
        self.cg.mkdir(parents=True)
        self.cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                    f"--callgrind-out-file={self.cg / 'cg.out'}", str(self.binary), "--config", str(self.config)]
        self.logf = open(self.workdir / "warden-stages.log", "w")
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(self.cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 1800
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("warden-stages exited:\n" + (self.workdir / "warden-stages.log").read_text()[-3000:])
            if ready():
                return
            time.sleep(2)
        raise RuntimeError("warden-stages did not become ready under valgrind")

    def control(self, *args):
        return subprocess.run(["callgrind_control", *args, str(self.proc.pid)], check=True,
                              capture_output=True, text=True).stdout

    def measure(self, load, label, prewarm):
        """Runs `load` (a callable) with instrumentation on; returns the dump's split.
        Turning instrumentation on makes valgrind translate the code again, which makes
        the first requests after it ~100 times slower: `prewarm` runs the same path
        first, uncounted (the counters are zeroed after it)."""
        before = set(glob.glob(str(self.cg / "cg.out.*")))
        self.control("-i", "on")
        prewarm()
        self.control("-z")
        load()
        self.control("-i", "off")
        self.control("-d", label)
        deadline = time.time() + 600
        while time.time() < deadline:
            new = sorted(set(glob.glob(str(self.cg / "cg.out.*"))) - before)
            if new:
                time.sleep(3)  # every thread's file is written by then
                parts = {re.sub(r"-\d+$", "", p) for p in new}
                if len(parts) == 1:
                    return split_dump(parts.pop())
            time.sleep(1)
        raise RuntimeError(f"no callgrind dump for {label}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(600)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def per_request(small, large, slow, n_small, n_large):
    """Per-request and per-connection instructions from three runs on one connection
    each, every one a (split dump, seconds) pair: n_small and n_large requests at a
    fixed pace, and n_small at half that pace.

    Some work follows the clock, not the requests (each connection's 50 ms tick, timer
    wheel turns, clock reads), and under valgrind a request takes ~100 times longer than
    natively, so that work would pass for per-request cost and move with the machine's
    load. `slow` differs from `small` only in lasting longer, which measures that work
    per second (per stage); it is taken out of the per-request figure for the time
    `large` lasted longer than `small`."""
    (a, ta), (b, tb), (c, tc) = small, large, slow
    out = {}
    for side in ("gateway", "backend", "unattributed"):
        stages = sorted(set(a[side]) | set(b[side]) | set(c[side]))
        per_second = {s: (c[side][s] - a[side][s]) / (tc - ta) for s in stages}
        per = {s: (b[side][s] - a[side][s] - per_second[s] * (tb - ta)) / (n_large - n_small) for s in stages}
        conn = {s: a[side][s] - n_small * per[s] - per_second[s] * ta for s in stages}

        def total(d):
            return sum(v for s, v in d.items() if s not in NOT_PER_REQUEST)
        out[side] = {"per_request": per, "per_connection": conn, "per_second": per_second,
                     "total_per_request": total(per), "total_per_connection": total(conn),
                     "total_per_second": total(per_second),
                     "seconds": [ta, tb, tc]}
    return out


def stage_order(side):
    return [s for s, _ in (GATEWAY_STAGES if side == "gateway" else BACKEND_STAGES)] + [OTHER]
