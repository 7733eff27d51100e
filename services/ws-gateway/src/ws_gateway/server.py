"""The gateway's I/O edge: one aiohttp application on one port.

Routes: ``/ws`` (WebSocket, aiohttp's ``WebSocketResponse``), ``/sse`` (Server-Sent Events),
``/v1/channels/{channel}/history``, ``/v1/channels/{channel}/presence``, ``/`` (the
dashboard) and ``/healthz``, ``/readyz``, ``/metrics``. Tokens come from ``?token=`` or
``Authorization: Bearer``. WebSocket and SSE clients are the same :class:`ClientConnection`
over different :class:`FrameSink` s, so subscribe, recovery, gap fill, slow-consumer and
token expiry behave alike. Protocol decisions live in :mod:`ws_gateway.protocol` and
:mod:`ws_gateway.session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import parse_qs

import orjson
from aiohttp import WSMsgType, web

from pulse.auth import Claims, InvalidTokenError, TokenExpiredError
from pulse.logging import get_logger
from pulse.metrics import http_metrics_middleware
from ws_gateway.authz import Access, authorize_channel
from ws_gateway.heartbeat import PING_FRAME, HeartbeatWheel
from ws_gateway.linger import LingeringWebSocketResponse
from ws_gateway.metrics import (
    AUTH_FAILURES,
    CLIENT_CLOSES,
    CONNECTION_DURATION,
    CONNECTIONS,
    CONNECTIONS_REFUSED,
    MESSAGES_SENT,
    RATE_LIMITED_OPS,
    SLOW_CONSUMER_CLOSES,
    SUBSCRIPTIONS,
    TOKEN_REFRESHES,
)
from ws_gateway.offsets import StreamId
from ws_gateway.presence import has_presence
from ws_gateway.protocol import (
    ErrorCode,
    FrameError,
    Ping,
    Publish,
    Refresh,
    Subscribe,
    Unsubscribe,
    error_frame,
    message_frame,
    parse_client_frame,
    pong_frame,
    published_frame,
    refreshed_frame,
    subscribed_frame,
    unsubscribed_frame,
)
from ws_gateway.ratelimit import TokenBucket
from ws_gateway.session import BufferOverflowError, Session
from ws_gateway.sse import Cursor, comment, message
from ws_gateway.tokens import VerifierUnavailableError
from ws_gateway.wire import FrameBytes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from aiohttp.abc import AbstractStreamWriter

    from pulse.service import Lifecycle
    from ws_gateway.fanout import DirectWriter
    from ws_gateway.history import ChannelHistory
    from ws_gateway.live import LiveHub
    from ws_gateway.presence import Presence
    from ws_gateway.settings import GatewaySettings
    from ws_gateway.tokens import TokenVerifier

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_FORBIDDEN",
    "CLOSE_GOING_AWAY",
    "CLOSE_RATE_LIMITED",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOKEN_EXPIRED",
    "ClientConnection",
    "Gateway",
    "token_from_request",
]

CLOSE_GOING_AWAY: Final = 1001
CLOSE_ABNORMAL: Final = 1006  # never sent: the connection is dropped without a close frame
# 40xx: reconnecting may help (refresh the token first for 4001); 4003: do not reconnect.
CLOSE_TOKEN_EXPIRED: Final = 4001
CLOSE_FORBIDDEN: Final = 4003
CLOSE_SLOW_CONSUMER: Final = 4008
CLOSE_RATE_LIMITED: Final = 4029
_SSE_KEEPALIVE_SECONDS: Final = 15.0
_HISTORY_LIMIT_DEFAULT: Final = 100
_HISTORY_LIMIT_MAX: Final = 1000
log = get_logger("ws_gateway.server")


def token_from_request(query: str, headers: Mapping[str, str]) -> str | None:
    """The bearer token of a request: ``?token=`` first, then ``Authorization: Bearer``."""
    values = parse_qs(query).get("token")
    if values and values[0]:
        return values[0]
    authorization = headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


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


# The frame bytes of the message being delivered, shared by the connections it goes to.
_FRAMES: Final = FrameBytes()


class WebSocketSink:
    """Writes text frames straight to the connection's transport when it can take them.

    aiohttp's writer frames every message again for every connection and makes the caller
    await; here a message is framed once (:class:`FrameBytes`) and written with
    ``transport.write`` while the transport is below its high-water mark. With
    permessage-deflate negotiated, frames differ per connection, so aiohttp writes them.
    """

    __slots__ = ("_direct", "_protocol", "_stream", "_transport", "ws")

    def __init__(
        self, ws: web.WebSocketResponse, request: web.BaseRequest, stream: AbstractStreamWriter
    ) -> None:
        self.ws = ws
        self._protocol = request.protocol
        self._transport = request.transport
        self._stream = stream
        self._direct = not ws.compress

    def write_now(self, frame: str) -> bool:
        transport = self._transport
        if (
            not self._direct
            or self._protocol.writing_paused
            or self.ws.closed  # our close frame is out: no data frame may follow it
            or transport is None
            or transport.is_closing()
        ):
            return False
        transport.write(_FRAMES.of(frame))
        MESSAGES_SENT.inc()
        return True

    def direct_writer(self) -> DirectWriter | None:
        """The transport, while frames may be written to it with nothing in its buffer."""
        transport = self._transport
        if (
            not self._direct
            or self.ws.closed
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            return None
        return transport

    async def send(self, frame: str) -> None:
        if self._direct and self._protocol.writing_paused:
            await self._stream.drain()  # until the transport's buffer is below low water
        if not self.write_now(frame):
            await self.ws.send_str(frame)  # compressed, or closed: aiohttp frames it (or raises)
            MESSAGES_SENT.inc()

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())

    def ping(self) -> None:
        transport = self._transport
        if not self.ws.closed and transport is not None and not transport.is_closing():
            transport.write(PING_FRAME)

    def abort(self) -> None:
        # The handler's receive loop sees the connection end and releases everything.
        if self._transport is not None:
            self._transport.close()


class SseSink:
    """Writes frames as SSE messages whose id is the resume cursor over all channels."""

    def __init__(self, response: web.StreamResponse, cursor: Cursor) -> None:
        self.response = response
        self.cursor = cursor
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
        data: dict[str, Any] = orjson.loads(frame)
        op, channel = data.get("op"), data.get("channel")
        if op == "subscribed" and isinstance(channel, str):
            self.cursor.advance(channel, data["epoch"], StreamId.parse(data["offset"]))
        elif op == "event" and isinstance(channel, str):
            epoch = self.cursor.epoch(channel)
            if epoch is not None:
                self.cursor.advance(channel, epoch, StreamId.parse(data["offset"]))
        event_id = str(self.cursor) if op in ("subscribed", "event") else None
        await self.response.write(message(frame, event_id=event_id))
        MESSAGES_SENT.inc()

    async def keepalive(self) -> None:
        await self.response.write(comment("keepalive"))

    async def close(self, code: int, reason: str) -> None:
        try:
            frame = orjson.dumps({"op": "close", "code": code, "reason": reason}).decode()
            await self.response.write(message(frame))
        finally:
            self.closed.set()


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
    """

    __slots__ = (
        "_backlog",
        "_close_task",
        "_drainer",
        "_hub",
        "_limit",
        "_room",
        "closing",
        "conn_id",
        "expiry",
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
        hub: LiveHub,
        queue_size: int,
        conn_id: str = "",
    ) -> None:
        self.conn_id = conn_id
        self._hub = hub
        self.sink = sink
        self.session = session
        self.closing = False
        self.expiry: asyncio.TimerHandle | None = None
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
            self.send_nowait(out)

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

    def send_nowait(self, frame: str) -> None:
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

    async def send(self, frame: str) -> None:
        """Send ``frame``, waiting for room in the backlog: only the connection's own handler
        calls this (history replay, answers), so its frames never close it as slow."""
        while not self.closing and self._backlog is not None and len(self._backlog) >= self._limit:
            if self._room is None:
                self._room = asyncio.get_running_loop().create_future()
            await self._room
        self.send_nowait(frame)

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


