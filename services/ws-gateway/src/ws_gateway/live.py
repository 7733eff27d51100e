"""Live delivery: sharded Redis pub/sub (``SSUBSCRIBE``), fanned out to local subscribers.

The append scripts publish with ``SPUBLISH`` on the channel's live key, which shares the
channel's hash tag (so it lives on the node that holds the channel's history).

Each channel has one Redis subscription, reference-counted over the local subscribers: the
first subscriber subscribes, the last one unsubscribes. Published frames are decoded once and
gathered per channel until the reader has taken every message already received; then each
channel's frames go to its :class:`~ws_gateway.fanout.ChannelFanout` together, so a burst
costs one write per connection, not one per frame.

Frames are published with ``SPUBLISH`` to :meth:`pulse.channels.ChannelKeys.live` (Redis 7).
A standalone or sentinel Redis carries every channel on one connection; a cluster carries a
channel only on the master owning its hash slot, so there is a connection per such master
(:mod:`ws_gateway.live_links`), each read by its own task.

Gap fill: Redis pub/sub drops whatever is published while a subscription is down. The hub
remembers the last offset it delivered per channel; when a subscription comes back it waits
for Redis to confirm it, reads the channel's history after that offset and delivers it (live
frames arriving meanwhile are held and joined by offset), so subscribers see no gap and no
duplicate. If the channel's epoch changed (Redis lost its data, or the channel expired idle
before events the hub has not delivered), Redis cannot fill the gap: an account channel's
subscribers get the events after the last delivered from the durable record
(:mod:`ws_gateway.durable`), then a fresh ``subscribed`` frame with the new epoch and
``recovered:true``; where that record cannot say (and on other channels) the frame says
``recovered:false``. Either way the new epoch's events follow. An epoch that changed under
events the hub did deliver (the channel expired idle, then its new events came live) is the
same history going on (:attr:`~ws_gateway.history.HistorySnapshot.carried`).

A subscription comes back in one of two ways. A connection that drops and reconnects is
resubscribed by redis-py (then :meth:`LiveHub._on_reconnect` runs). A subscription Redis
dropped by itself — a ``sunsubscribe`` it sent (the slot moved away, the node became a
replica), a ``MOVED`` reply, a cluster node's connection lost — is *lost*, and subscribed
again on the channel's current master (:meth:`~ws_gateway.live_links.LiveLinks.lose`).
Either way it is logged and counted in ``pulse_ws_redis_resubscriptions_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from redis.crc import key_slot
from redis.exceptions import MovedError, ResponseError

from pulse.logging import get_logger
from ws_gateway.fanout import ChannelFanout
from ws_gateway.live_links import RETRY_DELAY_SECONDS, LiveLinks
from ws_gateway.metrics import GAP_FILLS, MESSAGES_SENT, REDIS_CHANNELS, REDIS_RESUBSCRIPTIONS
from ws_gateway.offsets import ZERO, StreamId, frame_offset
from ws_gateway.protocol import subscribed_frame

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pulse.channels import ChannelKeys
    from pulse.clients import RedisClient
    from ws_gateway.burst import SocketBurst
    from ws_gateway.fanout import Subscriber
    from ws_gateway.health import E2eLatency
    from ws_gateway.history import ChannelHistory
    from ws_gateway.live_links import LiveLink

__all__ = ["LiveHub"]

log = get_logger("ws_gateway.live")


class GapFillDeferredError(Exception):
    """A channel's gap cannot be filled yet: its subscription and its history are on
    different cluster nodes (a failover is being settled)."""


class LiveHub:
    def __init__(
        self,
        redis: RedisClient,
        keys: ChannelKeys,
        history: ChannelHistory,
        *,
        subscribe_timeout: float = 5.0,
        ping_interval: float = 30.0,
        latency: E2eLatency | None = None,
        burst: SocketBurst | None = None,
    ) -> None:
        # ``redis`` must be a client of its own, with health checks off (a pub/sub connection
        # is read only by its reader task: redis-py would otherwise read a PING reply from
        # another task while the reader waits) and replies not decoded. The hub closes it.
        if redis.get_encoder().decode_responses:
            raise ValueError("LiveHub needs a Redis client that does not decode replies")
        self._redis = redis
        self._links = LiveLinks(
            redis,
            live_key=self._live_key,
            started=self._started,
            on_reconnect=self._on_reconnect,
            listening=self._listening,
            moved=self._moved,
        )
        self._keys = keys
        self._history = history
        # Per channel: the newest offset delivered, its epoch, and (while a gap is being
        # filled) the live frames held back.
        self._last: dict[str, StreamId] = {}
        self._epochs: dict[str, str] = {}
        self._held: dict[str, list[str]] = {}
        self._stale: set[str] = set()  # held channels whose gap is not filled yet
        # When each held channel was first held: Redis had lost whatever it lost by then.
        self._held_since: dict[str, float] = {}
        self._fill_task: asyncio.Task[None] | None = None
        self._subscribe_timeout = subscribe_timeout
        self._ping_interval = ping_interval
        self._latency = latency  # samples the live fan-outs' end-to-end latency
        self._subscribers: dict[str, ChannelFanout] = {}
        self._burst = burst  # writes big fan-outs from several threads
        self._channel_of: dict[bytes, str] = {}  # live key -> channel, for those subscribed
        # Frames received during this pass of the event loop, per channel, fanned out at its end.
        self._due: dict[str, list[str]] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        # Futures waiting for Redis to confirm an SSUBSCRIBE, per live key, in send order.
        self._confirmations: dict[bytes, deque[asyncio.Future[None]]] = {}

    async def start(self) -> None:
        await self._links.start()

    async def close(self) -> None:
        await self._links.close()  # first: no reader is left to start a gap fill
        if self._fill_task is not None:
            self._fill_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fill_task
        await self._redis.aclose()

    @property
    def channel_count(self) -> int:
        return len(self._subscribers)

    async def add(self, channel: str, subscriber: Subscriber) -> None:
        """Deliver ``channel``'s live frames to ``subscriber``; returns once Redis listens."""
        subscribers = self._subscribers.get(channel)
        if subscribers is None:
            subscribers = self._subscribers[channel] = ChannelFanout(self._burst)
            live_key = self._live_key(channel)
            self._channel_of[live_key] = channel
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._ready[channel] = ready
            self._confirmations.setdefault(live_key, deque()).append(ready)
            REDIS_CHANNELS.set(len(self._subscribers))
            subscribers.add(subscriber)
            try:
                link = await self._links.attach(channel)
                await link.pubsub.ssubscribe(live_key)
            except Exception:
                self._forget_confirmation(live_key, ready)
                await self.remove(channel, subscriber)
                raise
        else:
            subscribers.add(subscriber)
            ready = self._ready[channel]
        try:
            await asyncio.wait_for(asyncio.shield(ready), self._subscribe_timeout)
            if channel not in self._epochs:
                await self._mark(channel)
        except Exception:
            await self.remove(channel, subscriber)
            raise

    async def _mark(self, channel: str) -> None:
        """Remember where the channel stands now that Redis listens for it."""
        snapshot = await self._history.snapshot(channel)
        if channel in self._subscribers:
            self._epochs[channel] = snapshot.epoch
            last = self._last.get(channel)
            self._last[channel] = snapshot.latest if last is None else max(last, snapshot.latest)

    async def publish(self, channel: str, frame: str) -> None:
        """Publish ``frame`` to the channel's subscribers on every gateway (not stored)."""
        await self._redis.spublish(self._keys.live(channel), frame)

    def promote(self, channel: str, subscriber: Subscriber) -> None:
        """``subscriber`` has joined its replay to ``channel``: into the direct lane if it is
        plain. Every frame the hub hands over from now on is newer than the last it handed
        over (:meth:`_publish` drops the rest), so a floor at or below that holds nothing
        back; a floor above it (history read ahead of pub/sub) waits for a frame to pass."""
        fanout = self._subscribers.get(channel)
        if fanout is not None:
            fanout.promote(channel, subscriber, self._last.get(channel))

    def to_slow(self, subscriber: Subscriber, channels: list[str]) -> None:
        """Frames of ``channels`` go through ``subscriber.deliver`` until it is plain again."""
        for channel in channels:
            fanout = self._subscribers.get(channel)
            if fanout is not None:
                fanout.to_slow(subscriber)

    async def remove(self, channel: str, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(channel)
        if subscribers is None:
            return
        subscribers.discard(subscriber)
        if subscribers:
            return
        del self._subscribers[channel]
        for state in (self._ready, self._last, self._epochs, self._held, self._held_since):
            state.pop(channel, None)
        self._stale.discard(channel)
        live_key = self._live_key(channel)
        self._channel_of.pop(live_key, None)
        REDIS_CHANNELS.set(len(self._subscribers))
        link = self._links.detach(channel)
        if link is None:
            return
        if not link.connected:  # nothing to tell Redis; the reconnect must not resubscribe it
            link.forget(live_key)
            return
        link.unsubscribing[live_key] += 1
        try:
            await link.pubsub.sunsubscribe(live_key)
        except Exception as exc:
            link.unsubscribing.pop(live_key, None)
            link.forget(live_key)
            log.warning("redis unsubscribe failed", channel=channel, error=str(exc))

    def _live_key(self, channel: str) -> bytes:
        return self._keys.live(channel).encode()

    def _started(self, link: LiveLink) -> None:
        link.tasks = [
            asyncio.create_task(self._read_loop(link), name=f"live-reader {link.name}"),
            asyncio.create_task(self._ping_loop(link), name=f"live-ping {link.name}"),
        ]

    async def _read_loop(self, link: LiveLink) -> None:
        while True:
            try:
                message = await link.pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:  # a reply to an (S)SUBSCRIBE: the connection holds
                self._refused(link, exc)
                continue
            except Exception as exc:
                log.warning("redis pub/sub read failed", server=link.name, error=str(exc))
                if self._links.servers.follows_slots:  # the node may be gone: find its successor
                    self._lose(link.channels, "node_lost")
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                continue
            if message is not None:
                self._on_message(link, message)

    def _on_message(self, link: LiveLink, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "smessage":
            channel = self._channel_of.get(message["channel"])
            # Only from the connection that carries the channel now: one it has left may be
            # a restarted master not yet told of its successor, whose writes are void.
            if channel is not None and self._links.of(channel) is link:
                frame: str = message["data"].decode()
                held = self._held.get(channel)
                if held is not None:
                    held.append(frame)
                    return
                if not self._due:
                    asyncio.get_running_loop().call_soon(self._fan_out_due)
                self._due.setdefault(channel, []).append(frame)
        elif kind == "ssubscribe":
            self._confirm(link, message["channel"])
        elif kind == "sunsubscribe":
            self._unsubscribed(link, message["channel"])

    def _fan_out_due(self) -> None:
        due, self._due = self._due, {}
        for channel, frames in due.items():
            held = self._held.get(channel)
            if held is not None:  # a gap fill began after these arrived: they wait for it
                held.extend(frames)
            else:
                self._publish(channel, frames, live=True)

    def _publish(self, channel: str, frames: list[str], *, live: bool = False) -> None:
        """Hand ``frames`` to the channel's subscribers, dropping those not newer than the
        last delivered (frames without an offset, presence and ephemeral, always go).
        ``live``: straight from pub/sub (not a replay or a gap fill), so their end-to-end
        latency is sampled."""
        fanout = self._subscribers.get(channel)
        if fanout is None:
            return
        last = self._last.get(channel)
        fresh = []
        for frame in frames:
            offset = frame_offset(frame)
            if offset is not None:
                if last is not None and offset <= last:
                    continue
                last = offset
            fresh.append(frame)
        if last is not None:
            self._last[channel] = last
        if fresh:
            MESSAGES_SENT.inc(fanout.deliver(channel, fresh))
            if live and self._latency is not None:
                self._latency.fanned_out(fresh, time.time())

    def _confirm(self, link: LiveLink, live_key: bytes) -> None:
        channel = self._channel_of.get(live_key)
        if channel is not None and self._links.of(channel) is not link:
            return  # from a node the channel has left
        waiting = self._confirmations.get(live_key)
        if waiting:
            ready = waiting.popleft()
            if not waiting:
                del self._confirmations[live_key]
            if not ready.done():
                ready.set_result(None)

    def _unsubscribed(self, link: LiveLink, live_key: bytes) -> None:
        if link.unsubscribing[live_key] > 0:  # the reply to our own SUNSUBSCRIBE
            link.unsubscribing[live_key] -= 1
            if not link.unsubscribing[live_key]:
                del link.unsubscribing[live_key]
            return
        channel = self._channel_of.get(live_key)
        if channel is not None and self._links.of(channel) is link:
            log.warning("redis dropped a live subscription", channel=channel, server=link.name)
            self._lose([channel], "unsubscribed")

    def _refused(self, link: LiveLink, exc: ResponseError) -> None:
        log.warning("redis refused a pub/sub command", server=link.name, error=str(exc))
        if isinstance(exc, MovedError):  # this node no longer serves the slot
            self._lose(
                [c for c in link.channels if key_slot(self._live_key(c)) == exc.slot_id], "moved"
            )
            for key in [k for k in link.unsubscribing if key_slot(k) == exc.slot_id]:
                del link.unsubscribing[key]  # their reply was this error
        else:  # which command it answered is unknown: redo those not confirmed
            unconfirmed = [c for c in link.channels if not self._listening(c)]
            self._lose(unconfirmed or list(link.channels), "refused")

    def _expect_confirmation(self, channel: str) -> None:
        """An SSUBSCRIBE for ``channel`` is (about to be) sent again; replies to earlier ones
        are lost or void. Waiters on the channel's readiness go on waiting."""
        ready = self._ready.get(channel)
        if ready is None or ready.done():
            ready = self._ready[channel] = asyncio.get_running_loop().create_future()
        self._confirmations[self._live_key(channel)] = deque([ready])

    def _listening(self, channel: str) -> bool:
        """Has Redis confirmed the channel's latest SSUBSCRIBE (or is it no longer wanted)?"""
        ready = self._ready.get(channel)
        return ready is None or ready.done()

    def _hold(self, channels: Iterable[str]) -> None:
        """Hold these channels' live frames until their gap is filled."""
        for channel in channels:
            if channel in self._subscribers:
                self._held.setdefault(channel, [])
                self._held_since.setdefault(channel, time.time())
                self._stale.add(channel)
                self._expect_confirmation(channel)
        if self._held and (self._fill_task is None or self._fill_task.done()):
            self._fill_task = asyncio.create_task(self._fill_gaps(), name="live-gap-fill")

    def _on_reconnect(self, link: LiveLink) -> None:
        # redis-py has just resubscribed the link's channels.
        if link.channels:
            REDIS_RESUBSCRIPTIONS.labels("reconnect").inc(len(link.channels))
            log.info("redis pub/sub reconnected", server=link.name, channels=len(link.channels))
            self._hold(link.channels)

    def _moved(self, channel: str) -> None:
        # Subscribed again on another node (its new master). A gap filled before was read
        # before frames the old subscription no longer received; what it held came from
        # the old node. The fill once the new one listens replays from the last delivered.
        if channel in self._held:
            self._held[channel] = []
        self._hold([channel])

    def _lose(self, channels: Iterable[str], reason: str) -> None:
        """Redis dropped these channels' subscriptions: hold their frames, subscribe them
        again where they are served now, fill their gap once Redis listens."""
        lost = [channel for channel in channels if channel in self._subscribers]
        self._hold(lost)
        self._links.lose(lost, reason)

    async def _fill_gaps(self) -> None:
        while self._held:
            listening = [channel for channel in self._held if self._listening(channel)]
            if not listening:  # wait for Redis to confirm a subscription
                waiting = [ready for ready in self._ready.values() if not ready.done()]
                if waiting:
                    await asyncio.wait(waiting, timeout=RETRY_DELAY_SECONDS)
                else:
                    await asyncio.sleep(RETRY_DELAY_SECONDS)
            for channel in listening:
                try:
                    await self._fill(channel)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("gap fill failed, retrying", channel=channel, error=str(exc))
                    await asyncio.sleep(RETRY_DELAY_SECONDS)

    async def _fill(self, channel: str) -> None:
        self._stale.discard(channel)
        if channel not in self._subscribers:
            self._held.pop(channel, None)
            self._held_since.pop(channel, None)
            return
        await self._reads_where_it_listens(channel)
        last = self._last.get(channel)
        epoch = self._epochs.get(channel)
        snapshot = await self._history.snapshot(channel, last, epoch)
        if last is not None and snapshot.carried == last:
            # The channel expired idle and began a new epoch, whose events up to ``last``
            # went out live: the same history goes on.
            epoch = self._epochs[channel] = snapshot.epoch
        if epoch is not None and snapshot.epoch != epoch:
            # History is gone. An account channel's events may be in the durable record:
            # those after the last delivered go out first, then the new epoch is announced
            # as recovered. Otherwise say it was lost. Either way the new epoch follows
            # from its start (or from the durable replay's end).
            GAP_FILLS.labels("epoch_changed").inc()
            log.warning("channel epoch changed; history lost", channel=channel)
            durable = None
            if last is not None:
                # Its earlier epochs ended by the time the hub held the channel: the first
                # fill waits for their rows to settle, the others do not wait again.
                ended_by = self._held_since.get(channel)
                durable = await self._history.durable_replay(
                    channel, last, snapshot, since_epoch=epoch, ended_by=ended_by
                )
            if durable is not None:
                self._publish(channel, durable.frames(channel))
            self._epochs[channel] = snapshot.epoch
            self._last[channel] = resume = ZERO if durable is None else durable.resume
            frame = subscribed_frame(
                channel, ZERO, recovered=durable is not None, epoch=snapshot.epoch
            )
            fanout = self._subscribers.get(channel)
            for subscriber in fanout.everyone() if fanout is not None else ():
                subscriber.deliver(channel, frame)
            await self._replay(channel, resume, snapshot.latest)
        elif last is not None and last < snapshot.latest:
            GAP_FILLS.labels("filled").inc()
            await self._replay(channel, last, snapshot.latest)
        if channel in self._stale:
            # Dropped again, or moved, while this fill ran: another fill follows, and what is
            # held waits for it. Delivered now, a frame newer than the next gap would make
            # the next fill skip the gap.
            return
        frames = self._held.pop(channel, [])
        self._held_since.pop(channel, None)
        self._publish(channel, frames)

    async def _reads_where_it_listens(self, channel: str) -> None:
        """On a cluster, a gap is filled from the history on the node whose subscription
        confirmed, so nothing published there after the read is missed. When the history
        client's slot map names another node, it is read again; if the two still differ,
        the subscription is moved to where Redis says the channel is served and the fill
        waits for it (:class:`GapFillDeferredError`, retried)."""
        link = self._links.of(channel)
        history = self._history.servers
        if link is None or not history.follows_slots:
            return
        key = self._live_key(channel)  # the history's hash tag: the same slot
        if history.server_for(key) == link.name:
            return
        await history.refresh()
        reads = history.server_for(key)
        if reads != link.name:
            self._lose([channel], "moved")
            raise GapFillDeferredError(f"subscribed on {link.name}, history served by {reads}")

    async def _replay(self, channel: str, after: StreamId, upto: StreamId) -> None:
        """Deliver the channel's stored events in ``(after, upto]`` to its subscribers."""
        if after < upto:
            async for frames in self._history.frames_between(channel, after, upto):
                self._publish(channel, frames)

    def _forget_confirmation(self, live_key: bytes, ready: asyncio.Future[None]) -> None:
        waiting = self._confirmations.get(live_key)
        if waiting is not None and ready in waiting:
            waiting.remove(ready)
            if not waiting:
                del self._confirmations[live_key]

    async def _ping_loop(self, link: LiveLink) -> None:
        # Traffic on an idle pub/sub connection, so a dead one fails and reconnects.
        while True:
            await asyncio.sleep(self._ping_interval)
            try:
                await link.pubsub.ping()
            except Exception as exc:
                log.warning("redis pub/sub ping failed", server=link.name, error=str(exc))
