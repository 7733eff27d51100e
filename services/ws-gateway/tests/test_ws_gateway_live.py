"""Live delivery through Redis failures, with real servers: on a Redis Cluster (3 masters, a
replica each) sharded subscriptions on every master, through a master's failover and a
slot's migration; on a sentinel-managed Redis, through a failover. No gap, no duplicate.

On the cluster, frames are published as the append script does it, in two commands (XADD to
the channel's history, then SPUBLISH of the frame to its live key), so that the publisher
does not depend on the history and live keys sharing a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.asyncio.sentinel import Sentinel
from redis.crc import key_slot
from redis.exceptions import RedisError

from pulse.channels import ChannelKeys, ChannelPublisher
from pulse.events import PAYMENT_CREATED, new_event
from ws_gateway.history import ChannelHistory
from ws_gateway.live import LiveHub
from ws_gateway.live_links import ClusterMasters
from ws_gateway.protocol import event_frame

if TYPE_CHECKING:
    from pulse_dev.redis_servers import RedisClusterGroup, RedisNode, SentinelGroup
    from ws_gateway.fanout import DirectWriter
    from ws_gateway.offsets import StreamId

pytestmark = pytest.mark.timeout(180)
WAIT_SECONDS = 60.0


class Inbox:
    """A subscriber that keeps every frame it is handed."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    def deliver(self, channel: str, frame: str) -> None:
        parsed = orjson.loads(frame)
        assert parsed["channel"] == channel
        self.frames.append(parsed)
        self._arrived.set()

    def direct_writer(
        self,
        channel: str,  # noqa: ARG002 (the Subscriber protocol)
        delivered: StreamId | None = None,  # noqa: ARG002
    ) -> DirectWriter | None:
        return None  # every frame through deliver()

    def events(self, channel: str) -> list[str]:
        return [f["offset"] for f in self.frames if f["op"] == "event" and f["channel"] == channel]

    async def first_events(self, channel: str, count: int) -> list[str]:
        """The offsets of the channel's first ``count`` event frames, once that many came."""
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.events(channel)) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events(channel)[:count]


class Cluster:
    """A gateway's hub on the cluster, and a publisher beside it."""

    def __init__(self, seed_url: str) -> None:
        self.keys = ChannelKeys(f"t{uuid.uuid4().hex[:8]}:")
        self.client = aioredis.RedisCluster.from_url(seed_url)
        self.reader = aioredis.RedisCluster.from_url(seed_url)
        history = ChannelHistory(self.reader, self.keys, batch_size=3)
        self.hub = LiveHub(
            aioredis.RedisCluster.from_url(seed_url, client_name="ws-gateway-live"),
            self.keys,
            history,
        )

    async def channel_per_master(self) -> list[str]:
        """One account channel whose live key each master serves."""
        await self.client.initialize()
        found: dict[str, str] = {}
        n = 0
        while len(found) < len(self.client.get_primaries()):
            channel = f"account:{n}"
            node = self.client.get_node_from_key(self.keys.live(channel))
            assert node is not None
            found.setdefault(node.name, channel)
            n += 1
        return list(found.values())

    async def append(self, channel: str, n: int) -> str:
        """Store an event in the channel's history (retrying while its master is down) and
        publish its frame; a frame that cannot be published is left to the gap fill."""
        event = orjson.dumps({"n": n}).decode()
        stored: bytes | str | None = None
        async with asyncio.timeout(WAIT_SECONDS):
            while stored is None:
                try:
                    stored = await self.client.xadd(self.keys.history(channel), {"e": event})
                except (RedisError, OSError):
                    await asyncio.sleep(0.1)
        offset = stored.decode() if isinstance(stored, bytes) else stored
        with contextlib.suppress(RedisError, OSError):
            await self.client.spublish(self.keys.live(channel), event_frame(channel, offset, event))
        return offset

    async def appends(self, channel: str, first: int, count: int) -> list[str]:
        return [await self.append(channel, n) for n in range(first, first + count)]


@pytest.fixture
async def cluster(redis_cluster: RedisClusterGroup) -> AsyncIterator[Cluster]:
    on_cluster = Cluster(redis_cluster.seed_url)
    await on_cluster.hub.start()
    yield on_cluster
    await on_cluster.hub.close()
    await on_cluster.client.aclose()
    await on_cluster.reader.aclose()


