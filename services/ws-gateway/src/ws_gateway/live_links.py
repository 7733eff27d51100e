"""The pub/sub connections that carry live frames to :class:`~ws_gateway.live.LiveHub`.

Live frames are published with ``SPUBLISH`` (sharded pub/sub, Redis 7). A standalone or
sentinel Redis carries every shard channel on one connection (:class:`SingleServer`). A
cluster carries a shard channel only on the node serving its hash slot, so there is one
connection per master that owns a subscribed channel (:class:`ClusterMasters`), opened when
a channel first needs it; which master that is comes from the client's slot map.

:class:`LiveLinks` keeps which connection carries each channel. When Redis drops a
subscription by itself (the slot moved, the node failed or became a replica) the channel is
*lost*: :meth:`LiveLinks.lose` re-reads the slot map, subscribes it again on its current
master and retries every second until that works (a failover takes the cluster's node
timeout); each one is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any, Final

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.crc import key_slot

from pulse.logging import get_logger
from ws_gateway.metrics import REDIS_RESUBSCRIPTIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from redis.asyncio.connection import Connection

    from pulse.clients import RedisClient

__all__ = [
    "ClusterMasters",
    "LiveLink",
    "LiveLinks",
    "PubSubServers",
    "SingleServer",
    "servers_for",
]

log = get_logger("ws_gateway.live")
RETRY_DELAY_SECONDS: Final = 1.0


class LiveLink:
    """One pub/sub connection and the channels subscribed on it."""

    def __init__(self, name: str, pubsub: PubSub, on_reconnect: Callable[[LiveLink], None]) -> None:
        self.name = name
        self.pubsub = pubsub
        self.channels: set[str] = set()
        # Our SUNSUBSCRIBEs whose reply has not come: any other ``sunsubscribe`` for a key
        # is Redis dropping the subscription (slot moved, node demoted).
        self.unsubscribing: Counter[bytes] = Counter()
        self.tasks: list[asyncio.Task[None]] = []
        self._on_reconnect = on_reconnect
        self._opening: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        connection: Any = self.pubsub.connection
        return connection is not None and bool(connection.is_connected)

    async def open(self, started: Callable[[LiveLink], None]) -> None:
        """Connect, once: concurrent callers wait for the same attempt; after a failed one the
        next call tries again. ``started`` runs once, when the connection is up."""
        if self._opening is None:
            self._opening = asyncio.create_task(self._connect(started), name="live-connect")
        await asyncio.shield(self._opening)

    async def _connect(self, started: Callable[[LiveLink], None]) -> None:
        try:
            await self.pubsub.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            self._opening = None
            raise
        # Called on every later reconnect, after redis-py has resubscribed our channels.
        connection: Any = self.pubsub.connection
        connection.register_connect_callback(self._reconnected)
        started(self)

    def _reconnected(self, _connection: object) -> None:
        self.unsubscribing.clear()  # the replies to what was in flight are lost
        self._on_reconnect(self)

    def forget(self, live_key: bytes) -> None:
        """Stop resubscribing ``live_key`` on reconnect: it is no longer wanted here."""
        self.pubsub.shard_channels.pop(live_key, None)

    async def close(self) -> None:
        # A connection attempt first: once it is over, nothing starts new tasks.
        if self._opening is not None:
            self._opening.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._opening
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]


class PubSubServers:
    """Which server's pub/sub connection carries a live key, and how to open one."""

    follows_slots = False  # True: a key's server changes when Redis moves its slot

    async def start(self) -> None:
        """Learn the topology (a cluster's slot map); raises if Redis is out of reach."""

    async def refresh(self) -> None:
        """Re-read the topology after Redis dropped a subscription."""

    def server_for(self, live_key: bytes) -> str:
        raise NotImplementedError

    def open(self, server: str) -> PubSub:
        raise NotImplementedError


