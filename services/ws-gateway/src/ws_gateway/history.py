"""Reads of a channel's bounded history (a Redis stream written by pulse.channels).

Reading never leaves a key without a lifetime: the epoch a reader makes for a channel that
has none lives the channel's lifetime (``PULSE_HISTORY``), as one made by an append does.

A channel idle for its lifetime expires, and its next append begins a new epoch; a client
subscribed all along received the new epoch's events live but still holds the old epoch.
Its offset then names an entry of the current stream — offsets are entry ids, and a new
stream's ids are all newer than any of an earlier one — so that offset is of this epoch
whatever epoch the client sends (:attr:`HistorySnapshot.carried`), and it recovers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from pulse.channels import channel_epoch
from pulse.history_limits import HistoryLimits
from pulse.logging import get_logger
from ws_gateway.live_links import servers_for
from ws_gateway.metrics import DURABLE_RECOVERIES
from ws_gateway.offsets import ZERO, StreamId, is_recovered
from ws_gateway.protocol import event_frame

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pulse.channels import ChannelKeys
    from pulse.clients import RedisClient
    from ws_gateway.durable import DurableRecord, DurableReplay

__all__ = ["ChannelHistory", "HistorySnapshot"]

log = get_logger("ws_gateway.history")


@dataclass(frozen=True)
class HistorySnapshot:
    """What a channel's stream holds at one moment (``last_generated`` None: no stream)."""

    first: StreamId | None
    last: StreamId | None
    last_generated: StreamId | None
    trimmed: bool
    epoch: str = ""
    # A client's offset sent with another epoch that names an entry of this stream: the
    # client received it, so the offset is of this epoch (module doc).
    carried: StreamId | None = None
    # The number of the oldest entry held in the epoch's stream (1: the epoch's first; the
    # next one to come when it holds none): where a durable replay must reach
    # (:mod:`ws_gateway.durable`).
    first_number: int = 1

    @property
    def latest(self) -> StreamId:
        """The channel's latest offset, ``0-0`` when it holds nothing."""
        return self.last or ZERO

    def continues(self, since: StreamId, epoch: str | None = None) -> bool:
        """Is ``since`` (sent with ``epoch``) an offset of this epoch: no epoch or this one,
        or an entry of this stream (:attr:`carried`)?"""
        return epoch is None or epoch == self.epoch or since == self.carried

    def recovers(self, since: StreamId, epoch: str | None = None) -> bool:
        """Does the history hold every entry after ``since``? Never across epochs."""
        if not self.continues(since, epoch):
            return False
        return is_recovered(
            since, first=self.first, last_generated=self.last_generated, trimmed=self.trimmed
        )

    def resume_from(self, since: StreamId, epoch: str | None = None) -> StreamId:
        """Where a subscriber that has seen up to ``since`` (of ``epoch``) resumes.

        An offset of another epoch means nothing here; the subscriber has seen none of this
        epoch's events (its position would carry this epoch), so all of them are owed to it
        and it resumes from the epoch's start.
        """
        return since if self.continues(since, epoch) else ZERO


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_id(entry: Any) -> StreamId | None:
    return StreamId.parse(_text(entry[0])) if entry else None


class ChannelHistory:
    def __init__(
        self,
        redis: RedisClient,
        keys: ChannelKeys,
        *,
        batch_size: int,
        limits: HistoryLimits | None = None,
        durable: DurableRecord | None = None,
    ) -> None:
        self._redis = redis
        # Which node serves a key, as this client's slot map has it (a gap fill compares it
        # with the node its subscription is on).
        self.servers = servers_for(redis)
        self._keys = keys
        self._batch = batch_size
        self._limits = limits or HistoryLimits()
        self._durable = durable

    async def durable_replay(
        self,
        channel: str,
        since: StreamId,
        snapshot: HistorySnapshot,
        *,
        since_epoch: str | None = None,
        ended_by: float | None = None,
    ) -> DurableReplay | None:
        """Every event of ``channel`` after ``since`` that ``snapshot`` no longer holds,
        from the durable record (:mod:`ws_gateway.durable`); None when it cannot say
        (not an account channel, more than the limit, an event only Redis held, the read
        failed). ``since_epoch`` (the client's word) and ``ended_by``: see
        :func:`ws_gateway.durable.plan_replay`."""
        if self._durable is None or not self._durable.covers(channel):
            return None
        try:
            replay = await self._durable.replay(
                channel, since, snapshot, since_epoch=since_epoch, ended_by=ended_by
            )
        except Exception as exc:  # recovered:false, as without the durable record
            DURABLE_RECOVERIES.labels("failed").inc()
            log.warning("durable recovery failed", channel=channel, error=str(exc))
            return None
        DURABLE_RECOVERIES.labels("refused" if replay is None else "recovered").inc()
        return replay

    async def snapshot(
        self, channel: str, since: StreamId | None = None, epoch: str | None = None
    ) -> HistorySnapshot:
        """The channel's epoch (made if Redis has none) and the extent of its stream; with
        the ``since`` and ``epoch`` of a client, whether that offset is :attr:`carried`."""
        ttl = self._limits.of(channel).ttl_seconds
        current = await channel_epoch(self._redis, self._keys, channel, ttl_seconds=ttl)
        try:
            info: dict[str, Any] = await self._redis.xinfo_stream(self._keys.history(channel))
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            return HistorySnapshot(
                first=None, last=None, last_generated=None, trimmed=False, epoch=current
            )
        added, length = int(info.get("entries-added", 0)), int(info["length"])
        snapshot = HistorySnapshot(
            epoch=current,
            first=_entry_id(info.get("first-entry")),
            last=_entry_id(info.get("last-entry")),
            last_generated=StreamId.parse(_text(info["last-generated-id"])),
            trimmed=added > length,
            first_number=added - length + 1,
        )
        if since is None or snapshot.continues(since, epoch) or since == ZERO:
            return snapshot
        named = await self._redis.xrange(self._keys.history(channel), str(since), str(since))
        return replace(snapshot, carried=since) if named else snapshot

    async def frames_between(
        self, channel: str, after: StreamId, upto: StreamId
    ) -> AsyncIterator[list[str]]:
        """Event frames for the entries in ``(after, upto]``, oldest first, in batches."""
        key = self._keys.history(channel)
        cursor = after
        while cursor < upto:
            entries = await self._redis.xrange(key, f"({cursor}", str(upto), count=self._batch)
            if not entries:
                return
            frames = []
            for raw_id, fields in entries:
                offset = _text(raw_id)
                event = fields.get(b"e") if fields else None
                if event is not None:
                    frames.append(event_frame(channel, offset, _text(event)))
                cursor = StreamId.parse(offset)
            yield frames

    async def after(self, channel: str, since: StreamId, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (offset, event JSON) entries after ``since``, oldest first."""
        entries = await self._redis.xrange(
            self._keys.history(channel), f"({since}", "+", count=limit
        )
        return _pairs(entries)

    async def newest(self, channel: str, limit: int) -> list[tuple[str, str]]:
        """The newest ``limit`` (offset, event JSON) entries, oldest first."""
        entries = await self._redis.xrevrange(self._keys.history(channel), count=limit)
        return _pairs(list(reversed(entries or [])))


def _pairs(entries: Any) -> list[tuple[str, str]]:
    pairs = []
    for raw_id, fields in entries:
        event = fields.get(b"e") if fields else None
        if event is not None:
            pairs.append((_text(raw_id), _text(event)))
    return pairs
