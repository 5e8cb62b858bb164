#!/usr/bin/env bash
# Write requirements.lock (the agent's runtime dependencies) and requirements-build.lock (what builds
# its wheel), with exact versions and sha256 hashes, for the Dockerfile's `pip install --require-hashes`.
#
# Versions: those pip resolves for pyproject.toml in a clean virtualenv (python3.11, as the image).
# Hashes: of the files pip downloads for CPython 3.11 on linux x86_64 and aarch64 (the image's two
# platforms), so the lock installs on both. Run it again after changing pyproject.toml's dependencies;
# tests/integration/test_dockerfile.py checks that the lock covers them.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KAFKA_AUTOPILOT_CACHE:-$repo/.cache}
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$cache/pip}
export PIP_DISABLE_PIP_VERSION_CHECK=1
python=${PYTHON:-python3.11}
BUILD_REQUIREMENTS=("setuptools==84.2.1" "wheel==0.48.0")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log() { printf '[lock-requirements] %s\n' "$*" >&2; }

log "resolving the runtime dependencies in a clean virtualenv ($("$python" --version))"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$repo"
"$work/venv/bin/pip" freeze --exclude kafka-autopilot >"$work/pins.txt"

# lock PINS_FILE OUT HEADER: every pin of PINS_FILE with the hashes of its files for both platforms.
lock() {
  local pins=$1 out=$2 header=$3 files="$work/files-$(basename "$2")"
  mkdir -p "$files"
  local pin platform
  while IFS= read -r pin; do
    [[ -z "$pin" || "$pin" == \#* ]] && continue
    for platform in x86_64 aarch64; do
      # The wheel for the platform where one exists (pure-Python wheels included), else the sdist.
      "$work/venv/bin/pip" download --quiet --no-deps --dest "$files" --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
        --platform "manylinux2014_$platform" --platform "manylinux_2_17_$platform" \
        --platform "manylinux_2_28_$platform" --platform any "$pin" 2>/dev/null ||
        "$work/venv/bin/pip" download --quiet --no-deps --dest "$files" --no-binary=:all: "$pin"
    done
  done <"$pins"
  {
    printf '%s\n' "$header"
    while IFS= read -r pin; do
      [[ -z "$pin" || "$pin" == \#* ]] && continue
      local name=${pin%%==*} version=${pin#*==}
      local pattern
      pattern=$(printf '%s' "$name" | tr 'A-Z' 'a-z' | sed 's/[-_.]\+/[-_.]/g')
      printf '%s==%s' "$name" "$version"
      local found=0
      while IFS= read -r file; do
        printf ' \\\n    --hash=sha256:%s' "$(sha256sum "$file" | cut -d' ' -f1)"
        found=1
      done < <(find "$files" -maxdepth 1 -type f | grep -iE "/${pattern}-${version//./\\.}[-.]" | sort)
      [[ $found == 1 ]] || { log "no file downloaded for $pin"; exit 1; }
      printf '\n'
    done <"$pins"
  } >"$out"
  log "wrote $out ($(grep -c '==' "$out") packages, $(grep -c 'sha256' "$out") hashes)"
}

lock "$work/pins.txt" "$repo/requirements.lock" \
  "# The agent's runtime dependencies, exact and hashed, for the Dockerfile. Written by scripts/lock-requirements.sh."
log "resolving the build requirements (${BUILD_REQUIREMENTS[*]}) with their own dependencies"
"$python" -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install --quiet "${BUILD_REQUIREMENTS[@]}"
"$work/build-venv/bin/pip" freeze --all --exclude pip >"$work/build-pins.txt"
lock "$work/build-pins.txt" "$repo/requirements-build.lock" \
  "# What builds the agent's wheel in the Dockerfile's build stage. Written by scripts/lock-requirements.sh."
