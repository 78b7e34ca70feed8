#!/usr/bin/env bash
# The project's whole test run: formatting, lints and every test, against
# real peers (etcd, kube-apiserver, helm, h2spec) built by test-peers.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-peers.sh   # idempotent: a few seconds once the peers are built
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
