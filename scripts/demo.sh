#!/usr/bin/env bash
# The main job on the embedded default: a SoftHSM token holding a key generated
# inside it, the local Roles Anywhere endpoint, `ra-agent credential-process`
# with a pkcs11: URI, and the AWS CLI using it through credential_process.
# Usage: npm run demo [-- --tpm | --card] [-- --keep]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
exec node dist/scripts/demo.js "$@"