class SingleServer(PubSubServers):
    """A standalone or sentinel Redis: one connection for every channel (through a
    sentinel pool, a reconnect reaches the current master)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    def server_for(self, live_key: bytes) -> str:  # noqa: ARG002 (one server for every key)
        return "redis"

    def open(self, server: str) -> PubSub:  # noqa: ARG002 (the only one)
        return self._redis.pubsub()


class ClusterMasters(PubSubServers):
    """A Redis Cluster: one connection per master, each for the keys of its slots."""

    follows_slots = True

    def __init__(self, cluster: aioredis.RedisCluster) -> None:
        self._cluster = cluster

    async def start(self) -> None:
        await self._cluster.initialize()

    async def refresh(self) -> None:
        await self._cluster.nodes_manager.initialize()

    def server_for(self, live_key: bytes) -> str:
        node = self._cluster.get_node_from_key(live_key)  # type: ignore[arg-type]
        if node is None:  # only asked of replicas, never here
            raise LookupError(live_key)
        return str(node.name)

    def open(self, server: str) -> PubSub:
        node = self._cluster.get_node(node_name=server)
        if node is None:
            raise LookupError(server)
        # A connection of its own (not one of the node's pool, shared with commands), with
        # the cluster client's settings (TLS, AUTH, name) and no health checks: only the
        # reader task may read it.
        pool = aioredis.ConnectionPool(
            connection_class=node.connection_class,
            **{**node.connection_kwargs, "health_check_interval": 0},
        )
        return _SlotwisePubSub(connection_pool=pool)


class _SlotwisePubSub(PubSub):
    """A pub/sub connection to one cluster node. Reconnected, it subscribes again with one
    ``SSUBSCRIBE`` per hash slot: a node refuses one spanning slots (``CROSSSLOT``)."""

    async def on_connect(self, connection: Connection) -> None:  # noqa: ARG002 (redis-py's signature)
        self.pending_unsubscribe_shard_channels.clear()
        by_slot: defaultdict[int, list[bytes]] = defaultdict(list)
        for key in self.shard_channels:
            by_slot[key_slot(key)].append(key)
        for keys in by_slot.values():
            await self.ssubscribe(*keys)


def servers_for(redis: RedisClient) -> PubSubServers:
    if isinstance(redis, aioredis.RedisCluster):
        return ClusterMasters(redis)
    return SingleServer(redis)


class LiveLinks:
    """Which connection carries each subscribed channel, and moving the lost ones.

    ``started`` runs once per connection when it is up (the owner starts its reader);
    ``listening`` says whether Redis confirmed a channel's latest ``SSUBSCRIBE``; ``moved``
    runs when a channel subscribed on one connection is given to another (the owner holds
    its frames and fills its gap once the new connection listens: what was published
    between the old subscription's last frame and the new one's first reached neither).
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        live_key: Callable[[str], bytes],
        started: Callable[[LiveLink], None],
        on_reconnect: Callable[[LiveLink], None],
        listening: Callable[[str], bool],
        moved: Callable[[str], None],
    ) -> None:
        self.servers = servers_for(redis)
        self._links: dict[str, LiveLink] = {}
        self._link_of: dict[str, LiveLink] = {}
        self._lost: dict[str, str] = {}  # channel -> why, until subscribed again
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._live_key = live_key
        self._started = started
        self._on_reconnect = on_reconnect
        self._listening = listening
        self._moved = moved

    async def start(self) -> None:
        await self.servers.start()
        if not self.servers.follows_slots:  # one connection for all: up now, or fail start-up
            await self._link(self.servers.server_for(b"")).open(self._started)

    async def close(self) -> None:
        self._closed = True  # what the readers report while they stop starts nothing
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for link in list(self._links.values()):
            await link.close()

    def of(self, channel: str) -> LiveLink | None:
        return self._link_of.get(channel)

    async def attach(self, channel: str) -> LiveLink:
        """The connection for ``channel`` (it counts as carrying it from now), connected."""
        link = self._link(self.servers.server_for(self._live_key(channel)))
        old = self._link_of.get(channel)
        self._assign(channel, link)
        if old is not None and old is not link:
            self._moved(channel)  # before any await: no reply of the old link counts now
        await link.open(self._started)
        return link

    def detach(self, channel: str) -> LiveLink | None:
        self._lost.pop(channel, None)
        link = self._link_of.pop(channel, None)
        if link is not None:
            link.channels.discard(channel)
        return link

    def lose(self, channels: Iterable[str], reason: str) -> None:
        """Redis dropped these channels' subscriptions: subscribe them again where they are
        served now (the caller holds their frames and fills the gap once they listen)."""
        for channel in channels:
            if channel in self._link_of:
                self._lost.setdefault(channel, reason)
        if self._lost and not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._resubscribe_lost(), name="live-resubscribe")

    def _link(self, server: str) -> LiveLink:
        link = self._links.get(server)
        if link is None:
            link = LiveLink(server, self.servers.open(server), self._on_reconnect)
            self._links[server] = link
        return link

    def _assign(self, channel: str, link: LiveLink) -> None:
        old = self._link_of.get(channel)
        if old is not None and old is not link:
            old.channels.discard(channel)
            old.forget(self._live_key(channel))
        link.channels.add(channel)
        self._link_of[channel] = link

    async def _resubscribe_lost(self) -> None:
        while self._lost:
            try:
                await self.servers.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis topology refresh failed, retrying", error=str(exc))
            else:
                await self._resubscribe_round()
            if self._lost:
                await asyncio.sleep(RETRY_DELAY_SECONDS)

    async def _resubscribe_round(self) -> None:
        done: Counter[tuple[str, str]] = Counter()
        for channel in list(self._lost):
            reason = self._lost.pop(channel, None)
            if reason is None or channel not in self._link_of:
                continue
            server = await self._resubscribe(channel)
            if server is None:
                if channel in self._link_of:
                    self._lost.setdefault(channel, reason)
            else:
                done[server, reason] += 1
        for (server, reason), count in done.items():
            REDIS_RESUBSCRIPTIONS.labels(reason).inc(count)
            log.info("live channels resubscribed", server=server, reason=reason, channels=count)
        if self.servers.follows_slots:  # a master's connection goes once none of ours is on it
            for name, link in list(self._links.items()):
                if not link.channels:
                    del self._links[name]
                    await link.close()

    async def _resubscribe(self, channel: str) -> str | None:
        """Subscribe ``channel`` on the server that serves it now; that server's name, or None
        if it cannot be done yet (its server is out of reach: a reconnect or the next topology
        refresh settles it)."""
        old = self._link_of[channel]
        try:
            link = await self.attach(channel)
            if not link.connected:
                return None
            if link is old and self._listening(channel):
                return link.name  # the reconnect resubscribed it
            await link.pubsub.ssubscribe(self._live_key(channel))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("live resubscribe failed", channel=channel, error=str(exc))
            return None
        return link.name