async def test_a_subscriber_gets_live_frames_of_channels_on_every_master(cluster: Cluster) -> None:
    channels = await cluster.channel_per_master()
    assert len(channels) == 3
    inbox = Inbox()
    for channel in channels:
        await cluster.hub.add(channel, inbox)
    sent = {channel: await cluster.appends(channel, 0, 3) for channel in channels}
    for channel in channels:
        assert await inbox.first_events(channel, 3) == sent[channel]


def _count(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def _resubscriptions(reason: str) -> float:
    return _count("pulse_ws_redis_resubscriptions_total", reason=reason)


def _gap_fills(outcome: str) -> float:
    return _count("pulse_ws_gap_fills_total", outcome=outcome)


async def _until(predicate: Callable[[], bool]) -> None:
    """Wait (in a thread: the predicates ask Redis synchronously) until ``predicate()``."""
    async with asyncio.timeout(WAIT_SECONDS):
        while not await asyncio.to_thread(predicate):
            await asyncio.sleep(0.1)


def _replicas_caught_up(masters: list[RedisNode]) -> bool:
    """Has every replica of ``masters`` acknowledged everything its master has written?"""
    for master in masters:
        info = master.client().info("replication")
        acked = [int(v["offset"]) for k, v in info.items() if k.startswith("slave")]
        if not acked or min(acked) < int(info["master_repl_offset"]):
            return False
    return True


async def test_frames_published_during_a_failover_are_filled_from_history(
    cluster: Cluster, redis_cluster: RedisClusterGroup
) -> None:
    channel = (await cluster.channel_per_master())[0]
    inbox = Inbox()
    await cluster.hub.add(channel, inbox)
    before = await cluster.appends(channel, 0, 2)
    assert await inbox.first_events(channel, 2) == before
    await _until(lambda: _replicas_caught_up(redis_cluster.masters()))  # a failover loses nothing
    resubscribed = _resubscriptions("node_lost")

    redis_cluster.kill_master(cluster.keys.live(channel))
    try:
        during = await cluster.appends(channel, 2, 4)  # no subscription listens to these
        await asyncio.to_thread(redis_cluster.wait_for_failover)
        after = await cluster.appends(channel, 6, 2)
        assert await inbox.first_events(channel, 8) == before + during + after
        last = await cluster.append(channel, 8)  # and nothing came twice meanwhile
        assert await inbox.first_events(channel, 9) == [*before, *during, *after, last]
        assert _resubscriptions("node_lost") > resubscribed
    finally:
        await asyncio.to_thread(redis_cluster.heal)


async def test_a_master_restarted_before_its_channels_move_loses_no_frame(
    cluster: Cluster, redis_cluster: RedisClusterGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The killed master comes back (as a replica) before the hub has learnt who replaced
    it: the hub's connection to it reconnects and resubscribes there first, and only then
    does the channel move to the new master. Frames published on the new master in between
    reach the hub by neither connection: the move fills the gap again from history."""
    channel = (await cluster.channel_per_master())[0]
    inbox = Inbox()
    await cluster.hub.add(channel, inbox)
    before = await cluster.appends(channel, 0, 2)
    assert await inbox.first_events(channel, 2) == before
    await _until(lambda: _replicas_caught_up(redis_cluster.masters()))
    reconnects = _resubscriptions("reconnect")

    fills = _gap_fills("filled")
    # The hub learns the new slot map only once its old connection is back on the restarted
    # node and has filled the gap there (the order a quick restart makes).
    refresh = ClusterMasters.refresh

    async def refresh_after_the_reconnect(self: ClusterMasters) -> None:
        async with asyncio.timeout(WAIT_SECONDS):
            while _resubscriptions("reconnect") == reconnects or _gap_fills("filled") == fills:
                await asyncio.sleep(0.005)
        await refresh(self)

    monkeypatch.setattr(ClusterMasters, "refresh", refresh_after_the_reconnect)
    sent: list[str] = []
    stop = asyncio.Event()

    async def keep_appending() -> None:
        n = 2
        while not stop.is_set():
            sent.append(await cluster.append(channel, n))
            n += 1
            await asyncio.sleep(0.002)

    appending = asyncio.create_task(keep_appending())
    redis_cluster.kill_master(cluster.keys.live(channel))
    try:
        await asyncio.to_thread(redis_cluster.wait_for_failover)
    finally:
        await asyncio.to_thread(redis_cluster.heal)
    await _until(lambda: _resubscriptions("reconnect") > reconnects)
    await asyncio.sleep(3.0)  # the move, then live frames from the new master
    stop.set()
    await appending
    with contextlib.suppress(TimeoutError):  # the last one came: so did any before it
        async with asyncio.timeout(10):
            while sent[-1] not in inbox.events(channel):
                await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    got = inbox.events(channel)
    assert [o for o in before + sent if o not in got] == []  # none missing
    assert got == before + sent  # in order, none twice


def _node_id(node: RedisNode) -> str:
    return str(node.client().cluster("myid"))


def _begin_moving(slot: int, source: RedisNode, target: RedisNode) -> None:
    """Mark ``slot`` migrating from ``source`` to ``target`` and move its keys."""
    target.client().cluster("setslot", slot, "importing", _node_id(source))
    source.client().cluster("setslot", slot, "migrating", _node_id(target))
    while keys := source.client().cluster("getkeysinslot", slot, 100):
        source.client().migrate(target.host, target.port, keys, 0, 5000)


def _finish_moving(
    group: RedisClusterGroup, slot: int, source: RedisNode, target: RedisNode
) -> None:
    """Give ``slot`` to ``target``: target first, then source, then every other master."""
    others = [m for m in group.masters() if m.port not in (source.port, target.port)]
    for node in (target, source, *others):
        node.client().cluster("setslot", slot, "node", _node_id(target))


async def _move_slot(
    group: RedisClusterGroup, slot: int, source: RedisNode, target: RedisNode
) -> None:
    await asyncio.to_thread(_begin_moving, slot, source, target)
    await asyncio.to_thread(_finish_moving, group, slot, source, target)


async def test_a_subscription_follows_its_slot_to_another_master(
    cluster: Cluster, redis_cluster: RedisClusterGroup
) -> None:
    channel = (await cluster.channel_per_master())[0]
    live_key = cluster.keys.live(channel)
    inbox = Inbox()
    await cluster.hub.add(channel, inbox)
    before = await cluster.appends(channel, 0, 2)
    assert await inbox.first_events(channel, 2) == before

    slot = key_slot(live_key.encode())
    source = redis_cluster.master_for_key(live_key)
    target = next(m for m in redis_cluster.masters() if m.port != source.port)
    resubscribed = _resubscriptions("unsubscribed")
    await asyncio.to_thread(_begin_moving, slot, source, target)
    try:
        during = await cluster.appends(channel, 2, 2)
        await asyncio.to_thread(_finish_moving, redis_cluster, slot, source, target)
        moved = await cluster.appends(channel, 4, 3)
        assert await inbox.first_events(channel, 7) == before + during + moved
        # the live frames now come from the target: the subscription is there
        assert target.client().pubsub_shardnumsub(live_key) == [(live_key, 1)]
        assert _resubscriptions("unsubscribed") > resubscribed
    finally:
        await _move_slot(redis_cluster, slot, target, source)


async def test_a_sentinel_failover_loses_no_frame(redis_sentinel: SentinelGroup) -> None:
    """One pub/sub connection through the sentinels: it follows the new master, and what
    was appended meanwhile is filled from history."""
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # unannotated in redis-py
        [(node.host, node.port) for node in redis_sentinel.sentinels], socket_timeout=2
    )
    name = redis_sentinel.master_name
    keys = ChannelKeys(f"t{uuid.uuid4().hex[:8]}:")
    writer = sentinel.master_for(name)
    publisher = ChannelPublisher(writer, keys.prefix)
    reader = sentinel.master_for(name)
    hub = LiveHub(
        sentinel.master_for(name, client_name="ws-gateway-live"),
        keys,
        ChannelHistory(reader, keys, batch_size=3),
    )

    async def append(n: int) -> str:
        event = new_event(type=PAYMENT_CREATED, source="/tests/ws-gateway", data={"n": n})
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                try:  # a retry after a failure applies the event once (its guard)
                    return (await publisher.append(event, ["payments"])).offsets["payments"]
                except (RedisError, OSError):
                    await asyncio.sleep(0.1)

    await hub.start()
    try:
        inbox = Inbox()
        await hub.add("payments", inbox)
        before = [await append(n) for n in range(2)]
        assert await inbox.first_events("payments", 2) == before
        await _until(lambda: _replicas_caught_up([redis_sentinel.master()]))

        redis_sentinel.kill_master()
        try:
            during = [await append(n) for n in range(2, 5)]
            await asyncio.to_thread(redis_sentinel.wait_for_failover)
            after = [await append(n) for n in range(5, 7)]
            assert await inbox.first_events("payments", 7) == before + during + after
        finally:
            await asyncio.to_thread(redis_sentinel.heal)
    finally:
        await hub.close()
        await writer.aclose()
        await reader.aclose()
        for client in sentinel.sentinels:
            await client.aclose()
