#!/usr/bin/env bash
# Copy the agent's CRDs, the shipped rules (rules/, rules-kubelet/) and the shipped policies into the Helm chart, which can only read files inside
# itself. tests/integration/test_helm_chart.py fails when the copies drift; this script mends them.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart="$repo/helm/kafka-autopilot"
mkdir -p "$chart/files/policies" "$chart/files/rules-kubelet"
rm -f "$chart"/crds/*.yaml "$chart"/files/rules/*.yaml "$chart"/files/rules-kubelet/*.yaml "$chart"/files/policies/*.yaml
cp "$repo"/agent/resources/crds/*.yaml "$chart/crds/"
cp "$repo"/rules/*.yaml "$chart/files/rules/"
cp "$repo"/rules-kubelet/*.yaml "$chart/files/rules-kubelet/"
cp "$repo"/policies/*.yaml "$chart/files/policies/"
echo "synced $(ls "$chart/crds" | wc -l) CRDs, $(ls "$chart/files/rules" "$chart/files/rules-kubelet" | grep -c yaml) rule files and $(ls "$chart/files/policies" | wc -l) policies into $chart"
