"""Channels: a bounded history per channel (a Redis stream) plus live publication.

Appends go to Redis as one Lua script call *per channel* (a batch's events for that
channel, in order), which for each event, atomically,

1. records the event id in the channel's once-per-event guard (``SET NX`` with a TTL) and
   skips the event if it was there — so a replay after a crash changes nothing on that
   channel;
2. appends the event to the channel's stream (``XADD MAXLEN ~``, the size of the channel's
   kind), the stream entry id being the channel offset;
3. publishes the ready-to-send gateway frame
   ``{"op":"event","channel":C,"offset":O,"event":E}`` with ``SPUBLISH`` (sharded pub/sub,
   the gateway listens with ``SSUBSCRIBE``), so the gateway forwards bytes it never has to
   re-serialise;

and then starts the channel's lifetime (``PULSE_HISTORY``, :mod:`pulse.history_limits`)
again: entries older than it are trimmed, and the stream, the epoch and the guards expire
after it. A channel idle for its lifetime leaves no key behind; one in use keeps every
entry younger than its lifetime, up to its size.

The counters the events move are applied by one more script call, under a guard per event
of their own. Every call touches the keys of one hash tag only — one slot, so one node of a
Redis Cluster — and each event is exactly-once in each call on its own: after a partial
failure the whole batch is retried and the parts already applied change nothing twice. One
channel's appends keep their order: they go, in order, to the one node serving its slot.
(:mod:`pulse._append_plan` builds the calls and reads their replies.)

Redis keys (all under the configurable prefix; :class:`ChannelKeys`):

- ``{prefix}{ch:C}:history``         channel C's history stream
- ``{prefix}{ch:C}:live``            its sharded pub/sub channel for live delivery
- ``{prefix}{ch:C}:epoch``           its epoch: a random token set when the channel's history
  begins (``SET NX``); if Redis loses its data, or the idle channel's keys expire, the key
  is gone and the next append or reader makes a new one (with the channel's lifetime), so a
  client holding an offset of the old epoch can tell its offset means nothing any more
- ``{prefix}{ch:C}:applied:{guard}`` its once-per-event guard, living the shorter of
  ``PULSE_CHANNEL_GUARD_TTL_SECONDS`` and the channel's lifetime: an event replayed after
  both appends again
- ``{prefix}{stats}:{name}``         counter hashes, and ``{prefix}{stats}:applied:{guard}``
  their once-per-event guard
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import orjson

from pulse._append_plan import (
    AppendPlan,
    AppendResult,
    ChannelAppend,
    ChannelParts,
    ChannelPosition,
    CounterIncrement,
)
from pulse.history_limits import HistoryLimits
from pulse.identifiers import is_identifier
from pulse.replication import Replication, ScriptRunner

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pulse.clients import RedisClient
    from pulse.events import CloudEvent
    from pulse.replication import ScriptCall
    from pulse.settings import PulseSettings

__all__ = [
    "ALERTS",
    "HEALTH",
    "PAYMENTS",
    "STATS",
    "AppendResult",
    "ChannelAppend",
    "ChannelKeys",
    "ChannelPosition",
    "ChannelPublisher",
    "CounterIncrement",
    "account_channel",
    "channel_epoch",
    "epoch_started_ms",
    "is_valid_channel",
    "new_epoch",
]

PAYMENTS: Final = "payments"
ALERTS: Final = "alerts"
STATS: Final = "stats"
HEALTH: Final = "health"
_PARTS_KEPT: Final = 100_000  # channels whose key names a publisher keeps made


def account_channel(account_id: str) -> str:
    return f"account:{account_id}"


def is_valid_channel(channel: str) -> bool:
    """True for the channel names of the design: payments, alerts, stats, health,
    account:{id}."""
    if channel in (PAYMENTS, ALERTS, STATS, HEALTH):
        return True
    account = channel.removeprefix("account:")
    return account != channel and is_identifier(account)


@dataclass(frozen=True)
class ChannelKeys:
    """Redis key names for channels and counters under one prefix (module doc).

    A channel's keys all carry its hash tag ``{ch:C}`` (one slot: its append script, its
    presence scripts and its sharded pub/sub channel stay on one node); the counters carry
    ``{stats}``. The prefix never holds a brace (the settings refuse one), so the tag is
    always the first ``{…}`` of a key.
    """

    prefix: str

    def tag(self, channel: str) -> str:
        """The start of every key of ``channel``: the prefix and the channel's hash tag."""
        return f"{self.prefix}{{ch:{channel}}}"

    def history(self, channel: str) -> str:
        return f"{self.tag(channel)}:history"

    def live(self, channel: str) -> str:
        return f"{self.tag(channel)}:live"

    def epoch(self, channel: str) -> str:
        return f"{self.tag(channel)}:epoch"

    def applied(self, channel: str, guard: str) -> str:
        """``channel``'s once-per-event guard for ``guard`` (an event id, by default)."""
        return f"{self.tag(channel)}:applied:{guard}"

    def channel_of(self, live_key: str) -> str | None:
        """The channel whose :meth:`live` key is ``live_key``; None for any other name."""
        start = f"{self.prefix}{{ch:"
        if live_key.startswith(start) and live_key.endswith("}:live"):
            return live_key[len(start) : -len("}:live")]
        return None

    def counter(self, name: str) -> str:
        """The counter hash ``name`` (all counters share the hash tag ``{stats}``)."""
        return f"{self.prefix}{{stats}}:{name}"

    def counters_applied(self, guard: str) -> str:
        """The counters' once-per-event guard for ``guard``."""
        return self.counter(f"applied:{guard}")


