#!/usr/bin/env bash
# Build the sandbox's Kubernetes programs from the Go module proxy, at pinned versions, into the
# git-ignored cache: kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok.
#
# Idempotent: a stamp file per component records what was built; a second run does nothing.
# Usage: scripts/build-kubernetes.sh        (KAFKA_AUTOPILOT_CACHE overrides <repo>/.cache)
#
# Pins (sandbox/kube.py carries the same three; the integration test checks they agree):
#   KUBERNETES_VERSION: newest release whose go.mod says `go 1.26.0`, which Go 1.26.x accepts.
#   ETCD_VERSION: Debian bookworm's etcd-server is 3.4.23, below the 3.4.29 / 3.5.11 minimum that
#     Kubernetes >= 1.31 needs (it relies on etcd's newer health endpoints), so etcd is built
#     from the proxy; Kubernetes 1.37 itself uses the etcd 3.7 client.
#   KWOK_VERSION: newest kwok release; its go.mod says `go 1.26.0`.
KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
KWOK_VERSION=v0.8.0

source "$(dirname "${BASH_SOURCE[0]}")/go-build-env.sh"
root="$cache/kubernetes/$KUBERNETES_VERSION"
bin="$root/bin"
mkdir -p "$bin" "$root/src"

log() { printf '[build-kubernetes %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# stamp_ok NAME CONTENT: true when NAME was already built from exactly CONTENT and its programs exist.
stamp_ok() {
  local stamp="$bin/.$1.stamp"
  shift
  [[ -f "$stamp" && "$(cat "$stamp")" == "$1" ]] || return 1
  shift
  local program
  for program in "$@"; do
    [[ -x "$bin/$program" ]] || return 1
  done
}

log "go: $(go version); cache: $cache"
log "pins: kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION"

# --- kube-apiserver, kube-controller-manager, kube-scheduler -------------------------------------
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with local paths, which only
# its own repository has. A wrapper module requires it and points every staging module at the
# published v0.X.Y that matches v1.X.Y.
kube_stamp="kubernetes $KUBERNETES_VERSION go=$(go env GOVERSION)"
if stamp_ok kubernetes "$kube_stamp" kube-apiserver kube-controller-manager kube-scheduler; then
  log "kubernetes $KUBERNETES_VERSION already built"
else
  started=$SECONDS
  work="$root/src/kubernetes"
  rm -rf "$work"
  mkdir -p "$work"
  log "downloading k8s.io/kubernetes@$KUBERNETES_VERSION"
  kube_gomod=$(cd "$work" && GOFLAGS=-buildvcs=false go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$kube_gomod" ]] || { log "no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION"; exit 1; }
  go_directive=$(awk '$1 == "go" { print $2; exit }' "$kube_gomod")
  staging_version="v0.${KUBERNETES_VERSION#v1.}"
  # The staging modules are the ones k8s.io/kubernetes requires at the placeholder v0.0.0.
  mapfile -t staging < <(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$kube_gomod" | sort -u)
  log "${#staging[@]} staging modules pinned to $staging_version (go.mod says go $go_directive)"
  {
    printf 'module kafka-autopilot.local/kubernetes-build\n\ngo %s\n\n' "$go_directive"
    printf 'require k8s.io/kubernetes %s\n\nrequire (\n' "$KUBERNETES_VERSION"
    for module in "${staging[@]}"; do printf '\t%s %s\n' "$module" "$staging_version"; done
    printf ')\n\nreplace (\n'
    for module in "${staging[@]}"; do printf '\t%s => %s %s\n' "$module" "$module" "$staging_version"; done
    printf ')\n'
  } >"$work/go.mod"
  minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  log "building kube-apiserver, kube-controller-manager, kube-scheduler (slow on 2 cores)"
  (cd "$work" && go build -trimpath -ldflags="$ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler)
  printf '%s' "$kube_stamp" >"$bin/.kubernetes.stamp"
  log "kubernetes built in $((SECONDS - started))s: $("$bin/kube-apiserver" --version)"
fi

# --- etcd ------------------------------------------------------------------------------------------
# go.etcd.io/etcd/server/v3 also carries local replaces, so it gets a wrapper main of its own.
etcd_stamp="etcd $ETCD_VERSION go=$(go env GOVERSION)"
if stamp_ok etcd "$etcd_stamp" etcd; then
  log "etcd $ETCD_VERSION already built"
else
  started=$SECONDS
  work="$root/src/etcd"
  rm -rf "$work"
  mkdir -p "$work"
  cat >"$work/go.mod" <<EOF
module kafka-autopilot.local/etcd-build

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat >"$work/main.go" <<'EOF'
// Command etcd runs the etcd server; it only calls the server module's entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  log "building etcd $ETCD_VERSION"
  (cd "$work" && go build -trimpath -ldflags="-s -w" -o "$bin/etcd" .)
  printf '%s' "$etcd_stamp" >"$bin/.etcd.stamp"
  log "etcd built in $((SECONDS - started))s: $("$bin/etcd" --version | head -1)"
fi

# --- kwok ------------------------------------------------------------------------------------------
kwok_stamp="kwok $KWOK_VERSION go=$(go env GOVERSION)"
if stamp_ok kwok "$kwok_stamp" kwok; then
  log "kwok $KWOK_VERSION already built"
else
  started=$SECONDS
  log "building kwok $KWOK_VERSION"
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  printf '%s' "$kwok_stamp" >"$bin/.kwok.stamp"
  log "kwok built in $((SECONDS - started))s"
fi

log "ready: $(ls "$bin" | tr '\n' ' ')"
log "cache size: $(du -sh "$cache/go" 2>/dev/null | cut -f1) (go), $(du -sh "$bin" | cut -f1) (bin)"
