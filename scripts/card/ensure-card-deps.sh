#!/usr/bin/env bash
# Installs what the virtual smart card (scripts/card) needs, only when missing:
# pcscd, the vpcd reader driver, OpenSC, libcacard (+ headers, to build the
# bridge), NSS tools, a C compiler. Run as root (CI) or get the sudo line.
# A system pcscd is not needed and is left alone: each virtual card runs its own.
set -euo pipefail

PACKAGES=(pcscd vsmartcard-vpcd opensc opensc-pkcs11 libcacard0 libcacard-dev
  libnss3-tools openssl gcc libc6-dev pkg-config)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "[ensure-card-deps] missing Debian packages: ${missing[*]}" >&2
  echo "[ensure-card-deps] install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "[ensure-card-deps] installing: ${missing[*]}" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
