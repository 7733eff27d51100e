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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import orjson

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from pulse.events import CloudEvent

__all__ = [
    "ALERTS",
    "PAYMENTS",
    "STATS",
    "AppendResult",
    "ChannelKeys",
    "ChannelPublisher",
    "account_channel",
    "is_valid_channel",
]

PAYMENTS: Final = "payments"
ALERTS: Final = "alerts"
STATS: Final = "stats"
_ACCOUNT_RE: Final = re.compile(r"^account:[A-Za-z0-9_.@-]{1,128}$")


def account_channel(account_id: str) -> str:
    return f"account:{account_id}"


def is_valid_channel(channel: str) -> bool:
    """True for the channel names of the design: payments, alerts, stats, account:{id}."""
    return channel in (PAYMENTS, ALERTS, STATS) or bool(_ACCOUNT_RE.match(channel))


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


# KEYS[1] = guard key; KEYS[2..n+1] = history streams; KEYS[n+2..2n+1] = live channels
# ARGV[1] = event json; ARGV[2] = guard ttl seconds; ARGV[3] = max history length;
# ARGV[4..n+3] = channel names (JSON-encoded, so they can be spliced into the frame)
_APPEND_LUA: Final = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[2])) == false then
  return {}
end
local n = (#KEYS - 1) / 2
local offsets = {}
for i = 1, n do
  local offset = redis.call('XADD', KEYS[1 + i], 'MAXLEN', '~', tonumber(ARGV[3]), '*',
                            'e', ARGV[1])
  offsets[i] = offset
  local frame = '{"op":"event","channel":' .. ARGV[3 + i] .. ',"offset":"' .. offset ..
                '","event":' .. ARGV[1] .. '}'
  redis.call('PUBLISH', KEYS[1 + n + i], frame)
end
return offsets
"""


@dataclass(frozen=True)
class AppendResult:
    """What an append did: ``applied`` is False when the event id had been applied before."""

    applied: bool
    offsets: dict[str, str]


class ChannelPublisher:
    """Appends events to channels exactly once per event id."""

    def __init__(
        self,
        redis: aioredis.Redis,
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
        self, event: CloudEvent, channels: list[str], *, guard: str | None = None
    ) -> AppendResult:
        """Append ``event`` to ``channels`` unless ``guard`` (default: the event id) was seen."""
        for channel in channels:
            if not is_valid_channel(channel):
                raise ValueError(f"invalid channel name: {channel!r}")
        keys = [
            self.keys.applied(guard or event.id),
            *(self.keys.history(c) for c in channels),
            *(self.keys.live(c) for c in channels),
        ]
        args: list[bytes | str | int] = [
            event.to_json(),
            self._guard_ttl,
            self._history_length,
            *(orjson.dumps(c) for c in channels),
        ]
        result = await self._script(keys=keys, args=args)
        offsets = [o.decode() if isinstance(o, bytes) else str(o) for o in result]
        return AppendResult(
            applied=bool(offsets), offsets=dict(zip(channels, offsets, strict=False))
        )
