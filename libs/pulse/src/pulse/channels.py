"""Channels: a bounded history per channel (a Redis stream) plus live publication.

Each append runs one Lua script that, atomically,

1. records the event id in a once-per-event guard (``SET NX`` with a TTL) and stops if the
   id was already applied — so replays after a crash change nothing;
2. appends the event to every target channel's stream (``XADD MAXLEN ~``), the stream entry
   id being the channel offset;
3. publishes, per channel, the ready-to-send gateway frame
   ``{"op":"event","channel":C,"offset":O,"event":E}`` so the gateway forwards bytes it
   never has to re-serialise.

Redis keys (all under the configurable prefix):

- ``{prefix}ch:{channel}``      channel history stream
- ``{prefix}live:{channel}``    pub/sub channel for live delivery
- ``{prefix}applied:{id}``      once-per-event guard
- ``{prefix}epoch:{channel}``   the channel's epoch: a random token set when the channel's
  history begins (``SET NX``); if Redis loses its data the key is gone and the next append
  or reader makes a new one, so a client holding an offset of the old epoch can tell its
  offset means nothing any more.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NamedTuple

import orjson

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pulse.clients import RedisClient
    from pulse.events import CloudEvent

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
    """Redis key names for channels under one prefix."""

    prefix: str

    def history(self, channel: str) -> str:
        return f"{self.prefix}ch:{channel}"

    def live(self, channel: str) -> str:
        return f"{self.prefix}live:{channel}"

    def applied(self, event_id: str) -> str:
        return f"{self.prefix}applied:{event_id}"

    def epoch(self, channel: str) -> str:
        return f"{self.prefix}epoch:{channel}"


def new_epoch() -> str:
    """A fresh epoch token (random, short, opaque to clients)."""
    return uuid.uuid4().hex[:12]


_EPOCH_LUA: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""


async def channel_epoch(redis: RedisClient, keys: ChannelKeys, channel: str) -> str:
    """The channel's current epoch, creating one if Redis has none (new channel, lost data)."""
    value = await redis.eval(_EPOCH_LUA, 1, keys.epoch(channel), new_epoch())
    return value.decode() if isinstance(value, bytes) else str(value)


# Returns "1 <offset per channel> <epoch per channel>" (one space-separated string: one
# bulk reply is far cheaper to read than an array) when applied, "0" when the guard had
# been seen.
# KEYS[1] = guard key; KEYS[2..n+1] = history streams; KEYS[n+2..2n+1] = live channels;
# KEYS[2n+2..3n+1] = epoch keys; KEYS[3n+2..] = counter hashes (each once)
# ARGV[1] = event json; ARGV[2] = guard ttl seconds; ARGV[3] = max history length;
# ARGV[4] = n; ARGV[5..n+4] = channel names (JSON-encoded, spliced into the frame);
# ARGV[n+5] = a new epoch token, used by channels that have none;
# ARGV[n+6] = the counter increments, if any: a JSON list with, per counter hash in KEYS
# order, [ttl seconds (0 = none), field, amount, field, amount, ...] (numbers as strings,
# exact whatever their size). One argument instead of three per increment: each argument
# costs the client a Python-level encoding step.
_APPEND_LUA: Final = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[2])) == false then
  return '0'
end
local n = tonumber(ARGV[4])
local reply = {'1'}
for i = 1, n do
  redis.call('SET', KEYS[1 + 2 * n + i], ARGV[5 + n], 'NX')
  local offset = redis.call('XADD', KEYS[1 + i], 'MAXLEN', '~', tonumber(ARGV[3]), '*',
                            'e', ARGV[1])
  reply[i + 1] = offset
  local frame = '{"op":"event","channel":' .. ARGV[4 + i] .. ',"offset":"' .. offset ..
                '","event":' .. ARGV[1] .. '}'
  redis.call('SPUBLISH', KEYS[1 + n + i], frame)
end
for i = 1, n do
  reply[n + 1 + i] = redis.call('GET', KEYS[1 + 2 * n + i])
end
if ARGV[n + 6] then
  for h, counts in ipairs(cjson.decode(ARGV[n + 6])) do
    local key = KEYS[3 * n + 1 + h]
    for j = 2, #counts, 2 do
      redis.call('HINCRBY', key, counts[j], counts[j + 1])
    end
    if counts[1] ~= '0' then
      redis.call('EXPIRE', key, counts[1])
    end
  end
