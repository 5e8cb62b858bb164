#!/usr/bin/env bash
# Run every check of `make test` in three streams at once, and fail if any stream fails.
#
# The sandbox's end-to-end tests spend most of their time waiting on real programs (the reference
# rule's 5-minute cooldowns, node heartbeats, `for` windows), not computing. So, side by side:
#   checks   lint, mypy, rule tests and pytest without the sandbox (they compute);
#   story    the two longest sandbox modules, each one long story on a sandbox of its own
#            (tests/e2e/test_agent_e2e.py, tests/e2e/test_shapes_e2e.py);
#   sandbox  every other sandbox test, shown live on the console.
# Each sandbox has its own ports, work directory and processes, so two run side by side. The streams
# that are not shown live write to .cache/test-logs/<stream>.log, printed when all have ended.
#
# Usage: scripts/test-streams.sh   (from `make test`, after the tools are installed)
set -uo pipefail
cd "$(dirname "$0")/.."

logs=.cache/test-logs
mkdir -p "$logs"
bin=.venv/bin
story_modules=(tests/e2e/test_agent_e2e.py tests/e2e/test_shapes_e2e.py)

log() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

started=$SECONDS
log "checks (lint, mypy, rule tests, pytest -m 'not sandbox') -> $logs/checks.log"
make --no-print-directory checks >"$logs/checks.log" 2>&1 &
checks_pid=$!

log "story (${story_modules[*]}) -> $logs/story.log"
"$bin/pytest" -m sandbox -p no:cacheprovider "${story_modules[@]}" >"$logs/story.log" 2>&1 &
story_pid=$!

log "sandbox: the other sandbox tests, live"
ignored=()
for module in "${story_modules[@]}"; do ignored+=("--ignore=$module"); done
"$bin/pytest" -m sandbox -p no:cacheprovider "${ignored[@]}"
sandbox_status=$?
log "sandbox stream ended with exit $sandbox_status after $((SECONDS - started))s"

wait "$story_pid"
story_status=$?
log "story stream ended with exit $story_status after $((SECONDS - started))s"
wait "$checks_pid"
checks_status=$?

for stream in checks story; do
  log "output of the $stream stream:"
  cat "$logs/$stream.log"
done
log "exit codes: checks $checks_status, story $story_status, sandbox $sandbox_status; $((SECONDS - started))s in all"
[[ $checks_status -eq 0 && $story_status -eq 0 && $sandbox_status -eq 0 ]]
