#!/usr/bin/env python3
"""Warden's benchmark: every comparison of issue 9 side by side, in one run.

Run through bench/run.sh, which fetches and builds what this needs. This script:
  - starts Warden (release build, TLS 1.3, ES256 JWT on every call, audit log on,
    sandboxed backend) with light_resnet50, BlazeFace, a tiny model and an echo model;
  - runs OpenVINO's own benchmark_app on the same files with the same plugin config;
  - starts the peer (Seldon MLServer 1.7.1 + an OpenVINO runtime, behind HAProxy for
    TLS and JWT; bench/peer/) on the same models;
  - drives all of them with h2load (nghttp2, Debian) over TLS with the same bodies;
  - reads CPU time and resident memory of every process from /proc;
  - writes bench/out/report.md, bench/out/results.json and PNG plots.

Usage: bench.py [--quick] [--only SECTION,...] [--duration SECONDS]
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
BIN = ROOT / "target" / "release" / "warden"
STAGES_BIN = ROOT / "target" / "release" / "warden-stages"
PY = ROOT / ".venv" / "bin" / "python"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

ISS, AUD, SUB = "warden-bench", "warden", "bench"
PLUGIN = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
PORTS = {"rest": 18443, "grpc": 18444, "admin": 18180, "peer_https": 18543, "peer_grpcs": 18544}
# warden-stages (the instructions section) listens on its own ports.
STAGES_PORTS = {"rest": 18643, "grpc": 18644, "admin": 18280}

# The models: file, input name and shape, and how a real image becomes its input.
MODELS = {
    "light_resnet50": {"file": "light_resnet50/1/model.onnx", "input": "gpu_0/data_0", "image": "coffee.png"},
    "blazeface": {"file": "blazeface/1/model.tflite", "input": "input", "image": "astronaut.png"},
}


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


# ---------------------------------------------------------------- /proc readings

def cpu_times(pid):
    """(utime, stime) of a process (all its threads), in seconds: in its own code, in the
    kernel on its behalf."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0, 0.0
    return int(f[11]) / CLK_TCK, int(f[12]) / CLK_TCK


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    return sum(cpu_times(pid))


def rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def children(ppid):
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid and len(cmd) > 1:
            out[cmd[1].decode()] = int(d.name)
    return out


class RssSampler(threading.Thread):
    """Samples VmRSS of a pid every 20 ms; .peak is the highest seen."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return
            time.sleep(0.02)


# ---------------------------------------------------------------- request bodies

def image_tensor(model):
    from PIL import Image

    img = Image.open(ROOT / ".models" / "images" / MODELS[model]["image"]).convert("RGB")
    if model == "blazeface":
        a = np.asarray(img.resize((128, 128), Image.BILINEAR), dtype=np.float32) / 127.5 - 1.0
        return a[None, ...]
    a = np.asarray(img.resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255.0
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None, ...])


def json_body(name, tensor):
    t = tensor.astype(np.float32)
    return json.dumps({"inputs": [{"name": name, "shape": list(t.shape), "datatype": "FP32",
                                   "data": [round(float(x), 6) for x in t.ravel()]}]}).encode()


def binary_body(name, tensor):
    """KServe v2 binary tensor extension: JSON header, then the raw bytes; every output
    is asked for in binary too."""
    raw = np.ascontiguousarray(tensor, dtype=np.float32).tobytes()
    header = json.dumps({
        "inputs": [{"name": name, "shape": list(tensor.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return header + raw, len(header)


def grpc_body(model, name, tensor):
    """A ModelInferRequest with raw_input_contents, framed as one gRPC message."""
    from tritonclient.grpc import service_pb2 as pb

    req = pb.ModelInferRequest(model_name=model)
    inp = req.inputs.add()
    inp.name, inp.datatype = name, "FP32"
    inp.shape.extend(tensor.shape)
    req.raw_input_contents.append(np.ascontiguousarray(tensor, dtype=np.float32).tobytes())
    msg = req.SerializeToString()
    return b"\0" + struct.pack(">I", len(msg)) + msg


# ---------------------------------------------------------------- load generator

class Load:
    """One h2load run: its numbers and its own CPU time."""

    def __init__(self, name, url, body_path, headers, conns, streams, duration, warmup, threads=1):
        self.name, self.url, self.body_path = name, url, body_path
        self.headers, self.conns, self.streams = headers, conns, streams
        self.duration, self.warmup, self.threads = duration, warmup, threads

    def cmd(self, logfile):
        c = ["h2load", "-c", str(self.conns), "-m", str(self.streams), "-t", str(self.threads),
             "-D", str(self.duration), "--warm-up-time", str(self.warmup), "--log-file", str(logfile)]
        for h in self.headers:
            c += ["-H", h]
        if self.body_path:
            c += ["-d", str(self.body_path)]
        return c + [self.url]

    def run(self, watch=()):
        """Runs h2load; `watch` is {label: pid} whose CPU time is read around the run."""
        logfile = OUT / "raw" / f"{self.name}.h2load.log"
        cmd = self.cmd(logfile)
        before = {k: cpu_seconds(p) for k, p in watch.items()}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # CPU is sampled from the end of the warm-up to the end of the run.
        time.sleep(self.warmup)
        before = {k: cpu_times(p) for k, p in watch.items()}
        t0 = time.monotonic()
        out = proc.stdout.read()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        after = {k: cpu_times(p) for k, p in watch.items()}
        (OUT / "raw" / f"{self.name}.h2load.txt").write_text(" ".join(cmd) + "\n\n" + out)
        if status != 0:
            raise RuntimeError(f"h2load failed for {self.name}:\n{out[-2000:]}")
        r = parse_h2load(out, logfile)
        r["cmd"] = shell_line(cmd)
        r["client_cpu_s"] = ru.ru_utime + ru.ru_stime
        r["cpu_s"] = {k: sum(after[k]) - sum(before[k]) for k in watch}
        r["sys_s"] = {k: after[k][1] - before[k][1] for k in watch}
        r["wall_s"] = wall
        r["conns"], r["streams"] = self.conns, self.streams
        logfile.unlink(missing_ok=True)
        return r


def shell_line(cmd):
    """A command as it would be typed in the checkout, for the report."""
    import shlex
    return shlex.join(cmd).replace(str(ROOT) + "/", "")


def parse_h2load(out, logfile):
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s", out)
    st = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    tls = re.search(r"TLS Protocol: (\S+)", out)
    lat = []
    if logfile.exists():
        for line in logfile.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] / 1000.0 if lat else float("nan")

    return {
        "rps": float(m.group(3)) if m else 0.0,
        "done": int(st.group(3)), "succeeded": int(st.group(4)),
        "failed": int(st.group(5)), "errored": int(st.group(6)),
        "2xx": int(codes.group(1)), "4xx": int(codes.group(3)), "5xx": int(codes.group(4)),
        "tls": tls.group(1) if tls else None,
        "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
        "samples": len(lat),
    }


# ---------------------------------------------------------------- servers

def reachable_by_others(path):
    p = Path(path).resolve()
    for d in [p, *p.parents]:
        if not d.stat().st_mode & 0o001:
            return False
    return True


class Warden:
    def __init__(self, workdir, models_dir, runtime_dir, certs, token, binary=BIN):
        self.workdir, self.models_dir, self.runtime_dir = workdir, models_dir, runtime_dir
        self.certs, self.token, self.binary = certs, token, binary
        self.proc = None
        # `audit.fsync`: the audit section runs under both.
        self.audit_fsync = "never"

    def write_config(self, nireq=None, models=("light_resnet50", "blazeface", "addn", "echo"), ports=PORTS):
        cfg = {"model_config_list": []}
        for name in models:
            entry = {"name": name, "base_path": str(self.models_dir / name), "plugin_config": PLUGIN}
            if nireq:
                entry["nireq"] = nireq
            cfg["model_config_list"].append({"config": entry})
        (self.workdir / "models.json").write_text(json.dumps(cfg, indent=1))
        (self.workdir / "policy.toml").write_text(
            '[[rule]]\nname = "bench"\nsubjects = ["%s"]\nissuers = ["%s"]\n'
            'models = ["*"]\noperations = ["infer", "metadata", "ready"]\n' % (SUB, ISS))
        c = self.certs
        (self.workdir / "warden.toml").write_text(f"""\
