#!/usr/bin/env bash
# Installs what ra-agent's demo and tests need, only when it is missing:
# Debian packages (as root), npm dependencies (npm ci, building pkcs11js against
# the local Node headers so that no header download is needed), and the build.
# Usage: scripts/ensure-deps.sh [--apt-only|--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(softhsm2 opensc p11-kit p11-kit-modules gnutls-bin openssl
  swtpm swtpm-tools tpm2-tools libtpm2-pkcs11-1 libtpm2-pkcs11-tools
  libtss2-tcti-swtpm0 libtss2-tctildr0 curl
  # the virtual smart card (scripts/card/): pcscd, vpcd, libcacard, NSS tools, a C compiler
  pcscd vsmartcard-vpcd opensc-pkcs11 libcacard0 libcacard-dev libnss3-tools gcc libc6-dev pkg-config)

log() { printf '[ensure-deps] %s\n' "$*" >&2; }

missing=()
# The AWS CLI (v1 or v2) and boto3 are used by the end-to-end tests as real clients.
command -v aws >/dev/null 2>&1 || APT_PACKAGES+=(awscli)
command -v python3 >/dev/null 2>&1 || APT_PACKAGES+=(python3)
python3 -c 'import boto3' >/dev/null 2>&1 || APT_PACKAGES+=(python3-boto3)
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages: ${missing[*]}"
    log "install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[[ ${1:-} == --apt-only ]] && exit 0

# npm ci when node_modules is absent or older than the lock file.
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "installing npm dependencies (npm ci)"
  [[ -d /usr/include/node ]] && export npm_config_nodedir=/usr
  npm ci --no-audit --no-fund >&2
fi
[[ ${1:-} == --no-build ]] && exit 0
log "building"
npx --no-install tsc -p tsconfig.json >&2
