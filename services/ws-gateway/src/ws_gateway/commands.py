"""What a client's frames do: subscribe with replay, unsubscribe, publish, refresh, ping.

:class:`Commands` works on one :class:`~ws_gateway.connection.ClientConnection` at a time
and reaches Redis only through the hub, history, presence and token verifier it is given
(:class:`ChannelHub`, :class:`HistoryReader`, :class:`PresenceBoard`, :class:`Verifier`), so
its rules can be tested with in-memory fakes. Refusals are :class:`FrameError` s, answered
with an error frame by :meth:`Commands.handle`; the connection stays open.

Subscribing listens first and reads the history afterwards: whatever is published meanwhile
is buffered by the session and joined to the history by offset (:mod:`ws_gateway.session`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from pulse.auth import InvalidTokenError, TokenExpiredError, VerifierUnavailableError
from pulse.logging import get_logger
from ws_gateway.authz import Access, Operation, authorize, require
from ws_gateway.connection import CLOSE_FORBIDDEN, Lanes
from ws_gateway.metrics import RATE_LIMITED_OPS, SUBSCRIPTIONS, TOKEN_REFRESHES
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

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pulse.auth import Claims
    from ws_gateway.connection import ClientConnection
    from ws_gateway.durable import DurableReplay
    from ws_gateway.fanout import Subscriber
    from ws_gateway.history import HistorySnapshot
    from ws_gateway.offsets import StreamId
    from ws_gateway.settings import GatewaySettings

__all__ = ["ChannelHub", "Commands", "HistoryReader", "PresenceBoard", "Verifier"]

log = get_logger("ws_gateway.server")  # see ws_gateway.connection


class ChannelHub(Lanes, Protocol):
    """The live side of channels (:class:`~ws_gateway.live.LiveHub`)."""

    async def add(self, channel: str, subscriber: Subscriber) -> None: ...

    async def remove(self, channel: str, subscriber: Subscriber) -> None: ...

    def promote(self, channel: str, subscriber: Subscriber) -> None: ...

    async def publish(self, channel: str, frame: str) -> None: ...


class HistoryReader(Protocol):
    """The stored side of channels (:class:`~ws_gateway.history.ChannelHistory`)."""

    async def snapshot(
        self, channel: str, since: StreamId | None = None, epoch: str | None = None
    ) -> HistorySnapshot: ...

    def frames_between(
        self, channel: str, after: StreamId, upto: StreamId
    ) -> AsyncIterator[list[str]]: ...

    async def durable_replay(
        self,
        channel: str,
        since: StreamId,
        snapshot: HistorySnapshot,
        *,
        since_epoch: str | None = None,
        ended_by: float | None = None,
    ) -> DurableReplay | None: ...


class PresenceBoard(Protocol):
    """Who is on a channel (:class:`~ws_gateway.presence.Presence`)."""

    async def join(self, channel: str, conn: str, user: str) -> None: ...

    async def leave(self, channel: str, conn: str) -> None: ...


class Verifier(Protocol):
    """Token verification (:class:`~pulse.auth.TokenVerifier`)."""

    async def verify(self, token: str) -> Claims: ...


class Commands:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        hub: ChannelHub,
        history: HistoryReader,
        presence: PresenceBoard,
        verifier: Verifier,
    ) -> None:
        self._settings = settings
        self._hub = hub
        self._history = history
        self._presence = presence
        self._verifier = verifier

    async def handle(self, client: ClientConnection, data: str | bytes) -> None:
        """Do what one client frame asks; a refusal is answered with an error frame."""
        try:
            frame = parse_client_frame(data)
            if isinstance(frame, Ping):
                await client.send(pong_frame())
            elif isinstance(frame, Refresh):
                await self.refresh(client, frame)
            elif isinstance(frame, Publish):
                await self.publish(client, frame)
            elif isinstance(frame, Subscribe):
                await self.subscribe(client, frame)
            elif isinstance(frame, Unsubscribe):
                await self.unsubscribe(client, frame)
        except FrameError as exc:
            await client.send(error_frame(exc.code, exc.message, exc.channel))

    async def subscribe(self, client: ClientConnection, frame: Subscribe) -> None:
        """``subscribed``, the history after ``since`` (if given and recoverable), then live
        frames, with no gap and no duplicate; raises :class:`FrameError`."""
        channel = frame.channel
        client.session.begin_subscribe(frame)  # raises FrameError: forbidden, unknown, …
        SUBSCRIPTIONS.inc()
        try:
            # Listen first, then read history: whatever is published meanwhile is buffered
            # by the session and joined to the history by offset.
            await self._hub.add(channel, client)
            snapshot = await self._history.snapshot(channel, frame.since, frame.epoch)
        except Exception as exc:
            log.warning("subscribe failed", channel=channel, error=str(exc))
            if client.session.unsubscribe(channel):
                SUBSCRIPTIONS.dec()
            await self._hub.remove(channel, client)
            raise FrameError(
                ErrorCode.UNAVAILABLE, "channel unavailable, retry later", channel
            ) from exc
        latest = await self._replay(client, frame, snapshot)
        if client.session.is_subscribed(channel):
            for event in client.session.complete_subscribe(channel, latest):
                client.send_nowait(event, channel)
            # Plain from its first live frame on, unless frames wait or its floor is ahead.
            self._hub.promote(channel, client)
            if has_presence(channel):
                try:
                    await self._presence.join(channel, client.conn_id, client.session.claims.sub)
                except Exception as exc:  # presence is best effort; delivery goes on
                    log.warning("presence join failed", channel=channel, error=str(exc))

    async def _replay(
        self, client: ClientConnection, frame: Subscribe, snapshot: HistorySnapshot
    ) -> StreamId:
        """``subscribed``, then the events after ``since`` (from the durable record, then
        from Redis) up to the channel's latest offset, which it returns."""
        channel = frame.channel
        latest = snapshot.latest
        recovered = frame.since is not None and snapshot.recovers(frame.since, frame.epoch)
        durable = None
        if frame.since is not None and not recovered:
            # Older than the Redis history: an account channel's events may still be in
            # the durable record (ws_gateway.durable).
            durable = await self._history.durable_replay(
                channel, frame.since, snapshot, since_epoch=frame.epoch
            )
        await client.send(
            subscribed_frame(
                channel, latest, recovered=recovered or durable is not None, epoch=snapshot.epoch
            ),
            channel,
        )
        since = None if frame.since is None else snapshot.resume_from(frame.since, frame.epoch)
        if durable is not None:
            for event in durable.frames(channel):
                await client.send(event, channel)
            since = durable.resume
        if since is not None and since < latest:
            async for frames in self._history.frames_between(channel, since, latest):
                for event in frames:
                    await client.send(event, channel)
        return latest

    async def unsubscribe(self, client: ClientConnection, frame: Unsubscribe) -> None:
        if not await self.drop(client, frame.channel):
            raise FrameError(ErrorCode.NOT_SUBSCRIBED, "not subscribed", frame.channel)
        await client.send(unsubscribed_frame(frame.channel))

    async def drop(self, client: ClientConnection, channel: str) -> bool:
        """Forget ``channel`` for ``client``: session, fan-out and presence; False if it was
        not subscribed."""
        if not client.session.unsubscribe(channel):
            return False
        SUBSCRIPTIONS.dec()
        await self._hub.remove(channel, client)
        try:
            await self._presence.leave(channel, client.conn_id)
        except Exception as exc:  # the lease runs out and a sweeper reports the leave
            log.warning("presence leave failed", channel=channel, error=str(exc))
        return True

    async def drop_all(self, client: ClientConnection) -> None:
        """Forget every channel of ``client`` (it is going)."""
        for channel in client.session.channels:
            await self.drop(client, channel)

    async def publish(self, client: ClientConnection, frame: Publish) -> None:
        """An ephemeral message to a channel the client may publish to; never stored."""
        channel = frame.channel
        require(client.session.claims, Operation.PUBLISH, channel)
        s = self._settings
        now = time.monotonic()
        if client.publish_bucket is None:
            client.publish_bucket = TokenBucket(s.publish_per_second, s.publish_burst, now)
        if not client.publish_bucket.allow(now):
            RATE_LIMITED_OPS.inc()
            raise FrameError(ErrorCode.RATE_LIMITED, "too many publishes, slow down", channel)
        try:
            await self._hub.publish(
                channel, message_frame(channel, client.session.claims.sub, frame.data)
            )
        except Exception as exc:
            log.warning("publish failed", channel=channel, error=str(exc))
            raise FrameError(ErrorCode.UNAVAILABLE, "publish failed, retry", channel) from exc
        await client.send(published_frame(channel))

    async def refresh(self, client: ClientConnection, frame: Refresh) -> None:
        """Swap the connection's token; channels the new one may not read are dropped. A
        token for another subject closes the connection with 4003."""
        try:
            claims = await self._verifier.verify(frame.token)
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
        client.arm_expiry(self._settings.token_grace_seconds)
        for channel in client.session.channels:
            if authorize(claims, Operation.SUBSCRIBE, channel) is not Access.ALLOWED:
                await self.drop(client, channel)
                await client.send(
                    error_frame(ErrorCode.FORBIDDEN, "no longer allowed to subscribe", channel)
                )
        await client.send(refreshed_frame(claims.exp))
