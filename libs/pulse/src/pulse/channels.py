"""Channels: a bounded history per channel (a Redis stream) plus live publication.

An append of one event to its channels is one Lua script call *per channel*, each of which,
atomically,

1. records the event id in the channel's once-per-event guard (``SET NX`` with a TTL) and
   stops if it was there — so a replay after a crash changes nothing on that channel;
2. appends the event to the channel's stream (``XADD MAXLEN ~``), the stream entry id
   being the channel offset;
3. publishes the ready-to-send gateway frame
   ``{"op":"event","channel":C,"offset":O,"event":E}`` with ``SPUBLISH`` (sharded pub/sub,
   the gateway listens with ``SSUBSCRIBE``), so the gateway forwards bytes it never has to
   re-serialise.

The counters an event moves are applied by one more script call, under a guard of their
own. Every call touches the keys of one hash tag only — one slot, so one node of a Redis
Cluster — and each is exactly-once on its own: after a partial failure the whole append is
retried and the parts already applied change nothing twice. One channel's appends keep
their order: they go, in order, to the one node serving that channel's slot.

Redis keys (all under the configurable prefix; :class:`ChannelKeys`):

- ``{prefix}{ch:C}:history``         channel C's history stream
- ``{prefix}{ch:C}:live``            its sharded pub/sub channel for live delivery
- ``{prefix}{ch:C}:epoch``           its epoch: a random token set when the channel's history
  begins (``SET NX``); if Redis loses its data the key is gone and the next append or
  reader makes a new one, so a client holding an offset of the old epoch can tell its
  offset means nothing any more
- ``{prefix}{ch:C}:applied:{guard}`` its once-per-event guard
- ``{prefix}{stats}:{name}``         counter hashes, and ``{prefix}{stats}:applied:{guard}``
  their once-per-event guard
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import orjson

from pulse.replication import LuaScript, Replication, ScriptCall, ScriptRunner

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import redis.asyncio as aioredis

    from pulse.events import CloudEvent
    from pulse.settings import PulseSettings

__all__ = [
    "ALERTS",
    "PAYMENTS",
    "STATS",
    "AppendResult",
    "ChannelAppend",
    "ChannelKeys",
    "ChannelPublisher",
    "CounterIncrement",
    "account_channel",
    "channel_epoch",
    "is_valid_channel",
    "new_epoch",
]

PAYMENTS: Final = "payments"
ALERTS: Final = "alerts"
STATS: Final = "stats"
_ACCOUNT_RE: Final = re.compile(r"account:[A-Za-z0-9_.@-]{1,128}")


def account_channel(account_id: str) -> str:
    return f"account:{account_id}"


def is_valid_channel(channel: str) -> bool:
    """True for the channel names of the design: payments, alerts, stats, account:{id}."""
    return channel in (PAYMENTS, ALERTS, STATS) or bool(_ACCOUNT_RE.fullmatch(channel))


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


def new_epoch() -> str:
    """A fresh epoch token (random, short, opaque to clients)."""
    return uuid.uuid4().hex[:12]


_EPOCH_LUA: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""


async def channel_epoch(
    redis: aioredis.Redis | aioredis.RedisCluster, keys: ChannelKeys, channel: str
) -> str:
    """The channel's current epoch, creating one if Redis has none (new channel, lost data)."""
    value = await redis.eval(_EPOCH_LUA, 1, keys.epoch(channel), new_epoch())
    return value.decode() if isinstance(value, bytes) else str(value)


# Per channel. Returns "1 <offset> <epoch>" (one bulk reply: far cheaper to read than an
# array) when applied, "0" when the guard had been seen — after renewing the guard's expiry:
# a write, so a WAIT after a retry covers whatever the first attempt wrote (pulse.replication).
# KEYS: guard, history stream, live channel, epoch
# ARGV: event json, guard ttl seconds, max history length, the channel name JSON-encoded
#       (spliced into the frame), a new epoch token (used if the channel has none)
_APPEND_LUA: Final = LuaScript("""
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) == false then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return '0'
end
redis.call('SET', KEYS[4], ARGV[5], 'NX')
local offset = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[1])
redis.call('SPUBLISH', KEYS[3], '{"op":"event","channel":' .. ARGV[4] .. ',"offset":"' ..
           offset .. '","event":' .. ARGV[1] .. '}')
return '1 ' .. offset .. ' ' .. redis.call('GET', KEYS[4])
""")

# The counters of one event. Returns 1 when applied, 0 when the guard had been seen (after
# renewing its expiry, as above).
# KEYS: guard, then the counter hashes (each once)
# ARGV: guard ttl seconds; a JSON list with, per counter hash in KEYS order, [ttl seconds
# (0 = none), field, amount, field, amount, ...] (numbers as strings, exact whatever their
# size). One argument instead of three per increment: each argument costs the client a
# Python-level encoding step.
_COUNT_LUA: Final = LuaScript("""
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  return 0
end
for h, counts in ipairs(cjson.decode(ARGV[2])) do
  local key = KEYS[1 + h]
  for j = 2, #counts, 2 do
    redis.call('HINCRBY', key, counts[j], counts[j + 1])
  end
  if counts[1] ~= '0' then
    redis.call('EXPIRE', key, counts[1])
  end
end
return 1
""")


class CounterIncrement(NamedTuple):
    """``HINCRBY key field amount`` applied once per event, with its append.

    ``key`` is a counter hash from :meth:`ChannelKeys.counter` (the counters share one hash
    tag, so they and their guard are on one Redis node); ``ttl_seconds`` > 0 (re)sets the
    key's expiry, for rolling series such as per-minute buckets. Amounts are integers:
    sums of money are kept in minor units, exact under any number of events.
    A named tuple rather than a frozen dataclass: a payment event makes about ten, and a
    tuple is a fraction of the cost to build.
    """

    key: str
    field: str
    amount: int
    ttl_seconds: int = 0


