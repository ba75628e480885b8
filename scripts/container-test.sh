#!/usr/bin/env bash
# Builds Warden's image from this checkout and runs it the way OVMS's documentation runs
# OVMS (`docker run --rm -d --user $(id -u):$(id -g) --read-only --tmpfs /tmp
# -v ${PWD}/models/:/models -p 9178:9178 IMAGE --model_path ... --model_name ...`), then
# checks it from the outside: TLS + token inference against OpenVINO's Python API,
# gRPC on the seed's port, a graceful `podman stop` with a call in flight, and the uid,
# capabilities, NoNewPrivs and Seccomp of every process as README "Container" documents,
# as the caller's uid, as 5000, as an arbitrary uid (OpenShift style) and as root.
#
# No registry is needed: the base images are made here from Debian's packages
# (debootstrap --variant=minbase bookworm, from the mirror apt already uses), imported
# as local images and kept for the next run (`podman image exists`). The image under
# test is built from the repository's Dockerfile with WARDEN_FROM=prebuilt: the same
# final stage users get, with the warden binary cargo built here (the newer of
# target/release and target/debug, or $WARDEN_BIN) and the fetched OpenVINO runtime.
# It stays tagged as localhost/warden:test afterwards.
#
# Needs root (podman, debootstrap). Installs podman, runc and debootstrap with apt when
# missing and writes the two podman settings this machine needs into
# /etc/containers/containers.conf when that file has none of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IMAGE=localhost/warden:test
# The tag's number changes whenever make_base_images changes, so a cached base built by
# an older recipe is not reused.
BASE_MIN=localhost/warden-base-minbase:bookworm-1
BASE_CC=localhost/warden-base-cc:bookworm-1
START=$(date +%s)

