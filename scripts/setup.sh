#!/usr/bin/env bash
# Installs the Debian packages the mesh needs, or reports what is missing.
#
#   scripts/setup.sh               build + run-time packages (what the Quickstart needs)
#   scripts/setup.sh --tests       also what the test suite needs (CI uses this)
#   scripts/setup.sh --check       only report; exit 1 if anything is missing
#   scripts/setup.sh --list        print "tool package" pairs, one per line, and exit
#   scripts/setup.sh --help
#
# Idempotent: when everything is present it only asks dpkg (well under a
# second). Installing needs root and apt-get (Debian 12 or newer).
# `scripts/check-setup.sh` fails when the code calls a program that is not in
# the TOOLS table below, so this list cannot silently fall behind.
set -euo pipefail

# Every external program the build, the binaries or the demo run, and the
# Debian package that provides it. "tool package" per line.
TOOLS_BUILD=(
    "cc build-essential"            # linker, and the C/C++ compiler for BoringSSL
    "cmake cmake"                   # boring-sys builds BoringSSL with cmake
    "clang clang"                   # bindgen (boring-sys) parses BoringSSL's headers
    "libclang.so libclang-dev"      # ... through libclang
    "git git"                       # boring-sys applies its patches with git
    "pkg-config pkg-config"
    "protoc protobuf-compiler"      # proto/build.rs (tonic-prost-build)
    "google/protobuf/any.proto libprotobuf-dev"  # the well-known .proto types
)
TOOLS_RUN=(
    "ip iproute2"                   # network namespaces, veths, routes
    "iptables-restore iptables"     # in-pod capture rules (iptables backend)
    "iptables-save iptables"
    "ip6tables-restore iptables"
    "ip6tables-save iptables"
    "nft nftables"                  # in-pod capture rules (nftables backend)
    "sysctl procps"                 # per-namespace sysctls (lib/netns)
    "kill procps"
    "python3 python3"               # the demo's pods (http.server, urllib)
    "update-ca-certificates ca-certificates"
)
TOOLS_TEST=(
    "python3-protobuf python3-protobuf"  # the upstream wire-shape checker
    "curl curl"
    "openssl openssl"               # scripts/peers/smoke-apiserver.sh
)

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

mode=install
with_tests=false
for arg in "$@"; do
    case "$arg" in
        --check) mode=check ;;
        --list) mode=list ;;
        --tests) with_tests=true ;;
        -h|--help) usage; exit 0 ;;
        *) echo "setup: unknown option: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

tools=("${TOOLS_BUILD[@]}" "${TOOLS_RUN[@]}")
if $with_tests || [[ $mode == list ]]; then tools+=("${TOOLS_TEST[@]}"); fi

if [[ $mode == list ]]; then
    printf '%s\n' "${tools[@]}"
    exit 0
fi

packages=()
for pair in "${tools[@]}"; do
    pkg=${pair#* }
    [[ " ${packages[*]} " == *" $pkg "* ]] || packages+=("$pkg")
done

if ! command -v dpkg-query >/dev/null; then
    echo "setup: this script needs Debian's dpkg and apt-get; install these packages yourself: ${packages[*]}" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    echo "setup: all ${#packages[@]} packages present"
else
    for pair in "${tools[@]}"; do
        pkg=${pair#* }
        [[ " ${missing[*]} " == *" $pkg "* ]] && echo "setup: missing $pkg (provides ${pair%% *})"
    done
    if [[ $mode == check ]]; then
        echo "setup: install them with: apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    if [[ $(id -u) != 0 ]]; then
        echo "setup: run as root, or: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: running: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Rust toolchain is not a Debian package: rust-toolchain.toml pins it and
# rustup installs it on the first cargo call.
if ! command -v cargo >/dev/null; then
    msg="setup: cargo not found; install rustup with: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --default-toolchain none"
    if [[ $mode == check ]]; then echo "$msg" >&2; exit 1; fi
    echo "$msg" >&2
    exit 1
fi
