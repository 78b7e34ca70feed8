#!/usr/bin/env bash
# Smoke test of the peers built by scripts/test-peers.sh: start etcd and
# kube-apiserver on loopback (random free ports, everything in a temp dir),
# wait for /readyz with a static bearer token, list namespaces, then stop both.
#
#   scripts/peers/smoke-apiserver.sh            # build/reuse peers, then smoke
#   KEEP_TMP=1 scripts/peers/smoke-apiserver.sh # keep the temp dir (logs)
#
# Needs: curl, openssl, python3 (free ports).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
"$REPO_ROOT/scripts/test-peers.sh" etcd kube-apiserver >/dev/null
BIN=$("$REPO_ROOT/scripts/test-peers.sh" --print-dir)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/smoke-apiserver.XXXXXX")
ETCD_PID='' APISERVER_PID=''
cleanup() {
  local pid
  for pid in $APISERVER_PID $ETCD_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "smoke: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# Ask the kernel for N distinct free loopback ports.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r CLIENT_PORT PEER_PORT SECURE_PORT < <(free_ports 3)

# --- etcd --------------------------------------------------------------------
"$BIN/etcd" \
  --name smoke \
  --data-dir "$TMP/etcd" \
  --listen-client-urls "http://127.0.0.1:$CLIENT_PORT" \
  --advertise-client-urls "http://127.0.0.1:$CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "smoke=http://127.0.0.1:$PEER_PORT" \
  >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!

start=$SECONDS
until curl -fsS "http://127.0.0.1:$CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"'; do
  if ! kill -0 "$ETCD_PID" 2>/dev/null || (( SECONDS - start > 30 )); then
    echo "smoke: etcd did not become healthy; log:" >&2; tail -n 30 "$TMP/etcd.log" >&2; exit 1
  fi
  sleep 0.2
done
echo "smoke: etcd healthy on 127.0.0.1:$CLIENT_PORT after $((SECONDS - start))s"

# --- kube-apiserver ----------------------------------------------------------
TOKEN=$(openssl rand -hex 16)
echo "$TOKEN,admin,admin,system:masters" >"$TMP/tokens.csv"
openssl ecparam -name prime256v1 -genkey -noout -out "$TMP/sa.key" 2>/dev/null
openssl ec -in "$TMP/sa.key" -pubout -out "$TMP/sa.pub" 2>/dev/null

APISERVER_FLAGS=(
  --etcd-servers="http://127.0.0.1:$CLIENT_PORT"
  --bind-address=127.0.0.1
  --advertise-address=127.0.0.1
  --secure-port="$SECURE_PORT"
  --cert-dir="$TMP/certs"
  --token-auth-file="$TMP/tokens.csv"
  --service-account-issuer=https://kubernetes.default.svc.cluster.local
  --service-account-key-file="$TMP/sa.pub"
  --service-account-signing-key-file="$TMP/sa.key"
  --service-cluster-ip-range=10.96.0.0/16
  --authorization-mode=RBAC
)
"$BIN/kube-apiserver" "${APISERVER_FLAGS[@]}" >"$TMP/apiserver.log" 2>&1 &
APISERVER_PID=$!

api() { curl -ksS --max-time 5 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$SECURE_PORT$1"; }
start=$SECONDS
until [[ "$(api /readyz 2>/dev/null)" == ok ]]; do
  if ! kill -0 "$APISERVER_PID" 2>/dev/null || (( SECONDS - start > 120 )); then
    echo "smoke: kube-apiserver not ready; log:" >&2; tail -n 40 "$TMP/apiserver.log" >&2; exit 1
  fi
  sleep 0.5
done
echo "smoke: kube-apiserver ready on 127.0.0.1:$SECURE_PORT after $((SECONDS - start))s"

version=$(api /version | python3 -c 'import json,sys; print(json.load(sys.stdin)["gitVersion"])')
namespaces=$(api /api/v1/namespaces | python3 -c \
  'import json,sys; print(" ".join(i["metadata"]["name"] for i in json.load(sys.stdin)["items"]))')
echo "smoke: /version gitVersion=$version; namespaces: $namespaces"
[[ " $namespaces " == *" default "* ]] || { echo "smoke: no default namespace" >&2; exit 1; }
echo "smoke: OK"