say() { printf '\n== %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}
PASSED=0
ok() {
  PASSED=$((PASSED + 1))
  printf 'ok   %s\n' "$*"
}

[ "$(id -u)" = 0 ] || fail "run as root: podman builds and runs the image rootful, debootstrap needs root"

# ---------------------------------------------------------------------------- tools
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v curl >/dev/null || need+=(curl)
command -v nsenter >/dev/null || need+=(util-linux)
command -v strip >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Podman's defaults fail here: crun cannot start containers on this kernel setup, and
# the default nofile/nproc ulimits are above what the machine grants. Written only when
# the file has no settings of its own; a machine with its own file keeps it.
CONF=/etc/containers/containers.conf
if ! grep -qs '^[[:space:]]*runtime[[:space:]]*=[[:space:]]*"runc"' "$CONF"; then
  if grep -qsv '^[[:space:]]*\(#.*\)\?$' "$CONF"; then
    fail "$CONF has settings but not runtime = \"runc\"; add it under [engine]"
  fi
  mkdir -p /etc/containers
  cat >"$CONF" <<'CONF'
# Written by Warden's scripts/container-test.sh.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
fi

# ----------------------------------------------------------------------- test inputs
bash scripts/fetch-runtime.sh >/dev/null
bash scripts/fetch-models.sh >/dev/null
PY=$ROOT/.venv/bin/python
RUNTIME=$(readlink -f .runtime/openvino)
MODELS=$(readlink -f .models)

if [ -n "${WARDEN_BIN:-}" ]; then
  BIN=$WARDEN_BIN
else
  BIN=
  for b in target/release/warden target/debug/warden; do
    if [ -x "$b" ] && { [ -z "$BIN" ] || [ "$b" -nt "$BIN" ]; }; then BIN=$b; fi
  done
  if [ -z "$BIN" ]; then
    cargo build -p warden
    BIN=target/debug/warden
  fi
fi
BIN=$(readlink -f "$BIN")

WORK=$(mktemp -d /var/tmp/warden-container-test.XXXXXX)
CONTAINERS=()
cleanup() {
  local c
  for c in "${CONTAINERS[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------------- base images
debian_mirror() {
  # The first bookworm "main" mirror in apt's sources (deb822 files, then one-line ones).
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN{RS="";FS="\n"} /Suites:[^\n]*bookworm([ \n]|$)/ && /Components:[^\n]*main/ {
           for (i=1;i<=NF;i++) if ($i ~ /^URIs:/) { split($i,a," "); print a[2]; exit } }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1=="deb" { o=2; if ($2 ~ /^\[/) { while ($o !~ /\]$/) o++; o++ }
                     if ($(o+1)=="bookworm") { print $o; exit } }' || true
}

make_base_images() {
  local mirror rootfs cc
  mirror=$(debian_mirror | awk 'NR==1')
  [ -n "$mirror" ] || fail "no Debian bookworm mirror in /etc/apt/sources.list*"
  rootfs=$WORK/rootfs
  say "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase --include=libgomp1 bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 30 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_MIN" >/dev/null

  # The distroless "cc" equivalent: only the files of glibc, libgcc, libstdc++, libgomp
  # and base-files, the loader cache, /tmp 1777 (a --tmpfs /tmp takes the image's mode)
  # and passwd/group with root and nonroot. No shell, no dpkg, no apt.
  cc=$WORK/cc
  mkdir -p "$cc"
  dpkg --admindir="$rootfs/var/lib/dpkg" -L base-files libc6 libgcc-s1 libstdc++6 libgomp1 |
    sed -E 's#^/(bin|sbin|lib|lib64)(/|$)#/usr/\1\2#' |
    grep -vE '^/usr/share/(doc|man|info|lintian)|^/usr/share/locale' |
    sort -u | sed 's#^/#./#' >"$WORK/cc.list"
  echo ./etc/ld.so.cache >>"$WORK/cc.list"
  tar -C "$rootfs" --no-recursion -cf - -T "$WORK/cc.list" | tar -C "$cc" -xf -
  for d in bin sbin lib lib64; do
    [ -L "$rootfs/$d" ] && ln -sfn "$(readlink "$rootfs/$d")" "$cc/$d"
  done
  install -d -m 1777 "$cc/tmp"
  install -d -m 0755 "$cc/etc" "$cc/root" "$cc/home/nonroot" "$cc/var"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$cc/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$cc/etc/group"
  [ ! -e "$cc/bin/sh" ] && [ ! -e "$cc/usr/bin/dpkg" ] || fail "the cc base still has a shell or dpkg"
  tar -C "$cc" -c . | podman import - "$BASE_CC" >/dev/null
  rm -rf "$rootfs" "$cc"
}

if podman image exists "$BASE_MIN" && podman image exists "$BASE_CC"; then
  say "base images $BASE_MIN and $BASE_CC already here (cached)"
else
  make_base_images
fi

# -------------------------------------------------------------------------- the image
say "building $IMAGE from Dockerfile (WARDEN_FROM=prebuilt, $(basename "$(dirname "$BIN")") binary)"
CTX=$WORK/context
mkdir -p "$CTX/deploy/container"
strip -o "$CTX/warden" "$BIN"
cp -a "$RUNTIME" "$CTX/openvino"
cp deploy/container/warden.toml "$CTX/deploy/container/"
podman build --pull=never --format docker -q -f Dockerfile -t "$IMAGE" \
  --build-arg WARDEN_FROM=prebuilt --build-arg RUNTIME_BASE="$BASE_CC" \
  --build-arg BUILD_BASE="$BASE_MIN" --build-arg PYTHON_BASE="$BASE_MIN" \
  "$CTX" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "podman build failed"; }
# A new binary leaves the previous image and its stages untagged; the machine keeps its
# storage between runs, so drop such dangling images (never a tagged one).
podman image prune -f >/dev/null 2>&1 || true
ok "image built: $(podman image inspect -f '{{.Id}}' "$IMAGE" | cut -c1-12), user $(podman image inspect -f '{{.Config.User}}' "$IMAGE")"
[ "$(podman image inspect -f '{{.Config.User}}' "$IMAGE")" = "5000:5000" ] || fail "image USER is not 5000:5000"

# ------------------------------------------------------------------ certificates etc.
"$BIN" certs-dev --out "$WORK/certs" >/dev/null
TOKEN=$("$BIN" token --key "$WORK/certs/jwt.key" --iss warden --aud warden --sub container-test --ttl 1800)
# The keys each run mounts, readable by the uid it runs as, and only by that uid.
certs_for() { # UID -> directory
  local d=$WORK/certs-$1
  if [ ! -d "$d" ]; then
    mkdir -m 0755 "$d"
    cp "$WORK/certs"/{server.pem,server.key,jwt.pub.pem} "$d/"
    if [ "$1" = 0 ]; then
      # Started as root, warden runs its gateway as 5001, which re-reads the
      # certificate and keys on rotation: readable by its group, as `certs-dev` makes them.
      chown 0:5001 "$d"/*
      chmod 0440 "$d"/*
    else
      chown "$1:$1" "$d"/*
      chmod 0400 "$d"/*
    fi
  fi
  echo "$d"
}
"$PY" scripts/kserve_example.py request nsfw .models/images/coffee.png "$WORK/nsfw.json"
"$PY" scripts/kserve_example.py reference .models/nsfw/1/model.onnx "$WORK/nsfw.json" >"$WORK/nsfw.ref.json"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME [podman options...] -- [warden arguments...]: starts detached, prints nothing.
# Ports are published on loopback only, at free host ports ($REST_PORT, $GRPC_PORT).
start() {
  local name=$1
  shift
  local opts=()
  while [ "$1" != -- ]; do
    opts+=("$1")
    shift
  done
  shift
  CONTAINERS+=("$name")
  local try
  for try in 1 2 3; do
    # A free port can be taken by another process before podman binds it: try again.
    REST_PORT=$(free_port)
    GRPC_PORT=$(free_port)
    podman rm -f -t 0 "$name" >/dev/null 2>&1 || true # left by an interrupted run
    # (podman's stderr: without systemd it cannot schedule the image's HEALTHCHECK and
    # says so; check_healthcheck runs it by hand.)
    if podman run -d --name "$name" "${opts[@]}" \
      -p "127.0.0.1:$REST_PORT:8443" -p "127.0.0.1:$GRPC_PORT:9178" \
      "$IMAGE" "$@" >/dev/null 2>>"$WORK/podman-run.log"; then
      return 0
    fi
  done
  cat "$WORK/podman-run.log"
  fail "podman run $name failed"
}

# Waits for /v2/health/ready over verified TLS; fails with the logs if the container exits.
wait_ready() {
  local name=$1 i
  for i in $(seq 1 600); do
    if curl -sf --cacert "$WORK/certs/ca.pem" "https://localhost:$REST_PORT/v2/health/ready" >/dev/null 2>&1; then
      return 0
    fi
    if [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
      podman logs "$name" 2>&1 | tail -n 40
      fail "$name exited before it was ready"
    fi
    sleep 0.2
  done
  podman logs "$name" 2>&1 | tail -n 40
  fail "$name not ready after 120 s"
}

# A real inference over TLS with the token, compared with OpenVINO's Python API.
check_inference() {
  local name=$1 code
  code=$(curl -s -o "$WORK/$name.out.json" -w '%{http_code}' --cacert "$WORK/certs/ca.pem" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data-binary @"$WORK/nsfw.json" "https://localhost:$REST_PORT/v2/models/nsfw/infer")
  [ "$code" = 200 ] || fail "$name: infer answered $code: $(head -c 300 "$WORK/$name.out.json")"
  "$PY" - "$WORK/$name.out.json" "$WORK/nsfw.ref.json" <<'PY' || fail "$name: inference result differs from OpenVINO's"
import json, sys
got = json.load(open(sys.argv[1]))
ref = json.load(open(sys.argv[2]))["outputs"]
assert got["model_name"] == "nsfw", got
(out,) = got["outputs"]
want = ref[out["name"]]
assert out["shape"] == want["shape"], (out["shape"], want["shape"])
# The server runs OpenVINO's CPU default (bf16 where the CPU has AMX), the reference f32.
diff = max(abs(a - b) for a, b in zip(out["data"], want["data"]))
assert diff <= 0.02, f"max |diff| {diff}"
assert out["data"][0] > 0.9, out["data"]  # coffee.png is safe for work
print(f"    sfw {out['data'][0]:.4f} (OpenVINO Python API f32: {want['data'][0]:.4f})")
PY
  ok "$name: TLS + token inference equals OpenVINO's Python API"
  # (A GET: a POST refused before its body is read can reach curl as an HTTP/2 stream
  # error instead of the 401.)
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/certs/ca.pem" \
    "https://localhost:$REST_PORT/v2/models/nsfw" || true)
  [ "$code" = 401 ] || fail "$name: a call without a token answered $code, not 401"
  ok "$name: no token -> 401"
}

# The gRPC listener on the seed's port 9178 (--port), TLS verified, token in metadata.
check_grpc() {
  local name=$1
  "$PY" - "$GRPC_PORT" "$WORK/certs/ca.pem" "$TOKEN" "$WORK/nsfw.json" "$WORK/nsfw.ref.json" <<'PY' || fail "$name: gRPC inference failed"
import json, sys
import numpy as np
import tritonclient.grpc as g
port, ca, token, req, ref = sys.argv[1:]
c = g.InferenceServerClient(f"localhost:{port}", ssl=True, root_certificates=ca)
body = json.load(open(req))["inputs"][0]
x = np.array(body["data"], dtype=np.float32).reshape(body["shape"])
i = g.InferInput(body["name"], x.shape, "FP32")
i.set_data_from_numpy(x)
r = c.infer("nsfw", [i], headers={"authorization": f"Bearer {token}"})
(name, want), = json.load(open(ref))["outputs"].items()
got = r.as_numpy(name).ravel()
assert np.max(np.abs(got - np.array(want["data"]))) <= 0.02, (got, want["data"])
try:
    c.infer("nsfw", [i])
    raise SystemExit("a gRPC call without a token was served")
except g.InferenceServerException as e:
    assert "UNAUTHENTICATED" in str(e.status()), e.status()
PY
  ok "$name: gRPC + TLS + token inference on the seed's port 9178; no token -> UNAUTHENTICATED"
}

# The image's own HEALTHCHECK (`warden health` over loopback inside the container).
check_healthcheck() {
  podman healthcheck run "$1" >/dev/null 2>&1 || fail "$1: the image's HEALTHCHECK fails on a ready server"
  ok "$1: the image's HEALTHCHECK passes"
}

# Host PIDs of the supervisor (the container's PID 1), the gateway and the backend.
pids() {
  local name=$1 p1 c
  p1=$(podman inspect -f '{{.State.Pid}}' "$name")
  SUP=$p1 GW= BE=
  for c in $(cat /proc/"$p1"/task/*/children); do
    case "$(tr '\0' ' ' </proc/"$c"/cmdline)" in
      *" gateway "*) GW=$c ;;
      *" backend "*) BE=$c ;;
    esac
  done
  [ -n "$GW" ] && [ -n "$BE" ] || fail "$name: gateway or backend process not found under PID 1"
  [ "$(awk '/^NSpid:/ {print $NF}' /proc/"$p1"/status)" = 1 ] || fail "$name: the supervisor is not PID 1"
}