# The configuration bench/bench.py runs Warden with: the defaults, but for the limits a
# load test would trip on purpose (one principal, one IP, many connections).
[gateway]
bind_address = "127.0.0.1"
rest_port = {ports['rest']}
grpc_port = {ports['grpc']}
admin_port = {ports['admin']}
[tls]
cert = "{c / 'server.pem'}"
key = "{c / 'server.key'}"
[auth]
jwt_key = "{c / 'jwt.pub.pem'}"
jwt_issuer = "{ISS}"
jwt_audience = "{AUD}"
policy = "{self.workdir / 'policy.toml'}"
[backend]
socket_dir = "{self.workdir / 'sock'}"
openvino_dir = "{self.runtime_dir}"
[models]
config_path = "{self.workdir / 'models.json'}"
[limits]
rate_per_principal_rps = 0
rate_per_ip_unauthenticated_rps = 0
max_connections_per_ip = 12000
# 10k idle connections for the memory section, with room to spare.
max_connections = 12000
h2_max_concurrent_streams = 256
# Queue deep enough for the concurrency sweep (64 in flight) on a 2-request pool.
max_queued_inferences = 1024
[audit]
path = "{self.workdir / 'audit' / 'audit.log'}"
fsync = "{self.audit_fsync}"
""")
        # The gateway drops to uid 5001 and rotates its log in this folder.
        audit = self.workdir / "audit"
        audit.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(audit, 5001, 5001)

    def start(self):
        self.write_config(int(os.environ["BENCH_NIREQ"]) if os.environ.get("BENCH_NIREQ") else None)
        self.log = open(self.workdir / "warden.log", "w")
        self.proc = subprocess.Popen([str(self.binary), "serve", "--config", str(self.workdir / "warden.toml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("warden exited:\n" + (self.workdir / "warden.log").read_text()[-3000:])
            try:
                if https_get(PORTS["rest"], "/v2/health/ready", self.certs) == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError("warden did not become ready")
        kids = children(self.proc.pid)
        self.pids = {"gateway": kids["gateway"], "backend": kids["backend"], "supervisor": self.proc.pid}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def version(self):
        return run([str(self.binary), "--version"]).strip()


class Peer:
    """MLServer + OpenVINO runtime behind HAProxy (bench/peer/)."""

    def __init__(self, workdir, models_dir, certs):
        self.workdir, self.models_dir, self.certs = workdir, models_dir, certs

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["bash", str(ROOT / "bench/peer/start.sh"), str(self.workdir), str(self.models_dir),
                        str(self.certs / "server.pem"), str(self.certs / "server.key"),
                        str(self.certs / "jwt.pub.pem"), str(PORTS["peer_https"]), str(PORTS["peer_grpcs"]),
                        json.dumps(PLUGIN)], check=True)
        self.pids = {"mlserver": int((self.workdir / "mlserver.pid").read_text()),
                     "haproxy": int((self.workdir / "haproxy.pid").read_text())}
        # MLServer may run its model in child processes: count them too.
        self.extra = children(self.pids["mlserver"])

    def stop(self):
        subprocess.run(["bash", str(ROOT / "bench/peer/stop.sh"), str(self.workdir)], check=False)


def https_get(port, path, certs, token=None, timeout=5):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            hdr = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            if token:
                hdr += f"Authorization: Bearer {token}\r\n"
            t.sendall((hdr + "\r\n").encode())
            data = b""
            while chunk := t.recv(65536):
                data += chunk
    return int(data.split(b" ", 2)[1])


def admin_text(port=PORTS["admin"], timeout=5):
    import urllib.request
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout).read().decode()


def audit_writes():
    """`warden_audit_writes_total`, or None from a build that does not export it."""
    for line in admin_text().splitlines():
        if line.startswith("warden_audit_writes_total "):
            return float(line.rsplit(" ", 1)[1])
    return None


def admin_metrics(port=PORTS["admin"], timeout=5):
    text = admin_text(port, timeout)
    ok = fail = 0
    for line in text.splitlines():
        if line.startswith("ovms_requests_success"):
            ok += float(line.rsplit(" ", 1)[1])
        elif line.startswith("ovms_requests_fail"):
            fail += float(line.rsplit(" ", 1)[1])
    return ok, fail


# ---------------------------------------------------------------- preparation

def make_echo_model(path):
    """A model that returns its FP32 input [-1] unchanged (output and input are one tensor, "x"): the cost of moving bytes."""
    import openvino as ov
    from openvino import opset13 as ops

    p = ops.parameter([-1], ov.Type.f32, name="x")
    p.output(0).get_tensor().set_names({"x"})
    r = ops.result(p)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([r], [p], "echo"), str(path), compress_to_fp16=False)


def prepare():
    """Certificates, a token, the models (staged where uid 5000 can read them), bodies."""
    for d in ["raw", "bodies"]:
        (OUT / d).mkdir(parents=True, exist_ok=True)
    certs = OUT / "certs"
    if not (certs / "ca.pem").exists():
        run([str(BIN), "certs-dev", "--out", str(certs)])
    token = run([str(BIN), "token", "--key", str(certs / "jwt.key"), "--iss", ISS, "--aud", AUD,
                 "--sub", SUB, "--ttl", "21600"]).strip()
    stage = OUT / "stage"
    if os.geteuid() == 0 and not reachable_by_others(OUT):
        # The backend drops to uid 5000, which cannot enter a private checkout.
        stage = Path("/var/tmp/warden-bench")
    models, runtime = stage / "models", stage / "openvino"
    if models.exists():
        shutil.rmtree(models)
    models.mkdir(parents=True)
    for name in ["light_resnet50", "blazeface", "addn"]:
        shutil.copytree(ROOT / ".models" / name, models / name)
    make_echo_model(models / "echo" / "1" / "model.xml")
    if not (runtime / "libopenvino_c.so").exists():
        shutil.copytree(ROOT / ".runtime" / "openvino", runtime, symlinks=True, dirs_exist_ok=True)
    for p in [stage, *stage.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    bodies = {}
    for model, spec in MODELS.items():
        t = image_tensor(model)
        bodies[(model, "json")] = json_body(spec["input"], t)
        bodies[(model, "grpc")] = grpc_body(model, spec["input"], t)
        bodies[(model, "tensor")] = t
    bodies[("addn", "binary")], bodies[("addn", "binary_hlen")] = binary_body(
        "x", np.array([[1, 2, 3, 4]], dtype=np.float32))
    bodies[("addn", "grpc")] = grpc_body("addn", "x", np.array([[1, 2, 3, 4]], dtype=np.float32))
    bodies[("addn", "json")] = json_body("x", np.array([[1, 2, 3, 4]], dtype=np.float32))
    for model in MODELS:
        bodies[(model, "binary")], bodies[(model, "binary_hlen")] = binary_body(
            MODELS[model]["input"], bodies[(model, "tensor")])
    paths = {}
    for key, val in bodies.items():
        if isinstance(val, bytes):
            p = OUT / "bodies" / f"{key[0]}.{key[1]}"
            p.write_bytes(val)
            paths[key] = p
        else:
            paths[key] = val
    return certs, token, models, runtime, paths


# ---------------------------------------------------------------- the sections

def benchmark_app(model_file, seconds):
    """OpenVINO's own benchmark_app, throughput hint, the same plugin config."""
    cfg = OUT / "raw" / "benchmark_app.config.json"
    cfg.write_text(json.dumps({"CPU": PLUGIN}))
    cmd = [str(ROOT / ".venv" / "bin" / "benchmark_app"), "-m", str(model_file), "-d", "CPU",
           "-hint", "throughput", "-t", str(seconds), "-load_config", str(cfg)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    name = Path(model_file).parts[-3]
    (OUT / "raw" / f"benchmark_app.{name}.{int(time.time())}.txt").write_text(shell_line(cmd) + "\n\n" + out)
    if status != 0:
        raise RuntimeError(f"benchmark_app failed on {model_file}:\n{out[-2000:]}")
    fps = float(re.search(r"Throughput:\s+([\d.]+) FPS", out).group(1))
    count = int(re.search(r"Count:\s+(\d+) iterations", out).group(1))
    nireq = re.search(r"(\d+) inference requests", out)
    # CPU per inference: the whole process (read, compile, then the measured loop) over
    # the iterations, so an upper bound on OpenVINO's own cost per inference.
    return {"fps": fps, "cmd": shell_line(cmd), "nireq": int(nireq.group(1)) if nireq else None,
            "iterations": count, "cpu_us_per_inference": (ru.ru_utime + ru.ru_stime) / count * 1e6}


class Bench:
    def __init__(self, args):
        self.args = args
        self.results = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        self.certs, self.token, self.models, self.runtime, self.bodies = prepare()
        self.warden = Warden(OUT / "warden", self.models, self.runtime, self.certs, self.token)
        (OUT / "warden").mkdir(exist_ok=True)
        self.auth = [f"authorization: Bearer {self.token}"]

    # -- requests

    def rest(self, model, kind, conns, streams, name, duration=None, body=None, hlen=None, port=None):
        headers = list(self.auth)
        if kind == "binary":
            hlen = hlen if hlen is not None else self.bodies[(model, "binary_hlen")]
            headers += ["content-type: application/octet-stream", f"inference-header-content-length: {hlen}"]
        else:
            headers += ["content-type: application/json"]
        port = port or PORTS["rest"]
        return Load(name, f"https://localhost:{port}/v2/models/{model}/infer",
                    body or self.bodies[(model, kind)], headers, conns, streams,
                    duration or self.args.duration, self.args.warmup)

    def grpc(self, model, conns, streams, name, duration=None, body=None, port=None):
        headers = self.auth + ["content-type: application/grpc", "te: trailers"]
        port = port or PORTS["grpc"]
        return Load(name, f"https://localhost:{port}/inference.GRPCInferenceService/ModelInfer",
                    body or self.bodies[(model, "grpc")], headers, conns, streams,
                    duration or self.args.duration, self.args.warmup)

    def binary_path(self, kind, model, conns, streams, name, **kw):
        """A load on Warden's binary paths: gRPC raw contents, or REST binary extension."""
        if kind == "grpc":
            kw.pop("hlen", None)
            return self.grpc(model, conns, streams, name, **kw)
        return self.rest(model, "binary", conns, streams, name, **kw)

    def on_warden(self, load):
        """Runs a load on Warden; success is counted by Warden itself (a gRPC error is
        an HTTP 200 with a grpc-status trailer, which h2load counts as a success)."""
        ok0, fail0 = admin_metrics()
        r = load.run(self.warden.pids)
        ok1, fail1 = admin_metrics()
        r["server_ok"], r["server_fail"] = ok1 - ok0, fail1 - fail0
        # h2load abandons the streams in flight when its time is up; Warden counts those
        # as failed (the body never arrived), so up to one per stream is the client's.
        r["all_ok"] = (r["server_fail"] <= load.conns * load.streams and r["4xx"] == 0
                       and r["5xx"] == 0 and r["errored"] == 0)
        log(f"{load.name}: {r['rps']:.1f} req/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
            f"ok {r['server_ok']:.0f} fail {r['server_fail']:.0f} {r['tls']}")
        return r

    def on_peer(self, load, peer):
        r = load.run({**peer.pids, **peer.extra})
        r["all_ok"] = r["4xx"] == 0 and r["5xx"] == 0 and r["errored"] == 0 and r["failed"] == 0
        log(f"{load.name}: {r['rps']:.1f} req/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms {r['tls']}")
        return r

    # -- sections

    def inprocess(self, when):
        """benchmark_app on each model; run before and after the servers, and the better
        of the two is the reference (the machine is shared: the stricter ratio)."""
        res = self.results.setdefault("benchmark_app", {})
        for model, spec in {**MODELS, "addn": {"file": "addn/2/model.xml"}}.items():
            r = benchmark_app(self.models / spec["file"], self.args.duration)
            r["when"] = when
            log(f"benchmark_app {model} ({when}): {r['fps']:.1f} FPS, {r['cpu_us_per_inference']:.0f} us CPU/inference")
            runs = res.setdefault(model, {"runs": []})["runs"]
            runs.append(r)
            best = max(runs, key=lambda x: x["fps"])
            res[model].update({k: best[k] for k in ["fps", "cmd", "nireq"]})
            res[model]["cpu_us_per_inference"] = min(x["cpu_us_per_inference"] for x in runs)

    def throughput(self):
        """Saturating load: gRPC raw and REST binary, each model."""
        res = {}
        for model, (c, m) in {"light_resnet50": (2, 4), "blazeface": (4, 8)}.items():
            # benchmark_app right before and right after, the mean is the reference: the
            # host's speed drifts over minutes, and this cancels a steady drift.
            file = self.models / MODELS[model]["file"]
            before = benchmark_app(file, self.args.duration)
            res[model] = {
                "grpc": self.on_warden(self.grpc(model, c, m, f"tp.{model}.grpc")),
                "binary": self.on_warden(self.rest(model, "binary", c, m, f"tp.{model}.binary")),
            }
            after = benchmark_app(file, self.args.duration)
            res[model]["benchmark_app"] = {"runs": [before["fps"], after["fps"]],
                                           "fps": (before["fps"] + after["fps"]) / 2, "cmd": before["cmd"]}
            log(f"benchmark_app {model} around Warden: {before['fps']:.1f} / {after['fps']:.1f} FPS")
        self.results["throughput"] = res

    def overhead(self):
        """CPU time per request of gateway and backend on a model that costs nothing."""
        res = {}
        for kind in ["grpc", "binary"]:
            r = self.on_warden(self.binary_path(kind, "addn", 4, 4, f"cpu.{kind}"))
            n = max(r["server_ok"], 1)
            r["gateway_us"] = r["cpu_s"]["gateway"] / n * 1e6
            r["backend_us"] = r["cpu_s"]["backend"] / n * 1e6
            r["gateway_sys_us"] = r["sys_s"]["gateway"] / n * 1e6
            r["backend_sys_us"] = r["sys_s"]["backend"] / n * 1e6
            r["client_us"] = r["client_cpu_s"] / max(r["done"], 1) * 1e6
            log(f"cpu per request {kind}: gateway {r['gateway_us']:.1f} us ({r['gateway_sys_us']:.1f} in the "
                f"kernel), backend {r['backend_us']:.1f} us ({r['backend_sys_us']:.1f} in the kernel)")
            res[kind] = r
        self.results["overhead"] = res

    def scaling(self):
        """The gateway on one core, then on two: its threads pinned with
        sched_setaffinity while the backend and h2load stay free, on `addn` (a model that
        costs nothing, so the gateway's own cost shows). From its CPU per request, what
        one core of gateway serves; from the two runs, how far a second core takes it."""
        gw = self.warden.pids["gateway"]
        every = sorted(os.sched_getaffinity(0))
        res = {"runs": []}
        try:
            for cores in [every[:1], every[:2]]:
                for tid in os.listdir(f"/proc/{gw}/task"):
                    os.sched_setaffinity(int(tid), cores)
                for kind in ["grpc", "binary"]:
                    r = self.on_warden(self.binary_path(kind, "addn", 4, 4, f"scale.{kind}.{len(cores)}"))
                    n = max(r["server_ok"], 1)
                    r.update(cores=len(cores), kind=kind,
                             gateway_us=r["cpu_s"]["gateway"] / n * 1e6,
                             backend_us=r["cpu_s"]["backend"] / n * 1e6,
                             client_us=r["client_cpu_s"] / max(r["done"], 1) * 1e6,
                             gateway_busy=r["cpu_s"]["gateway"] / r["wall_s"])
                    log(f"scaling {kind} gateway on {len(cores)} core(s): {r['rps']:.0f} req/s, gateway "
                        f"{r['gateway_us']:.1f} us/req, {r['gateway_busy']:.2f} cores busy")
                    res["runs"].append(r)
        finally:
            for tid in os.listdir(f"/proc/{gw}/task"):
                os.sched_setaffinity(int(tid), every)
        self.results["scaling"] = res

    def versus_baseline(self, baseline, rounds=3):
        """This build against another build of Warden (`--baseline BIN`, e.g. the commit
        before a change), on the same bodies, in alternating rounds (the order flips each
        round, so a steady drift of the shared host cancels): throughput on BlazeFace over
        each path, and CPU per request of gateway + backend on `addn`. The figure is the
        median over rounds of this build / the baseline."""
        loads = [("blazeface grpc", lambda n: self.grpc("blazeface", 4, 8, n)),
                 ("blazeface binary", lambda n: self.rest("blazeface", "binary", 4, 8, n)),
                 ("blazeface json", lambda n: self.rest("blazeface", "json", 4, 4, n)),
                 ("addn grpc", lambda n: self.grpc("addn", 4, 4, n)),
                 ("addn binary", lambda n: self.rest("addn", "binary", 4, 4, n))]
        builds = {"this": self.warden,
                  "baseline": Warden(OUT / "baseline", self.models, self.runtime, self.certs, self.token,
                                     binary=Path(baseline).resolve())}
        (OUT / "baseline").mkdir(exist_ok=True)
        runs = {b: {name: [] for name, _ in loads} for b in builds}
        for i in range(rounds):
            for b in (["this", "baseline"] if i % 2 == 0 else ["baseline", "this"]):
                self.warden = builds[b]
                self.warden.start()
                try:
                    for name, make in loads:
                        r = self.on_warden(make(f"base.{b}.{name.replace(' ', '.')}.{i}"))
                        n = max(r["server_ok"], 1)
                        r["cpu_us"] = (r["cpu_s"]["gateway"] + r["cpu_s"]["backend"]) / n * 1e6
                        runs[b][name].append(r)
                finally:
                    self.warden.stop()
        self.warden = builds["this"]
        med = lambda xs: float(np.median(xs))
        res = {"baseline": str(baseline), "baseline_version": builds["baseline"].version(), "rounds": rounds,
               "loads": {}}
        for name, _ in loads:
            t, b = runs["this"][name], runs["baseline"][name]
            res["loads"][name] = {
                "this_rps": [r["rps"] for r in t], "baseline_rps": [r["rps"] for r in b],
                "this_cpu_us": [r["cpu_us"] for r in t], "baseline_cpu_us": [r["cpu_us"] for r in b],
                "all_ok": all(r["all_ok"] for r in t + b),
                "rps_ratio": med([x["rps"] / y["rps"] for x, y in zip(t, b) if y["rps"]]),
                "cpu_ratio": med([x["cpu_us"] / y["cpu_us"] for x, y in zip(t, b) if y["cpu_us"]]),
                "cmd": t[0]["cmd"]}
            log(f"versus baseline {name}: req/s x{res['loads'][name]['rps_ratio']:.3f}, "
                f"CPU/request x{res['loads'][name]['cpu_ratio']:.3f}")
        self.results["versus_baseline"] = res

    def versus_warden(self):
        res = {}
        for model in MODELS:
            res[model] = {
                "json": self.on_warden(self.rest(model, "json", 4, 4, f"vs.warden.{model}.json")),
                "grpc": self.on_warden(self.grpc(model, 4, 4, f"vs.warden.{model}.grpc")),
            }
        self.results.setdefault("versus", {})["warden"] = res

    def versus_peer(self):
        peer = Peer(OUT / "peer", self.models, self.certs)
        peer.start()
        try:
            self.results["preflight_peer"] = self.preflight(PORTS["peer_https"], PORTS["peer_grpcs"], "peer")
            res = {}
            for model in MODELS:
                res[model] = {
                    "json": self.on_peer(self.rest(model, "json", 4, 4, f"vs.peer.{model}.json",
                                                   port=PORTS["peer_https"]), peer),
                    "grpc": self.on_peer(self.grpc(model, 4, 4, f"vs.peer.{model}.grpc",
                                                   port=PORTS["peer_grpcs"]), peer),
                }
            self.results.setdefault("versus", {})["peer"] = res
            self.results["peer_rss_bytes"] = sum(rss_bytes(p) for p in {**peer.pids, **peer.extra}.values())
        finally:
            peer.stop()

    def memory(self):
        gw = self.warden.pids["gateway"]
        res = {"idle_rss": rss_bytes(gw), "idle": []}
        # The per-connection figure is the slope between the two sizes, so what the
        # allocator keeps after the first thousand does not count twice.
        for n in [1000, 10_000]:
            before = rss_bytes(gw)
            alive, rss = idle_tls_connections(self.certs, n, gw)
            # Two housekeeping ticks (2 s each): once the connections have halved, the
            # gateway returns its free heap pages (gateway/src/heap.rs).
            time.sleep(5)
            r = {"asked": n, "alive": alive, "before_rss": before, "with_conns_rss": rss,
                 "after_rss": rss_bytes(gw), "per_conn_bytes": (rss - res["idle_rss"]) / max(alive, 1)}
            res["idle"].append(r)
            log(f"gateway rss {before / 2**20:.1f} MiB, {alive}/{n} idle TLS conns "
                f"{rss / 2**20:.1f} MiB ({r['per_conn_bytes']:.0f} B/conn over idle), "
                f"{r['after_rss'] / 2**20:.1f} MiB after")
        a, b = res["idle"]
        res["per_conn_slope_bytes"] = ((b["with_conns_rss"] - a["with_conns_rss"])
                                       / (b["alive"] - a["alive"]) if b["alive"] > a["alive"] else None)
        # A flood of 16 MB requests, 64 in flight (1 GB asked for): the per-principal
        # quota (256 MiB by default) bounds what the gateway holds. On a fresh gateway:
        # the allocator keeps what 10,000 connections used, which would hide the growth.
        self.warden.stop()
        self.warden.start()
        gw = self.warden.pids["gateway"]
        res["flood_start_rss"] = rss_bytes(gw)
        body, hlen = self.echo_body(16_000_000, "binary")
        sampler = RssSampler(gw)
        sampler.start()
        r = self.on_warden(self.rest("echo", "binary", 16, 4, "mem.flood", body=body, hlen=hlen,
                                     duration=self.args.duration))
        sampler.stop = True
        sampler.join()
        res["flood"] = r
        res["flood_peak_rss"] = sampler.peak
        res["quota_per_principal_bytes"] = 256 << 20
        res["after_flood_rss"] = rss_bytes(gw)
        log(f"flood: peak gateway rss {sampler.peak / 2**20:.1f} MiB, refused {r['4xx']}")
        self.results["memory"] = res

    def audit(self):
        """Group commit (gateway/src/audit.rs): the same load (`addn`, REST binary, 64 in
        flight) with `audit.fsync = "never"` and `"always"`, on this build and, with
        --baseline, on that binary too. Records per write is what the gateway counted
        (`warden_audit_writes_total`) against the calls it audited in the same window."""
        res = {"runs": []}
        binaries = [("this build", BIN)]
        if self.args.baseline:
            binaries.append(("baseline", Path(self.args.baseline)))
        try:
            for label, binary in binaries:
                for fsync in ["never", "always"]:
                    self.warden.stop()
                    self.warden.binary, self.warden.audit_fsync = binary, fsync
                    self.warden.start()
                    w0 = audit_writes()
                    r = self.on_warden(self.rest("addn", "binary", 16, 4, f"audit.{fsync}.{label.split()[0]}"))
                    w1 = audit_writes()
                    calls = r["server_ok"] + r["server_fail"]
                    r.update(binary=label, fsync=fsync,
                             gateway_us=r["cpu_s"]["gateway"] / max(r["server_ok"], 1) * 1e6,
                             records_per_write=calls / (w1 - w0) if w0 is not None and w1 > w0 else None)
                    log(f"audit fsync={fsync} ({label}): {r['rps']:.0f} req/s, gateway "
                        f"{r['gateway_us']:.1f} us/req, records per write {fmt(r['records_per_write'])}")
                    res["runs"].append(r)
        finally:
            self.warden.stop()
            self.warden.binary, self.warden.audit_fsync = BIN, "never"
            self.warden.start()
        self.results["audit"] = res

    def echo_body(self, nbytes, kind):
        n = max(1, nbytes // 4)
        path = OUT / "bodies" / f"echo.{kind}.{n}"
        t = np.arange(n, dtype=np.float32)
        if kind == "grpc":
            path.write_bytes(grpc_body("echo", "x", t))
            return path, None
        data, hlen = binary_body("x", t)
        path.write_bytes(data)
        return path, hlen

    def sweep_concurrency(self):
        res = {"grpc": [], "binary": []}
        model = "blazeface"
        for n in [1, 2, 4, 8, 16, 32, 64]:
            c = min(n, 4)
            m = n // c
            for kind in res:
                r = self.on_warden(self.binary_path(kind, model, c, m, f"conc.{kind}.{n}",
                                                    duration=self.args.sweep_duration))
                r["concurrency"] = n
                res[kind].append(r)
        self.results["sweep_concurrency"] = res

    def sweep_size(self):
        res = {"grpc": [], "binary": []}
        for size in [1_000, 16_000, 256_000, 1_000_000, 4_000_000, 16_000_000]:
            for kind in res:
                body, hlen = self.echo_body(size, kind)
                r = self.on_warden(self.binary_path(kind, "echo", 2, 2, f"size.{kind}.{size}", body=body,
                                                    hlen=hlen, duration=self.args.sweep_duration))
                r["bytes"] = size
                r["mb_per_s"] = r["rps"] * size / 1e6
                res[kind].append(r)
        self.results["sweep_size"] = res

    def instructions(self):
        """Instructions per request by stage, counted by callgrind (bench/instructions.py)
        on warden-stages: the real gateway and backend in one unsandboxed process, with
        only `addn`. Each path: a warm-up, then exactly N1 and N2 requests on one
        connection each with instrumentation on; the per-request figure is their
        difference over N2 - N1. Two rounds, to show the figure is stable."""
        import instructions as ins

        a = self.args
        n1, n2 = a.instr_requests // 5, a.instr_requests
        rps = a.instr_rps
        work = OUT / "stages"
        work.mkdir(exist_ok=True)
        # warden-stages never drops to the gateway's uid, so its audit files are root's,
        # which the next start's preflight (rightly) refuses: each run starts a new log.
        shutil.rmtree(work / "audit", ignore_errors=True)
        cfg = Warden(work, self.models, self.runtime, self.certs, self.token)
        cfg.write_config(models=("addn",), ports=STAGES_PORTS)
        port = STAGES_PORTS
        st = ins.Stages(STAGES_BIN, work, work / "warden.toml", port, log)

        def ready():
            try:
                return https_get(port["rest"], "/v2/health/ready", self.certs, timeout=60) == 200
            except OSError:
                return False

        paths = {
            "REST JSON": (f"https://localhost:{port['rest']}/v2/models/addn/infer", self.bodies[("addn", "json")],
                          self.auth + ["content-type: application/json"]),
            "REST binary": (f"https://localhost:{port['rest']}/v2/models/addn/infer", self.bodies[("addn", "binary")],
                            self.auth + ["content-type: application/octet-stream",
                                         f"inference-header-content-length: {self.bodies[('addn', 'binary_hlen')]}"]),
            "gRPC": (f"https://localhost:{port['grpc']}/inference.GRPCInferenceService/ModelInfer",
                     self.bodies[("addn", "grpc")], self.auth + ["content-type: application/grpc", "te: trailers"]),
        }

        PREWARM = 5  # requests on the path after instrumentation is turned on, uncounted

        def h2load(path, n, tag, counted=None, rps=None):
            """n requests on one connection, `rps` a second if given; with `counted`,
            inside a callgrind window (Warden's counters are read outside it, so
            /metrics is not counted)."""
            url, body, headers = paths[path]
            conn = ["-c", "1", "-m", "1", "-t", "1", "-d", str(body)]
            for h in headers:
                conn += ["-H", h]
            conn.append(url)
            cmd = ["h2load", "-n", str(n), *(["--rps", str(rps)] if rps else []), *conn]
            ok0, fail0 = admin_metrics(port["admin"], timeout=120)
            out = None

            def load():
                nonlocal out
                out = run(cmd, timeout=3600)
            dump = counted(load, f"{path} {tag}", lambda: run(["h2load", "-n", str(PREWARM), *conn])) if counted else load()
            ok1, fail1 = admin_metrics(port["admin"], timeout=120)
            (OUT / "raw" / f"instr.{path.replace(' ', '_')}.{tag}.h2load.txt").write_text(" ".join(cmd) + "\n\n" + out)
            st_ = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out)
            served = n + (PREWARM if counted else 0)
            if not st_ or int(st_.group(4)) != n or ok1 - ok0 != served or fail1 != fail0:
                raise RuntimeError(f"instructions {path} {tag}: not {n} successes (h2load: "
                                   f"{st_.group(0) if st_ else '?'}; Warden: {ok1 - ok0:.0f} ok, {fail1 - fail0:.0f} failed)")
            res.setdefault("h2load", {})[f"{path} {tag.split('.', 1)[-1]}"] = {"cmd": shell_line(cmd)}
            took = re.search(r"finished in ([\d.]+)(m?s)", out)
            return dump, float(took.group(1)) / (1000 if took.group(2) == "ms" else 1)

        res = {"n1": n1, "n2": n2, "rps": rps, "rounds": [], "model": "addn (FP32 [1,4] + [1,4])"}
        log("instructions: starting warden-stages under callgrind (slow: minutes)")
        st.start(ready)
        res["valgrind"] = {"cmd": shell_line(st.cmd)}
        try:
            for path in paths:
                h2load(path, a.instr_warmup, "warmup")
            for rnd in range(a.instr_rounds):
                rows = {}
                for path in paths:
                    # Paced (h2load --rps), so each window lasts as long on any machine;
                    # the slower third window measures the clock-driven work to take out.
                    small = h2load(path, n1, f"r{rnd}.n1", st.measure, rps)
                    large = h2load(path, n2, f"r{rnd}.n2", st.measure, rps)
                    slow = h2load(path, n1, f"r{rnd}.n1.slow", st.measure, rps // 2)
                    rows[path] = ins.per_request(small, large, slow, n1, n2)
                    g, b = rows[path]["gateway"]["total_per_request"], rows[path]["backend"]["total_per_request"]
                    log(f"instructions round {rnd + 1} {path}: gateway {g:,.0f} + backend {b:,.0f} per request")
                res["rounds"].append(rows)
        finally:
            st.stop()
        res["stages"] = {side: ins.stage_order(side) for side in ("gateway", "backend")}
        self.results["instructions"] = res

    def preflight(self, port_rest, port_grpc, label):
        """One real inference per model and protocol with tritonclient, outputs checked,
        so a load run never measures errors."""
        import tritonclient.grpc as tg
        import tritonclient.http as th

        out = {}
        for model, spec in MODELS.items():
            t = self.bodies[(model, "tensor")]
            hc = th.InferenceServerClient(f"localhost:{port_rest}", ssl=True,
                                          ssl_context_factory=lambda: ssl.create_default_context(
                                              cafile=str(self.certs / "ca.pem")))
            i = th.InferInput(spec["input"], list(t.shape), "FP32")
            i.set_data_from_numpy(t, binary_data=False)
            r1 = hc.infer(model, [i], headers={"authorization": f"Bearer {self.token}"})
            gc = tg.InferenceServerClient(f"localhost:{port_grpc}", ssl=True,
                                          root_certificates=str(self.certs / "ca.pem"))
            g = tg.InferInput(spec["input"], list(t.shape), "FP32")
            g.set_data_from_numpy(t)
            r2 = gc.infer(model, [g], headers={"authorization": f"Bearer {self.token}"})
            outs = {}
            for o in r1.get_response()["outputs"]:
                a, b = r1.as_numpy(o["name"]), r2.as_numpy(o["name"])
                if a is None or b is None or a.shape != b.shape or not np.allclose(a, b, atol=1e-4):
                    raise RuntimeError(f"{label} {model}: REST and gRPC disagree on {o['name']}")
                outs[o["name"]] = list(a.shape)
            out[model] = outs
            log(f"preflight {label} {model}: {outs}")
        return out


def idle_tls_connections(certs, n, pid):
    """Opens n TLS 1.3 connections to the REST port over HTTP/2 (as gRPC channels and h2
    REST clients hold them), makes one request on each (GET /v2/health/live) and holds
    them open; returns how many stayed open and the gateway's RSS while they do. (An
    idle HTTP/1.1 connection is closed after the header read timeout, 10 s by default,
    which opening 10,000 takes longer than.)"""
    import asyncio
    import resource

    import h2.config
    import h2.connection
    import h2.events

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 512)), hard))
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])

    async def one(gate):
        async with gate:
            r, w = await asyncio.open_connection("127.0.0.1", PORTS["rest"], ssl=ctx,
                                                 server_hostname="localhost")
            c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            c.initiate_connection()
            c.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                               (":path", "/v2/health/live")], end_stream=True)
            w.write(c.data_to_send())
            status, ended = None, False
            while not ended:
                data = await r.read(65536)
                if not data:
                    raise RuntimeError("closed before the answer")
                for e in c.receive_data(data):
                    if isinstance(e, h2.events.ResponseReceived):
                        status = dict(e.headers).get(b":status")
                    ended |= isinstance(e, h2.events.StreamEnded)
                w.write(c.data_to_send())
            if status != b"200":
                raise RuntimeError(f"status {status!r}")
            return r, w, c

    async def hold(r, w, c, closed):
        """Answers the gateway's keep-alive PINGs (unanswered, they close the
        connection, as they should) until the connection ends."""
        while True:
            data = await r.read(65536)
            if not data:
                break
            events = c.receive_data(data)
            w.write(c.data_to_send())
            if any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
                break
        closed.append(1)

    async def main():
        gate = asyncio.Semaphore(64)
        closed = []
        holders = []

        async def open_and_hold():
            r, w, c = await one(gate)
            holders.append(asyncio.create_task(hold(r, w, c, closed)))
            return w

        conns = await asyncio.gather(*[open_and_hold() for _ in range(n)], return_exceptions=True)
        held = [w for w in conns if not isinstance(w, BaseException)]
        errors = [w for w in conns if isinstance(w, BaseException)]
        if errors:
            log(f"idle connections: {len(errors)} failed, first: {errors[0]!r}")
        await asyncio.sleep(2)
        rss = rss_bytes(pid)
        alive = len(held) - len(closed)
        for t in holders:
            t.cancel()
        for w in held:
            w.close()
        await asyncio.gather(*[w.wait_closed() for w in held], return_exceptions=True)
        return alive, rss

    return asyncio.run(main())


