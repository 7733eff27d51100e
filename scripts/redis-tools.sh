#!/usr/bin/env bash
# Installs the redis-server (Redis 7) the Redis Cluster and Sentinel tests start
# (pulse_dev.redis_servers). Debian's package, never a download of its own.
# Does nothing when redis-server is already on PATH; needs root (apt-get) otherwise.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "redis-tools: redis-server is missing and installing it needs root;" >&2
  echo "redis-tools: run 'sudo apt-get update && sudo apt-get install -y redis-server'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts a Redis on 127.0.0.1:6379 where an init system runs; the tests use it
# when it answers and start their own servers otherwise, so either way is fine.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-tools: apt-get installed redis-server but it is not on PATH" >&2
  exit 1
fi
echo "redis-tools: $(redis-server --version)"