field() { awk -v k="$2:" '$1==k { $1=""; sub(/^ /,""); print }' /proc/"$1"/status; }

# expect PID ROLE UID CAPS NNP: uid (all four), every capability set, NoNewPrivs, Seccomp 2.
# CAPS is "none" (every set 0, the bounding set too) or "kept" (root's default set).
expect() {
  local pid=$1 role=$2 uid=$3 caps=$4 nnp=$5 set v
  [ "$(field "$pid" Uid)" = "$uid $uid $uid $uid" ] || fail "$role: Uid is '$(field "$pid" Uid)', want $uid"
  if [ "$caps" = none ]; then
    for set in CapInh CapPrm CapEff CapBnd CapAmb; do
      v=$(field "$pid" $set)
      [ "$v" = 0000000000000000 ] || fail "$role: $set is $v, want 0"
    done
  else
    [ "$(field "$pid" CapEff)" != 0000000000000000 ] || fail "$role: root supervisor has no capabilities"
  fi
  [ "$(field "$pid" NoNewPrivs)" = "$nnp" ] || fail "$role: NoNewPrivs $(field "$pid" NoNewPrivs), want $nnp"
  [ "$(field "$pid" Seccomp)" = 2 ] || fail "$role: Seccomp $(field "$pid" Seccomp), want 2 (filter)"
  printf '    %-10s uid %-5s CapEff %s CapBnd %s NoNewPrivs %s Seccomp %s (%s filters)\n' "$role" "$uid" \
    "$(field "$pid" CapEff)" "$(field "$pid" CapBnd)" "$(field "$pid" NoNewPrivs)" \
    "$(field "$pid" Seccomp)" "$(field "$pid" Seccomp_filters)"
}

