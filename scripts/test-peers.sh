#!/usr/bin/env bash
# Build the real third-party test peers (kube-apiserver, etcd, helm, h2spec)
# from their published Go modules, into a cache directory outside the repo.
#
#   scripts/test-peers.sh                 build (or reuse) every peer
#   scripts/test-peers.sh etcd helm       build (or reuse) only these peers
#   scripts/test-peers.sh --force [...]   rebuild even if the stamp matches
#   scripts/test-peers.sh --print-dir     print the bin dir and exit
#
# Pins live in scripts/peers/<name>/go.mod (+ go.sum): one build-only module per
# peer, so their dependency graphs never mix. Each go.mod names the main
# package with a `tool` directive; nothing third-party is vendored here, the
# sources come from the Go module proxy into the module cache.
#
# Output:  ${MESH_PEERS_DIR:-$HOME/.cache/ambient-mesh/peers}/bin/<name>
# Go dirs: ${MESH_GO_DIR:-$HOME/.cache/ambient-mesh/go}/{pkg/mod,cache} (GOPATH,
#          GOMODCACHE, GOCACHE), so a second run is warm.
#
# Idempotence: stamps/<name>.stamp records the pinned version plus a hash of the
# peer's go.mod/go.sum, the ldflags and the Go version. A peer whose binary
# exists and whose stamp matches is skipped; change a pin and only that peer
# is rebuilt.
#
# Timings on the 2-core dev machine (go1.26.8, 2026-11):
#   cold (empty module + build cache): 597s total = kube-apiserver 421s,
#        etcd 54s, helm 116s, h2spec 6s (a cargo build was sharing the cores)
#   warm (everything stamped):         0.5s
# Disk: module cache 1.3G + build cache 2.9G + binaries 191M.
#
# Needs Go >= 1.26 (every go.mod says `go 1.26.0`). GOTOOLCHAIN defaults to
# `local`; export GOTOOLCHAIN=go1.27.3 yourself if a future pin needs it.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS_SRC="$REPO_ROOT/scripts/peers"
PEERS_DIR="${MESH_PEERS_DIR:-$HOME/.cache/ambient-mesh/peers}"
BIN_DIR="$PEERS_DIR/bin"
STAMP_DIR="$PEERS_DIR/stamps"
LOG_DIR="$PEERS_DIR/logs"
GO_DIR="${MESH_GO_DIR:-$HOME/.cache/ambient-mesh/go}"

ALL_PEERS=(kube-apiserver etcd helm h2spec)

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# ---------------------------------------------------------------- arguments
FORCE=0
SELECTED=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --print-dir) echo "$BIN_DIR"; exit 0 ;;
    --force) FORCE=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "test-peers: unknown option: $1" >&2; usage >&2; exit 2 ;;
    *)
      if [[ " ${ALL_PEERS[*]} " != *" $1 "* ]]; then
        echo "test-peers: unknown peer '$1' (known: ${ALL_PEERS[*]})" >&2
        exit 2
      fi
      SELECTED+=("$1") ;;
  esac
  shift
done
[[ ${#SELECTED[@]} -gt 0 ]] || SELECTED=("${ALL_PEERS[@]}")

# ---------------------------------------------------------------- Go setup
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if [[ ! -x "$GO" ]]; then
  echo "test-peers: no Go toolchain found (set GO=/path/to/go)" >&2
  exit 1
fi
export GOPATH="$GO_DIR"
export GOMODCACHE="$GO_DIR/pkg/mod"
export GOCACHE="$GO_DIR/cache"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
# -modcacherw keeps the module cache deletable with plain rm -rf.
export GOFLAGS="-buildvcs=false -modcacherw -mod=readonly"
export CGO_ENABLED=0
GO_VERSION=$("$GO" env GOVERSION)

mkdir -p "$BIN_DIR" "$STAMP_DIR" "$LOG_DIR" "$GOMODCACHE" "$GOCACHE"

# ---------------------------------------------------------------- peer table
# Module whose version is "the" pin of a peer.
peer_module() {
  case "$1" in
    kube-apiserver) echo k8s.io/kubernetes ;;
    etcd)           echo go.etcd.io/etcd/server/v3 ;;
    helm)           echo helm.sh/helm/v3 ;;
    h2spec)         echo github.com/summerwind/h2spec ;;
  esac
}

# Main package to build (also the `tool` line of the peer's go.mod).
peer_package() {
  case "$1" in
    kube-apiserver) echo k8s.io/kubernetes/cmd/kube-apiserver ;;
    etcd)           echo go.etcd.io/etcd/server/v3 ;;
    helm)           echo helm.sh/helm/v3/cmd/helm ;;
    h2spec)         echo github.com/summerwind/h2spec/cmd/h2spec ;;
  esac
}

# Version of module $2 required by the go.mod in dir $1 (tidy-formatted go.mod:
# "require mod vX" or "<tab>mod vX [// indirect]" inside a require block).
gomod_version() {
  awk -v m="$2" '$1 == "require" { $1 = ""; $0 = $0 }
                 $1 == m && $2 ~ /^v/ { print $2; exit }' "$1/go.mod"
}

