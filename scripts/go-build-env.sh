# Sourced by the scripts that build Go programs from the Go module proxy (build-kubernetes.sh,
# build-helm.sh): the cache folder, and a Go environment that stays inside it and off the network
# except for the module proxy. Sets `repo` and `cache`; the caller chooses its own folder below the cache.
set -euo pipefail
export CI=true

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KAFKA_AUTOPILOT_CACHE:-$repo/.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

export GOMODCACHE="$cache/go/mod"
export GOCACHE="$cache/go/build"
export GOTOOLCHAIN=local
export GOWORK=off
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"
