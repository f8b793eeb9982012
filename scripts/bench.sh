#!/usr/bin/env bash
# Agent benchmarks (scripts/bench-agent.ts): builds, then prints figures and
# ratios measured side by side in one run. Needs SoftHSM (scripts/ensure-deps.sh).
# Usage: scripts/bench.sh [--quick] [--json]
#   OUT=dist-mine scripts/bench.sh   builds into and runs from another output dir
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-dist}
bash scripts/ensure-deps.sh --no-build
npx --no-install tsc -p tsconfig.json --outDir "$OUT" --tsBuildInfoFile "$OUT/.tsbuildinfo" >&2 || true
exec node "$OUT/scripts/bench-agent.js" "$@"
