# Sourced first by the scripts that take a program from Debian's packages without installing it
# (install-prometheus.sh, install-faketime.sh): strict mode, no prompts, and `repo` and `cache` (the
# git-ignored cache folder; KAFKA_AUTOPILOT_CACHE overrides <repo>/.cache). The caller defines `log` and
# a temporary `work` folder before it calls `unpack_debian_package`.
set -euo pipefail
export CI=true DEBIAN_FRONTEND=noninteractive

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KAFKA_AUTOPILOT_CACHE:-$repo/.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# unpack_debian_package NAME: `apt-get download NAME` into $work (refreshing the package lists once if
# the download fails and we are root), then `dpkg-deb -x` into $work/root: nothing is installed
# system-wide and no recommended packages come along. Exits 1, saying why, when it cannot.
unpack_debian_package() {
  local name=$1 apt_options=() deb
  if [[ $(id -u) == 0 ]]; then
    # apt drops to the _apt user to download, which cannot write into our private temp directory.
    apt_options+=(-o APT::Sandbox::User=root)
  fi
  log "downloading Debian's $name package (apt-get download $name)"
  if ! (cd "$work" && apt-get download -q "${apt_options[@]}" "$name" </dev/null); then
    log "download failed; refreshing the package lists (apt-get update) and trying again"
    if [[ $(id -u) != 0 ]]; then
      log "apt-get update needs root: run 'sudo apt-get update' and then this script again"
      exit 1
    fi
    apt-get update -q </dev/null
    (cd "$work" && apt-get download -q "${apt_options[@]}" "$name" </dev/null)
  fi
  deb=$(find "$work" -maxdepth 1 -name "${name}_*.deb" | head -n 1)
  if [[ -z "$deb" ]]; then
    log "apt-get download left no ${name}_*.deb in $work"
    exit 1
  fi
  log "unpacking $(basename "$deb") (dpkg-deb -x, no installation)"
  dpkg-deb -x "$deb" "$work/root"
}
