#!/usr/bin/env bash
# Installs the redis-server (Redis 7) the Redis Cluster and Sentinel tests start
# (pulse_dev.redis_servers). Debian's package, never a download of its own.
# Does nothing when redis-server is already on PATH; needs root (apt-get) otherwise.
# Where an init system runs, the package also starts a Redis on 127.0.0.1:6379; the tests use
# it when it answers and start their own servers otherwise, so either way is fine.
exec bash "$(dirname "$0")/debian-tools.sh" redis-tools redis-server redis-server
