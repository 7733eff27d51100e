"""Live delivery: one Redis pub/sub connection per process, fanned out to local subscribers.

Channels are sharded pub/sub channels (``SSUBSCRIBE``): the append scripts publish with
``SPUBLISH`` on the channel's live key, which shares the channel's hash tag.

Each channel has one Redis subscription, reference-counted over the local subscribers: the
first subscriber subscribes, the last one unsubscribes. Published frames are decoded once and
gathered per channel until the reader has taken every message already received; then each
channel's frames go to its :class:`~ws_gateway.fanout.ChannelFanout` together, so a burst
costs one write per connection, not one per frame.

Gap fill: Redis pub/sub drops whatever is published while the connection is down. The hub
remembers the last offset it delivered per channel; when the pub/sub connection comes back
it reads each channel's history after that offset and delivers it (live frames arriving
meanwhile are held and joined by offset), so subscribers see no gap and no duplicate. If
the channel's epoch changed (Redis lost its data), the gap cannot be filled: subscribers
get a fresh ``subscribed`` frame with the new epoch and ``recovered:false`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from pulse.logging import get_logger
from ws_gateway.fanout import ChannelFanout
from ws_gateway.metrics import GAP_FILLS, MESSAGES_SENT, REDIS_CHANNELS
from ws_gateway.offsets import ZERO, StreamId, frame_offset
from ws_gateway.protocol import subscribed_frame

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.asyncio.client import PubSub

    from pulse.channels import ChannelKeys
    from ws_gateway.fanout import Subscriber
    from ws_gateway.history import ChannelHistory

__all__ = ["LiveHub"]

log = get_logger("ws_gateway.live")
_RETRY_DELAY_SECONDS: Final = 1.0


class LiveHub:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: ChannelKeys,
        history: ChannelHistory,
        *,
        subscribe_timeout: float = 5.0,
        ping_interval: float = 30.0,
    ) -> None:
        # ``redis`` must be a client of its own with health checks off: the pub/sub
        # connection is read only by the reader task (redis-py would otherwise read a PING
        # reply from another task while the reader is waiting).
        self._redis = redis
        self._pubsub: PubSub = redis.pubsub()
        self._keys = keys
        self._history = history
        # Per channel: the newest offset delivered, its epoch, and (while a gap is being
        # filled) the live frames held back.
        self._last: dict[str, StreamId] = {}
        self._epochs: dict[str, str] = {}
        self._held: dict[str, list[str]] = {}
        self._fill_task: asyncio.Task[None] | None = None
        self._subscribe_timeout = subscribe_timeout
        self._ping_interval = ping_interval
        self._subscribers: dict[str, ChannelFanout] = {}
        # Frames received during this pass of the event loop, per channel, fanned out at its end.
        self._due: dict[str, list[str]] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        # Futures waiting for Redis to confirm a SUBSCRIBE, per live key, in send order.
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self._pubsub.connect()  # type: ignore[no-untyped-call]
        # Called on every later (re)connect, after redis-py has resubscribed our channels.
        connection: Any = self._pubsub.connection
        connection.register_connect_callback(self._on_reconnect)
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="live-reader"),
            asyncio.create_task(self._ping_loop(), name="live-ping"),
        ]

    async def close(self) -> None:
        if self._fill_task is not None:
            self._tasks.append(self._fill_task)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()

    @property
    def channel_count(self) -> int:
        return len(self._subscribers)

    async def add(self, channel: str, subscriber: Subscriber) -> None:
        """Deliver ``channel``'s live frames to ``subscriber``; returns once Redis listens."""
        subscribers = self._subscribers.get(channel)
        if subscribers is None:
            subscribers = self._subscribers[channel] = ChannelFanout()
            live_key = self._keys.live(channel)
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._ready[channel] = ready
            self._confirmations.setdefault(live_key, deque()).append(ready)
            REDIS_CHANNELS.set(len(self._subscribers))
            subscribers.add(subscriber)
            try:
                await self._pubsub.ssubscribe(live_key)
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
        self._ready.pop(channel, None)
        self._last.pop(channel, None)
        self._epochs.pop(channel, None)
        self._held.pop(channel, None)
        REDIS_CHANNELS.set(len(self._subscribers))
        try:
            await self._pubsub.sunsubscribe(self._keys.live(channel))
        except Exception as exc:  # the reconnect resubscribes only to channels still held
            log.warning("redis unsubscribe failed", channel=channel, error=str(exc))

    async def _read_loop(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis pub/sub read failed", error=str(exc))
                await asyncio.sleep(_RETRY_DELAY_SECONDS)
                continue
            if message is not None:
                self._on_message(message)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "smessage":
            channel = self._keys.channel_of(message["channel"].decode())
            if channel in self._subscribers:
                frame: str = message["data"].decode()
                held = self._held.get(channel)
                if held is not None:
                    held.append(frame)
                    return
                if not self._due:
                    asyncio.get_running_loop().call_soon(self._fan_out_due)
                self._due.setdefault(channel, []).append(frame)
        elif kind == "ssubscribe":
            live_key = message["channel"].decode()
            waiting = self._confirmations.get(live_key)
            if waiting:
                ready = waiting.popleft()
                if not waiting:
                    del self._confirmations[live_key]
                if not ready.done():
                    ready.set_result(None)

    def _fan_out_due(self) -> None:
        due, self._due = self._due, {}
        for channel, frames in due.items():
            held = self._held.get(channel)
            if held is not None:  # a gap fill began after these arrived: they wait for it
                held.extend(frames)
            else:
                self._publish(channel, frames)

    def _publish(self, channel: str, frames: list[str]) -> None:
        """Hand ``frames`` to the channel's subscribers, dropping those not newer than the
        last delivered (frames without an offset, presence and ephemeral, always go)."""
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

    def _on_reconnect(self, _connection: object) -> None:
        # Synchronous part first: hold live frames of every channel until its gap is filled.
        for channel in self._subscribers:
            self._held.setdefault(channel, [])
        if self._fill_task is None or self._fill_task.done():
            self._fill_task = asyncio.create_task(self._fill_gaps(), name="live-gap-fill")

    async def _fill_gaps(self) -> None:
        while self._held:
            for channel in list(self._held):
                try:
                    await self._fill(channel)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("gap fill failed, retrying", channel=channel, error=str(exc))
                    await asyncio.sleep(_RETRY_DELAY_SECONDS)

    async def _fill(self, channel: str) -> None:
        if channel not in self._subscribers:
            self._held.pop(channel, None)
            return
        snapshot = await self._history.snapshot(channel)
        last = self._last.get(channel)
        epoch = self._epochs.get(channel)
        if epoch is not None and snapshot.epoch != epoch:
            # History is gone: say so explicitly, then deliver the new epoch from its start
            # (every event in it was appended after Redis came back, none was delivered).
            GAP_FILLS.labels("epoch_changed").inc()
            log.warning("channel epoch changed; history lost", channel=channel)
            self._epochs[channel] = snapshot.epoch
            self._last[channel] = ZERO
            frame = subscribed_frame(channel, ZERO, recovered=False, epoch=snapshot.epoch)
            fanout = self._subscribers.get(channel)
            for subscriber in fanout.everyone() if fanout is not None else ():
                subscriber.deliver(channel, frame)
            await self._replay(channel, ZERO, snapshot.latest)
        elif last is not None and last < snapshot.latest:
            GAP_FILLS.labels("filled").inc()
            await self._replay(channel, last, snapshot.latest)
        self._publish(channel, self._held.pop(channel, []))

    async def _replay(self, channel: str, after: StreamId, upto: StreamId) -> None:
        """Deliver the channel's stored events in ``(after, upto]`` to its subscribers."""
        if after < upto:
            async for frames in self._history.frames_between(channel, after, upto):
                self._publish(channel, frames)

    def _forget_confirmation(self, live_key: str, ready: asyncio.Future[None]) -> None:
        waiting = self._confirmations.get(live_key)
        if waiting is not None and ready in waiting:
            waiting.remove(ready)
            if not waiting:
                del self._confirmations[live_key]

    async def _ping_loop(self) -> None:
        # Traffic on an idle pub/sub connection, so a dead one fails and reconnects.
        while True:
            await asyncio.sleep(self._ping_interval)
            try:
                await self._pubsub.ping()
            except Exception as exc:
                log.warning("redis pub/sub ping failed", error=str(exc))
