"""How a batch of channel appends becomes Lua script calls, and their replies results.

One call per channel the batch touches, carrying that channel's events in batch order, and
one call for all the counters; each event has its own guard in each call (module doc of
:mod:`pulse.channels`). Pure: nothing here talks to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import orjson

from pulse.replication import LuaScript, ScriptCall

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pulse.events import CloudEvent

__all__ = [
    "AppendPlan",
    "AppendResult",
    "ChannelAppend",
    "ChannelParts",
    "ChannelPosition",
    "CounterIncrement",
]

# (guard key less the guard, history, live, epoch, the channel name JSON-encoded, then the
# script's numbers: guard ttl seconds, max history length, lifetime seconds)
ChannelParts = tuple[str, str, str, str, bytes, int, int, int]

# One channel, its events in order. Returns "<epoch> <position> <position> ..." (one bulk
# reply: far cheaper to read than an array), where a position is "<offset>/<number>": the new
# entry's id and its number in the epoch's stream (1 for the epoch's first entry: XINFO's
# entries-added, which the gateway compares with the audit rows' to tell a complete durable
# replay from one with a hole). The guard keeps the position it was given, with its epoch:
# an event whose guard had been seen replies "-<position>/<epoch>" ("-" alone for a guard of
# an older release) —
# after renewing that guard's expiry: a write, so a WAIT after a retry covers whatever the
# first attempt wrote (pulse.replication). A retried batch thus learns the positions the
# first attempt gave, and its audit rows keep them.
# Then the channel's lifetime starts again for each of its keys: its entries older than the
# lifetime go (XTRIM MINID ~ removes whole nodes only, never a younger entry), the stream
# and the epoch expire after it, and the guards were given no longer (pulse.history_limits).
# KEYS: history stream, live channel, epoch, then one guard per event
# ARGV: guard ttl seconds, max history length, the channel name JSON-encoded (spliced into
#       the frame), a new epoch token (used if the channel has none), the channel's lifetime
#       in seconds, then one event JSON per event
APPEND_LUA: Final = LuaScript("""
redis.call('SET', KEYS[3], ARGV[4], 'NX')
local reply = {redis.call('GET', KEYS[3])}
local added = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for j = 1, #info, 2 do
    if info[j] == 'entries-added' then added = info[j + 1] end
  end
end
for i = 4, #KEYS do
  local event = ARGV[i + 2]
  local seen = redis.call('GET', KEYS[i])
  if seen then
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    reply[i - 2] = seen == '1' and '-' or '-' .. seen
  else
    local offset = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', event)
    added = added + 1
    local position = offset .. '/' .. added
    redis.call('SET', KEYS[i], position .. '/' .. reply[1], 'EX', ARGV[1])
    redis.call('SPUBLISH', KEYS[2], '{"op":"event","channel":' .. ARGV[3] .. ',"offset":"' ..
               offset .. '","event":' .. event .. '}')
    reply[i - 2] = position
  end
end
local now = redis.call('TIME')
local oldest = (tonumber(now[1]) - tonumber(ARGV[5])) * 1000 + math.floor(now[2] / 1000)
redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', oldest))
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return table.concat(reply, ' ')
""")

# The counters of one or more events, in order. Returns one character per event: "1"
# applied, "0" its guard had been seen (expiry renewed, as above).
# KEYS: the counter hashes (each once), then one guard per event
# ARGV: guard ttl seconds; the number of hashes; a JSON list with, per event, a list of
#       [hash index in KEYS, ttl seconds (0 = none), field, amount, field, amount, ...]
#       (amounts as strings: exact whatever their size)
COUNT_LUA: Final = LuaScript("""
local hashes = tonumber(ARGV[2])
local flags = {}
for e, groups in ipairs(cjson.decode(ARGV[3])) do
  local guard = KEYS[hashes + e]
  if redis.call('SET', guard, '1', 'NX', 'EX', ARGV[1]) == false then
    redis.call('EXPIRE', guard, ARGV[1])
    flags[e] = '0'
  else
    for _, counts in ipairs(groups) do
      local key = KEYS[counts[1]]
      for j = 3, #counts, 2 do
        redis.call('HINCRBY', key, counts[j], counts[j + 1])
      end
      if counts[2] ~= '0' then
        redis.call('EXPIRE', key, counts[2])
      end
    end
    flags[e] = '1'
  end
end
return table.concat(flags)
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


class ChannelPosition(NamedTuple):
    """Where an event is in a channel: its epoch, its offset (the stream entry id) and its
    number in that epoch's stream (1 for the epoch's first entry)."""

    epoch: str
    offset: str
    number: int


@dataclass(frozen=True)
class AppendResult:
    """What an append did. ``applied``: something was applied by this call (a channel or
    the counters); False when the guard had been seen everywhere — a replay.

    ``offsets`` and ``epochs`` give, per channel appended to by this call, the new entry's
    offset and the epoch it belongs to; ``counted``: the counters moved in this call.
    ``positions``: per channel, where the event is — given by this call or, for a replay,
    the one its guard kept (absent for a guard of an older release)."""

    applied: bool
    offsets: dict[str, str]
    epochs: dict[str, str] = field(default_factory=dict)
    counted: bool = False
    positions: dict[str, ChannelPosition] = field(default_factory=dict)


