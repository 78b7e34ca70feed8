#!/usr/bin/env bash
# Builds every fuzz target in fuzz/ and runs each briefly on its seed
# corpus, so CI proves they build and do not panic on the seeds or a few
# thousand mutations. Longer runs: see fuzz/README.md.
# Needs the nightly toolchain; installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
RUNS=${FUZZ_RUNS:-2000}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/ambient-mesh/fuzz-target}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz-build: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-build: cargo-fuzz is missing; installing cargo-fuzz@$CARGO_FUZZ_VERSION" >&2
    cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
    cargo +nightly fuzz --version >/dev/null 2>&1 || {
        echo "fuzz-build: cargo-fuzz is still not usable after installing it" >&2
        exit 1
    }
fi

cargo +nightly fuzz build -O

# Each run works on a scratch copy of the seeds, leaving fuzz/corpus clean.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$scratch/$target"
    cp fuzz/corpus/"$target"/* "$scratch/$target"/ 2>/dev/null || true
    if cargo +nightly fuzz run -O "$target" "$scratch/$target" -- \
        -runs="$RUNS" -max_total_time=30 -timeout=10 >"$scratch/$target.log" 2>&1; then
        echo "fuzz-build: $target ok"
    else
        echo "fuzz-build: $target FAILED; its log:" >&2
        tail -n 40 "$scratch/$target.log" >&2
        failed+=("$target")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz-build: failed targets: ${failed[*]}" >&2
    exit 1
fi
