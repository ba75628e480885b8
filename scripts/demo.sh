#!/usr/bin/env bash
# Sets everything up and runs a real Warden: TLS on https://localhost:8443, the Open-NSFW
# image classifier (a real ONNX model) in a sandboxed backend, JWT authentication.
# Prints a token and a curl command that classifies a real photo. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${WARDEN_DEMO_PORT:-8443}"
bash scripts/setup.sh
cargo build --release -p warden
BIN="$PWD/target/release/warden"
mkdir -p .demo
[ -f .demo/certs/ca.pem ] || "$BIN" certs-dev --out .demo/certs
.venv/bin/python scripts/kserve_example.py request nsfw .models/images/coffee.png .demo/nsfw-request.json

RUNTIME="$PWD/.runtime/openvino"
MODELS="$PWD/.models"
SOCKDIR="$PWD/.demo/sock"
CERTS="$PWD/.demo/certs"
POLICY="$PWD/policies/demo.toml"
if [ "$(id -u)" = 0 ]; then
  # The gateway re-reads its key, JWT key and policy after dropping to uid 5001
  # (reload on SIGHUP or change) and refuses to start if it could not.
  chgrp 5001 "$CERTS/server.key" && chmod 0640 "$CERTS/server.key"
  # The backend drops to uid 5000: it must be able to enter the model and runtime
  # folders. A checkout under a private home directory cannot, so stage a copy.
  p="$PWD"; reachable=1
  while [ "$p" != / ]; do [ $(( $(stat -c '%a' "$p") % 2 )) -eq 1 ] || reachable=0; p=$(dirname "$p"); done
  if [ "$reachable" = 0 ]; then
    STAGE=/var/tmp/warden-demo
    mkdir -p "$STAGE" && chmod 755 "$STAGE"
    cp -a "$RUNTIME" "$STAGE/" && cp -a "$MODELS" "$STAGE/models"
    rm -rf "$STAGE/certs" && cp -a "$CERTS" "$STAGE/certs" && cp "$POLICY" "$STAGE/demo.toml"
    RUNTIME="$STAGE/openvino"; MODELS="$STAGE/models"; CERTS="$STAGE/certs"; POLICY="$STAGE/demo.toml"
  fi
  SOCKDIR=/run/warden
  # The gateway drops to uid 5001 and rotates the audit log in its folder: the folder
  # must be the gateway's (it refuses to start otherwise), and reachable by it.
  AUDITDIR=/var/tmp/warden-demo-audit
  install -d -o 5001 -g 5001 -m 0750 "$AUDITDIR"
else
  AUDITDIR="$PWD/.demo/audit"
  mkdir -p "$AUDITDIR" && chmod 0750 "$AUDITDIR"
fi

"$BIN" serve \
  --model-path "$MODELS/nsfw" --model-name nsfw \
  --plugin-config '{"INFERENCE_PRECISION_HINT":"f32"}' \
  --bind-address 127.0.0.1 --rest-port "$PORT" --grpc-port $((PORT + 1)) \
  --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key" \
  --jwt-key "$CERTS/jwt.pub.pem" --jwt-issuer warden-demo --jwt-audience warden \
  --authz-policy "$POLICY" --audit-log "$AUDITDIR/audit.log" \
  --socket-dir "$SOCKDIR" --openvino-dir "$RUNTIME" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER' INT TERM EXIT
for _ in $(seq 1 300); do
  curl -sf --cacert .demo/certs/ca.pem "https://localhost:$PORT/v2/health/ready" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "warden exited; see the log above" >&2; exit 1; }
  sleep 0.2
done
TOKEN=$("$BIN" token --key .demo/certs/jwt.key --iss warden-demo --aud warden --sub demo-user --ttl 3600)
cat <<MSG

Warden is serving the Open-NSFW model on https://localhost:$PORT (TLS, JWT required).
A token (valid one hour):

  export TOKEN=$TOKEN

Classify a real photo (coffee.png; expect "data":[~0.996 (safe), ~0.004 (unsafe)]):

  curl --cacert .demo/certs/ca.pem -H "Authorization: Bearer \$TOKEN" \\
       --data-binary @.demo/nsfw-request.json https://localhost:$PORT/v2/models/nsfw/infer

Model metadata:  curl --cacert .demo/certs/ca.pem -H "Authorization: Bearer \$TOKEN" https://localhost:$PORT/v2/models/nsfw
Without a token: curl --cacert .demo/certs/ca.pem https://localhost:$PORT/v2/models/nsfw   (401)

Every decision is in the audit log:   tail -f $AUDITDIR/audit.log
Check its hash chain:                 target/release/warden audit verify $AUDITDIR/audit.log
Metrics (Prometheus, loopback only):  curl http://127.0.0.1:9180/metrics

Ctrl-C stops the server.
MSG
wait $SERVER
