"""The Redis Cluster and Sentinel groups tests start: they serve clients as a real deployment
does, fail over when a master is killed, and, secured, want the CA and the password."""

from __future__ import annotations

import os
import signal
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError

from pulse_dev.redis_fixtures import SECURE_REDIS_PASSWORD
from pulse_dev.redis_nodes import wait_until
from pulse_dev.redis_servers import RedisClusterGroup, SentinelGroup, TlsFiles

KEY = "payment:{acct-42}"


def sentinel_client(group: SentinelGroup, **data_options: Any) -> Sentinel:
    """A redis-py Sentinel client of ``group``; ``data_options`` reach its master's clients."""
    addresses = []
    for url in group.sentinel_urls:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        addresses.append((parts.hostname, parts.port))
    sentinel_options = {
        key: data_options[key] for key in ("ssl", "ssl_ca_certs") if key in data_options
    }
    return Sentinel(  # type: ignore[no-untyped-call]  # unannotated in redis-py
        addresses, sentinel_kwargs=sentinel_options, socket_timeout=2, **data_options
    )


async def close_sentinels(sentinel: Sentinel) -> None:
    for client in sentinel.sentinels:
        await client.aclose()


async def assert_refuses_anonymous(host: str, port: int, tls: TlsFiles) -> None:
    """The node at ``host:port`` accepts TLS with the CA, then refuses a command sent
    without the password."""
    anonymous = aioredis.Redis(
        host=host, port=port, ssl=True, ssl_ca_certs=str(tls.ca), retry=Retry(NoBackoff(), 0)
    )
    try:
        with pytest.raises(AuthenticationError):
            await anonymous.get(KEY)
    finally:
        await anonymous.aclose()


async def test_cluster_has_three_masters_with_a_replica_each_and_serves_keys(
    clean_redis_cluster: RedisClusterGroup,
) -> None:
    group = clean_redis_cluster
    assert len(group.masters()) == 3
    assert len(group.replicas()) == 3
    client = RedisCluster.from_url(group.seed_url, decode_responses=True)
    try:
        for n in range(60):
            await client.set(f"payment:{n}", str(n))
        assert [await client.get(f"payment:{n}") for n in range(60)] == [str(n) for n in range(60)]
    finally:
        await client.aclose()
    # The keys spread over every master, as the slots do.
    assert all(node.client().dbsize() > 0 for node in group.masters())


async def test_killed_master_is_replaced_by_its_replica(
    clean_redis_cluster: RedisClusterGroup,
) -> None:
    group = clean_redis_cluster
    old_master = group.master_for_key(KEY)
    old_master.client().set(KEY, "before")
    assert old_master.client().wait(1, 5000) == 1  # the replica has it
    replicas_before = group.replicas()
    try:
        assert group.kill_master(KEY) is old_master
        group.wait_for_failover()
        new_master = group.master_for_key(KEY)
        assert new_master is not old_master
        assert new_master in replicas_before
        client = RedisCluster.from_url(group.seed_url, decode_responses=True)
        try:
            assert await client.get(KEY) == "before"
            await client.set(KEY, "after")
            assert await client.get(KEY) == "after"
        finally:
            await client.aclose()
    finally:
        group.heal()
    # The old master came back as a replica: three of each again.
    assert old_master in group.replicas()
    assert len(group.masters()) == 3


async def test_sentinels_find_the_master_and_promote_the_replica_when_it_dies(
    redis_sentinel: SentinelGroup,
) -> None:
    group = redis_sentinel
    sentinel = sentinel_client(group)
    old_master = group.master()
    assert await sentinel.discover_master(group.master_name) == (old_master.host, old_master.port)
    master = sentinel.master_for(group.master_name, decode_responses=True)
    try:
        await master.set(KEY, "before")
        assert await master.wait(1, 5000) == 1
        assert group.kill_master() is old_master
        group.wait_for_failover()
        new_address = await sentinel.discover_master(group.master_name)
        assert new_address != (old_master.host, old_master.port)
        fresh = sentinel.master_for(group.master_name, decode_responses=True)
        try:
            assert await fresh.get(KEY) == "before"
            await fresh.set(KEY, "after")
            assert await fresh.get(KEY) == "after"
        finally:
            await fresh.aclose()
    finally:
        await master.aclose()
        await close_sentinels(sentinel)
        group.heal()
    assert group.master() is not old_master
    assert old_master.client().role()[0] == "slave"


def test_a_pause_of_the_master_after_a_heal_fails_over_to_a_replica_holding_everything(
    redis_sentinel: SentinelGroup,
) -> None:
    """A healed node rejoins unpromotable (``replica-priority 0``) and is made promotable
    again only once it holds the master's data: when the master then seems down (here it is
    paused past the sentinels' down-after), the node promoted has every acknowledged key."""
    group = redis_sentinel
    killed = group.kill_master()
    group.wait_for_failover()
    group.heal()
    assert killed.client().config_get("replica-priority") == {"replica-priority": "100"}
    master = group.master()
    master.client().set(KEY, "acknowledged")
    assert master.client().wait(1, 5000) == 1
    assert master.process is not None
    os.kill(master.process.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: group.master() is killed, 30, "a failover to the healed node")
    finally:
        os.kill(master.process.pid, signal.SIGCONT)
    group.wait_until_healthy()
    assert killed.client().get(KEY) == "acknowledged"


async def test_secure_cluster_wants_the_ca_and_the_password(
    secure_redis_cluster: RedisClusterGroup, redis_tls: TlsFiles
) -> None:
    url = secure_redis_cluster.seed_url
    assert url.startswith(f"rediss://:{SECURE_REDIS_PASSWORD}@")
    client = RedisCluster.from_url(url, ssl_ca_certs=str(redis_tls.ca), decode_responses=True)
    try:
        await client.set(KEY, "secret")
        assert await client.get(KEY) == "secret"
    finally:
        await client.aclose()

    for node in secure_redis_cluster.nodes:
        await assert_refuses_anonymous(node.host, node.port, redis_tls)


async def test_secure_sentinel_group_wants_the_ca_and_the_password(
    secure_redis_sentinel: SentinelGroup, redis_tls: TlsFiles
) -> None:
    group = secure_redis_sentinel
    assert all(url.startswith("rediss://") for url in group.sentinel_urls)
    tls = {"ssl": True, "ssl_ca_certs": str(redis_tls.ca)}
    sentinel = sentinel_client(group, password=SECURE_REDIS_PASSWORD, **tls)
    master = sentinel.master_for(group.master_name, decode_responses=True)
    try:
        await master.set(KEY, "secret")
        assert await master.get(KEY) == "secret"
    finally:
        await master.aclose()

    # The master the sentinels name refuses a client that does not send the password.
    host, port = await sentinel.discover_master(group.master_name)
    await close_sentinels(sentinel)
    await assert_refuses_anonymous(host, port, redis_tls)