# The socket directory in the container's /tmp tmpfs: MODE UID GID as `stat` prints them.
socket_dir() {
  local got
  got=$(stat -c '%a %u %g' /proc/"$SUP"/root/tmp/warden)
  [ "$got" = "$2" ] || fail "$1: socket directory /tmp/warden is '$got', want '$2'"
  printf '    socket dir /tmp/warden: mode %s\n' "$got"
}

# The backend stacks its own seccomp filter on the runtime's.
backend_own_filter() {
  local name=$1
  [ "$(field "$BE" Seccomp_filters)" -gt "$(field "$SUP" Seccomp_filters)" ] ||
    fail "$name: the backend has no seccomp filter beyond the container runtime's"
}

HARDEN=(--cap-drop=ALL --security-opt no-new-privileges)
SEED=(--read-only --tmpfs /tmp -v "$MODELS/:/models:ro")
MODEL_ARGS=(--model_path /models/nsfw/ --model_name nsfw --port 9178)

# ------------------------------------------------- 1. the seed's flags, no key mounted
say "seed flags without certificates: refused, naming the missing file"
start wt-nocerts --user "$(id -u):$(id -g)" "${SEED[@]}" -- "${MODEL_ARGS[@]}"
if ! timeout 120 podman wait wt-nocerts >"$WORK/nocerts.code"; then fail "wt-nocerts did not exit"; fi
code=$(cat "$WORK/nocerts.code")
podman logs wt-nocerts >"$WORK/nocerts.log" 2>&1
[ "$code" != 0 ] || fail "started without a certificate (exit 0)"
grep -q /etc/warden/certs/server.pem "$WORK/nocerts.log" ||
  { cat "$WORK/nocerts.log"; fail "the refusal does not name /etc/warden/certs/server.pem"; }
