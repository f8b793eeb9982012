#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, then runs every test with
# node's test runner. With CI=true a test that lacks SoftHSM, swtpm or the
# virtual card fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
# Each test file provisions its own SoftHSM/TPM state under a temp dir, so files may run in parallel.
exec node --test --test-concurrency="${TEST_CONCURRENCY:-2}" --test-timeout=300000 "$@" $(find dist/test -name '*.test.js' | sort)
