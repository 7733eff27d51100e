"""One client connection's writer: ordered, bounded, and never awaited by the fan-out.

WebSocket and SSE clients are the same :class:`ClientConnection` over different
:class:`~ws_gateway.transports.FrameSink` s, so recovery, gap fill, slow consumers and token
expiry behave alike. This module also holds the close codes the gateway sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Final, Protocol

from pulse.logging import get_logger
from ws_gateway.expiry import ExpirySchedule
from ws_gateway.metrics import CLIENT_CLOSES, SLOW_CONSUMER_CLOSES
from ws_gateway.session import BufferOverflowError

if TYPE_CHECKING:
    from ws_gateway.fanout import DirectWriter, Subscriber
    from ws_gateway.offsets import StreamId
    from ws_gateway.ratelimit import TokenBucket
    from ws_gateway.session import Session
    from ws_gateway.transports import FrameSink

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_FORBIDDEN",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_RATE_LIMITED",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOKEN_EXPIRED",
    "ClientConnection",
    "Lanes",
]

CLOSE_GOING_AWAY: Final = 1001
CLOSE_ABNORMAL: Final = 1006  # never sent: the connection is dropped without a close frame
CLOSE_INTERNAL_ERROR: Final = 1011  # a fault of the gateway's while doing a client's message
# 40xx: reconnecting may help (refresh the token first for 4001); 4003: do not reconnect.
CLOSE_TOKEN_EXPIRED: Final = 4001
CLOSE_FORBIDDEN: Final = 4003
CLOSE_SLOW_CONSUMER: Final = 4008
CLOSE_RATE_LIMITED: Final = 4029
# One logger name for the log lines of the gateway's connections, commands and routes.
log = get_logger("ws_gateway.server")


class Lanes(Protocol):
    """What a connection needs of the fan-out (:class:`~ws_gateway.live.LiveHub`)."""

    def to_slow(self, subscriber: Subscriber, channels: list[str]) -> None:
        """Frames of ``channels`` go through ``subscriber.deliver`` until it is plain again."""


class ClientConnection:
    """One client: its session and its bounded backlog of frames the sink could not take.

    A frame is written at once when nothing is waiting before it and the sink can take it
    without waiting (the common case: no task switch, no queue). Otherwise it joins the
    backlog, which one short-lived task drains in order; while the backlog is not empty
    every frame joins it, so none overtakes another. A backlog longer than the limit means
    the client cannot keep up: it is closed with 4008, and the others never wait for it.

    While none of that applies to a channel's live frames (see :meth:`direct_writer`), the
    channel's fan-out writes them to the transport itself (:mod:`ws_gateway.fanout`); the
    connection takes itself out of that lane (:meth:`leave_direct`) the moment it gets a
    backlog or starts closing.

    The senders of a frame that belongs to a channel's sequence (``subscribed``, ``event``)
    name the channel with it; a WebSocket ignores that, an SSE stream makes it part of the
    message's resume cursor (:class:`~ws_gateway.transports.SseConnection`).
    """

    __slots__ = (
        "_backlog",
        "_close_task",
        "_drainer",
        "_expiries",
        "_hub",
        "_limit",
        "_room",
        "closing",
        "conn_id",
        "expires_at",
        "heard",
        "opened",
        "pinged",
        "publish_bucket",
        "session",
        "sink",
        "wheel_slot",
    )

    def __init__(
        self,
        sink: FrameSink,
        session: Session,
        *,
        hub: Lanes,
        queue_size: int,
        conn_id: str = "",
        expiries: ExpirySchedule | None = None,
    ) -> None:
        self.conn_id = conn_id
        self._hub = hub
        self.sink = sink
        self.session = session
        self.closing = False
        # The gateway's connections share one schedule (and a timer per deadline).
        self._expiries = expiries if expiries is not None else ExpirySchedule()
        self.expires_at: float | None = None  # token exp + grace, while armed
        self.publish_bucket: TokenBucket | None = None
        self._limit = queue_size
        # Created when the first frame has to wait; None again once the backlog is drained.
        self._backlog: deque[str] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self.opened = time.monotonic()
        # For the heartbeat wheel (monotonic times): the last frame heard, the last ping.
        self.heard = self.opened
        self.pinged = 0.0
        self.wheel_slot = -1

    def deliver(self, channel: str, frame: str) -> None:
        """Called by the live fan-out for every frame of a subscribed channel; never blocks."""
        if self.closing:
            return
        try:
            out = self.session.on_live(channel, frame)
        except BufferOverflowError:
            self.close_slow_consumer()
            return
        if out is not None:
            self.send_nowait(out, channel)

    def direct_writer(self, channel: str, delivered: StreamId | None = None) -> DirectWriter | None:
        """The transport, if ``channel``'s live frames may now bypass :meth:`deliver`: the
        connection is open with nothing waiting, and the channel is live past its replay
        (``delivered``: see :meth:`Session.is_live`)."""
        if (
            self.closing
            or self._backlog is not None
            or not self.session.is_live(channel, delivered)
        ):
            return None
        return self.sink.direct_writer()

    def leave_direct(self) -> None:
        """Every channel's live frames come through :meth:`deliver` again."""
        self._hub.to_slow(self, self.session.channels)

    def send_nowait(self, frame: str, channel: str | None = None) -> None:  # noqa: ARG002
        """Write ``frame`` now or queue it behind what waits. ``channel``, the channel whose
        sequence the frame is part of (``subscribed``, ``event``), is for an SSE stream's
        cursor (:class:`~ws_gateway.transports.SseConnection`); a WebSocket needs none."""
        if self.closing:
            return
        backlog = self._backlog
        if backlog is None:
            if self.sink.write_now(frame):
                return
            backlog = self._backlog = deque()
            self.leave_direct()  # no live frame may overtake the backlog
        elif len(backlog) >= self._limit:
            self.close_slow_consumer()
            return
        backlog.append(frame)
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(backlog))

    async def send(self, frame: str, channel: str | None = None) -> None:
        """Send ``frame``, waiting for room in the backlog: only the connection's own handler
        calls this (history replay, answers), so its frames never close it as slow."""
        while not self.closing and self._backlog is not None and len(self._backlog) >= self._limit:
            if self._room is None:
                self._room = asyncio.get_running_loop().create_future()
            await self._room
        self.send_nowait(frame, channel)

    async def _drain(self, backlog: deque[str]) -> None:
        try:
            while backlog:
                await self.sink.send(backlog.popleft())
                self._wake_sender()
        except (ConnectionError, RuntimeError):
            self.closing = True
        finally:
            # Synchronously with the last check of ``backlog``: a frame arriving after
            # this goes straight to the sink again.
            self._backlog = None
            self._drainer = None
            self._wake_sender()

    def _wake_sender(self) -> None:
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    def arm_expiry(self, grace_seconds: float) -> None:
        """Close with 4001 once the session's token expired and ``grace_seconds`` passed."""
        self.disarm_expiry()
        self.expires_at = self.session.claims.exp + grace_seconds
        self._expiries.add(self, self.expires_at)

    def disarm_expiry(self) -> None:
        if self.expires_at is not None:
            self._expiries.discard(self, self.expires_at)
            self.expires_at = None

    def expire(self) -> None:
        """The token (and its grace) ran out: close with 4001."""
        self.expires_at = None
        self.close(CLOSE_TOKEN_EXPIRED, "token expired")

    def ping(self) -> None:
        self.sink.ping()

    def abort(self) -> None:
        """The client stopped answering pings: drop it (1006, no close handshake)."""
        if not self.closing:
            CLIENT_CLOSES.labels(str(CLOSE_ABNORMAL)).inc()
            log.info("dropping unresponsive client", sub=self.session.claims.sub)
            self._stop()
            self.sink.abort()

    def close_slow_consumer(self) -> None:
        if not self.closing:
            SLOW_CONSUMER_CLOSES.inc()
            log.info("closing slow consumer", sub=self.session.claims.sub)
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")

    def close(self, code: int, reason: str) -> None:
        if self._close_task is not None:
            return
        CLIENT_CLOSES.labels(str(code)).inc()
        self._stop()
        self._close_task = asyncio.create_task(self._close(code, reason))

    async def wait_closed(self) -> None:
        """Wait for a close this connection started (the handshake included), if any."""
        if self._close_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._close_task

    def peer_closed(self) -> None:
        """The client closed, or the connection failed: no frame may be written any more."""
        self._stop()

    def _stop(self) -> None:
        """No more frames: the connection is closing."""
        if not self.closing:
            self.closing = True
            self.leave_direct()
        self._wake_sender()

    async def stop_writing(self) -> None:
        """Drop the backlog and wait for its drainer to end (the connection is going)."""
        self._stop()
        drainer = self._drainer
        if drainer is not None:
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer

    async def _close(self, code: int, reason: str) -> None:
        # No data frame may follow the close frame: stop the drainer first.
        await self.stop_writing()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.sink.close(code, reason)
