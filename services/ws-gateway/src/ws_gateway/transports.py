"""Where a connection's frames go: a WebSocket or an SSE stream, behind one :class:`FrameSink`.

A WebSocket connection is its own sink (:class:`~ws_gateway.websocket.WebSocketConnection`).
:class:`SseSink` writes the SSE messages its :class:`SseConnection` made of the frames as they
were queued, so every message's id is the resume cursor just after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final, Protocol

import orjson

from ws_gateway.connection import ClientConnection
from ws_gateway.metrics import MESSAGES_SENT
from ws_gateway.sse import EventStream, comment, message

if TYPE_CHECKING:
    from aiohttp import web

    from ws_gateway.connection import Lanes
    from ws_gateway.expiry import ExpirySchedule
    from ws_gateway.fanout import DirectWriter
    from ws_gateway.session import Session

__all__ = ["FrameSink", "SseConnection", "SseSink"]

_SSE_KEEPALIVE_SECONDS: Final = 15.0


class FrameSink(Protocol):
    """Where a connection's frames go: a WebSocket or an SSE stream."""

    def write_now(self, frame: str) -> bool:
        """Write ``frame`` at once if it can be written without waiting; False if not."""

    def direct_writer(self) -> DirectWriter | None:
        """Where frame bytes may be written directly while nothing is buffered; or None."""

    async def send(self, frame: str) -> None:
        """Write ``frame``, waiting for the peer to take earlier data first if need be."""

    async def close(self, code: int, reason: str) -> None: ...

    def ping(self) -> None:
        """A protocol ping, written at once (WebSocket only)."""

    def abort(self) -> None:
        """Drop the connection without a close handshake: the peer is gone."""


class SseSink:
    """Writes SSE messages (made by :class:`SseConnection`) to a streamed response."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.closed = asyncio.Event()

    def write_now(self, _frame: str) -> bool:
        return False  # every SSE message goes through the response's own writer

    def direct_writer(self) -> None:
        return None

    def ping(self) -> None:
        pass  # SSE has comment lines for keepalive

    def abort(self) -> None:
        self.closed.set()

    async def send(self, frame: str) -> None:
        await self.response.write(frame.encode())
        MESSAGES_SENT.inc()

    async def keepalive(self) -> None:
        await self.response.write(comment("keepalive"))

    async def close(self, code: int, reason: str) -> None:
        try:
            frame = orjson.dumps({"op": "close", "code": code, "reason": reason}).decode()
            await self.response.write(message(frame))
        finally:
            self.closed.set()

    async def hold(self, request: web.BaseRequest) -> None:
        """Until the stream is closed by us or by the client (checked every second), with a
        keepalive comment every 15 s."""
        idle = 0.0
        while not self.closed.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 1.0)
                return
            idle += 1.0
            if idle >= _SSE_KEEPALIVE_SECONDS:
                idle = 0.0
                try:
                    await self.keepalive()
                except (ConnectionError, RuntimeError):
                    return


class SseConnection(ClientConnection):
    """A client on an SSE stream: each frame becomes its SSE message as it is queued, in
    order, so the message's id is the cursor after it (:class:`~ws_gateway.sse.EventStream`)
    whenever the sink gets to write it."""

    __slots__ = ("_events",)

    def __init__(
        self,
        sink: SseSink,
        session: Session,
        *,
        hub: Lanes,
        queue_size: int,
        conn_id: str = "",
        expiries: ExpirySchedule | None = None,
    ) -> None:
        super().__init__(
            sink, session, hub=hub, queue_size=queue_size, conn_id=conn_id, expiries=expiries
        )
        self._events = EventStream()

    def send_nowait(self, frame: str, channel: str | None = None) -> None:
        if not self.closing:
            super().send_nowait(self._events.message(frame, channel))
