"""Channel appends on a real Redis Cluster (3 masters, a replica each): across slots and
nodes, exactly once, counters exact, and acknowledged appends surviving a failover."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from redis.asyncio import RedisCluster

from pulse.channels import ChannelAppend, ChannelPublisher, CounterIncrement, channel_epoch
from pulse.errors import RetryableError
from pulse.events import PAYMENT_CREATED, CloudEvent, new_event
from pulse.history_limits import HistoryLimit, HistoryLimits
from pulse.replication import Replication
from pulse_dev.testing import stream_entries

if TYPE_CHECKING:
    from pulse_dev.redis_servers import RedisClusterGroup

pytestmark = pytest.mark.timeout(180)

PREFIX = "pulse:"
ACCOUNTS = [f"account:acct-{n}" for n in range(24)]  # spread over every node


@pytest.fixture
def cluster(async_redis_cluster: RedisCluster) -> RedisCluster:
    return async_redis_cluster


def payment(n: int) -> CloudEvent:
    return new_event(type=PAYMENT_CREATED, source="/t", data={"payment_id": f"p{n}"})


async def history(client: RedisCluster, publisher: ChannelPublisher, channel: str) -> list[str]:
    """The payment ids in ``channel``'s history, oldest first."""
    entries = stream_entries(await client.xrange(publisher.keys.history(channel)))
    return [orjson.loads(fields[b"e"])["data"]["payment_id"] for _, fields in entries]


async def test_a_batch_across_every_node_applies_once_in_order_with_exact_counters(
    cluster: RedisCluster,
) -> None:
    publisher = ChannelPublisher(cluster, PREFIX, replication=Replication(1, 2000))
    nodes = {cluster.get_node_from_key(publisher.keys.history(a)) for a in ACCOUNTS}
    assert len(nodes) == 3
    pubsub = cluster.pubsub()
    await pubsub.ssubscribe(publisher.keys.live("payments"))
    counter = publisher.keys.counter("totals")
    appends = [
        ChannelAppend(
            payment(n),
            ["payments", ACCOUNTS[n % len(ACCOUNTS)]],
            counters=[CounterIncrement(counter, "events", 1), CounterIncrement(counter, "n", n)],
        )
        for n in range(60)
    ]

    first = await publisher.append_many(appends)
    again = await publisher.append_many(appends)  # the whole batch retried

    assert all(r.applied and r.counted for r in first)
    assert not any(r.applied or r.counted for r in again)
    assert await history(cluster, publisher, "payments") == [f"p{n}" for n in range(60)]
    for index, account in enumerate(ACCOUNTS):
        expected = [f"p{n}" for n in range(60) if n % len(ACCOUNTS) == index]
        assert await history(cluster, publisher, account) == expected
    assert await cluster.hgetall(counter) == {b"events": b"60", b"n": str(sum(range(60))).encode()}
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(frames) < 60:
            message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                frames.append(orjson.loads(message["data"]))
    assert [f["event"]["data"]["payment_id"] for f in frames] == [f"p{n}" for n in range(60)]
    assert [f["offset"] for f in frames] == [r.offsets["payments"] for r in first]
    await pubsub.aclose()


async def test_appends_acknowledged_with_wait_survive_the_death_of_their_master(
    clean_redis_cluster: RedisClusterGroup, cluster: RedisCluster
) -> None:
    group = clean_redis_cluster
    publisher = ChannelPublisher(cluster, PREFIX, replication=Replication(1, 1000))
    channel = ACCOUNTS[0]
    events = [payment(n) for n in range(31)]
    for event in events[:30]:
        await publisher.append(event, [channel, "payments"])
    try:
        group.kill_master(publisher.keys.history(channel))
        await asyncio.to_thread(group.wait_for_failover)

        promoted = RedisCluster.from_url(group.seed_url)
        assert await history(promoted, publisher, channel) == [f"p{n}" for n in range(30)]
        await promoted.aclose()

        # The promoted master has no replica yet: the next append is applied but not
        # acknowledged, a retryable failure; once a replica is back its retry succeeds
        # without appending twice.
        with pytest.raises(RetryableError):
            await publisher.append(events[30], [channel, "payments"])
        await asyncio.to_thread(group.heal)
        await publisher.append(events[30], [channel, "payments"])
    finally:
        await asyncio.to_thread(group.heal)
    assert await history(cluster, publisher, channel) == [f"p{n}" for n in range(31)]
    assert await history(cluster, publisher, "payments") == [f"p{n}" for n in range(31)]


async def expires_within(client: RedisCluster, key: str | bytes, ms: int) -> bool:
    """``key`` expires within ``ms`` or already did: never a key left without an expiry."""
    left = await client.pttl(key)
    return left == -2 or 0 <= left <= ms


# Long enough that a loaded machine's pauses do not outlast it between two steps of a test.
LIFETIME = 3


async def test_idle_channels_on_every_node_leave_no_key_behind(cluster: RedisCluster) -> None:
    limits = HistoryLimits(account=HistoryLimit(size=10, ttl_seconds=LIFETIME))
    publisher = ChannelPublisher(cluster, PREFIX, history=limits)
    await publisher.append_many([ChannelAppend(payment(n), ACCOUNTS) for n in range(3)])
    await channel_epoch(cluster, publisher.keys, "account:read-only", ttl_seconds=LIFETIME)
    written = [key async for key in cluster.scan_iter(match=f"{PREFIX}{{ch:*")]
    assert len(written) == len(ACCOUNTS) * 5 + 1  # stream, epoch, 3 guards each; an epoch
    for channel in ACCOUNTS:  # the script wrote only keys of the channel's own slot
        mine = [key for key in written if key.startswith(publisher.keys.tag(channel).encode())]
        assert len(mine) == 5
        assert len({await cluster.cluster_keyslot(key) for key in mine}) == 1
    for key in written:
        assert await expires_within(cluster, key, LIFETIME * 1000)

    await asyncio.sleep(LIFETIME + 0.1)

    assert [key async for key in cluster.scan_iter(match=f"{PREFIX}{{ch:*")] == []
