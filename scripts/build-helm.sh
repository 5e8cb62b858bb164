#!/usr/bin/env bash
# Build helm from the Go module proxy, at a pinned release, into the git-ignored cache. The chart's
# tests (tests/integration/test_helm_chart.py) run `helm lint` and `helm template` with this binary.
#
# Idempotent: a stamp file records what was built; a second run does nothing.
# Usage: scripts/build-helm.sh        (KAFKA_AUTOPILOT_CACHE overrides <repo>/.cache)
#
# Pin: HELM_VERSION is the newest helm v3 release; its go.mod says `go 1.26.0`, which Go 1.26.x
# accepts, and it has no replace directives, so `go build` of the published module works as is.
# HELM_KUBE_MINOR is the client-go minor it requires (v0.37.x): helm reports it as the default
# Kubernetes version for `helm template` and lint's deprecation checks, as helm's own Makefile does.
HELM_VERSION=v3.22.0
HELM_KUBE_MINOR=37

source "$(dirname "${BASH_SOURCE[0]}")/go-build-env.sh"
root="$cache/helm/$HELM_VERSION"
bin="$root/bin"
mkdir -p "$bin" "$root/src"

log() { printf '[build-helm %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

stamp="helm $HELM_VERSION go=$(go env GOVERSION)"
if [[ -f "$bin/.helm.stamp" && "$(cat "$bin/.helm.stamp")" == "$stamp" && -x "$bin/helm" ]]; then
  log "helm $HELM_VERSION already built: $bin/helm"
  exit 0
fi

started=$SECONDS
log "go: $(go version); cache: $cache"
work="$root/src/helm"
rm -rf "$work"
mkdir -p "$work"
# A wrapper module pins helm's release; `go build` of a package path in a dependency module then
# resolves helm's own go.mod requirements exactly (no upgrade of its dependencies).
cat >"$work/go.mod" <<EOF
module kafka-autopilot.local/helm-build

go 1.26.0

require helm.sh/helm/v3 $HELM_VERSION
EOF
log "resolving helm.sh/helm/v3@$HELM_VERSION"
(cd "$work" && go mod download helm.sh/helm/v3 && go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
done
log "building helm $HELM_VERSION"
(cd "$work" && go build -trimpath -ldflags="$ldflags" -o "$bin/helm" helm.sh/helm/v3/cmd/helm)
printf '%s' "$stamp" >"$bin/.helm.stamp"
log "helm built in $((SECONDS - started))s: $("$bin/helm" version --short)"