# ---------------------------------------------------------------- report

def machine():
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def versions(bench):
    v = {"warden": bench.warden.version()}
    for tool, cmd in {"h2load": ["h2load", "--version"], "haproxy": ["haproxy", "-v"]}.items():
        try:
            v[tool] = run(cmd).splitlines()[0].strip()
        except (OSError, subprocess.CalledProcessError):
            v[tool] = "absent"
    v["openvino"] = run([str(PY), "-c", "import openvino; print(openvino.__version__)"]).strip()
    peer_py = ROOT / ".bench" / "peer-venv" / "bin" / "python"
    if peer_py.exists():
        v["mlserver"] = run([str(peer_py), "-c", "import mlserver; print(mlserver.__version__)"]).strip()
    return v


def plots(res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if "sweep_concurrency" in res:
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        for kind, rows in res["sweep_concurrency"].items():
            x = [r["concurrency"] for r in rows]
            a.plot(x, [r["rps"] for r in rows], "o-", label=f"{kind}")
            b.plot(x, [r["p50_ms"] for r in rows], "o-", label=f"{kind} p50")
            b.plot(x, [r["p99_ms"] for r in rows], "x--", label=f"{kind} p99")
        for ax in (a, b):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("requests in flight")
            ax.grid(alpha=.3)
            ax.legend()
        a.set_ylabel("inferences / s")
        b.set_ylabel("latency, ms")
        b.set_yscale("log")
        fig.suptitle("Warden, BlazeFace over TLS 1.3 + JWT: throughput and latency vs concurrency")
        fig.tight_layout()
        fig.savefig(OUT / "concurrency.png", dpi=110)
        made.append("concurrency.png")
    if "sweep_size" in res:
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        for kind, rows in res["sweep_size"].items():
            x = [r["bytes"] for r in rows]
            a.plot(x, [r["mb_per_s"] for r in rows], "o-", label=kind)
            b.plot(x, [r["p50_ms"] for r in rows], "o-", label=f"{kind} p50")
            b.plot(x, [r["p99_ms"] for r in rows], "x--", label=f"{kind} p99")
        for ax in (a, b):
            ax.set_xscale("log")
            ax.set_xlabel("request tensor bytes (echoed back)")
            ax.grid(alpha=.3)
            ax.legend()
        a.set_ylabel("request MB / s")
        b.set_ylabel("latency, ms")
        b.set_yscale("log")
        fig.suptitle("Warden, echo model, 4 in flight: cost vs request size")
        fig.tight_layout()
        fig.savefig(OUT / "size.png", dpi=110)
        made.append("size.png")
    return made


def fmt(x, nd=1):
    return "n/a" if x is None or x != x else f"{x:,.{nd}f}"


def targets(res):
    """(target, measured, met) rows."""
    rows = []
    ba, tp = res.get("benchmark_app", {}), res.get("throughput", {})
    for model, need in [("light_resnet50", 0.95), ("blazeface", 0.75)]:
        if model in tp:
            ref = tp[model]["benchmark_app"]
            for kind, label in [("grpc", "gRPC raw"), ("binary", "REST binary")]:
                r = tp[model][kind]
                ratio = r["rps"] / ref["fps"]
                extra = ""
                if model == "blazeface":
                    share = r["client_cpu_s"] / (r["wall_s"] * os.cpu_count())
                    n = max(r["server_ok"], 1)
                    per = (r["cpu_s"]["backend"] + r["client_cpu_s"]) / n
                    ceiling = os.cpu_count() / per
                    extra = (f"; h2load used {share:.0%} of the machine's CPU. Backend + h2load CPU per "
                             f"request ({per * 1e6:.0f} µs) caps this machine at {ceiling:.0f} req/s "
                             f"({ceiling / ref['fps']:.2f}×) even with a gateway that cost nothing")
                rows.append((f"{model} {label} ≥ {need} × benchmark_app",
                             f"{r['rps']:.1f} / {ref['fps']:.1f} = **{ratio:.2f}×**{extra}",
                             ratio >= need and r["all_ok"]))
    ov = ba.get("addn", {}).get("cpu_us_per_inference")
    for kind, label in [("grpc", "gRPC"), ("binary", "REST binary")]:
        if kind in res.get("overhead", {}) and ov is not None:
            r = res["overhead"][kind]
            net = r["gateway_us"] + r["backend_us"] - ov
            rows.append((f"CPU per request that is not OpenVINO, {label}, gateway + backend < 40 µs (aim)",
                         f"{r['gateway_us']:.0f} + {r['backend_us']:.0f} − {ov:.0f} (OpenVINO) = **{net:.0f} µs**",
                         net < 40))
    vs = res.get("versus", {})
    if "warden" in vs and "peer" in vs:
        for model, need in [("blazeface", 10), ("light_resnet50", 2)]:
            for kind, label in [("json", "REST JSON"), ("grpc", "gRPC raw")]:
                w, p = vs["warden"][model][kind], vs["peer"][model][kind]
                ratio = w["rps"] / p["rps"] if p["rps"] else float("inf")
                rows.append((f"{model} {label} ≥ {need}× MLServer+HAProxy, lower p99",
                             f"{w['rps']:.1f} / {p['rps']:.1f} = **{ratio:.1f}×**, p99 "
                             f"{w['p99_ms']:.1f} vs {p['p99_ms']:.1f} ms",
                             ratio >= need and w["p99_ms"] < p["p99_ms"] and w["all_ok"] and p["all_ok"]))
    if "memory" in res:
        m = res["memory"]
        q = m["quota_per_principal_bytes"]
        grown = m["flood_peak_rss"] - m["flood_start_rss"]
        rows.append(("gateway memory under a 16 MB request flood bounded by the quota "
                     "(each admitted body is held twice while it is forwarded: ≤ 2 × quota)",
                     f"peak {m['flood_peak_rss'] / 2**20:.0f} MiB = idle {m['flood_start_rss'] / 2**20:.0f} MiB + "
                     f"**{grown / q:.2f} × the {q >> 20} MiB quota**; {m['flood']['4xx']} refused with 429",
                     grown <= 2 * q))
    return rows


def report(bench, made):
    res = bench.results
    L = []
    L.append("# Warden benchmark report\n")
    L.append(f"Run {res['started']} → {res['finished']} by `bench/run.sh` "
             f"(`bench/bench.py {' '.join(sys.argv[1:])}`).\n")
    mc = res["machine"]
    L.append(f"Machine: {mc['cpu']}, {mc['cores']} cores, {mc['mem_gib']} GiB, Linux {mc['kernel']}. "
             "Client, servers and benchmark_app share it; numbers are compared as ratios within this run.\n")
    L.append("Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".\n")
    L.append("## Targets\n")
    L.append("| target | measured | met |\n|---|---|---|")
    for t, m, ok in targets(res):
        L.append(f"| {t} | {m} | {'yes' if ok else '**no**'} |")
    L.append("")
    if "throughput" in res:
        L.append("## Throughput at saturation (TLS 1.3, ES256 JWT on every request, audit on)\n")
        L.append("benchmark_app ran right before and right after each model's Warden runs; "
                 "the reference is the mean of the two (both shown).\n")
        L.append("| model | path | in flight | req/s | p50 ms | p99 ms | benchmark_app FPS | ratio | client CPU |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for model, kinds in res["throughput"].items():
            ref = kinds["benchmark_app"]
            ba = ref["fps"]
            for kind in ["grpc", "binary"]:
                r = kinds[kind]
                share = r["client_cpu_s"] / (r["wall_s"] * os.cpu_count())
                L.append(f"| {model} | {kind} | {r['conns'] * r['streams']} | {fmt(r['rps'])} | "
                         f"{fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | "
                         f"{fmt(ba)} ({fmt(ref['runs'][0])}, {fmt(ref['runs'][1])}) | "
                         f"{fmt(r['rps'] / ba if ba else None, 2)} | {share:.0%} |")
        L.append("")
    if "overhead" in res:
        L.append("## CPU per request on a 4-element model (`addn`), 16 in flight\n")
        L.append("Process CPU time (utime+stime from /proc) over the measured window / requests "
                 "Warden counted as successful. *In the kernel* is the stime part of it (system "
                 "calls: sockets, the audit write, waking threads), which no instruction count "
                 "below includes.\n")
        ov = res.get("benchmark_app", {}).get("addn", {}).get("cpu_us_per_inference")
        L.append("OpenVINO's own cost is benchmark_app's CPU per inference on the same model and "
                 "plugin config (its whole process over its iterations, Python driver included: an "
                 "upper bound, so the net figure is a lower bound on Warden's own cost).\n")
        L.append("| path | req/s | gateway µs | of which in the kernel | backend µs | of which in the kernel "
                 "| OpenVINO µs | gateway + backend − OpenVINO µs | h2load µs |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for kind, r in res["overhead"].items():
            net = r['gateway_us'] + r['backend_us'] - ov if ov is not None else None
            L.append(f"| {kind} | {fmt(r['rps'])} | {fmt(r['gateway_us'])} | {fmt(r.get('gateway_sys_us'))} | "
                     f"{fmt(r['backend_us'])} | {fmt(r.get('backend_sys_us'))} | "
                     f"{fmt(ov)} | {fmt(net)} | {fmt(r['client_us'])} |")
        L.append("")
    if "versus_baseline" in res:
        vb = res["versus_baseline"]
        L.append(f"## This build vs a baseline build ({vb['baseline_version']})\n")
        L.append(f"{vb['rounds']} alternating rounds (the order flips each round), each load "
                 f"{bench.args.duration} s; the ratio is the median over rounds of this build / the baseline. "
                 "CPU is gateway + backend process time per request Warden counted as successful.\n")
        L.append("| load | this req/s | baseline req/s | req/s ratio | this CPU µs | baseline CPU µs | CPU ratio | all ok |")
        L.append("|---|---|---|---|---|---|---|---|")
        for name, r in vb["loads"].items():
            L.append(f"| {name} | {' / '.join(fmt(x) for x in r['this_rps'])} | "
                     f"{' / '.join(fmt(x) for x in r['baseline_rps'])} | {fmt(r['rps_ratio'], 3)} | "
                     f"{' / '.join(fmt(x) for x in r['this_cpu_us'])} | "
                     f"{' / '.join(fmt(x) for x in r['baseline_cpu_us'])} | {fmt(r['cpu_ratio'], 3)} | "
                     f"{'yes' if r['all_ok'] else '**no**'} |")
        L.append("")
    vs = res.get("versus", {})
    if "warden" in vs and "peer" in vs:
        L.append("## Warden vs MLServer 1.7.1 behind HAProxy (same bodies, 16 in flight, TLS 1.3 + JWT on both)\n")
        L.append("| model | body | Warden req/s | peer req/s | ratio | Warden p50/p99 ms | peer p50/p99 ms |")
        L.append("|---|---|---|---|---|---|---|")
        for model in MODELS:
            for kind in ["json", "grpc"]:
                w, p = vs["warden"][model][kind], vs["peer"][model][kind]
                L.append(f"| {model} | {'real image, JSON' if kind == 'json' else 'real image, gRPC raw'} | "
                         f"{fmt(w['rps'])} | {fmt(p['rps'])} | {fmt(w['rps'] / p['rps'] if p['rps'] else None)}× | "
                         f"{fmt(w['p50_ms'])} / {fmt(w['p99_ms'])} | {fmt(p['p50_ms'])} / {fmt(p['p99_ms'])} |")
        L.append("")
    if "memory" in res:
        m = res["memory"]
        L.append("## Gateway memory (VmRSS)\n")
        L.append(f"- idle, models loaded: {m['idle_rss'] / 2**20:.1f} MiB")
        for r in m["idle"]:
            L.append(f"- {r['alive']:,} of {r['asked']:,} idle TLS 1.3 HTTP/2 connections held (one request each, "
                     f"then idle): {r['with_conns_rss'] / 2**20:.1f} MiB, {r['per_conn_bytes']:,.0f} bytes "
                     f"per connection over idle; {r['after_rss'] / 2**20:.1f} MiB 5 s after they closed")
        L.append(f"- **{fmt(m['per_conn_slope_bytes'], 0)} bytes per idle connection** (slope from 1k to 10k)")
        f = m["flood"]
        L.append(f"- flood of 16 MB REST binary requests to `echo`, 64 in flight (1 GB asked for), on a "
                 f"restarted gateway ({m['flood_start_rss'] / 2**20:.1f} MiB at start): peak "
                 f"{m['flood_peak_rss'] / 2**20:.1f} MiB; {f['server_ok']:.0f} served, {f['4xx']} refused "
                 f"with 429 by the per-principal quota; {m['after_flood_rss'] / 2**20:.1f} MiB after")
        L.append("")
    if "audit" in res:
        L.append("## Audit group commit (`addn`, REST binary, 64 in flight)\n")
        L.append("Every call's record is written (and, under `always`, synced) before it is answered; "
                 "records of calls that finish together share a write. *baseline* is the `--baseline` "
                 "binary, when given.\n")
        L.append("| build | audit.fsync | req/s | p50 ms | p99 ms | gateway µs/req | records per write |")
        L.append("|---|---|---|---|---|---|---|")
        for r in res["audit"]["runs"]:
            L.append(f"| {r['binary']} | {r['fsync']} | {fmt(r['rps'])} | {fmt(r['p50_ms'], 2)} | "
                     f"{fmt(r['p99_ms'], 2)} | {fmt(r['gateway_us'])} | {fmt(r['records_per_write'], 2)} |")
        L.append("")
    if "scaling" in res:
        L.append("## Scaling: the gateway on one core and on two (`addn`, 16 in flight)\n")
        L.append("The gateway's threads are pinned (sched_setaffinity) to one core, then to two; the "
                 "backend and h2load are not pinned and share the same two cores. *One gateway core "
                 "serves* is 10⁶ / gateway CPU µs per request: the gateway's ceiling per core if nothing "
                 "else ran on it. *Machine ceiling* is cores × 10⁶ / (gateway + backend + h2load µs): "
                 "the most this 2-core machine serves with everything on it.\n")
        L.append("| path | gateway cores | req/s | gateway µs/req | gateway cores busy | backend µs/req | "
                 "h2load µs/req | one gateway core serves | machine ceiling | 2-core / 1-core req/s |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        runs = res["scaling"]["runs"]
        for r in runs:
            one = [x for x in runs if x["kind"] == r["kind"] and x["cores"] == 1]
            gain = r["rps"] / one[0]["rps"] if one and one[0]["rps"] and r["cores"] > 1 else None
            total = r["gateway_us"] + r["backend_us"] + r["client_us"]
            L.append(f"| {r['kind']} | {r['cores']} | {fmt(r['rps'])} | {fmt(r['gateway_us'])} | "
                     f"{r['gateway_busy']:.2f} | {fmt(r['backend_us'])} | {fmt(r['client_us'])} | "
                     f"{fmt(1e6 / r['gateway_us'] if r['gateway_us'] else None, 0)} req/s | "
                     f"{fmt(mc['cores'] * 1e6 / total if total else None, 0)} req/s | "
                     f"{fmt(gain, 2) + '×' if gain else ''} |")
        L.append("")
    if "instructions" in res:
        L.extend(instructions_section(res["instructions"], bench.token))
    for png, title in [("concurrency.png", "Concurrency"), ("size.png", "Request size")]:
        if png in made:
            L.append(f"## {title}\n\n![{title}]({png})\n")
            key = "sweep_concurrency" if png == "concurrency.png" else "sweep_size"
            col = "concurrency" if key == "sweep_concurrency" else "bytes"
            L.append(f"| path | {col} | req/s | p50 ms | p99 ms | served / failed (Warden's counters) |")
            L.append("|---|---|---|---|---|---|")
            for kind, rows in res[key].items():
                for r in rows:
                    L.append(f"| {kind} | {r[col]:,} | {fmt(r['rps'])} | {fmt(r['p50_ms'], 2)} | "
                             f"{fmt(r['p99_ms'], 2)} | {r['server_ok']:.0f} / {r['server_fail']:.0f} |")
            L.append("")
    L.append("## How it was measured\n")
    L.append("- Load: h2load (nghttp2) over TLS 1.3 with HTTP/2, `-c` connections × `-m` streams; "
             "latency percentiles from its per-request log after the warm-up. Bodies are written once "
             "to `bench/out/bodies/` and sent by both servers' runs: real images (`.models/images`) "
             "resized and normalized for each model, as KServe v2 JSON, as gRPC `raw_input_contents`, "
             "and as the binary tensor extension.")
    L.append("- Success on Warden is what Warden's own counters say (`ovms_requests_success`/`fail` on "
             "the admin port), since a gRPC error is an HTTP 200 with a `grpc-status` trailer. Before the "
             "load runs, one request per model and protocol is made with tritonclient and REST and gRPC "
             "outputs are compared, on Warden and on the peer.")
    L.append("- In-process reference: `benchmark_app -hint throughput` with the same plugin config "
             f"(`{json.dumps(PLUGIN)}`) that Warden and the peer compile with.")
    L.append("- Peer: `bench/peer/` — MLServer 1.7.1 with an OpenVINO runtime on an AsyncInferQueue "
             "(throughput hint), HAProxy terminating TLS 1.3 and verifying the same ES256 JWT.")
    L.append("\nCommands (each run's full output is in `bench/out/raw/`):\n")
    L.append("```")
    for cmd in sorted(set(collect_cmds(res))):
        L.append(cmd.replace(bench.token, "$TOKEN"))
    L.append("```")
    (OUT / "report.md").write_text("\n".join(L) + "\n")


def instructions_section(ins, token):
    """The instructions-per-request tables (report.md, and bench/results/instructions-<commit>.md)."""
    L = [f"## Instructions per request by stage ({ins['model']}, callgrind)\n"]
    L.append(f"User-space instructions counted by valgrind's callgrind in `warden-stages` (the real gateway and "
             f"backend, wired by the code `warden gateway` / `warden backend` run, in one process without the "
             f"sandbox), one request at a time on one TLS 1.3 + HTTP/2 connection with an ES256 JWT (verified "
             f"once, then cached), paced at {ins['rps']} requests a second. Per request = (instructions over "
             f"{ins['n2']} requests − over {ins['n1']}) / {ins['n2'] - ins['n1']}, less the work that follows the "
             f"clock rather than the requests (measured per second from the same {ins['n1']} requests sent at half "
             f"the pace, shown below, and taken out): the connection's own cost (handshake, preface) drops out and "
             f"is shown per connection. A function's own instructions go to the stage its name matches "
             f"(`bench/instructions.py`); shared helpers (malloc, memcpy) are split among their callers' stages. "
             f"The kernel's work (TCP, Unix socket) is not counted.\n")
    rounds = ins["rounds"]
    last = rounds[-1]
    for path, row in last.items():
        L.append(f"### {path}\n")
        hdr = " | ".join(f"round {i + 1}" for i in range(len(rounds)))
        L.append(f"| side | stage | {hdr} |")
        L.append("|---|---|" + "---|" * len(rounds))
        for side in ("gateway", "backend"):
            for stage in ins["stages"][side]:
                vals = [r[path][side]["per_request"].get(stage, 0.0) for r in rounds]
                L.append(f"| {side} | {stage} | " + " | ".join(f"{v:,.0f}" for v in vals) + " |")
            vals = [r[path][side]["total_per_request"] for r in rounds]
            L.append(f"| {side} | **total per request** | " + " | ".join(f"**{v:,.0f}**" for v in vals) + " |")
        vals = [r[path]["unattributed"]["total_per_request"] for r in rounds]
        L.append("| other threads | (neither side's code) | " + " | ".join(f"{v:,.0f}" for v in vals) + " |")
        for side in ("gateway", "backend"):
            vals = [r[path][side]["total_per_connection"] for r in rounds]
            L.append(f"| {side} | per connection (handshake, preface, close) | "
                     + " | ".join(f"{v:,.0f}" for v in vals) + " |")
        for side in ("gateway", "backend"):
            vals = [r[path][side]["total_per_second"] for r in rounds]
            L.append(f"| {side} | clock-driven, per second with the connection open (taken out) | "
                     + " | ".join(f"{v:,.0f}" for v in vals) + " |")
        L.append("")
    if len(rounds) > 1:
        L.append("Stability (gateway + backend per request, round 1 vs round 2): " + "; ".join(
            f"{path} {a:,.0f} vs {b:,.0f} ({(b - a) / a:+.2%})"
            for path in last
            for a, b in [tuple(r[path]["gateway"]["total_per_request"] + r[path]["backend"]["total_per_request"]
                               for r in rounds[:2])]) + ".\n")
    L.append("Commands:\n\n```")
    for cmd in sorted(set(collect_cmds(ins))):
        L.append(cmd.replace(token, "$TOKEN"))
    L.append("```\n")
    return L


def record_instructions(ins, token):
    """bench/results/instructions-<short commit>.md: the figure kept with the commit it
    was measured on, so a regression shows in the history."""
    commit = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).strip()
    head = [f"# Instructions per request, commit {commit}{' (with uncommitted changes)' if dirty else ''}\n",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()['cpu']} by "
            f"`bash bench/run.sh --only instructions`.\n"]
    path = ROOT / "bench" / "results" / f"instructions-{commit}.md"
    path.write_text("\n".join(head + instructions_section(ins, token)) + "\n")
    log(f"wrote {path}")


def collect_cmds(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "cmd":
                yield v
            else:
                yield from collect_cmds(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from collect_cmds(v)


SECTIONS = ["inprocess", "throughput", "overhead", "scaling", "audit", "versus", "memory", "concurrency",
            "size", "instructions"]
# The sections that need the warden binary serving (the others start their own servers).
ON_WARDEN = ["throughput", "overhead", "scaling", "audit", "versus", "memory", "concurrency", "size"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=15, help="seconds per measured run")
    ap.add_argument("--sweep-duration", type=int, default=8, help="seconds per sweep point")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--instr-rps", type=int, default=4,
                    help="instructions: requests per second in the counted runs (one every 250 ms: "
                         "slower than a request under valgrind on a busy machine)")
    ap.add_argument("--instr-requests", type=int, default=200,
                    help="instructions: requests in the larger counted run (the smaller is a fifth)")
    ap.add_argument("--instr-warmup", type=int, default=50, help="instructions: warm-up requests per path")
    ap.add_argument("--instr-rounds", type=int, default=2, help="instructions: rounds (2 shows stability)")
    ap.add_argument("--baseline", metavar="BIN",
                    help="another warden binary (e.g. a release build of an earlier commit) to compare "
                         "this build with, in alternating rounds")
    args = ap.parse_args()
    only = args.only.split(",")
    b = Bench(args)
    res = b.results
    res["machine"] = machine()
    try:
        if "inprocess" in only:
            b.inprocess("before")
        if any(s in only for s in ON_WARDEN):
            b.warden.start()
            res["gateway_rss_idle_at_start"] = rss_bytes(b.warden.pids["gateway"])
            res["preflight_warden"] = b.preflight(PORTS["rest"], PORTS["grpc"], "warden")
            for section, run_it in [("memory", b.memory), ("throughput", b.throughput),
                                    ("overhead", b.overhead), ("scaling", b.scaling),
                                    ("audit", b.audit),
                                    ("versus", b.versus_warden),
                                    ("concurrency", b.sweep_concurrency), ("size", b.sweep_size)]:
                if section in only:
                    run_it()
            res["backend_rss_bytes"] = rss_bytes(b.warden.pids["backend"])
        res["versions"] = versions(b)
    finally:
        b.warden.stop()
    if "instructions" in only:
        b.instructions()
        record_instructions(res["instructions"], b.token)
    if args.baseline:
        b.versus_baseline(args.baseline)
    if "versus" in only:
        b.versus_peer()
    if "inprocess" in only:
        b.inprocess("after")
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    (OUT / "results.json").write_text(json.dumps(res, indent=1, default=str))
    made = plots(res)
    report(b, made)
    log(f"wrote {OUT / 'report.md'}")
    print((OUT / "report.md").read_text())


if __name__ == "__main__":
    main()