ok "no certificate mounted -> exit $code: $(grep -m1 -o '[^ ]*error.*server.pem[^"]*' "$WORK/nocerts.log" | head -c 160)"

# ---------------------------------------------- 2. the seed's exact run, keys mounted
U=$(id -u)
G=$(id -g)
say "seed flags: --user $U:$G --read-only --tmpfs /tmp -v models:/models:ro -p 9178 (+ certificates)"
start wt-seed --user "$U:$G" "${SEED[@]}" -v "$(certs_for "$U"):/etc/warden/certs:ro" -- "${MODEL_ARGS[@]}"
wait_ready wt-seed
check_healthcheck wt-seed
check_inference wt-seed
check_grpc wt-seed
pids wt-seed
if [ "$U" = 0 ]; then
  # Root with the runtime's default capabilities: the supervisor keeps root, the
  # gateway drops to 5001 and the backend to 5000, each with every capability set empty.
  expect "$SUP" supervisor 0 kept 0
  expect "$GW" gateway 5001 none 1
  expect "$BE" backend 5000 none 1
  socket_dir wt-seed "2750 5000 5001"
else
  expect "$SUP" supervisor "$U" none 0
  expect "$GW" gateway "$U" none 1
  expect "$BE" backend "$U" none 1
  socket_dir wt-seed "700 $U $G"