# Version stamping, as the upstream release builds do it (a plain `go build`
# leaves placeholders, and kube-apiserver derives its binary/emulation version
# from gitVersion, so it must be right).
peer_ldflags() {
  local name=$1 version=$2 dir=$3 f="-s -w"
  case "$name" in
    kube-apiserver)
      local mm=${version#v}; mm=${mm%%-*}          # 1.36.3
      local major=${mm%%.*} minor; minor=${mm#*.}; minor=${minor%%.*}
      local pkg
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        f+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        f+=" -X $pkg.gitTreeState=clean"
      done ;;
    etcd)
      f+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=$version" ;;
    helm)
      # Same as helm's Makefile: Kubernetes version capabilities derive from
      # the client-go it was built with (v0.X.Y -> 1.X).
      local cg; cg=$(gomod_version "$dir" k8s.io/client-go); cg=${cg#v}
      local cmaj=$(( ${cg%%.*} + 1 )) cmin; cmin=${cg#*.}; cmin=${cmin%%.*}
      f+=" -X helm.sh/helm/v3/internal/version.version=$version"
      f+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      local pkg
      for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        f+=" -X $pkg.k8sVersionMajor=$cmaj -X $pkg.k8sVersionMinor=$cmin"
      done ;;
    h2spec)
      local v=${version#v}; v=${v%%+*}                # 2.2.1
      f+=" -X main.VERSION=$v -X main.COMMIT=module-$version" ;;
  esac
  echo "$f"
}

# Run the peer's version command; succeed if it mentions the pinned version.
peer_verify() {
  local name=$1 bin=$2 version=$3 out want
  case "$name" in
    kube-apiserver) out=$("$bin" --version 2>&1);         want="Kubernetes $version" ;;
    etcd)           out=$("$bin" --version 2>&1);         want="etcd Version: ${version#v}" ;;
    helm)           out=$(HOME="${TMPDIR:-/tmp}" "$bin" version --short 2>&1); want="$version" ;;
    h2spec)         out=$("$bin" --version 2>&1);         want="Version: ${version#v}"; want=${want%%+*} ;;
  esac
  if [[ "$out" != *"$want"* ]]; then
    echo "test-peers: $name: version check failed: expected '$want', got:" >&2
    printf '%s\n' "$out" | sed 's/^/    /' >&2
    return 1
  fi
}

# ---------------------------------------------------------------- build
FAILED=()

build_peer() {
  local name=$1
  local dir="$PEERS_SRC/$name"
  local bin="$BIN_DIR/$name" stamp_file="$STAMP_DIR/$name.stamp" log="$LOG_DIR/$name.log"
  local module version ldflags inputs stamp
  module=$(peer_module "$name")
  version=$(gomod_version "$dir" "$module")
  if [[ -z "$version" ]]; then
    echo "test-peers: $name: cannot find the pin of $module in $dir/go.mod" >&2
    return 1
  fi
  ldflags=$(peer_ldflags "$name" "$version" "$dir")
  inputs=$(cat "$dir/go.mod" "$dir/go.sum" <(echo "$ldflags $GO_VERSION") | sha256sum | cut -c1-16)
  stamp="$module@$version inputs=$inputs"

  if [[ $FORCE -eq 0 && -x "$bin" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    echo "test-peers: $name $version is up to date"
    return 0
  fi

  echo "test-peers: building $name $version (log: $log) ..."
  rm -f "$stamp_file"
  local start=$SECONDS
  # go build fetches only the modules this package needs, verified against go.sum.
  if ! ( cd "$dir" && "$GO" build -trimpath -ldflags "$ldflags" -o "$bin.tmp" \
           "$(peer_package "$name")" ) >"$log" 2>&1; then
    echo "test-peers: $name: BUILD FAILED; last lines of $log:" >&2
    tail -n 25 "$log" | sed 's/^/    /' >&2
    rm -f "$bin.tmp"
    return 1
  fi
  mv -f "$bin.tmp" "$bin"
  echo "$stamp" >"$stamp_file"
  echo "test-peers: built $name $version in $((SECONDS - start))s"
}

TOTAL_START=$SECONDS
for name in "${SELECTED[@]}"; do
  build_peer "$name" || FAILED+=("$name")
done

# ---------------------------------------------------------------- verify + report
for name in "${SELECTED[@]}"; do
  [[ " ${FAILED[*]-} " == *" $name "* ]] && continue
  version=$(gomod_version "$PEERS_SRC/$name" "$(peer_module "$name")")
  peer_verify "$name" "$BIN_DIR/$name" "$version" || { FAILED+=("$name"); rm -f "$STAMP_DIR/$name.stamp"; }
done

echo
echo "test-peers: bin dir $BIN_DIR ($((SECONDS - TOTAL_START))s)"
for name in "${SELECTED[@]}"; do
  version=$(gomod_version "$PEERS_SRC/$name" "$(peer_module "$name")")
  if [[ " ${FAILED[*]-} " == *" $name "* ]]; then
    printf '%-15s %-22s %s\n' "$name" "$version" "FAILED"
  else
    printf '%-15s %-22s %s\n' "$name" "$version" "$BIN_DIR/$name"
  fi
done

if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "test-peers: FAILED: ${FAILED[*]} (logs in $LOG_DIR)" >&2
  exit 1
fi
