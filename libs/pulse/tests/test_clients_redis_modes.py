"""pulse.clients against real servers in each Redis mode: a standalone server, a Redis
Cluster and a sentinel-watched master, the last two also over TLS with a password; and a
client that rides out a failover."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest
from redis.asyncio.cluster import ClusterPubSub

from pulse.clients import blocking_redis_client, pubsub_client, redis_client
from pulse.settings import PulseSettings
from pulse_dev.redis_fixtures import SECURE_REDIS_PASSWORD

if TYPE_CHECKING:
    from pulse_dev.redis_servers import RedisClusterGroup, SentinelGroup, TlsFiles

GROUPS = {
    "cluster": "redis_cluster",
    "sentinel": "redis_sentinel",
    "secure-cluster": "secure_redis_cluster",
    "secure-sentinel": "secure_redis_sentinel",
}
MODES = ["standalone", *GROUPS]


def cluster_settings(group: RedisClusterGroup, tls: TlsFiles | None = None) -> PulseSettings:
    return PulseSettings(
        redis_mode="cluster",
        redis_url=group.seed_url,
        redis_tls_ca_file=tls.ca if tls else None,
    )


def sentinel_settings(group: SentinelGroup, tls: TlsFiles | None = None) -> PulseSettings:
    # The sentinels name the master; REDIS_URL says how to talk to it (host not used).
    master = f"rediss://:{SECURE_REDIS_PASSWORD}@master/0" if tls else "redis://master/0"
    return PulseSettings(
        redis_mode="sentinel",
        redis_url=master,
        redis_sentinels=tuple(group.sentinel_urls),
        redis_master_name=group.master_name,
        redis_tls_ca_file=tls.ca if tls else None,
    )


@pytest.fixture(params=MODES)
def settings(request: pytest.FixtureRequest) -> PulseSettings:
    """Settings for one running Redis of each mode (each server starts on first use)."""
    mode: str = request.param
    if mode == "standalone":
        return PulseSettings(redis_url=request.getfixturevalue("redis_url"))
    tls = request.getfixturevalue("redis_tls") if mode.startswith("secure") else None
    group = request.getfixturevalue(GROUPS[mode])
    if mode.endswith("cluster"):
        return cluster_settings(group, tls)
    return sentinel_settings(group, tls)


async def test_the_service_client_reads_and_writes_in_every_mode(
    settings: PulseSettings,
) -> None:
    client = redis_client(settings, max_connections=4)
    keys = [f"pulse:{uuid.uuid4().hex}:{i}" for i in range(20)]  # spread over the slots
    counter = f"pulse:{uuid.uuid4().hex}:n"
    try:
        await asyncio.gather(*(client.set(key, key, ex=60) for key in keys))
        values = await asyncio.gather(*(client.get(key) for key in keys))
        assert values == [key.encode() for key in keys]
        # 100 commands at once through 4 connections (per node): they queue, none fails
        counts = await asyncio.gather(*(client.incr(counter) for _ in range(100)))
        assert sorted(counts) == list(range(1, 101))
    finally:
        await client.delete(*keys, counter)
        await client.aclose()


def test_the_blocking_client_reads_and_writes_in_every_mode(settings: PulseSettings) -> None:
    key = f"pulse:{uuid.uuid4().hex}:k"
    with blocking_redis_client(settings) as client:
        client.set(key, b"v", ex=60)
        assert client.get(key) == b"v"


async def test_the_pubsub_client_hears_what_is_published_in_every_mode(
    settings: PulseSettings,
) -> None:
    channel = f"pulse:{uuid.uuid4().hex}:live"
    listener = pubsub_client(settings, client_name="pulse-test-live")
    publisher = redis_client(settings)
    try:
        if settings.redis_mode == "cluster":
            await listener.initialize()  # the slot map first
            pubsub = listener.pubsub()
            assert isinstance(pubsub, ClusterPubSub)
            await pubsub.ssubscribe(channel)
            await publisher.spublish(channel, b"hello")
            message = None
            while message is None:
                message = await pubsub.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=5
                )
        else:
            pubsub = listener.pubsub()
            await pubsub.subscribe(channel)
            await publisher.publish(channel, b"hello")
            message = None
            while message is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message["data"] == b"hello"
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
    finally:
        await listener.aclose()
        await publisher.aclose()


@pytest.mark.parametrize("mode", ["sentinel", "secure-sentinel"])
async def test_a_sentinel_client_carries_on_with_the_new_master_after_a_failover(
    request: pytest.FixtureRequest, mode: str
) -> None:
    group: SentinelGroup = request.getfixturevalue(GROUPS[mode])
    tls = request.getfixturevalue("redis_tls") if mode.startswith("secure") else None
    client = redis_client(sentinel_settings(group, tls))
    key = f"pulse:{uuid.uuid4().hex}:k"
    try:
        await client.set(key, b"before", ex=600)  # a pooled connection to the first master
        old = group.kill_master()
        await asyncio.to_thread(group.wait_for_failover)
        # The same client: its connection is dead, so the command is retried on a new one to
        # the master the sentinels name now.
        await client.set(key, b"after", ex=600)
        assert await client.get(key) == b"after"
        new = group.master()
        assert new is not old
        assert new.client().get(key) == "after"
    finally:
        await client.aclose()
        await asyncio.to_thread(group.heal)


async def test_a_cluster_client_carries_on_after_a_master_fails_over(
    redis_cluster: RedisClusterGroup,
) -> None:
    client = redis_client(cluster_settings(redis_cluster))
    key = f"pulse:{uuid.uuid4().hex}:k"
    try:
        await client.set(key, b"before", ex=600)
        old = redis_cluster.kill_master(key)
        await asyncio.to_thread(redis_cluster.wait_for_failover)
        await client.set(key, b"after", ex=600)
        assert await client.get(key) == b"after"
        assert redis_cluster.master_for_key(key) is not old
    finally:
        await client.aclose()
        await asyncio.to_thread(redis_cluster.heal)
