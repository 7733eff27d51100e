#!/usr/bin/env bash
# Installs Debian packages a test or benchmark needs, unless what it needs is already there.
#
#   scripts/debian-tools.sh NAME NEEDS PACKAGE...
#
# NAME names the set in messages (the make target). NEEDS is a command on PATH or a file;
# each one (comma-separated) must be there after the install. Nothing is downloaded but
# Debian's packages. Does nothing when NEEDS is there; needs root (apt-get) otherwise.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 NAME NEEDS PACKAGE..." >&2
  exit 2
fi
name=$1
needs=$2
shift 2

# Sets `missing` to what of NEEDS is not there; true when nothing is.
present() {
  local item items
  missing=""
  IFS=, read -ra items <<<"$needs"
  for item in "${items[@]}"; do
    [[ -e $item ]] || command -v "$item" >/dev/null 2>&1 || missing+="${missing:+, }$item"
  done
  [[ -z $missing ]]
}

if present; then
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "$name: $missing missing, and installing it needs root;" >&2
  echo "$name: run 'sudo apt-get update && sudo apt-get install -y $*'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
if ! present; then
  echo "$name: apt-get installed $* but $missing is still missing" >&2
  exit 1
fi
echo "$name: installed $*"
