"""The gateway's aiohttp application: routes, admission, the receive loop, start and stop.

Routes: ``/ws`` (WebSocket, aiohttp's ``WebSocketResponse``), ``/sse`` (Server-Sent Events),
``/v1/channels/{channel}/history``, ``/v1/channels/{channel}/presence``
(:mod:`ws_gateway.http_api`), ``/`` (the console), ``/console/config.json``, ``/static/…``
and ``/healthz``, ``/readyz``, ``/metrics``. Every route but the console's and the ops routes
is behind :func:`ws_gateway.http_auth.authenticated`. A WebSocket or SSE client is admitted
within the process's connection limits, becomes a :class:`~ws_gateway.connection.ClientConnection`
over its transport (:mod:`ws_gateway.transports`), and its frames are done by
:class:`~ws_gateway.commands.Commands`. Live frames never pass through here: the fan-out
hands them to the connections (:mod:`ws_gateway.live`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from pulse.logging import get_logger
from pulse.metrics import http_metrics_middleware
from ws_gateway.authz import Operation
from ws_gateway.commands import Commands
from ws_gateway.connection import CLOSE_GOING_AWAY, CLOSE_RATE_LIMITED, ClientConnection
from ws_gateway.expiry import ExpirySchedule
from ws_gateway.heartbeat import HeartbeatWheel
from ws_gateway.http_api import ChannelReads, StaticFiles
from ws_gateway.http_auth import authenticated, channel_refusal, problem
from ws_gateway.linger import LingeringWebSocketResponse
from ws_gateway.metrics import (
    CONNECTION_DURATION,
    CONNECTIONS,
    CONNECTIONS_REFUSED,
    RATE_LIMITED_OPS,
)
from ws_gateway.protocol import ErrorCode, FrameError, error_frame, resume_subscribe
from ws_gateway.ratelimit import TokenBucket
from ws_gateway.session import Session
from ws_gateway.sse import Cursor
from ws_gateway.transports import SseConnection, SseSink, WebSocketSink

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from pulse.auth import Claims, TokenVerifier
    from pulse.service import Lifecycle
    from ws_gateway.history import ChannelHistory
    from ws_gateway.live import LiveHub
    from ws_gateway.presence import Presence
    from ws_gateway.settings import GatewaySettings

__all__ = ["Gateway"]

log = get_logger("ws_gateway.server")


class Gateway:
    """The application, the connections it admitted, and their receive loops."""

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
        self.commands = Commands(
            settings, hub=hub, history=history, presence=presence, verifier=verifier
        )
        self.clients: set[ClientConnection] = set()
        # Admitted connections (from the handshake on, so a burst cannot overshoot the limits
        # while upgrades are awaited), in all and per token subject.
        self._admitted = 0
        self._admitted_per_user: dict[str, int] = {}
        self.heartbeats = HeartbeatWheel(settings.ping_interval_seconds)
        self.expiries = ExpirySchedule()
        self._handlers_done = asyncio.Event()
        self._handlers_done.set()

    def app(self) -> web.Application:
        timed = http_metrics_middleware(self.settings.service_name)

        @web.middleware
        def metrics_except_streams(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> Awaitable[web.StreamResponse]:
            # A WebSocket or SSE "request" lasts as long as the connection: not a latency.
            # Not a coroutine: the stream's handler is handed on, not awaited here, so no
            # frame of this function is held for the life of every connection.
            if request.path in ("/ws", "/sse"):
                return handler(request)
            return timed(request, handler)

        signed_in = authenticated(self.verifier)
        reads = ChannelReads(self.history, self.presence)
        app = web.Application(middlewares=[metrics_except_streams])
        app.cleanup_ctx.append(self._run_heartbeats)
        app.router.add_get("/ws", signed_in(self.websocket))
        app.router.add_get("/sse", signed_in(self.sse))
        app.router.add_get(
            "/v1/channels/{channel}/history",
            authenticated(self.verifier, channel_op=Operation.READ_HISTORY)(reads.history),
        )
        app.router.add_get(
            "/v1/channels/{channel}/presence",
            authenticated(self.verifier, channel_op=Operation.READ_PRESENCE)(reads.presence),
        )
        static = StaticFiles(self.settings.console_ingest_url)
        app.router.add_get("/", static.console)
        app.router.add_get("/console/config.json", static.config)
        app.router.add_get("/static/{path:.+}", static.file)
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

    # -- admission ------------------------------------------------------------------------

    def _admit(self, claims: Claims) -> web.Response | None:
        """Count a new connection of ``claims.sub``, or the response refusing it.

        An admitted connection must be let go with :meth:`_let_go` whatever happens next.
        """
        s = self.settings
        if self._admitted >= s.max_connections:
            CONNECTIONS_REFUSED.labels("capacity").inc()
            refusal = problem(503, "over-capacity", "this gateway is full, retry shortly")
            refusal.headers["Retry-After"] = "1"
            return refusal
        held = self._admitted_per_user.get(claims.sub, 0)
        if held >= s.max_connections_per_user:
            CONNECTIONS_REFUSED.labels("per_user").inc()
            return problem(
                429,
                "too-many-connections",
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

    def _session(self, claims: Claims) -> Session:
        return Session(
            claims,
            max_subscriptions=self.settings.max_subscriptions,
            buffer_limit=self.settings.send_queue_size,
        )

    def _conn_id(self) -> str:
        return f"{self._instance}-{next(self._next_conn)}"

    def _open(self, client: ClientConnection) -> None:
        """Count ``client`` and arm its token expiry; :meth:`_release` undoes it."""
        CONNECTIONS.inc()
        self.clients.add(client)
        self._handlers_done.clear()
        client.arm_expiry(self.settings.token_grace_seconds)

    async def _release(self, client: ClientConnection) -> None:
        client.disarm_expiry()
        await client.stop_writing()
        await self.commands.drop_all(client)
        CONNECTIONS.dec()
        CONNECTION_DURATION.observe(time.monotonic() - client.opened)
        self.clients.discard(client)
        if not self.clients:
            self._handlers_done.set()

    # -- WebSocket ------------------------------------------------------------------------

    def websocket(self, request: web.Request, claims: Claims) -> Awaitable[web.StreamResponse]:
        """``GET /ws``: the WebSocket protocol (ws_gateway.protocol).

        Hands on the connection's coroutine rather than awaiting it: each coroutine awaiting
        another holds a frame for as long as the connection lives."""
        refusal = self._admit(claims)
        if refusal is not None:
            return _answer(refusal)
        return self._websocket(request, claims)

    async def _websocket(self, request: web.Request, claims: Claims) -> web.StreamResponse:
        """The admitted connection (:meth:`_admit`) until it ends; then it is let go."""
        # try/finally rather than context managers: no generator objects per connection.
        try:
            ws = self._websocket_response()
            stream = await ws.prepare(request)
            client = ClientConnection(
                WebSocketSink(ws, request, stream),
                self._session(claims),
                hub=self.hub,
                queue_size=self.settings.send_queue_size,
                conn_id=self._conn_id(),
                expiries=self.expiries,
            )
            ws.on_closed = client.leave_direct  # aiohttp closing by itself (the client's close)
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
        finally:
            self._let_go(claims)

    def _websocket_response(self) -> LingeringWebSocketResponse:
        s = self.settings
        # Pings come from the gateway's one heartbeat wheel, and are answered here.
        return LingeringWebSocketResponse(
            linger=s.close_timeout_seconds,
            autoping=False,
            max_msg_size=s.max_message_bytes,
            compress=s.ws_compression,
            timeout=s.close_timeout_seconds,
        )

    async def _receive(self, ws: web.WebSocketResponse, client: ClientConnection) -> None:
        """The client's frames, until it closes (or is closed, or stops answering pings)."""
        s = self.settings
        bucket = TokenBucket(s.client_ops_per_second, s.client_ops_burst, time.monotonic())
        while True:
            # ``receive`` rather than ``async for``: no ``__anext__`` frame held while idle.
            msg = await ws.receive()
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
                await self.commands.handle(client, msg.data)
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

    # -- Server-Sent Events ---------------------------------------------------------------

    async def sse(self, request: web.Request, claims: Claims) -> web.StreamResponse:
        """``GET /sse?channels=a,b``: the channels' events as SSE, resumable by Last-Event-ID."""
        channels = [c for c in request.query.get("channels", "").split(",") if c]
        if not channels or len(channels) > self.settings.max_subscriptions:
            return problem(
                400,
                "bad-request",
                f"channels must name 1 to {self.settings.max_subscriptions} channels",
            )
        for channel in channels:
            refusal = channel_refusal(claims, Operation.SUBSCRIBE, channel)
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
        sink = SseSink(response)
        client = SseConnection(
            sink,
            self._session(claims),
            hub=self.hub,
            queue_size=self.settings.send_queue_size,
            conn_id=self._conn_id(),
            expiries=self.expiries,
        )
        self._open(client)
        try:
            for channel in dict.fromkeys(channels):
                position = resume.positions.get(channel)
                try:
                    await self.commands.subscribe(
                        client,
                        resume_subscribe(
                            channel,
                            position.offset if position else None,
                            position.epoch if position else None,
                        ),
                    )
                except FrameError as exc:
                    await client.send(error_frame(exc.code, exc.message, exc.channel))
            await sink.hold(request)
        finally:
            await self._release(client)
        return response


async def _answer(response: web.StreamResponse) -> web.StreamResponse:
    return response