end
return table.concat(reply, ' ')
"""


class CounterIncrement(NamedTuple):
    """``HINCRBY key field amount`` applied with an append, under the same once-per-event guard.

    ``key`` is a full Redis key (callers put it under their prefix); ``ttl_seconds`` > 0
    (re)sets the key's expiry, for rolling series such as per-minute buckets. Amounts are
    integers: sums of money are kept in minor units, exact under any number of events.
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
    """What an append did: ``applied`` is False when the event id had been applied before.

    ``offsets`` and ``epochs`` give, per channel, the new entry's offset and the epoch it
    belongs to."""

    applied: bool
    offsets: dict[str, str]
    epochs: dict[str, str] = field(default_factory=dict)


class ChannelPublisher:
    """Appends events to channels exactly once per event id."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        *,
        history_length: int = 10_000,
        guard_ttl_seconds: int = 7 * 24 * 3600,
    ) -> None:
        self._redis = redis
        self.keys = ChannelKeys(prefix)
        self._history_length = history_length
        self._guard_ttl = guard_ttl_seconds
        self._script = redis.register_script(_APPEND_LUA)

    async def append(
        self,
        event: CloudEvent,
        channels: list[str],
        *,
        guard: str | None = None,
        counters: list[CounterIncrement] | None = None,
    ) -> AppendResult:
        """Append ``event`` to ``channels`` and apply ``counters``, all at once, unless
        ``guard`` (default: the event id) was applied before — then nothing happens."""
        keys, args = self._script_call(ChannelAppend(event, channels, guard, counters))
        return _append_result(channels, await self._script(keys=keys, args=args))

    async def append_many(self, appends: Sequence[ChannelAppend]) -> list[AppendResult]:
        """:meth:`append` each of ``appends``, in order, in one round trip; their results.

        The same script calls as one :meth:`append` each, sent as one pipeline (no
        transaction): Redis runs them one after another in the order given, each under its
        own guard, so one item's events land in order and a replayed one changes nothing.
        What one Redis call per event would cost in client CPU and round trips is paid once
        per batch. Every channel name is checked before anything is sent. If Redis fails
        part-way, the calls before the failure may have been applied: the caller retries
        the whole list, and their guards make the retry change nothing twice.
        """
        calls = [self._script_call(append) for append in appends]
        if not calls:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await self._script(keys=keys, args=args, client=pipe)  # type: ignore[arg-type]
            results = await pipe.execute()
        return [
            _append_result(append.channels, result)
            for append, result in zip(appends, results, strict=True)
        ]

    def _script_call(self, append: ChannelAppend) -> tuple[list[str], list[bytes | str | int]]:
        """The append script's KEYS and ARGV for ``append`` (channel names checked)."""
        event, channels = append.event, append.channels
        for channel in channels:
            if not is_valid_channel(channel):
                raise ValueError(f"invalid channel name: {channel!r}")
        keys = [
            self.keys.applied(append.guard or event.id),
            *(self.keys.history(c) for c in channels),
            *(self.keys.live(c) for c in channels),
            *(self.keys.epoch(c) for c in channels),
        ]
        args: list[bytes | str | int] = [
            append.event_json if append.event_json is not None else event.to_json(),
            self._guard_ttl,
            self._history_length,
            len(channels),
            *(orjson.dumps(c) for c in channels),
            new_epoch(),
        ]
        if append.counters:
            hashes = _counts_by_hash(append.counters)
            keys.extend(hashes)
            args.append(orjson.dumps(list(hashes.values())))
        return keys, args


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


def _append_result(channels: list[str], result: bytes | str) -> AppendResult:
    """The :class:`AppendResult` of the append script's reply for ``channels``."""
    flag, *values = (result.decode() if isinstance(result, bytes) else str(result)).split(" ")
    if flag != "1":
        return AppendResult(applied=False, offsets={})
    n = len(channels)
    return AppendResult(
        applied=True,
        offsets=dict(zip(channels, values[:n], strict=True)),
        epochs=dict(zip(channels, values[n:], strict=True)),
    )