fi
backend_own_filter wt-seed
ok "wt-seed: process identities as documented"
podman rm -f -t 30 wt-seed >/dev/null 2>&1

# ------------------------------ 3. uid 5000, hardened; a graceful stop with a call in flight
say "--user 5000:5000 --cap-drop=ALL --security-opt no-new-privileges"
start wt-5000 --user 5000:5000 "${HARDEN[@]}" "${SEED[@]}" -v "$(certs_for 5000):/etc/warden/certs:ro" -- "${MODEL_ARGS[@]}"
wait_ready wt-5000
check_inference wt-5000
pids wt-5000
expect "$SUP" supervisor 5000 none 1
expect "$GW" gateway 5000 none 1
expect "$BE" backend 5000 none 1
socket_dir wt-5000 "700 5000 5000"
backend_own_filter wt-5000
ok "wt-5000: process identities as documented"

say "podman stop with a call in flight: PID 1 takes SIGTERM, the gateway finishes the call"
# The client sends the headers and half the body, waits until the gateway has logged
# that it is stopping, then sends the rest: the call is in flight across the SIGTERM.
rm -f "$WORK/half" "$WORK/go"
"$PY" - "$REST_PORT" "$WORK/certs/ca.pem" "$TOKEN" "$WORK/nsfw.json" "$WORK" >"$WORK/drain.out" 2>&1 <<'PY' &
import json, os, socket, ssl, sys, time
port, ca, token, req, work = sys.argv[1:]
body = open(req, "rb").read()
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("localhost", int(port))), server_hostname="localhost")
s.sendall((f"POST /v2/models/nsfw/infer HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode())
half = len(body) // 2
s.sendall(body[:half])
open(os.path.join(work, "half"), "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(os.path.join(work, "go")):
    if time.monotonic() > deadline:
        raise SystemExit("never told to go on")
    time.sleep(0.05)
s.sendall(body[half:])
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if rest and b"content-length" in head.lower():
        n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
        if len(rest) >= n:
            break
head, _, rest = data.partition(b"\r\n\r\n")
print(head.split(b"\r\n")[0].decode())
out = json.loads(rest)
print("sfw", out["outputs"][0]["data"][0])
PY
CLIENT=$!
for _ in $(seq 1 300); do [ -f "$WORK/half" ] && break; sleep 0.1; done
[ -f "$WORK/half" ] || fail "the drain client never sent its first half"
podman stop -t 60 wt-5000 >/dev/null 2>&1 &
STOPPER=$!
for _ in $(seq 1 600); do
  podman logs wt-5000 2>&1 | grep -q "gateway stopping" && break
  sleep 0.1
done
podman logs wt-5000 2>&1 | grep -q "gateway stopping" || fail "the gateway never logged that it was stopping after SIGTERM"
touch "$WORK/go"
wait "$CLIENT" || { cat "$WORK/drain.out"; fail "the in-flight call was cut by the stop"; }
wait "$STOPPER" || fail "podman stop failed"
grep -q "^HTTP/1.1 200" "$WORK/drain.out" || { cat "$WORK/drain.out"; fail "the in-flight call did not answer 200"; }
exit_code=$(podman inspect -f '{{.State.ExitCode}}' wt-5000)
podman logs wt-5000 >"$WORK/5000.log" 2>&1
[ "$exit_code" = 0 ] || { tail -n 20 "$WORK/5000.log"; fail "after podman stop, exit code $exit_code, want 0"; }
grep -q '"event":"stop"' "$WORK/5000.log" || fail "no audit stop record after the drain"
! grep -q "stop deadline reached" "$WORK/5000.log" || fail "the gateway gave up on calls in flight"
ok "podman stop: the in-flight call answered $(head -n1 "$WORK/drain.out" | cut -d' ' -f2-) ($(tail -n1 "$WORK/drain.out")), exit code 0"

# ---------------------------------------------------------- 4. an arbitrary uid (OpenShift)
say "--user 1234:1234 (arbitrary uid, no passwd entry) --cap-drop=ALL --security-opt no-new-privileges"
start wt-1234 --user 1234:1234 "${HARDEN[@]}" "${SEED[@]}" -v "$(certs_for 1234):/etc/warden/certs:ro" -- "${MODEL_ARGS[@]}"
wait_ready wt-1234
check_inference wt-1234
pids wt-1234
expect "$SUP" supervisor 1234 none 1
expect "$GW" gateway 1234 none 1
expect "$BE" backend 1234 none 1
socket_dir wt-1234 "700 1234 1234"
backend_own_filter wt-1234
ok "wt-1234: process identities as documented"
podman rm -f -t 30 wt-1234 >/dev/null 2>&1

say "--user 1234:0 (OpenShift's way: arbitrary uid, group root) --cap-drop=ALL --security-opt no-new-privileges"
start wt-1234-0 --user 1234:0 "${HARDEN[@]}" "${SEED[@]}" -v "$(certs_for 1234):/etc/warden/certs:ro" -- "${MODEL_ARGS[@]}"
wait_ready wt-1234-0
check_inference wt-1234-0
pids wt-1234-0
expect "$SUP" supervisor 1234 none 1
expect "$GW" gateway 1234 none 1
expect "$BE" backend 1234 none 1
socket_dir wt-1234-0 "700 1234 0"
ok "wt-1234-0: process identities as documented"
podman rm -f -t 30 wt-1234-0 >/dev/null 2>&1

# ------------------------------------------------------------------------- 5. root
say "--user 0:0 --cap-drop=ALL: refused (cannot switch to the service users)"
start wt-root-nocaps --user 0:0 "${HARDEN[@]}" "${SEED[@]}" -v "$(certs_for 0):/etc/warden/certs:ro" -- "${MODEL_ARGS[@]}"
if ! timeout 120 podman wait wt-root-nocaps >"$WORK/rootnocaps.code"; then fail "wt-root-nocaps did not exit"; fi
podman logs wt-root-nocaps >"$WORK/rootnocaps.log" 2>&1
[ "$(cat "$WORK/rootnocaps.code")" != 0 ] || fail "root without capabilities started"
grep -q "started as root without" "$WORK/rootnocaps.log" || { cat "$WORK/rootnocaps.log"; fail "the refusal does not say why"; }
ok "root without capabilities -> exit $(cat "$WORK/rootnocaps.code"): $(grep -m1 -o 'started as root without[^.]*' "$WORK/rootnocaps.log")"

say "--user 0:0 --cap-drop=ALL --cap-add=<the documented seven>: dropped (backend 5000, gateway 5001)"
start wt-root --user 0:0 --cap-drop=ALL --cap-add=CHOWN,FOWNER,FSETID,SETUID,SETGID,SETPCAP,KILL \
  --security-opt no-new-privileges "${SEED[@]}" -v "$(certs_for 0):/etc/warden/certs:ro" -- "${MODEL_ARGS[@]}"
wait_ready wt-root
check_inference wt-root
pids wt-root
expect "$SUP" supervisor 0 kept 1
expect "$GW" gateway 5001 none 1
expect "$BE" backend 5000 none 1
socket_dir wt-root "2750 5000 5001"
backend_own_filter wt-root
ok "wt-root: process identities as documented"
podman rm -f -t 30 wt-root >/dev/null 2>&1

say "container test: $PASSED passed, 0 failed in $(($(date +%s) - START)) s; image $IMAGE kept"
