#!/usr/bin/env bash
# Installs the browser the gateway's dashboard tests drive (Playwright with the system
# Chromium at /usr/bin/chromium). Debian's package, never a browser download of its own.
# Does nothing when /usr/bin/chromium is already there; needs root (apt-get) otherwise.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "browser-tools: /usr/bin/chromium is missing and installing it needs root;" >&2
  echo "browser-tools: run 'sudo apt-get update && sudo apt-get install -y chromium'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
if [[ ! -x /usr/bin/chromium ]]; then
  echo "browser-tools: apt-get installed chromium but /usr/bin/chromium is not there" >&2
  exit 1
fi
echo "browser-tools: $(/usr/bin/chromium --version 2>/dev/null || echo chromium installed)"
