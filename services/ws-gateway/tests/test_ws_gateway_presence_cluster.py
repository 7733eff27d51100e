"""Presence on a real Redis Cluster: each channel's scripts and frames on its own node, the
sweep list on another, and nothing left behind."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterPubSub

from pulse.channels import ChannelKeys
from ws_gateway.presence import Presence

pytestmark = pytest.mark.timeout(60)
KEYS = ChannelKeys("pulse:")
CHANNELS = [f"account:acct-{n}" for n in range(6)]  # on every node


async def _listen(cluster: RedisCluster) -> ClusterPubSub:
    """A sharded subscription to every channel of the test, confirmed by Redis."""
    pubsub = cluster.pubsub()
    for channel in CHANNELS:
        await pubsub.ssubscribe(KEYS.live(channel))
    confirmed = 0
    async with asyncio.timeout(10):
        while confirmed < len(CHANNELS):
            message = await pubsub.get_sharded_message(timeout=1)
            confirmed += message is not None and message["type"] == "ssubscribe"
    return pubsub


async def _frames(pubsub: ClusterPubSub, count: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(frames) < count:
            message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                frames.append(orjson.loads(message["data"]))
    await pubsub.aclose()
    return frames


async def test_on_a_cluster_users_join_and_leave_once_across_sessions(
    async_redis_cluster: RedisCluster,
) -> None:
    presence = Presence(async_redis_cluster, KEYS, lease_seconds=60)
    pubsub = await _listen(async_redis_cluster)
    for channel in CHANNELS:
        await presence.join(channel, "c1", "alice")
        await presence.join(channel, "c2", "alice")  # a second session: no frame
        assert await presence.users(channel) == {"alice": 2}
        await presence.leave(channel, "c1")
        await presence.leave(channel, "c2")
        assert await presence.users(channel) == {}
    frames = await _frames(pubsub, 2 * len(CHANNELS))
    assert sorted((f["channel"], "joined" in f) for f in frames) == sorted(
        [(c, True) for c in CHANNELS] + [(c, False) for c in CHANNELS]
    )
    assert await async_redis_cluster.smembers(presence.keys.channels) == set()


async def test_on_a_cluster_a_dead_gateways_users_are_swept(
    async_redis_cluster: RedisCluster,
) -> None:
    dead = Presence(async_redis_cluster, KEYS, lease_seconds=0.05)  # never renews
    for channel in CHANNELS:
        await dead.join(channel, "c1", "bob")
    await asyncio.sleep(0.2)  # every lease ran out
    sweeper = Presence(async_redis_cluster, KEYS, lease_seconds=60)
    assert await sweeper.sweep() == len(CHANNELS)
    assert [await sweeper.users(c) for c in CHANNELS] == [{}] * len(CHANNELS)
    assert await async_redis_cluster.smembers(sweeper.keys.channels) == set()
