"""The gateway's I/O edge: the websockets server, its plain HTTP endpoints and connections.

One port serves ``/ws`` (WebSocket, JWT in ``?token=`` or ``Authorization: Bearer``) and
``/healthz``, ``/readyz`` and ``/metrics`` through websockets' ``process_request`` hook.
Protocol decisions live in :mod:`ws_gateway.protocol` and :mod:`ws_gateway.session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import time
import weakref
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from pulse.auth import Claims, InvalidTokenError, TokenExpiredError
from pulse.logging import get_logger
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
from ws_gateway.protocol import (
    ErrorCode,
    FrameError,
    Ping,
    Refresh,
    Subscribe,
    Unsubscribe,
    error_frame,
    parse_client_frame,
    pong_frame,
    refreshed_frame,
    subscribed_frame,
    unsubscribed_frame,
)
from ws_gateway.ratelimit import TokenBucket
from ws_gateway.session import BufferOverflowError, Session
from ws_gateway.tokens import VerifierUnavailableError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from websockets.asyncio.server import Server
    from websockets.http11 import Request, Response

    from pulse.service import Lifecycle
    from ws_gateway.history import ChannelHistory
    from ws_gateway.live import LiveHub
    from ws_gateway.settings import GatewaySettings
    from ws_gateway.tokens import TokenVerifier

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_RATE_LIMITED",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOKEN_EXPIRED",
    "ClientConnection",
    "Gateway",
    "token_from_request",
]

# 40xx: reconnecting may help (refresh the token first for 4001); 4003: do not reconnect.
CLOSE_TOKEN_EXPIRED: Final = 4001
CLOSE_FORBIDDEN: Final = 4003
CLOSE_SLOW_CONSUMER: Final = 4008
CLOSE_RATE_LIMITED: Final = 4029
log = get_logger("ws_gateway.server")


def token_from_request(query: str, headers: Mapping[str, str]) -> str | None:
    """The bearer token of a handshake: ``?token=`` first, then ``Authorization: Bearer``."""
    values = parse_qs(query).get("token")
    if values and values[0]:
        return values[0]
    authorization = headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


class ClientConnection:
    """One WebSocket client: its session, its bounded send queue and its writer task."""

    def __init__(self, ws: ServerConnection, session: Session, *, queue_size: int) -> None:
        self.ws = ws
        self.session = session
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.closing = False
        self._close_task: asyncio.Task[None] | None = None
        self.expiry: asyncio.TimerHandle | None = None

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
        if not self.closing:
            CLIENT_CLOSES.labels(str(code)).inc()
        self.closing = True
        if self._close_task is None:
            self._close_task = asyncio.create_task(self.ws.close(code, reason))

    async def write_loop(self) -> None:
        try:
            while True:
                frame = await self.queue.get()
                await self.ws.send(frame)
                MESSAGES_SENT.inc()
        except ConnectionClosed:
            self.closing = True
        # Keep draining until cancelled, so the handler never waits on a dead connection.
        while True:
            await self.queue.get()


class Gateway:
    """Handshakes, HTTP endpoints and the per-connection frame loop."""

    def __init__(
        self,
        settings: GatewaySettings,
        lifecycle: Lifecycle,
        hub: LiveHub,
        history: ChannelHistory,
        verifier: TokenVerifier,
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.hub = hub
        self.history = history
        self.verifier = verifier
        self._claims: weakref.WeakKeyDictionary[ServerConnection, Claims] = (
            weakref.WeakKeyDictionary()
        )

    async def start(self) -> Server:
        s = self.settings
        return await serve(
            self.handle,
            s.http_host,
            s.http_port,
            process_request=self.process_request,
            max_size=s.max_message_bytes,
            compression="deflate" if s.ws_compression else None,
            ping_interval=s.ping_interval_seconds,
            ping_timeout=s.ping_timeout_seconds,
            close_timeout=s.close_timeout_seconds,
            server_header=None,
            reuse_address=True,
        )

    # -- HTTP -----------------------------------------------------------------------------

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/ws":
            return await self._authenticate(connection, request, url.query)
        if url.path == "/healthz":
            return _json(connection, http.HTTPStatus.OK, {"status": "ok"})
        if url.path == "/readyz":
            ok, checks = await self.lifecycle.readiness()
            return _json(
                connection,
                http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE,
                {"status": "ready" if ok else "not ready", "checks": checks},
            )
        if url.path == "/metrics":
            body = generate_latest().decode()
            return _respond(connection, http.HTTPStatus.OK, body, CONTENT_TYPE_LATEST)
        return _json(connection, http.HTTPStatus.NOT_FOUND, {"error": "not found"})

    async def _authenticate(
        self, connection: ServerConnection, request: Request, query: str
    ) -> Response | None:
        token = token_from_request(query, request.headers)
        reason, message = "missing", "missing token"
        if token is not None:
            try:
                self._claims[connection] = await self.verifier.verify(token)
            except VerifierUnavailableError as exc:
                log.warning("token keys unavailable", error=str(exc))
                return _json(
                    connection,
                    http.HTTPStatus.SERVICE_UNAVAILABLE,
                    {"error": "unavailable", "message": "token keys unavailable, retry"},
                )
            except TokenExpiredError:
                reason, message = "expired", "token expired"
            except InvalidTokenError:
                reason, message = "invalid", "invalid token"
            else:
                return None  # go on with the WebSocket handshake
        AUTH_FAILURES.labels(reason).inc()
        response = _json(
            connection, http.HTTPStatus.UNAUTHORIZED, {"error": "unauthorized", "message": message}
        )
        response.headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{message}"'
        )
        return response

    # -- WebSocket ------------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        claims = self._claims.pop(ws)
        session = Session(
            claims,
            max_subscriptions=self.settings.max_subscriptions,
            buffer_limit=self.settings.send_queue_size,
        )
        client = ClientConnection(ws, session, queue_size=self.settings.send_queue_size)
        started = time.monotonic()
        CONNECTIONS.inc()
        writer = asyncio.create_task(client.write_loop())
        self._arm_expiry(client)
        bucket = TokenBucket(
            self.settings.client_ops_per_second, self.settings.client_ops_burst, started
        )
        try:
            async for message in ws:
                if bucket.allow(time.monotonic()):
                    await self._on_frame(client, message)
                    continue
                RATE_LIMITED_OPS.inc()
                if bucket.refused_in_a_row > self.settings.client_ops_burst:
                    client.close(CLOSE_RATE_LIMITED, "too many requests")
                elif bucket.refused_in_a_row == 1:  # one error frame per burst of refusals
                    await client.send(
                        error_frame(ErrorCode.RATE_LIMITED, "too many operations, slow down")
                    )
        except ConnectionClosed:
            pass
        finally:
            if client.expiry is not None:
                client.expiry.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            for channel in session.channels:
                session.unsubscribe(channel)
                SUBSCRIPTIONS.dec()
                await self.hub.remove(channel, client)
            CONNECTIONS.dec()
            CONNECTION_DURATION.observe(time.monotonic() - started)

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
            message = "token expired" if isinstance(exc, TokenExpiredError) else "invalid token"
            raise FrameError(ErrorCode.UNAUTHORIZED, message) from exc
        if claims.sub != client.session.claims.sub:
            TOKEN_REFRESHES.labels("refused").inc()
            client.close(CLOSE_FORBIDDEN, "token subject changed")
            return
        TOKEN_REFRESHES.labels("ok").inc()
        client.session.claims = claims
        self._arm_expiry(client)
        for channel in client.session.channels:
            if authorize_channel(claims, channel) is not Access.ALLOWED:
                client.session.unsubscribe(channel)
                SUBSCRIPTIONS.dec()
                await self.hub.remove(channel, client)
                await client.send(
                    error_frame(ErrorCode.FORBIDDEN, "no longer allowed to subscribe", channel)
                )
        await client.send(refreshed_frame(claims.exp))

    async def _on_frame(self, client: ClientConnection, message: str | bytes) -> None:
        try:
            frame = parse_client_frame(message)
            if isinstance(frame, Ping):
                await client.send(pong_frame())
            elif isinstance(frame, Refresh):
                await self._refresh(client, frame)
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

    async def _unsubscribe(self, client: ClientConnection, frame: Unsubscribe) -> None:
        if not client.session.unsubscribe(frame.channel):
            raise FrameError(ErrorCode.NOT_SUBSCRIBED, "not subscribed", frame.channel)
        SUBSCRIPTIONS.dec()
        await self.hub.remove(frame.channel, client)
        await client.send(unsubscribed_frame(frame.channel))


def _respond(
    connection: ServerConnection, status: http.HTTPStatus, body: str, content_type: str
) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


def _json(connection: ServerConnection, status: http.HTTPStatus, body: object) -> Response:
    return _respond(connection, status, orjson.dumps(body).decode(), "application/json")
