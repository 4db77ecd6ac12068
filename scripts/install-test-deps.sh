#!/usr/bin/env bash
# Installs what the tests need on Debian when it is missing: swtpm and
# swtpm_setup (the TPM the integration tests run against), libssl-dev (for
# the cgo build of go-tpm-tools' in-process simulator), PostgreSQL's
# server programs (the database the store tests start), and Chromium (the
# browser the dashboard test drives headless).
set -euo pipefail

missing=()
command -v swtpm >/dev/null 2>&1 || missing+=(swtpm)
command -v swtpm_setup >/dev/null 2>&1 || missing+=(swtpm-tools)
if ! dpkg-query -W -f='${Status}' libssl-dev 2>/dev/null | grep -q 'ok installed'; then
  missing+=(libssl-dev)
fi
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "tests need these Debian packages: ${missing[*]}" >&2
  echo "install them as root: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "installing test dependencies: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