@dataclass(frozen=True)
class ChannelAppend:
    """One append of :meth:`ChannelPublisher.append_many`: the arguments of one
    :meth:`ChannelPublisher.append`."""

    event: CloudEvent
    channels: list[str]
    guard: str | None = None
    counters: list[CounterIncrement] | None = None
    event_json: bytes | None = None  # ``event.to_json()``, if the caller has it already


@dataclass(frozen=True)
class AppendResult:
    """What an append did. ``applied``: something was applied by this call (a channel or
    the counters); False when the guard had been seen everywhere — a replay.

    ``offsets`` and ``epochs`` give, per channel appended to by this call, the new entry's
    offset and the epoch it belongs to; ``counted``: the counters moved in this call."""

    applied: bool
    offsets: dict[str, str]
    epochs: dict[str, str] = field(default_factory=dict)
    counted: bool = False


class ChannelPublisher:
    """Appends events to channels exactly once per event id."""

    def __init__(
        self,
        redis: aioredis.Redis | aioredis.RedisCluster,
        prefix: str,
        *,
        history_length: int = 10_000,
        guard_ttl_seconds: int = 7 * 24 * 3600,
        replication: Replication | None = None,
    ) -> None:
        self.keys = ChannelKeys(prefix)
        self._counters_start = self.keys.counter("")
        self._history_length = history_length
        self._guard_ttl = guard_ttl_seconds
        self._runner = ScriptRunner(redis, replication)

    @classmethod
    def of(
        cls, redis: aioredis.Redis | aioredis.RedisCluster, settings: PulseSettings
    ) -> ChannelPublisher:
        """A service's publisher: its Redis prefix and ``PULSE_REDIS_WAIT_*`` settings."""
        return cls(redis, settings.redis_prefix, replication=Replication.of(settings))

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

        Each channel append and each counter update is a script call with its own guard;
        the calls go as one pipeline per node (no transaction), which Redis runs in the
        order given, so one channel's events land in order. What one Redis call per event
        would cost in client CPU and round trips is paid once per batch. Every channel
        name and counter key is checked before anything is sent. If Redis fails part-way,
        some calls may have been applied: the caller retries the whole list, and the
        guards make the retry change nothing twice.
        """
        calls = self.script_calls(appends)
        replies = iter(await self._runner.run(calls, idempotent=True))
        return [_append_result(append, replies) for append in appends]

    def script_calls(self, appends: Sequence[ChannelAppend]) -> list[ScriptCall]:
        """The script calls of ``appends``, in order: per append, one per channel, then
        one for its counters if it has any. Raises ``ValueError`` for a bad channel name or
        a counter key outside the counters' hash tag. Pure: nothing is sent."""
        calls: list[ScriptCall] = []
        for append in appends:
            self._add_calls(append, calls)
        return calls

    def _add_calls(self, append: ChannelAppend, calls: list[ScriptCall]) -> None:
        """Add the script calls of ``append`` (names checked) to ``calls``."""
        event, channels = append.event, append.channels
        for channel in channels:
            if not is_valid_channel(channel):
                raise ValueError(f"invalid channel name: {channel!r}")
        guard = append.guard or event.id
        event_json = append.event_json if append.event_json is not None else event.to_json()
        epoch = new_epoch()
        keys = self.keys
        calls.extend(
            ScriptCall(
                _APPEND_LUA,
                (
                    keys.applied(channel, guard),
                    keys.history(channel),
                    keys.live(channel),
                    keys.epoch(channel),
                ),
                (
                    event_json,
                    self._guard_ttl,
                    self._history_length,
                    orjson.dumps(channel),
                    epoch,
                ),
            )
            for channel in channels
        )
        if append.counters:
            hashes = _counts_by_hash(append.counters)
            for key in hashes:
                if not key.startswith(self._counters_start):
                    raise ValueError(f"not a counter key of this prefix: {key!r}")
            calls.append(
                ScriptCall(
                    _COUNT_LUA,
                    (self.keys.counters_applied(guard), *hashes),
                    (self._guard_ttl, orjson.dumps(list(hashes.values()))),
                )
            )


def _counts_by_hash(counters: list[CounterIncrement]) -> dict[str, list[str]]:
    """Per counter hash, in first-seen order: [ttl, field, amount, field, amount, ...].

    The ttl is that of the hash's last increment with one: what setting it after each
    increment, as each :class:`CounterIncrement` asks, leaves behind.
    """
    hashes: dict[str, list[str]] = {}
    for counter in counters:
        counts = hashes.get(counter.key)
        if counts is None:
            counts = hashes[counter.key] = ["0"]
        counts += (counter.field, str(counter.amount))
        if counter.ttl_seconds > 0:
            counts[0] = str(counter.ttl_seconds)
    return hashes


def _append_result(append: ChannelAppend, replies: Iterator[Any]) -> AppendResult:
    """The :class:`AppendResult` of ``append`` from its calls' replies, taken in order."""
    offsets: dict[str, str] = {}
    epochs: dict[str, str] = {}
    for channel in append.channels:
        reply = next(replies)
        flag, *values = (reply.decode() if isinstance(reply, bytes) else str(reply)).split(" ")
        if flag == "1":
            offsets[channel], epochs[channel] = values
    counted = bool(next(replies)) if append.counters else False
    return AppendResult(
        applied=bool(offsets) or counted, offsets=offsets, epochs=epochs, counted=counted
    )
