"""A WebSocket connection of the gateway: an asyncio protocol over websockets' sans-I/O layer.

The connection is driven by callbacks and holds no task while it is idle: per idle client
there is the transport, this object, the sans-I/O :class:`~websockets.server.ServerProtocol`
(handshake, frame parser, close handshake, permessage-deflate) and Pulse's
:class:`~ws_gateway.connection.ClientConnection`, which this object serves as its
:class:`~ws_gateway.transports.FrameSink`.

- **Handshake**: the request is parsed by websockets; the token is verified and the
  connection admitted by the gateway (:class:`Doorkeeper`), and websockets checks the
  upgrade. A refusal is the same RFC 9457 problem response the HTTP routes give.
- **Frames in**: a text or binary message (fragments joined, text checked to be UTF-8) joins
  the connection's inbox; one short-lived task hands the inbox's messages to the gateway in
  order and ends when it is empty. While more than :data:`_INBOX_LIMIT` messages wait, the
  socket is not read. Pings are answered by websockets, and every frame counts as a sign of
  life for the heartbeat wheel.
- **Frames out**: a message is framed once for every connection (:class:`FrameBytes`) and
  written with ``transport.write``; the fan-out's direct lane writes to the transport itself.
  With permessage-deflate negotiated, frames differ per connection and websockets makes them.
- **Close**: a close frame of ours is answered by the client's; a client that does not
  answer within ``PULSE_CLOSE_TIMEOUT_SECONDS`` is cut off. When websockets fails the
  connection (a frame over ``PULSE_MAX_MESSAGE_BYTES``: 1009, text that is not UTF-8: 1007)
  it sends FIN after its close frame and reads and drops what the client still sends until
  the client closes (a lingering close): closing at once would make the kernel answer the
  client's late frames with a reset, which throws the unread close frame away on the
  client's side. Handshake refusals end the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Final, Protocol, cast

from aiohttp import web
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol as FrameProtocol
from websockets.protocol import Side, State
from websockets.server import ServerProtocol

from pulse.logging import get_logger
from pulse.problems import Problem
from ws_gateway.connection import CLOSE_INTERNAL_ERROR
from ws_gateway.heartbeat import PING_FRAME
from ws_gateway.metrics import MESSAGES_SENT
from ws_gateway.ratelimit import TokenBucket
from ws_gateway.wire import FrameBytes

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pulse.auth import Claims
    from ws_gateway.connection import ClientConnection
    from ws_gateway.fanout import DirectWriter
    from ws_gateway.settings import GatewaySettings

__all__ = ["Doorkeeper", "HandedOver", "WebSocketConnection", "request_bytes"]

log = get_logger("ws_gateway.server")  # see ws_gateway.connection
# Messages waiting for the gateway before the connection's socket is not read any more.
_INBOX_LIMIT: Final = 16
# websockets logs every connection's open and close at info: not lines an operator needs.
_FRAMES_LOG: Final = logging.getLogger("ws_gateway.frames")
_FRAMES_LOG.setLevel(logging.WARNING)
_DEFLATE: Final = [ServerPerMessageDeflateFactory()]
# The frame bytes of the message being delivered, shared by the connections it goes to.
_FRAMES: Final = FrameBytes()
_DATA: Final = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class Doorkeeper(Protocol):
    """What a WebSocket connection needs of the gateway (:class:`~ws_gateway.server.Gateway`)."""

    settings: GatewaySettings

    async def admit_websocket(self, request: Request) -> Claims | web.Response:
        """The verified, admitted claims of ``request``'s token, or the response refusing it.
        Admitted claims must be let go (:meth:`let_go`, or :meth:`end_websocket`)."""

    def let_go(self, claims: Claims) -> None: ...

    def open_websocket(self, sink: WebSocketConnection, claims: Claims) -> ClientConnection: ...

    def end_websocket(self, client: ClientConnection, worker: asyncio.Task[None] | None) -> None:
        """The connection is gone: release ``client`` once ``worker`` (if any) is done."""

    async def on_message(
        self, client: ClientConnection, bucket: TokenBucket, data: str | bytes
    ) -> None:
        """One message from the client (rate limited by ``bucket``)."""


class WebSocketConnection(asyncio.Protocol):
    """One WebSocket client, from its handshake request to the end of the TCP connection."""

    __slots__ = (
        "_bucket",
        "_close_timer",
        "_drain",
        "_gateway",
        "_inbox",
        "_message",
        "_transport",
        "_worker",
        "_ws",
        "client",
        "writing_paused",
    )

    def __init__(self, gateway: Doorkeeper) -> None:
        self._gateway = gateway
        s = gateway.settings
        # The handshake's protocol; once the connection is open, a frame protocol.
        self._ws: FrameProtocol = ServerProtocol(
            extensions=_DEFLATE if s.ws_compression else None,
            max_size=s.max_message_bytes,
            logger=_FRAMES_LOG,
        )
        self._transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        # The handshake's task until the connection is open; then the task handing the
        # inbox to the gateway, while there is one. None while idle.
        self._worker: asyncio.Task[None] | None = None
        self._inbox: deque[str | bytes] | None = None  # made by a message, dropped when empty
        self._message: list[Frame] | None = None  # the frames of a fragmented message
        self._bucket: TokenBucket | None = None  # client ops, made by the first message
        self.writing_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        events = ws.events_received()
        if self.client is not None:
            self._on_frames(events)
        elif self._worker is None and events and isinstance(events[0], Request):
            if self._transport is not None:
                self._transport.pause_reading()  # until the handshake is decided
            self._worker = asyncio.create_task(self._handshake(events[0], events[1:]))
        self._flush()  # pongs, close frames; a malformed request's answer

    def eof_received(self) -> bool:
        self._ws.receive_eof()
        self._flush()
        return False  # the transport closes: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        self._transport = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.writing_paused = False
        self._wake_writer()
        # Nothing is read any more. The frame protocol's parser is a generator holding the
        # protocol, and the error that ended parsing (a reset, a frame too big) holds the
        # parser's frame: closed and dropped, they let go of it, so the connection is freed
        # by reference counts alone, even once frozen out of garbage collection (Freezer).
        self._ws.parser.close()
        self._ws.parser_exc = None
        client = self.client
        if client is None:
            if self._worker is not None:
                self._worker.cancel()  # the handshake lets its claims go
            return
        client.peer_closed()
        if self._inbox is not None:
            self._inbox.clear()
        self._gateway.end_websocket(client, self._worker)
        self.client = None  # the client refers to this connection (its sink) until released

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer()

    # -- the handshake -------------------------------------------------------------------

    async def _handshake(self, request: Request, early: Sequence[object]) -> None:
        gateway = self._gateway
        try:
            admitted = await gateway.admit_websocket(request)
        except Exception:  # a fault of ours: answered as an HTTP route's would be
            log.exception("websocket handshake failed")
            admitted = Problem.from_status(500, "the handshake failed").response()
        if isinstance(admitted, web.Response):
            self._refuse(_as_response(admitted))
            return
        handshake = self._ws
        if not isinstance(handshake, ServerProtocol):
            raise TypeError("the handshake is over")
        response = handshake.accept(request)
        transport = self._transport
        if response.status_code != 101 or transport is None:  # noqa: PLR2004
            gateway.let_go(admitted)
            self._refuse(response)
            return
        handshake.send_response(response)
        self._flush()
        # The open connection's frames go through a protocol of their own: the handshake's
        # keeps the request (its headers, the token) for as long as it lives.
        frames = FrameProtocol(
            Side.SERVER,
            max_size=gateway.settings.max_message_bytes,
            logger=_FRAMES_LOG,
        )
        frames.extensions = handshake.extensions  # permessage-deflate, if negotiated
        self._ws = frames
        self._worker = None
        self.client = gateway.open_websocket(self, admitted)
        transport.resume_reading()
        if early:  # frames the client sent right behind its request
            self._on_frames(early)
            self._flush()

    def _refuse(self, response: Response) -> None:
        self._worker = None
        if isinstance(self._ws, ServerProtocol):
            self._ws.send_response(response)  # then FIN, and the client's bytes are dropped
        self._flush()
        if self._transport is not None:
            self._transport.resume_reading()  # to see the client close

    # -- frames in -------------------------------------------------------------------------

    def _on_frames(self, events: Sequence[object]) -> None:
        client = self.client
        if client is None or not events:
            return
        client.heard = time.monotonic()
        for frame in events:
            if not isinstance(frame, Frame):
                continue
            if frame.opcode in _DATA:
                self._on_data(client, frame)
            elif frame.opcode is Opcode.CLOSE:
                client.peer_closed()  # our answer is the last frame: no data after it

    def _on_data(self, client: ClientConnection, frame: Frame) -> None:
        if self._ws.state is not State.OPEN or client.closing:
            return  # closing: the client's last frames are dropped
        if frame.opcode is Opcode.CONT:
            parts = self._message
            if parts is None:
                return  # websockets fails such a connection itself
            parts.append(frame)
            if not frame.fin:
                return
            self._message = None
            text = parts[0].opcode is Opcode.TEXT
            data = b"".join(part.data for part in parts)
        elif not frame.fin:
            self._message = [frame]
            return
        else:
            text = frame.opcode is Opcode.TEXT
            data = bytes(frame.data)
        message: str | bytes = data
        if text:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                client.peer_closed()
                self._ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
                return
        self._receive(message)

    def _receive(self, message: str | bytes) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(message)
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(inbox))
        elif len(inbox) >= _INBOX_LIMIT and self._transport is not None:
            self._transport.pause_reading()

    async def _work(self, inbox: deque[str | bytes]) -> None:
        """Hand the inbox's messages to the gateway, in order, until it is empty."""
        client = self.client
        if client is None:
            return
        s = self._gateway.settings
        bucket = self._bucket
        if bucket is None:
            bucket = TokenBucket(s.client_ops_per_second, s.client_ops_burst, time.monotonic())
            self._bucket = bucket
        try:
            while inbox:
                transport = self._transport
                if len(inbox) < _INBOX_LIMIT and transport is not None:
                    transport.resume_reading()
                try:
                    await self._gateway.on_message(client, bucket, inbox.popleft())
                except Exception:  # a fault of ours: the client is told, not left hanging
                    log.exception("client message failed", sub=client.session.claims.sub)
                    client.close(CLOSE_INTERNAL_ERROR, "internal error")
                if client.closing:
                    inbox.clear()
        finally:
            self._worker = None
            self._inbox = None
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    # -- frames out: FrameSink ---------------------------------------------------------

    def write_now(self, frame: str) -> bool:
        transport = self._transport
        ws = self._ws
        if (
            self.writing_paused
            or ws.state is not State.OPEN  # our close frame is out: no data frame may follow
            or transport is None
            or transport.is_closing()
        ):
            return False
        if ws.extensions:  # permessage-deflate: framed for this connection
            ws.send_text(frame.encode())
            self._flush()
        else:
            transport.write(_FRAMES.of(frame))
        MESSAGES_SENT.inc()
        return True

    def direct_writer(self) -> DirectWriter | None:
        """The transport, while frames may be written to it with nothing in its buffer."""
        transport = self._transport
        if (
            self._ws.extensions
            or self._ws.state is not State.OPEN
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            return None
        return transport

    async def send(self, frame: str) -> None:
        while self.writing_paused:  # until the transport's buffer is below low water
            if self._drain is None:
                self._drain = asyncio.get_running_loop().create_future()
            await self._drain
        if not self.write_now(frame):
            raise ConnectionResetError("the WebSocket is closed")

    async def close(self, code: int, reason: str) -> None:
        """Send our close frame; the client's answer (or the close timeout) ends it."""
        if self._ws.state is State.OPEN and self._transport is not None:
            self._ws.send_close(code, reason)
            self._flush()
            self._close_later()

    def ping(self) -> None:
        transport = self._transport
        if self._ws.state is State.OPEN and transport is not None and not transport.is_closing():
            transport.write(PING_FRAME)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- helpers ---------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what websockets has to send; its end-of-stream mark half-closes."""
        ws = self._ws
        transport = self._transport
        for data in ws.data_to_send():
            if transport is None or transport.is_closing():
                return
            if data:
                transport.write(data)
            elif ws.close_rcvd is not None:
                transport.close()  # an orderly close: the client has nothing more to send
            elif transport.can_write_eof():
                transport.write_eof()  # a lingering close: read and drop until the client's FIN
                self._close_later()
            else:
                transport.close()

    def _close_later(self) -> None:
        if self._close_timer is None and self._transport is not None:
            self._close_timer = asyncio.get_running_loop().call_later(
                self._gateway.settings.close_timeout_seconds, self._transport.close
            )

    def _wake_writer(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)


class HandedOver(WebSocketConnection):
    """A connection aiohttp read an upgrade from (its ``/ws`` route): the route's handler
    waits for :attr:`ended`, and aiohttp's protocol hears of the connection's end."""

    __slots__ = ("_previous", "ended")

    def __init__(self, gateway: Doorkeeper, previous: asyncio.BaseProtocol) -> None:
        super().__init__(gateway)
        self._previous = previous
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.ended.done():
            self.ended.set_result(None)
        self._previous.connection_lost(exc)


def request_bytes(path: str, headers: list[tuple[str, str]]) -> bytes:
    """A GET request as the client sent it (for a :class:`HandedOver` connection)."""
    return Request(path, Headers(headers)).serialize()


def _as_response(refusal: web.Response) -> Response:
    """An aiohttp refusal (a problem document) as websockets' handshake response."""
    body = refusal.body if isinstance(refusal.body, bytes) else b""
    headers = Headers(refusal.headers)
    headers["Content-Length"] = str(len(body))
    headers["Connection"] = "close"
    return Response(refusal.status, refusal.reason, headers, body)
