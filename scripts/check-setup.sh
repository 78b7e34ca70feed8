#!/usr/bin/env bash
# Fails when the code needs a program or build input that scripts/setup.sh
# does not install. Run by scripts/test.sh.
#
# What it looks for:
#   - programs the Rust code runs: Command::new("X"), run_in(_, "X", ..),
#     which(&["X", ..]) and the iptables/nftables program names;
#   - the first word of every command in the repo's shell scripts (outside
#     quoted strings);
#   - build inputs: boring-sys in Cargo.lock (cmake, clang, libclang, git, cc),
#     protoc and the well-known .proto types for the proto crate.
# A program counts as covered when its tool name is in setup.sh's table and
# the table's package is the one dpkg says owns it (or depends on that one),
# or when Debian marks the owning package Essential (always installed).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "check-setup: unknown option: $1" >&2; exit 2 ;;
esac

declare -A table=()
while read -r tool pkg; do table[$tool]=$pkg; done < <(scripts/setup.sh --list)

needed=()
# Programs run from Rust (product code and tests alike: CI runs both).
mapfile -t rust_files < <(git ls-files '*.rs')
while read -r t; do needed+=("$t"); done < <(
    grep -hoE 'Command::new\("[^"]+"\)|run_in\([^,()]+, "[^"]+"|which\(&\[[^]]+\]\)|"ip6?tables-(save|restore)"|"nft"' \
        "${rust_files[@]}" | grep -oE '"[^"]+"' | tr -d '"' | sort -u)
# `ip(&[..])` in lib/netns is the ip(8) wrapper.
grep -qE '\bip\(&\[' "${rust_files[@]}" && needed+=(ip)

# First word of each command line in our shell scripts.
mapfile -t scripts < <(git ls-files 'scripts/*.sh' '.ci/run' 'examples/**.sh')
while read -r t; do needed+=("$t"); done < <(
    sed -E 's/#.*$//; s/"[^"]*"//g'"; s/'[^']*'//g" "${scripts[@]}" \
        | grep -oE '(^|[;&|(]|\$\(|then|do|else)[[:space:]]*[a-z][a-z0-9._-]+' \
        | grep -oE '[a-z][a-z0-9._-]+$' | sort -u \
        | grep -vxFf <(sed -nE 's/^[[:space:]]*([a-z_][a-z0-9_-]*)\(\).*/\1/p' "${scripts[@]}" | sort -u))

# Build inputs.
grep -q '^name = "boring-sys"' Cargo.lock && needed+=(cmake clang libclang.so git cc)
grep -q 'tonic_prost_build\|prost_build' proto/build.rs && needed+=(protoc)
grep -rqE '^import "google/protobuf/' proto/ && needed+=(google/protobuf/any.proto)

owner() { # the Debian package that owns a program found on the system PATH
    local path
    path=$(PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin command -v "$1" 2>/dev/null) || return 1
    [[ $path == /* ]] || return 1    # a shell builtin or keyword
    path=$(readlink -f "$path")
    for p in "$path" "${path#/usr}" "/usr${path}"; do
        dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1 && return 0
    done
    return 1
}
# Essential, or of priority "required": on every Debian system.
essential() {
    [[ $(dpkg-query -W -f='${Essential} ${Priority}' "$1" 2>/dev/null) =~ ^(yes|.*required) ]]
}
provides() { # does the table's package $1 install the owner $2 (itself or a dependency, 3 deep)?
    local depth=${3:-0} dep
    [[ $1 == "$2" ]] && return 0
    ((depth < 3)) || return 1
    for dep in $(dpkg-query -W -f='${Depends},${Pre-Depends}' "$1" 2>/dev/null | tr ',|' '\n\n' \
            | sed -nE 's/^ *([^ :(]+).*/\1/p' | sort -u); do
        provides "$dep" "$2" $((depth + 1)) && return 0
    done
    return 1
}

fail=0
checked=0
for t in $(printf '%s\n' "${needed[@]}" | sort -u); do
    pkg=${table[$t]:-}
    if [[ -n $pkg ]]; then
        checked=$((checked + 1))
        if own=$(owner "$t") && ! provides "$pkg" "$own"; then
            echo "check-setup: setup.sh says $t comes from $pkg, but dpkg says $own" >&2
            fail=1
        fi
        continue
    fi
    own=$(owner "$t") || continue    # not a program here: a shell function, a word
    case "$own" in cargo|rustup) continue ;; esac
    essential "$own" && continue
    echo "check-setup: the code runs '$t' (Debian package $own), which scripts/setup.sh does not install" >&2
    fail=1
done
# Every required program must also be present once setup.sh has run.
for t in cmake clang protoc ip nft iptables-restore python3; do
    [[ -n ${table[$t]:-} ]] || { echo "check-setup: setup.sh's table lacks $t" >&2; fail=1; }
done
if ((fail)); then exit 1; fi
echo "check-setup: $checked programs and build inputs covered by scripts/setup.sh"
