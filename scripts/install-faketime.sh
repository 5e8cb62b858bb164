#!/usr/bin/env bash
# Install Debian's libfaketime into the git-ignored cache, for the fault suite's skewed-clock case: an
# agent replica started with LD_PRELOAD=<cache>/faketime/libfaketime.so.1 and FAKETIME="+300s" lives
# five minutes ahead, as a node with a drifting clock does, and the Lease election must not care.
#
# `apt-get download` plus `dpkg-deb -x`: nothing is installed system-wide.
# Idempotent: a cached library is kept. Usage: scripts/install-faketime.sh   (KAFKA_AUTOPILOT_CACHE
# overrides <repo>/.cache)
set -euo pipefail
export CI=true DEBIAN_FRONTEND=noninteractive

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KAFKA_AUTOPILOT_CACHE:-$repo/.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
root="$cache/faketime"
library="$root/libfaketime.so.1"

log() { printf '[install-faketime] %s\n' "$*"; }

if [[ -f "$library" ]]; then
  log "libfaketime cached at $library"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
apt_options=()
if [[ $(id -u) == 0 ]]; then
  # apt drops to the _apt user to download, which cannot write into our private temp directory.
  apt_options+=(-o APT::Sandbox::User=root)
fi
download() { (cd "$work" && apt-get download -q "${apt_options[@]}" libfaketime </dev/null); }

log "downloading Debian's libfaketime package (apt-get download libfaketime)"
if ! download; then
  log "download failed; refreshing the package lists (apt-get update) and trying again"
  if [[ $(id -u) != 0 ]]; then
    log "apt-get update needs root: run 'sudo apt-get update' and then this script again"
    exit 1
  fi
  apt-get update -q </dev/null
  download
fi
deb=$(find "$work" -maxdepth 1 -name 'libfaketime_*.deb' | head -n 1)
[[ -n "$deb" ]] || { log "no libfaketime package was downloaded"; exit 1; }
dpkg-deb -x "$deb" "$work/root"
found=$(find "$work/root" -name 'libfaketime.so.1' | head -n 1)
[[ -n "$found" ]] || { log "libfaketime.so.1 not found in $(basename "$deb")"; exit 1; }
mkdir -p "$root"
cp "$found" "$library.tmp"
mv "$library.tmp" "$library"
log "installed $(basename "$deb" .deb) at $library"
