#!/usr/bin/env bash
# Starts the benchmark peer: Seldon MLServer 1.7.1 with the OpenVINO runtime of
# ov_runtime.py on 127.0.0.1 (plain HTTP and gRPC, internal ports), behind HAProxy,
# which terminates TLS 1.3 and verifies an ES256 JWT on every request.
#
#   bash bench/peer/start.sh WORKDIR MODELS_DIR CERT_PEM KEY_PEM JWT_PUB_PEM \
#        HTTPS_PORT GRPCS_PORT PLUGIN_JSON
#
# MODELS_DIR is an OVMS-layout repository; light_resnet50/1/model.onnx and
# blazeface/1/model.tflite are served (the models compared), anything else is ignored.
# Writes to WORKDIR: settings.json, peer-models/<name>/model-settings.json, ov_runtime.py,
# combined.pem, haproxy.cfg, mlserver.log, haproxy.log, mlserver.pid, haproxy.pid.
# Returns once both models answer ready on MLServer's internal port and HAProxy
# listens on both public ports. Stop with bench/peer/stop.sh WORKDIR.
# Env: PEER_VENV (default <repo>/.bench/peer-venv), PEER_HTTP_PORT (18580),
# PEER_GRPC_PORT (18581), PEER_READY_TIMEOUT (180 s).
set -euo pipefail

if [[ $# -ne 8 ]]; then
  echo "usage: $0 WORKDIR MODELS_DIR CERT_PEM KEY_PEM JWT_PUB_PEM HTTPS_PORT GRPCS_PORT PLUGIN_JSON" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
abs() { (cd "$(dirname "$1")" && echo "$(pwd)/$(basename "$1")"); }
mkdir -p "$1"
work=$(cd "$1" && pwd)
models_dir=$(cd "$2" && pwd)
cert=$(abs "$3")
key=$(abs "$4")
jwt_pub=$(abs "$5")
https_port=$6
grpcs_port=$7
plugin_json=$8
venv=${PEER_VENV:-$repo/.bench/peer-venv}
http_port=${PEER_HTTP_PORT:-18580}
grpc_port=${PEER_GRPC_PORT:-18581}
ready_timeout=${PEER_READY_TIMEOUT:-180}

# Models served, and the file of each inside MODELS_DIR.
declare -A model_file=([light_resnet50]=light_resnet50/1/model.onnx [blazeface]=blazeface/1/model.tflite)

launched=0
die() {
  echo "peer/start.sh: $*" >&2
  # Leave nothing half-started behind.
  ((launched)) && bash "$here/stop.sh" "$work" >&2
  exit 1
}
for f in "$cert" "$key" "$jwt_pub"; do [[ -r "$f" ]] || die "cannot read $f"; done
for m in "${!model_file[@]}"; do [[ -r "$models_dir/${model_file[$m]}" ]] || die "missing $models_dir/${model_file[$m]}"; done
[[ -x "$venv/bin/mlserver" ]] || die "no MLServer in $venv (run bench/peer/setup.sh)"
"$venv/bin/python" -c 'import json, sys; o = json.loads(sys.argv[1]); assert isinstance(o, dict)' "$plugin_json" \
  || die "PLUGIN_JSON is not a JSON object: $plugin_json"

if ! command -v haproxy >/dev/null 2>&1; then
  echo "peer/start.sh: installing haproxy" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi
# jwt_verify and friends came with HAProxy 2.5; 2.6 is the LTS that has them.
hver=$(haproxy -v | sed -n 's/^HAProxy version \([0-9]*\.[0-9]*\).*/\1/p' | head -n1)
[[ -n "$hver" ]] && printf '%s\n2.6\n' "$hver" | sort -V -C || die "haproxy $hver is too old (need 2.6+ for jwt_verify)"

# A previous instance in the same WORKDIR: stop it first.
bash "$here/stop.sh" "$work"

# The internal ports must be free, or readiness would be read off another server.
for p in "$http_port" "$grpc_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "127.0.0.1:$p is already in use (set PEER_HTTP_PORT / PEER_GRPC_PORT)"
  fi
done

# --------------------------------------------------------------- MLServer config
cp "$here/ov_runtime.py" "$work/ov_runtime.py"
[[ "$models_dir" != "$work/peer-models"* ]] || die "MODELS_DIR must not be inside $work/peer-models"
rm -rf "$work/peer-models"
"$venv/bin/python" - "$work" "$models_dir" "$http_port" "$grpc_port" "$plugin_json" \
  "light_resnet50=${model_file[light_resnet50]}" "blazeface=${model_file[blazeface]}" <<'PY'
import json, os, sys

work, models_dir, http_port, grpc_port, plugin_json, *models = sys.argv[1:]
settings = {
    "debug": False,                 # no per-request access logs
    "host": "127.0.0.1",
    "http_port": int(http_port),
    "grpc_port": int(grpc_port),
    "parallel_workers": 0,          # inference in the server process (workers do not start here)
    "metrics_endpoint": None,       # no metrics server, no Prometheus middleware
    "grpc_max_message_length": 64 * 1024 * 1024,
    "load_models_at_startup": True,
    # model_repository_root: "mlserver start WORKDIR" makes it WORKDIR, which it
    # searches for model-settings.json (here: WORKDIR/peer-models/<name>/).
}
with open(os.path.join(work, "settings.json"), "w") as f:
    json.dump(settings, f, indent=1)
for spec in models:
    name, rel = spec.split("=", 1)
    d = os.path.join(work, "peer-models", name)
    os.makedirs(d, exist_ok=True)
    ms = {
        "name": name,
        "implementation": "ov_runtime.OpenVINORuntime",
        "parameters": {
            "uri": os.path.join(models_dir, rel),
            "extra": {"plugin_config": json.loads(plugin_json)},
        },
    }
    with open(os.path.join(d, "model-settings.json"), "w") as f:
        json.dump(ms, f, indent=1)
PY

# ------------------------------------------------------------------ MLServer
# Its own session (process group), so stop.sh can end it with its children.
: >"$work/mlserver.log"
(
  cd "$work"
  export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}"
  exec setsid "$venv/bin/mlserver" start "$work" >>"$work/mlserver.log" 2>&1 </dev/null
) &
echo $! >"$work/mlserver.pid"
launched=1
mlpid=$(cat "$work/mlserver.pid")

deadline=$((SECONDS + ready_timeout))
for m in "${!model_file[@]}"; do
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/v2/models/$m/ready" || true)" == 200 ]]; do
    if ! kill -0 "$mlpid" 2>/dev/null; then
      tail -n 30 "$work/mlserver.log" >&2
      die "MLServer exited before $m was ready (log: $work/mlserver.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$work/mlserver.log" >&2
      die "$m not ready after ${ready_timeout}s (log: $work/mlserver.log)"
    fi
    sleep 0.5
  done
