#!/usr/bin/env bash
# Installs nginx with the Nchan module, the C server `make bench ONLY=peer` measures the
# gateway's fan-out against. Debian's packages, never a download of their own.
# Does nothing when both are there; needs root (apt-get) otherwise.
exec bash "$(dirname "$0")/debian-tools.sh" peer-tools \
  nginx,/usr/lib/nginx/modules/ngx_nchan_module.so nginx libnginx-mod-nchan
