#!/usr/bin/env bash
# Install the real `prometheus` and `promtool` from Debian's package into the git-ignored cache,
# for rule tests (`kafka-autopilot test`) and the sandbox: rule conditions are evaluated by the
# real Prometheus engine, never by a PromQL engine of our own.
#
# The package is fetched with `apt-get download` and unpacked with `dpkg-deb -x`: nothing is
# installed system-wide, no recommended packages come along. The binaries are static Go programs.
#
# Idempotent: when both binaries are cached and `prometheus --version` still prints the recorded
# version, it does nothing. Usage: scripts/install-prometheus.sh   (KAFKA_AUTOPILOT_CACHE
# overrides <repo>/.cache)
source "$(dirname "${BASH_SOURCE[0]}")/debian-package.sh"
root="$cache/prometheus"
bin="$root/bin"
version_file="$root/VERSION"

log() { printf '[install-prometheus] %s\n' "$*"; }

# The first line of `prometheus --version`, e.g. "prometheus, version 2.42.0+ds (branch: ...)".
version_of() { "$1" --version 2>&1 </dev/null | head -n 1; }

if [[ -x "$bin/prometheus" && -x "$bin/promtool" && -f "$version_file" ]]; then
  current=$(version_of "$bin/prometheus" || true)
  if [[ -n "$current" && "$current" == "$(cat "$version_file")" ]]; then
    log "prometheus $(sed -E 's/^prometheus, version ([^ ]+).*/\1/' "$version_file") cached in $bin"
    exit 0
  fi
  log "cached binaries do not match $version_file; reinstalling"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

unpack_debian_package prometheus

for program in prometheus promtool; do
  if [[ ! -x "$work/root/usr/bin/$program" ]]; then
    log "the package has no usr/bin/$program"
    exit 1
  fi
  # Prove the binary runs on this machine before caching it.
  if ! "$work/root/usr/bin/$program" --version >/dev/null 2>&1 </dev/null; then
    log "$program from the package does not run here:"
    "$work/root/usr/bin/$program" --version </dev/null || true
    exit 1
  fi
done

mkdir -p "$bin"
for program in prometheus promtool; do
  install -m 0755 "$work/root/usr/bin/$program" "$bin/$program.new"
  mv -f "$bin/$program.new" "$bin/$program"
done
version_of "$bin/prometheus" >"$version_file"
log "installed $(cat "$version_file")"
log "installed $(version_of "$bin/promtool")"
log "binaries in $bin"
