#!/usr/bin/env bash
# Installs the browser the gateway's dashboard tests drive (Playwright with the system
# Chromium at /usr/bin/chromium). Debian's package, never a browser download of its own.
# Does nothing when /usr/bin/chromium is already there; needs root (apt-get) otherwise.
exec bash "$(dirname "$0")/debian-tools.sh" browser-tools /usr/bin/chromium chromium fonts-dejavu-core
