"""The gateway's routes, admission, what its clients' messages do, start and stop.

Routes: ``/ws`` (WebSocket: served by :mod:`ws_gateway.websocket`, which the front door of
:mod:`ws_gateway.front` hands the connection to), ``/sse`` (Server-Sent Events),
``/v1/channels/{channel}/history``, ``/v1/channels/{channel}/presence``
(:mod:`ws_gateway.http_api`), ``/`` (the console), ``/console/config.json``, ``/static/…``
and ``/healthz``, ``/readyz``, ``/metrics``. Every route but the console's and the ops routes
is behind :func:`ws_gateway.http_auth.authenticated` (a WebSocket's handshake verifies the
same way, :meth:`Gateway.admit_websocket`). A WebSocket or SSE client is admitted
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
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from pulse.logging import get_logger
from pulse.metrics import http_metrics_middleware
from ws_gateway.authz import Operation
from ws_gateway.commands import Commands
from ws_gateway.connection import CLOSE_GOING_AWAY, CLOSE_RATE_LIMITED, ClientConnection
from ws_gateway.expiry import ExpirySchedule
from ws_gateway.heartbeat import HeartbeatWheel
from ws_gateway.http_api import ChannelReads, StaticFiles
from ws_gateway.http_auth import (
    authenticated,
    channel_refusal,
    problem,
    token_from_request,
    verify_token,
)
from ws_gateway.metrics import (
    CONNECTION_DURATION,
    CONNECTIONS,
    CONNECTIONS_REFUSED,
    RATE_LIMITED_OPS,
)
from ws_gateway.protocol import ErrorCode, FrameError, error_frame, resume_subscribe
from ws_gateway.session import Session
from ws_gateway.sse import Cursor
from ws_gateway.transports import SseConnection, SseSink
from ws_gateway.websocket import HandedOver, WebSocketConnection, request_bytes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from websockets.http11 import Request

    from pulse.auth import Claims, TokenVerifier
    from pulse.service import Lifecycle
    from ws_gateway.history import ChannelHistory
    from ws_gateway.live import LiveHub
    from ws_gateway.presence import Presence
    from ws_gateway.ratelimit import TokenBucket
    from ws_gateway.settings import GatewaySettings

__all__ = ["Gateway"]

log = get_logger("ws_gateway.server")
_Client = TypeVar("_Client", bound=ClientConnection)


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
        self._endings: set[asyncio.Task[None]] = set()  # connections being released

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
        app.router.add_get("/ws", self.websocket, allow_head=False)
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

    def _open(self, kind: Callable[..., _Client], sink: object, claims: Claims) -> _Client:
        """A connection of ``kind`` over ``sink`` for ``claims``, counted and its token
        expiry armed; :meth:`_release` undoes it."""
        client = kind(
            sink,
            self._session(claims),
            hub=self.hub,
            queue_size=self.settings.send_queue_size,
            conn_id=self._conn_id(),
            expiries=self.expiries,
        )
        CONNECTIONS.inc()
        self.clients.add(client)
        self._handlers_done.clear()
        client.arm_expiry(self.settings.token_grace_seconds)
        return client

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

    def websocket_protocol(self) -> WebSocketConnection:
        """The protocol of a connection whose first request is ``GET /ws``
        (:mod:`ws_gateway.front`)."""
        return WebSocketConnection(self)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``GET /ws`` read by aiohttp: an upgrade on a kept-alive HTTP connection (the
        front door sends a connection's first request there itself). The connection is
        handed to the same protocol; aiohttp closes the socket when its handler returns,
        so the handler waits for the connection's end."""
        transport = request.transport
        if transport is None:
            raise web.HTTPBadRequest
        connection = HandedOver(self, transport.get_protocol())
        transport.set_protocol(connection)
        connection.connection_made(transport)
        connection.data_received(
            request_bytes(
                request.path_qs,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            )
        )
        await connection.ended
        return web.Response(status=499)  # never written: the connection is gone

    async def admit_websocket(self, request: Request) -> Claims | web.Response:
        _path, _, query = request.path.partition("?")
        claims = await verify_token(self.verifier, token_from_request(query, request.headers))
        if isinstance(claims, web.Response):
            return claims
        refusal = self._admit(claims)
        return claims if refusal is None else refusal

    def let_go(self, claims: Claims) -> None:
        self._let_go(claims)

    def open_websocket(self, sink: WebSocketConnection, claims: Claims) -> ClientConnection:
        client = self._open(ClientConnection, sink, claims)
        client.wheel_slot = self.heartbeats.add(client)
        return client

    def end_websocket(self, client: ClientConnection, worker: asyncio.Task[None] | None) -> None:
        task = asyncio.create_task(self._end_websocket(client, worker))
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def _end_websocket(
        self, client: ClientConnection, worker: asyncio.Task[None] | None
    ) -> None:
        try:
            self.heartbeats.discard(client, client.wheel_slot)
            if worker is not None:  # a command in progress finishes first
                await asyncio.wait([worker])
            await self._release(client)
        finally:
            self._let_go(client.session.claims)

    async def on_message(
        self, client: ClientConnection, bucket: TokenBucket, data: str | bytes
    ) -> None:
        """One message from a WebSocket client, within its rate of client ops."""
        s = self.settings
        if bucket.allow(time.monotonic()):
            await self.commands.handle(client, data)
            return
        RATE_LIMITED_OPS.inc()
        if bucket.refused_in_a_row > s.client_ops_burst:
            # The close handshake drops what the client still sends until its close
            # frame, so it sees 4029, not a reset.
            client.close(CLOSE_RATE_LIMITED, "too many requests")
        elif bucket.refused_in_a_row == 1:  # one error frame per burst of refusals
            await client.send(error_frame(ErrorCode.RATE_LIMITED, "too many operations, slow down"))

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
        client = self._open(SseConnection, sink, claims)
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
