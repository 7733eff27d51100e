"""pytest plugin: real Redis Cluster and Sentinel groups, started when a test first asks.

Loaded by the repository's root ``conftest.py`` beside :mod:`pulse_dev.testing`. Each group
is session-scoped (started once, stopped at the end); a test that kills a node calls the
group's ``heal()`` before it ends, so the next test finds it whole:

- ``redis_cluster``: 3 masters with a replica each, no TLS, no password;
- ``clean_redis_cluster`` (per test): the same cluster, flushed before the test;
  ``async_redis_cluster`` (per test): an initialised asyncio client of it;
- ``redis_sentinel``: a master, a replica and 3 sentinels (master name ``pulse``);
- ``secure_redis_cluster`` / ``secure_redis_sentinel``: the same over TLS (``redis_tls``,
  a throwaway CA) with the data nodes requiring :data:`SECURE_REDIS_PASSWORD`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pytest
from redis.asyncio import RedisCluster

from pulse_dev.redis_servers import (
    RedisClusterGroup,
    SentinelGroup,
    TlsFiles,
    make_tls_files,
    start_cluster,
    start_sentinel_group,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

__all__ = [
    "SECURE_REDIS_PASSWORD",
    "async_redis_cluster",
    "clean_redis_cluster",
    "redis_cluster",
    "redis_sentinel",
    "redis_tls",
    "secure_redis_cluster",
    "secure_redis_sentinel",
]

SECURE_REDIS_PASSWORD: Final = "pulse-test-redis-password"  # noqa: S105 - tests only


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and the server certificate the secure groups use."""
    return make_tls_files(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterGroup]:
    group = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield group
    group.stop()


@pytest.fixture
def clean_redis_cluster(redis_cluster: RedisClusterGroup) -> RedisClusterGroup:
    """``redis_cluster`` with no keys in it."""
    redis_cluster.flushall()
    return redis_cluster


@pytest.fixture
async def async_redis_cluster(
    clean_redis_cluster: RedisClusterGroup,
) -> AsyncIterator[RedisCluster]:
    """An asyncio client of ``clean_redis_cluster``, its slot map read."""
    client = RedisCluster.from_url(clean_redis_cluster.seed_url)
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    group = start_sentinel_group(tmp_path_factory.mktemp("redis-sentinel"))
    yield group
    group.stop()


@pytest.fixture(scope="session")
def secure_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_tls: TlsFiles
) -> Iterator[RedisClusterGroup]:
    group = start_cluster(
        tmp_path_factory.mktemp("secure-redis-cluster"),
        password=SECURE_REDIS_PASSWORD,
        tls=redis_tls,
    )
    yield group
    group.stop()


@pytest.fixture(scope="session")
def secure_redis_sentinel(
    tmp_path_factory: pytest.TempPathFactory, redis_tls: TlsFiles
) -> Iterator[SentinelGroup]:
    group = start_sentinel_group(
        tmp_path_factory.mktemp("secure-redis-sentinel"),
        password=SECURE_REDIS_PASSWORD,
        tls=redis_tls,
    )
    yield group
    group.stop()
