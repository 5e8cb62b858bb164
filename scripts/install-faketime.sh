#!/usr/bin/env bash
# Install Debian's libfaketime into the git-ignored cache, for the fault suite's skewed-clock case: an
# agent replica started with LD_PRELOAD=<cache>/faketime/libfaketime.so.1 and FAKETIME="+300s" lives
# five minutes ahead, as a node with a drifting clock does, and the Lease election must not care.
#
# `apt-get download` plus `dpkg-deb -x`: nothing is installed system-wide.
# Idempotent: a cached library is kept. Usage: scripts/install-faketime.sh   (KAFKA_AUTOPILOT_CACHE
# overrides <repo>/.cache)
source "$(dirname "${BASH_SOURCE[0]}")/debian-package.sh"
root="$cache/faketime"
library="$root/libfaketime.so.1"

log() { printf '[install-faketime] %s\n' "$*"; }

if [[ -f "$library" ]]; then
  log "libfaketime cached at $library"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unpack_debian_package libfaketime
found=$(find "$work/root" -name 'libfaketime.so.1' | head -n 1)
[[ -n "$found" ]] || { log "libfaketime.so.1 not found in the libfaketime package"; exit 1; }
mkdir -p "$root"
cp "$found" "$library.tmp"
mv "$library.tmp" "$library"
log "installed libfaketime at $library"
