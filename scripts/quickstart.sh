#!/usr/bin/env bash
# The whole mesh on one machine, in one command (as root, on Debian 12):
#   0. scripts/setup.sh installs the Debian packages the build and the demo
#      need (it names each one and the apt-get command it runs);
#   1. builds ambientctl, istiod and ztunnel (debug; cached in CARGO_TARGET_DIR):
#      the first build takes about 9 minutes on 2 cores, later ones seconds;
#   2. `ambientctl local up --config examples/local-demo`: istiod, two nodes
#      (network namespaces) with a ztunnel each, and three pods run as
#      processes: a python3 HTTP server on node-b, and `client` and
#      `intruder` on node-a;
#   3. sends one request from each client to http://server.demo.svc.cluster.local/
#      through both ztunnels (HBONE, mutual TLS): the L4 AuthorizationPolicy
#      allows the client's service account and denies the intruder's;
#   4. prints a short report (requests, identities from ztunnel's access log
#      and metrics, where logs and metrics are), then `ambientctl local down`
#      removes everything. `--keep` leaves the mesh running instead.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/quickstart.sh [--keep]   (as root)"; sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
keep=false
for arg in "$@"; do
    case "$arg" in
        --keep) keep=true ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[[ $(id -u) == 0 ]] || { echo "quickstart: run as root (network namespaces and iptables need it)" >&2; exit 1; }

echo "== checking system packages (scripts/setup.sh)"
scripts/setup.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ambient-mesh/target}"
state="${AMBIENT_STATE:-/var/run/ambient-mesh-demo}"
bin="$CARGO_TARGET_DIR/debug"

if [[ -x "$bin/ambientctl" && -x "$bin/istiod" && -x "$bin/ztunnel" ]]; then
    echo "== building ambientctl, istiod and ztunnel (up to date in seconds)"
else
    echo "== building ambientctl, istiod and ztunnel: the first build takes about 9 minutes on 2 cores"
fi
cargo build --locked -p ambientctl -p istiod -p ztunnel --bins

ctl() { "$bin/ambientctl" local "$1" --state "$state" "${@:2}"; }
strip() { sed -e 's/\x1b\[[0-9;]*m//g'; }

if [[ -e "$state/state.json" ]]; then
    echo "== a previous demo mesh is recorded in $state: taking it down first"
    ctl down
fi
if ! $keep; then
    trap 'echo "== ambientctl local down"; ctl down' EXIT
fi

echo "== ambientctl local up --config examples/local-demo --state $state"
ctl up --config examples/local-demo

# GET the server from a pod; prints the HTTP status, or "denied" when the
# connection is refused or reset.
get() {
    ctl exec "$1" -n demo -- python3 -c '
import sys, urllib.request
try:
    print(urllib.request.urlopen("http://server.demo.svc.cluster.local/", timeout=5).status)
except Exception as e:
    print("denied (%s)" % type(e).__name__); sys.exit(1)'
}

echo "== client -> server (service account client: allowed by policy)"
allowed=""
for _ in $(seq 1 20); do
    if allowed=$(get client); then break; fi
    sleep 0.5
done
echo "   $allowed"
[[ "$allowed" == 200 ]] || { echo "quickstart: the client was not let through" >&2; exit 1; }

echo "== intruder -> server (service account intruder: denied by policy)"
if denied=$(get intruder); then
    echo "quickstart: the intruder got through ($denied)" >&2; exit 1
fi
echo "   $denied"

node_b=$(ctl status -o json | python3 -c 'import json,sys; print(next(n["netns"] for n in json.load(sys.stdin)["nodes"] if n["name"] == "node-b"))')
sleep 0.5
echo
echo "== report"
echo "requests: client -> server: $allowed (allowed); intruder -> server: $denied"
echo "identities in node-b's ztunnel access log ($state/logs/ztunnel-node-b.log):"
strip < "$state/logs/ztunnel-node-b.log" | grep -E 'access: connection (complete|refused)' \
    | sed -E 's/.*src.identity=([^ ]+).*access: (connection [a-z]+)( .*error=(.*))?/  \1: \2 \4/' | sed -E 's/(connection complete).*/\1/' | sort | uniq -c
echo "istio_tcp_connections_opened_total on node-b (ip netns exec $node_b curl http://127.0.0.1:15020/metrics):"
ip netns exec "$node_b" python3 -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1:15020/metrics").read().decode())' \
    | grep '^istio_tcp_connections_opened_total' \
    | sed -E 's/.*source_principal="([^"]+)".*connection_security_policy="([^"]+)"\} ([0-9]+)/  \1 -> server: \3 connection(s), \2/'
echo "logs: $state/logs (ambientctl local logs POD -n demo --state $state); status: ambientctl local status --state $state"
if $keep; then
    echo "the mesh keeps running; stop it with: $bin/ambientctl local down --state $state"
fi
