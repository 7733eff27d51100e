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
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import parse_qs

import orjson
from aiohttp import WSMsgType, web

from pulse.auth import Claims, InvalidTokenError, TokenExpiredError
from pulse.logging import get_logger
from pulse.metrics import http_metrics_middleware
from pulse.service import add_ops_routes
from ws_gateway.authz import Access, authorize_channel
from ws_gateway.metrics import (
    AUTH_FAILURES,
    CLIENT_CLOSES,
    CONNECTION_DURATION,
    CONNECTIONS,
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

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from pulse.service import Lifecycle
    from ws_gateway.history import ChannelHistory
    from ws_gateway.live import LiveHub
    from ws_gateway.presence import Presence
    from ws_gateway.settings import GatewaySettings
    from ws_gateway.tokens import TokenVerifier

__all__ = [
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

    async def send(self, frame: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class WebSocketSink:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def send(self, frame: str) -> None:
        await self.ws.send_str(frame)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())


class SseSink:
    """Writes frames as SSE messages whose id is the resume cursor over all channels."""

    def __init__(self, response: web.StreamResponse, cursor: Cursor) -> None:
        self.response = response
        self.cursor = cursor
        self.closed = asyncio.Event()

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

    async def keepalive(self) -> None:
        await self.response.write(comment("keepalive"))

    async def close(self, code: int, reason: str) -> None:
        try:
            frame = orjson.dumps({"op": "close", "code": code, "reason": reason}).decode()
            await self.response.write(message(frame))
        finally:
            self.closed.set()


class ClientConnection:
    """One client: its session, its bounded send queue and its writer task."""

    def __init__(
        self, sink: FrameSink, session: Session, *, queue_size: int, conn_id: str = ""
    ) -> None:
        self.conn_id = conn_id
        self.sink = sink
        self.session = session
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.closing = False
        self.expiry: asyncio.TimerHandle | None = None
        self.publish_bucket: TokenBucket | None = None
        self.writer: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None

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

    def send_nowait(self, frame: str) -> None:
        if self.closing:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.close_slow_consumer()

    async def send(self, frame: str) -> None:
        """Queue ``frame``, waiting for room: only the connection's own handler calls this."""
        if not self.closing:
            await self.queue.put(frame)

    def close_slow_consumer(self) -> None:
        if not self.closing:
            SLOW_CONSUMER_CLOSES.inc()
            log.info("closing slow consumer", sub=self.session.claims.sub)
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")

    def close(self, code: int, reason: str) -> None:
        if self._close_task is not None:
            return
        CLIENT_CLOSES.labels(str(code)).inc()
        self.closing = True
        self._close_task = asyncio.create_task(self._close(code, reason))

    async def wait_closed(self) -> None:
        """Wait for a close this connection started (the handshake included), if any."""
        if self._close_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._close_task

    async def _close(self, code: int, reason: str) -> None:
        # No data frame may follow the close frame: stop the writer first.
        if self.writer is not None:
            self.writer.cancel()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.sink.close(code, reason)

    async def write_loop(self) -> None:
        try:
            while True:
                frame = await self.queue.get()
                await self.sink.send(frame)
                MESSAGES_SENT.inc()
        except (ConnectionError, RuntimeError):
            self.closing = True
        # Keep draining until cancelled, so the handler never waits on a dead connection.
        while True:
            await self.queue.get()


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
        add_ops_routes(app, self.lifecycle)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/sse", self.sse)
        app.router.add_get("/v1/channels/{channel}/history", self.channel_history)
        app.router.add_get("/v1/channels/{channel}/presence", self.channel_presence)
        app.router.add_get("/", _static_handler("dashboard.html", "text/html"))
        app.router.add_get(
            "/static/pulse-client.js", _static_handler("pulse-client.js", "text/javascript")
        )
        return app

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
        s = self.settings
        ws = web.WebSocketResponse(
            heartbeat=s.ping_interval_seconds,
            max_msg_size=s.max_message_bytes,
            compress=s.ws_compression,
            timeout=s.close_timeout_seconds,
        )
        await ws.prepare(request)
        client = self._client(WebSocketSink(ws), claims)
        async with self._connection(client):
            bucket = TokenBucket(s.client_ops_per_second, s.client_ops_burst, time.monotonic())
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                if bucket.allow(time.monotonic()):
                    await self._on_frame(client, msg.data)
                    continue
                RATE_LIMITED_OPS.inc()
                if bucket.refused_in_a_row > s.client_ops_burst:
                    # Stop reading: the close handshake reads (and drops) what the client
                    # still sends until its close frame, so it sees 4029, not a reset.
                    client.close(CLOSE_RATE_LIMITED, "too many requests")
                    break
                if bucket.refused_in_a_row == 1:  # one error frame per burst of refusals
                    await client.send(
                        error_frame(ErrorCode.RATE_LIMITED, "too many operations, slow down")
                    )
            await client.wait_closed()
        return ws

    def _client(self, sink: FrameSink, claims: Claims) -> ClientConnection:
        session = Session(
            claims,
            max_subscriptions=self.settings.max_subscriptions,
            buffer_limit=self.settings.send_queue_size,
        )
        return ClientConnection(
            sink,
            session,
            queue_size=self.settings.send_queue_size,
            conn_id=f"{self._instance}-{next(self._next_conn)}",
        )

    @contextlib.asynccontextmanager
    async def _connection(self, client: ClientConnection) -> AsyncIterator[None]:
        """Run ``client``'s writer and expiry for the block; release everything after it."""
        started = time.monotonic()
        CONNECTIONS.inc()
        self.clients.add(client)
        self._handlers_done.clear()
        client.writer = asyncio.create_task(client.write_loop())
        self._arm_expiry(client)
        try:
            yield
        finally:
            if client.expiry is not None:
                client.expiry.cancel()
            client.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client.writer
            for channel in client.session.channels:
                await self._drop(client, channel)
            CONNECTIONS.dec()
            CONNECTION_DURATION.observe(time.monotonic() - started)
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
        # An offset of another epoch means nothing here: nothing is replayed for it.
        same_epoch = frame.epoch is None or frame.epoch == snapshot.epoch
        if frame.since is not None and same_epoch and frame.since < latest:
            async for frames in self.history.frames_between(channel, frame.since, latest):
                for event in frames:
                    await client.send(event)
        if client.session.is_subscribed(channel):
            for event in client.session.complete_subscribe(channel, latest):
                client.send_nowait(event)
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
        async with self._connection(client):
            for channel in dict.fromkeys(channels):
                position = resume.positions.get(channel)
                subscribe = (
                    Subscribe(channel, position.offset, position.epoch)
                    if position
                    else Subscribe(channel)
                )
                await self._on_frame(client, _subscribe_json(subscribe))
            await self._hold_sse(sink, request)
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