@dataclass
class _ChannelCall:
    applied: str  # the guard key less the guard
    keys: list[str]
    args: list[bytes | str | int]


@dataclass
class AppendPlan:
    """The script calls of a batch of appends and where each append's replies are."""

    calls: list[ScriptCall] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)  # of the channel calls, in order
    places: list[list[tuple[str, int]]] = field(default_factory=list)  # per append
    counted_at: list[int | None] = field(default_factory=list)  # per append

    @classmethod
    def of(
        cls,
        appends: Sequence[ChannelAppend],
        parts: Callable[[str], ChannelParts],
        counters_guard: Callable[[str], str],
        *,
        guard_ttl: int,
        new_epoch: Callable[[], str],
    ) -> AppendPlan:
        """The plan of ``appends``. ``parts`` gives a channel's names and numbers (and
        refuses a bad name, ``ValueError``); ``counters_guard`` an event's counters guard
        key, which lives ``guard_ttl`` seconds."""
        plan = cls()
        calls: dict[str, _ChannelCall] = {}
        hashes: dict[str, int] = {}
        guards: list[str] = []
        counts: list[list[list[str | int]]] = []
        for append in appends:
            guard = append.guard or append.event.id
            event_json = (
                append.event_json if append.event_json is not None else append.event.to_json()
            )
            places = []
            for channel in append.channels:
                call = calls.get(channel)
                if call is None:
                    applied, history, live, epoch, name, guards_ttl, size, ttl = parts(channel)
                    call = calls[channel] = _ChannelCall(
                        applied,
                        [history, live, epoch],
                        [guards_ttl, size, name, new_epoch(), ttl],
                    )
                places.append((channel, len(call.keys) - 3))
                call.keys.append(call.applied + guard)
                call.args.append(event_json)
            plan.places.append(places)
            if append.counters:
                plan.counted_at.append(len(guards))
                guards.append(counters_guard(guard))
                counts.append(_counts(append.counters, hashes))
            else:
                plan.counted_at.append(None)
        plan.channels = list(calls)
        plan.calls = [ScriptCall(APPEND_LUA, call.keys, call.args) for call in calls.values()]
        if guards:
            args = (guard_ttl, len(hashes), orjson.dumps(counts))
            plan.calls.append(ScriptCall(COUNT_LUA, [*hashes, *guards], args))
        return plan

    def results(self, replies: list[Any]) -> list[AppendResult]:
        """The :class:`AppendResult` of each append, from the calls' replies."""
        split = {
            channel: _text(reply).split(" ")
            for channel, reply in zip(self.channels, replies, strict=False)
        }
        flags = _text(replies[-1]) if len(replies) > len(self.channels) else ""
        results = []
        for places, counted_at in zip(self.places, self.counted_at, strict=True):
            offsets: dict[str, str] = {}
            epochs: dict[str, str] = {}
            positions: dict[str, ChannelPosition] = {}
            for channel, place in places:
                values = split[channel]
                reply = values[1 + place]
                seen = reply.startswith("-")
                position = _position(reply[1:] if seen else f"{reply}/{values[0]}")
                if position is not None:
                    positions.setdefault(channel, position)
                if not seen:
                    offsets.setdefault(channel, position.offset if position else reply)
                    epochs.setdefault(channel, values[0])
            counted = counted_at is not None and flags[counted_at] == "1"
            results.append(
                AppendResult(bool(offsets) or counted, offsets, epochs, counted, positions)
            )
        return results


def _position(text: str) -> ChannelPosition | None:
    """``"<offset>/<number>/<epoch>"``; None for anything else (an older guard's "1")."""
    offset, _, rest = text.partition("/")
    number, _, epoch = rest.partition("/")
    if not number.isdigit() or not epoch or "/" in epoch:
        return None
    return ChannelPosition(epoch, offset, int(number))


def _counts(counters: list[CounterIncrement], hashes: dict[str, int]) -> list[list[str | int]]:
    """One event's increments, per counter hash in first-seen order: [index of the hash in
    KEYS (1-based; ``hashes`` grows), ttl, field, amount, field, amount, ...].

    The ttl is that of the hash's last increment with one: what setting it after each
    increment, as each :class:`CounterIncrement` asks, leaves behind.
    """
    groups: dict[str, list[str | int]] = {}
    for counter in counters:
        group = groups.get(counter.key)
        if group is None:
            index = hashes.setdefault(counter.key, len(hashes) + 1)
            group = groups[counter.key] = [index, "0"]
        group += (counter.field, str(counter.amount))
        if counter.ttl_seconds > 0:
            group[1] = str(counter.ttl_seconds)
    return list(groups.values())


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
