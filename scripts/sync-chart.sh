#!/usr/bin/env bash
# Copy the agent's CRDs and the shipped rules into the Helm chart, which can only read files inside
# itself. tests/integration/test_helm_chart.py fails when the copies drift; this script mends them.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart="$repo/helm/kafka-autopilot"
rm -f "$chart"/crds/*.yaml "$chart"/files/rules/*.yaml
cp "$repo"/agent/resources/crds/*.yaml "$chart/crds/"
cp "$repo"/rules/*.yaml "$chart/files/rules/"
echo "synced $(ls "$chart/crds" | wc -l) CRDs and $(ls "$chart/files/rules" | wc -l) rule files into $chart"