def new_epoch(now: float | None = None) -> str:
    """A fresh epoch token (opaque to clients): the time it was made, in milliseconds as
    11 hex digits (:func:`epoch_started_ms`), then 5 random ones."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:011x}{uuid.uuid4().hex[:5]}"


def epoch_started_ms(epoch: str) -> int | None:
    """When an epoch made by :func:`new_epoch` began (ms since 1970); None for a token of
    another form (an older release made random ones)."""
    if len(epoch) != _EPOCH_LENGTH:
        return None
    try:
        return int(epoch[:11], 16)
    except ValueError:
        return None


_EPOCH_LENGTH: Final = 16


# An epoch made by a reader lives the channel's lifetime, as one made by an append does; an
# existing one keeps its expiry (the stream's), so the epoch never outlives the history.
_EPOCH_LUA: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
return redis.call('GET', KEYS[1])
"""


async def channel_epoch(
    redis: RedisClient, keys: ChannelKeys, channel: str, *, ttl_seconds: int
) -> str:
    """The channel's current epoch, creating one that lives ``ttl_seconds`` if Redis has
    none (new channel, expired channel, lost data)."""
    value = await redis.eval(_EPOCH_LUA, 1, keys.epoch(channel), new_epoch(), ttl_seconds)
    return value.decode() if isinstance(value, bytes) else str(value)


class ChannelPublisher:
    """Appends events to channels exactly once per event id."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        *,
        history: HistoryLimits | None = None,
        guard_ttl_seconds: int = 7 * 24 * 3600,
        replication: Replication | None = None,
    ) -> None:
        self.keys = ChannelKeys(prefix)
        self._counters_start = self.keys.counter("")
        self._history = history or HistoryLimits()
        self._guard_ttl = guard_ttl_seconds
        self._runner = ScriptRunner(redis, replication)
        self._parts: dict[str, ChannelParts] = {}

    @classmethod
    def of(cls, redis: RedisClient, settings: PulseSettings) -> ChannelPublisher:
        """A service's publisher: its Redis prefix, history limits, guard lifetime and
        ``PULSE_REDIS_WAIT_*`` settings."""
        return cls(
            redis,
            settings.redis_prefix,
            history=settings.history,
            guard_ttl_seconds=settings.channel_guard_ttl_seconds,
            replication=Replication.of(settings),
        )

    async def append(
        self,
        event: CloudEvent,
        channels: list[str],
        *,
        guard: str | None = None,
        counters: list[CounterIncrement] | None = None,
    ) -> AppendResult:
        """Append ``event`` to each of ``channels`` and apply ``counters``, each part once:
        a part whose guard (default: the event id) was applied before does nothing.

        With ``PULSE_REDIS_WAIT_REPLICAS`` set, returns once that many replicas have the
        writes; else raises :class:`~pulse.replication.ReplicationShortfallError`.
        """
        (result,) = await self.append_many([ChannelAppend(event, channels, guard, counters)])
        return result

    async def append_many(self, appends: Sequence[ChannelAppend]) -> list[AppendResult]:
        """:meth:`append` each of ``appends``, in order, in one round trip per Redis node;
        their results.

        One script call per channel named, its events in order, each under its own guard,
        and one for all the counters; the calls go as one pipeline per node (no
        transaction). What one Redis call per event would cost in client CPU and round
        trips is paid once per batch. Every channel name and counter key is checked before
        anything is sent. If Redis fails part-way, some calls may have been applied: the
        caller retries the whole list, and the guards make the retry change nothing twice.
        """
        plan = self._plan(appends)
        return plan.results(await self._runner.run(plan.calls, idempotent=True))

    def script_calls(self, appends: Sequence[ChannelAppend]) -> list[ScriptCall]:
        """The script calls of ``appends``: one per channel they name, with its events in
        order, then one for all their counters. Raises ``ValueError`` for a bad channel
        name or a counter key outside the counters' hash tag. Pure: nothing is sent."""
        return self._plan(appends).calls

    def _plan(self, appends: Sequence[ChannelAppend]) -> AppendPlan:
        for append in appends:
            for counter in append.counters or ():
                if not counter.key.startswith(self._counters_start):
                    raise ValueError(f"not a counter key of this prefix: {counter.key!r}")
        return AppendPlan.of(
            appends,
            self._channel_parts,
            self.keys.counters_applied,
            guard_ttl=self._guard_ttl,
            new_epoch=new_epoch,
        )

    def _channel_parts(self, channel: str) -> ChannelParts:
        """``channel``'s guard key less the guard, history, live and epoch keys, its name in
        JSON, its guards' TTL, history size and lifetime — made once per channel (a batch
        names the same few again and again); ``ValueError`` for an invalid name."""
        parts = self._parts.get(channel)
        if parts is None:
            if not is_valid_channel(channel):
                raise ValueError(f"invalid channel name: {channel!r}")
            if len(self._parts) >= _PARTS_KEPT:
                self._parts.clear()
            keys = self.keys
            limit = self._history.of(channel)
            parts = self._parts[channel] = (
                keys.applied(channel, ""),
                keys.history(channel),
                keys.live(channel),
                keys.epoch(channel),
                orjson.dumps(channel),
                min(self._guard_ttl, limit.ttl_seconds),
                limit.size,
                limit.ttl_seconds,
            )
        return parts