done
# MLServer's gRPC server starts with the REST one; make sure it listens too.
until (exec 3<>"/dev/tcp/127.0.0.1/$grpc_port") 2>/dev/null; do
  ((SECONDS < deadline)) || die "MLServer gRPC port $grpc_port not listening"
  sleep 0.3
done

# ------------------------------------------------------------------- HAProxy
umask 077
cat "$cert" "$key" >"$work/combined.pem"
umask 022

# JWT checks, the same in both frontends: a Bearer token, signed ES256 with the
# bench key (header alg ES256 too), iss "warden-bench", aud "warden" (a string),
# exp in the future, nbf (when present) not in the future. Anything else gets 401
# (gRPC clients see UNAUTHENTICATED). Health and metadata paths are no exception:
# start.sh checks readiness on MLServer's internal port.
jwt_rules() {
  cat <<EOF
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.jwt_alg) var(txn.bearer),jwt_header_query('\$.alg') if { var(txn.bearer) -m found }
    http-request set-var(txn.jwt_iss) var(txn.bearer),jwt_payload_query('\$.iss') if { var(txn.bearer) -m found }
    http-request set-var(txn.jwt_aud) var(txn.bearer),jwt_payload_query('\$.aud') if { var(txn.bearer) -m found }
    http-request set-var(txn.jwt_exp) var(txn.bearer),jwt_payload_query('\$.exp','int') if { var(txn.bearer) -m found }
    http-request set-var(txn.jwt_nbf) var(txn.bearer),jwt_payload_query('\$.nbf','int') if { var(txn.bearer) -m found }
    http-request set-var(txn.now) date()
    acl jwt_found  var(txn.bearer) -m found
    acl jwt_alg_ok var(txn.jwt_alg) -m str ES256
    acl jwt_sig_ok http_auth_bearer,jwt_verify("ES256","$jwt_pub") -m int 1
    acl jwt_iss_ok var(txn.jwt_iss) -m str warden-bench
    acl jwt_aud_ok var(txn.jwt_aud) -m str warden
    acl jwt_exp_ok var(txn.jwt_exp),sub(txn.now) -m int gt 0
    acl jwt_nbf_set var(txn.jwt_nbf) -m found
    acl jwt_nbf_ok var(txn.jwt_nbf),sub(txn.now) -m int le 0
    http-request return status 401 content-type text/plain string "unauthorized" hdr www-authenticate Bearer unless jwt_found jwt_alg_ok jwt_sig_ok jwt_iss_ok jwt_aud_ok jwt_exp_ok
    http-request return status 401 content-type text/plain string "unauthorized" hdr www-authenticate Bearer if jwt_nbf_set !jwt_nbf_ok
EOF
}

cat >"$work/haproxy.cfg" <<EOF
# Generated by bench/peer/start.sh
global
    daemon
    pidfile $work/haproxy.pid
    nbthread 2
    maxconn 4096
    # Bodies are streamed, never inspected: the default buffer is enough;
    # 64 KiB cuts the number of buffer round trips for 3.5 MB JSON bodies.
    tune.bufsize 65536
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
    ssl-default-bind-options ssl-min-ver TLSv1.3

defaults
    mode http
    maxconn 4096
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-request 30s
    timeout http-keep-alive 120s
    timeout client-fin 5s
    timeout tunnel 120s

frontend rest_tls
    bind 127.0.0.1:$https_port ssl crt $work/combined.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3
$(jwt_rules)
    default_backend mlserver_rest

frontend grpc_tls
    bind 127.0.0.1:$grpcs_port ssl crt $work/combined.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3
$(jwt_rules)
    default_backend mlserver_grpc

backend mlserver_rest
    http-reuse always
    server mlserver 127.0.0.1:$http_port maxconn 1024

backend mlserver_grpc
    http-reuse always
    server mlserver 127.0.0.1:$grpc_port proto h2
EOF

haproxy -c -q -f "$work/haproxy.cfg" || die "haproxy.cfg does not check (see above)"
haproxy -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 </dev/null || { cat "$work/haproxy.log" >&2; die "haproxy did not start"; }
for p in "$https_port" "$grpcs_port"; do
  until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
    ((SECONDS < deadline)) || die "haproxy not listening on $p"
    sleep 0.2
  done
done
echo "peer ready: https://127.0.0.1:$https_port (REST), 127.0.0.1:$grpcs_port (gRPC);" \
  "MLServer pid $mlpid, HAProxy pid $(cat "$work/haproxy.pid")"
