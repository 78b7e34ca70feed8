#!/usr/bin/env bash
# The project's whole test run: formatting, lints and every test, against
# real peers (etcd, kube-apiserver, helm, h2spec) built by test-peers.sh.
# Ends with one summary line over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: scripts/test.sh   (as root; no options)"; exit 0 ;;
    "") ;;
    *) echo "test.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
esac

scripts/test-peers.sh   # idempotent: a few seconds once the peers are built
scripts/check-setup.sh  # scripts/setup.sh installs every program the code runs
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Supply chain: bans (one version per crate, no OpenSSL), licences, sources.
# Advisories need the RustSec database from GitHub, unreachable here.
cargo deny --log-level error check bans licenses sources

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# ambientctl's tests run the istiod and ztunnel binaries found beside it;
# `cargo test --workspace` builds them too, this says so explicitly.
cargo build --workspace --bins --locked
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
scripts/fuzz-build.sh || status=$?   # fuzz targets build and survive a few thousand runs
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "\ntests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