class Gateway:
    """Authentication, the HTTP routes and the per-connection frame loop."""

    def __init__(
        self,
        settings: GatewaySettings,
        lifecycle: Lifecycle,
        hub: LiveHub,
        history: ChannelHistory,
        *,
        verifier: TokenVerifier,
        presence: Presence,
    ) -> None:
        self.settings = settings
        self.presence = presence
        self._instance = uuid.uuid4().hex[:10]
        self._next_conn = itertools.count(1)
        self.lifecycle = lifecycle
        self.hub = hub
        self.history = history
        self.verifier = verifier
        self.clients: set[ClientConnection] = set()
        # Admitted connections (from the handshake on, so a burst cannot overshoot the limits
        # while upgrades are awaited), in all and per token subject.
        self._admitted = 0
        self._admitted_per_user: dict[str, int] = {}
        self.heartbeats = HeartbeatWheel(settings.ping_interval_seconds)
        self._handlers_done = asyncio.Event()
        self._handlers_done.set()

    def app(self) -> web.Application:
        timed = http_metrics_middleware(self.settings.service_name)

        @web.middleware
        async def metrics_except_streams(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            # A WebSocket or SSE "request" lasts as long as the connection: not a latency.
            if request.path in ("/ws", "/sse"):
                return await handler(request)
            return await timed(request, handler)

        app = web.Application(middlewares=[metrics_except_streams])
        app.cleanup_ctx.append(self._run_heartbeats)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/sse", self.sse)
        app.router.add_get("/v1/channels/{channel}/history", self.channel_history)
        app.router.add_get("/v1/channels/{channel}/presence", self.channel_presence)
        app.router.add_get("/", _static_handler("dashboard.html", "text/html"))
        app.router.add_get(
            "/static/pulse-client.js", _static_handler("pulse-client.js", "text/javascript")
        )
        return app

    async def _run_heartbeats(self, _app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self.heartbeats.run(), name="ws-heartbeats")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_all(self) -> None:
        """Close every connection with 1001 and wait for their handlers (bound by caller)."""
        for client in list(self.clients):
            client.close(CLOSE_GOING_AWAY, "going away")
        await self._handlers_done.wait()

    async def close_all_within(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.close_all(), seconds)
        except TimeoutError:
            log.warning("connections still open after the grace period", count=len(self.clients))

    # -- authentication -------------------------------------------------------------------

    async def _authenticate(self, request: web.Request) -> Claims | web.Response:
        token = token_from_request(request.query_string, request.headers)
        reason, text = "missing", "missing token"
        if token is not None:
            try:
                return await self.verifier.verify(token)
            except VerifierUnavailableError as exc:
                log.warning("token keys unavailable", error=str(exc))
                return web.json_response(
                    {"error": "unavailable", "message": "token keys unavailable, retry"},
                    status=503,
                )
            except TokenExpiredError:
                reason, text = "expired", "token expired"
            except InvalidTokenError:
                reason, text = "invalid", "invalid token"
        AUTH_FAILURES.labels(reason).inc()
        return web.json_response(
            {"error": "unauthorized", "message": text},
            status=401,
            headers={
                "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{text}"'
            },
        )

    def _admit(self, claims: Claims) -> web.Response | None:
        """Count a new connection of ``claims.sub``, or the response refusing it.

        An admitted connection must be let go with :meth:`_let_go` whatever happens next.
        """
        s = self.settings
        if self._admitted >= s.max_connections:
            CONNECTIONS_REFUSED.labels("capacity").inc()
            refusal = _problem(503, "over_capacity", "this gateway is full, retry shortly")
            refusal.headers["Retry-After"] = "1"
            return refusal
        held = self._admitted_per_user.get(claims.sub, 0)
        if held >= s.max_connections_per_user:
            CONNECTIONS_REFUSED.labels("per_user").inc()
            return _problem(
                429,
                "too_many_connections",
                f"at most {s.max_connections_per_user} connections per user on one gateway",
            )
        self._admitted += 1
        self._admitted_per_user[claims.sub] = held + 1
        return None

    def _let_go(self, claims: Claims) -> None:
        self._admitted -= 1
        held = self._admitted_per_user[claims.sub] - 1
        if held:
            self._admitted_per_user[claims.sub] = held
        else:
            del self._admitted_per_user[claims.sub]

    @staticmethod
    def _channel_refusal(claims: Claims, channel: str) -> web.Response | None:
        access = authorize_channel(claims, channel)
        if access is Access.UNKNOWN_CHANNEL:
            return _problem(404, "unknown_channel", f"no such channel: {channel[:80]}")
        if access is Access.FORBIDDEN:
            return _problem(403, "forbidden", f"not allowed to read {channel}")
        return None

    # -- WebSocket ------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        claims = await self._authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        refusal = self._admit(claims)
        if refusal is not None:
            return refusal
        try:
            return await self._websocket(request, claims)
        finally:
            self._let_go(claims)

    async def _websocket(self, request: web.Request, claims: Claims) -> web.StreamResponse:
        s = self.settings
        # Pings come from the gateway's one heartbeat wheel, and are answered here.
        ws = LingeringWebSocketResponse(
            linger=s.close_timeout_seconds,
            autoping=False,
            max_msg_size=s.max_message_bytes,
            compress=s.ws_compression,
            timeout=s.close_timeout_seconds,
        )
        stream = await ws.prepare(request)
        client = self._client(WebSocketSink(ws, request, stream), claims)
        ws.on_closed = client.leave_direct  # aiohttp closing by itself (the client's close)
        # try/finally rather than context managers: no generator objects per connection.
        self._open(client)
        try:
            client.wheel_slot = self.heartbeats.add(client)
            try:
                await self._receive(ws, client)
            finally:
                self.heartbeats.discard(client, client.wheel_slot)
            await client.wait_closed()
            await ws.linger()
        finally:
            await self._release(client)
        return ws

    async def _receive(self, ws: web.WebSocketResponse, client: ClientConnection) -> None:
        """The client's frames, until it closes (or is closed, or stops answering pings)."""
        s = self.settings
        bucket = TokenBucket(s.client_ops_per_second, s.client_ops_burst, time.monotonic())
        async for msg in ws:
            client.heard = time.monotonic()
            if msg.type is WSMsgType.PONG:
                continue
            if msg.type is WSMsgType.PING:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.pong(msg.data)
                continue
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return
            if bucket.allow(time.monotonic()):
                await self._on_frame(client, msg.data)
                continue
            RATE_LIMITED_OPS.inc()
            if bucket.refused_in_a_row > s.client_ops_burst:
                # Stop reading: the close handshake reads (and drops) what the client
                # still sends until its close frame, so it sees 4029, not a reset.
                client.close(CLOSE_RATE_LIMITED, "too many requests")
                return
            if bucket.refused_in_a_row == 1:  # one error frame per burst of refusals
                await client.send(
                    error_frame(ErrorCode.RATE_LIMITED, "too many operations, slow down")
                )

    def _client(self, sink: FrameSink, claims: Claims) -> ClientConnection:
        session = Session(
            claims,
            max_subscriptions=self.settings.max_subscriptions,
            buffer_limit=self.settings.send_queue_size,
        )
        return ClientConnection(
            sink,
            session,
            hub=self.hub,
            queue_size=self.settings.send_queue_size,
            conn_id=f"{self._instance}-{next(self._next_conn)}",
        )

    def _open(self, client: ClientConnection) -> None:
        """Count ``client`` and arm its token expiry; :meth:`_release` undoes it."""
        CONNECTIONS.inc()
        self.clients.add(client)
        self._handlers_done.clear()
        self._arm_expiry(client)

    async def _release(self, client: ClientConnection) -> None:
        if client.expiry is not None:
            client.expiry.cancel()
        await client.stop_writing()
        for channel in client.session.channels:
            await self._drop(client, channel)
        CONNECTIONS.dec()
        CONNECTION_DURATION.observe(time.monotonic() - client.opened)
        self.clients.discard(client)
        if not self.clients:
            self._handlers_done.set()

    def _arm_expiry(self, client: ClientConnection) -> None:
        """Close the connection with 4001 once its token expired and the grace period passed."""
        if client.expiry is not None:
            client.expiry.cancel()
        delay = client.session.claims.exp - time.time() + self.settings.token_grace_seconds
        client.expiry = asyncio.get_running_loop().call_later(
            max(delay, 0.0), client.close, CLOSE_TOKEN_EXPIRED, "token expired"
        )

    async def _refresh(self, client: ClientConnection, frame: Refresh) -> None:
        """Swap the connection's token; channels the new one may not read are dropped."""
        try:
            claims = await self.verifier.verify(frame.token)
        except (InvalidTokenError, VerifierUnavailableError) as exc:
            TOKEN_REFRESHES.labels("refused").inc()
            text = "token expired" if isinstance(exc, TokenExpiredError) else "invalid token"
            raise FrameError(ErrorCode.UNAUTHORIZED, text) from exc
        if claims.sub != client.session.claims.sub:
            TOKEN_REFRESHES.labels("refused").inc()
            client.close(CLOSE_FORBIDDEN, "token subject changed")
            return
        TOKEN_REFRESHES.labels("ok").inc()
        client.session.claims = claims
        self._arm_expiry(client)
        for channel in client.session.channels:
            if authorize_channel(claims, channel) is not Access.ALLOWED:
                await self._drop(client, channel)
                await client.send(
                    error_frame(ErrorCode.FORBIDDEN, "no longer allowed to subscribe", channel)
                )
        await client.send(refreshed_frame(claims.exp))

    async def _on_frame(self, client: ClientConnection, data: str | bytes) -> None:
        try:
            frame = parse_client_frame(data)
            if isinstance(frame, Ping):
                await client.send(pong_frame())
            elif isinstance(frame, Refresh):
                await self._refresh(client, frame)
            elif isinstance(frame, Publish):
                await self._publish(client, frame)
            elif isinstance(frame, Subscribe):
                await self._subscribe(client, frame)
            elif isinstance(frame, Unsubscribe):
                await self._unsubscribe(client, frame)
        except FrameError as exc:
            await client.send(error_frame(exc.code, exc.message, exc.channel))

    async def _subscribe(self, client: ClientConnection, frame: Subscribe) -> None:
        channel = frame.channel
        client.session.begin_subscribe(frame)  # raises FrameError: forbidden, unknown, …
        SUBSCRIPTIONS.inc()
        try:
            # Listen first, then read history: whatever is published meanwhile is buffered
            # by the session and joined to the history by offset.
            await self.hub.add(channel, client)
            snapshot = await self.history.snapshot(channel)
        except Exception as exc:
            log.warning("subscribe failed", channel=channel, error=str(exc))
            if client.session.unsubscribe(channel):
                SUBSCRIPTIONS.dec()
            await self.hub.remove(channel, client)
            raise FrameError(
                ErrorCode.UNAVAILABLE, "channel unavailable, retry later", channel
            ) from exc
        latest = snapshot.latest
        recovered = frame.since is not None and snapshot.recovers(frame.since, frame.epoch)
        await client.send(
            subscribed_frame(channel, latest, recovered=recovered, epoch=snapshot.epoch)
        )
        since = None if frame.since is None else snapshot.resume_from(frame.since, frame.epoch)
        if since is not None and since < latest:
            async for frames in self.history.frames_between(channel, since, latest):
                for event in frames:
                    await client.send(event)
        if client.session.is_subscribed(channel):
            for event in client.session.complete_subscribe(channel, latest):
                client.send_nowait(event)
            # Plain from its first live frame on, unless frames wait or its floor is ahead.
            self.hub.promote(channel, client)
            if has_presence(channel):
                try:
                    await self.presence.join(channel, client.conn_id, client.session.claims.sub)
                except Exception as exc:  # presence is best effort; delivery goes on
                    log.warning("presence join failed", channel=channel, error=str(exc))

    async def _publish(self, client: ClientConnection, frame: Publish) -> None:
        """An ephemeral message to an account channel the client may read; never stored."""
        channel = frame.channel
        access = authorize_channel(client.session.claims, channel)
        if access is Access.UNKNOWN_CHANNEL:
            raise FrameError(ErrorCode.UNKNOWN_CHANNEL, "no such channel", channel)
        # The system feeds (payments, alerts, stats) carry only what the pipeline appends.
        if access is not Access.ALLOWED or not channel.startswith("account:"):
            raise FrameError(ErrorCode.FORBIDDEN, "not allowed to publish", channel)
        s = self.settings
        now = time.monotonic()
        if client.publish_bucket is None:
            client.publish_bucket = TokenBucket(s.publish_per_second, s.publish_burst, now)
        if not client.publish_bucket.allow(now):
            RATE_LIMITED_OPS.inc()
            raise FrameError(ErrorCode.RATE_LIMITED, "too many publishes, slow down", channel)
        try:
            await self.hub.publish(
                channel, message_frame(channel, client.session.claims.sub, frame.data)
            )
        except Exception as exc:
            log.warning("publish failed", channel=channel, error=str(exc))
            raise FrameError(ErrorCode.UNAVAILABLE, "publish failed, retry", channel) from exc
        await client.send(published_frame(channel))

    async def _drop(self, client: ClientConnection, channel: str) -> bool:
        """Forget ``channel`` for ``client``: session, fan-out and presence."""
        if not client.session.unsubscribe(channel):
            return False
        SUBSCRIPTIONS.dec()
        await self.hub.remove(channel, client)
        try:
            await self.presence.leave(channel, client.conn_id)
        except Exception as exc:  # the lease runs out and a sweeper reports the leave
            log.warning("presence leave failed", channel=channel, error=str(exc))
        return True

    async def _unsubscribe(self, client: ClientConnection, frame: Unsubscribe) -> None:
        if not await self._drop(client, frame.channel):
            raise FrameError(ErrorCode.NOT_SUBSCRIBED, "not subscribed", frame.channel)
        await client.send(unsubscribed_frame(frame.channel))

    # -- Server-Sent Events ---------------------------------------------------------------

    async def sse(self, request: web.Request) -> web.StreamResponse:
        """``GET /sse?channels=a,b``: the channels' events as SSE, resumable by Last-Event-ID."""
        claims = await self._authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        channels = [c for c in request.query.get("channels", "").split(",") if c]
        if not channels or len(channels) > self.settings.max_subscriptions:
            return _problem(
                400,
                "bad_request",
                f"channels must name 1 to {self.settings.max_subscriptions} channels",
            )
        for channel in channels:
            refusal = self._channel_refusal(claims, channel)
            if refusal is not None:
                return refusal
        refusal = self._admit(claims)
        if refusal is not None:
            return refusal
        try:
            return await self._sse(request, claims, channels)
        finally:
            self._let_go(claims)

    async def _sse(
        self, request: web.Request, claims: Claims, channels: list[str]
    ) -> web.StreamResponse:
        resume = Cursor.parse(
            request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
        )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
            }
        )
        await response.prepare(request)
        sink = SseSink(response, Cursor())
        client = self._client(sink, claims)
        self._open(client)
        try:
            for channel in dict.fromkeys(channels):
                position = resume.positions.get(channel)
                subscribe = (
                    Subscribe(channel, position.offset, position.epoch)
                    if position
                    else Subscribe(channel)
                )
                await self._on_frame(client, _subscribe_json(subscribe))
            await self._hold_sse(sink, request)
        finally:
            await self._release(client)
        return response

    @staticmethod
    async def _hold_sse(sink: SseSink, request: web.Request) -> None:
        """Until the stream is closed by us or by the client (checked every second)."""
        idle = 0.0
        while not sink.closed.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sink.closed.wait(), 1.0)
                return
            idle += 1.0
            if idle >= _SSE_KEEPALIVE_SECONDS:
                idle = 0.0
                try:
                    await sink.keepalive()
                except (ConnectionError, RuntimeError):
                    return

    # -- history --------------------------------------------------------------------------

    async def channel_history(self, request: web.Request) -> web.Response:
        """``GET /v1/channels/{c}/history?since=&limit=&epoch=``: stored events, oldest first.

        With ``since``: the events after it (page on with the last offset returned). Without:
        the newest ``limit`` events."""
        claims = await self._authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        channel = request.match_info["channel"]
        refusal = self._channel_refusal(claims, channel)
        if refusal is not None:
            return refusal
        try:
            limit = int(request.query.get("limit", _HISTORY_LIMIT_DEFAULT))
            since_text = request.query.get("since")
            since = StreamId.parse(since_text) if since_text else None
        except ValueError:
            return _problem(400, "bad_request", "since must be an offset, limit an integer")
        if not 1 <= limit <= _HISTORY_LIMIT_MAX:
            return _problem(400, "bad_request", f"limit must be 1 to {_HISTORY_LIMIT_MAX}")
        snapshot = await self.history.snapshot(channel)
        epoch = request.query.get("epoch")
        body: dict[str, Any] = {
            "channel": channel,
            "epoch": snapshot.epoch,
            "offset": str(snapshot.latest),
        }
        if since is None:
            entries = await self.history.newest(channel, limit)
        elif epoch is not None and epoch != snapshot.epoch:
            entries = []
            body["recovered"] = False
        else:
            entries = await self.history.after(channel, since, limit)
            body["recovered"] = snapshot.recovers(since, epoch)
        body["events"] = [
            {"offset": offset, "event": orjson.Fragment(event)} for offset, event in entries
        ]
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def channel_presence(self, request: web.Request) -> web.Response:
        """``GET /v1/channels/{c}/presence``: the users present and their session counts."""
        claims = await self._authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        channel = request.match_info["channel"]
        refusal = self._channel_refusal(claims, channel)
        if refusal is not None:
            return refusal
        if not has_presence(channel):
            return _problem(404, "no_presence", f"{channel} has no presence")
        users = await self.presence.users(channel)
        return web.json_response(
            {
                "channel": channel,
                "count": len(users),
                "users": [{"user": u, "sessions": n} for u, n in sorted(users.items())],
            }
        )


def _static_handler(
    name: str, content_type: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler serving one file shipped in the package (read once, at start-up)."""
    body = (resources.files("ws_gateway") / "static" / name).read_bytes()

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    return handler


def _subscribe_json(frame: Subscribe) -> str:
    data: dict[str, Any] = {"op": "subscribe", "channel": frame.channel}
    if frame.since is not None:
        data["since"] = str(frame.since)
    if frame.epoch is not None:
        data["epoch"] = frame.epoch
    return orjson.dumps(data).decode()


def _problem(status: int, code: str, detail: str) -> web.Response:
    """An RFC 9457 problem response."""
    return web.json_response(
        {"type": "about:blank", "title": code, "status": status, "detail": detail, "code": code},
        status=status,
        content_type="application/problem+json",
    )
