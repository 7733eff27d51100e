"""Presence: who is on a channel, across every gateway process, counted per user.

Each subscribed connection holds an entry with a lease in Redis, refreshed by its gateway;
a user is present while at least one of their connections is. Join and leave happen in Lua
scripts, so ``{"op":"presence","channel":C,"joined":{"user":U}}`` is published when the
user's first session arrives and ``"left"`` exactly once when the last one goes — whether it
unsubscribed, disconnected, or its gateway died and every gateway's sweeper found its
lease expired (the ``ZREM`` inside the script decides who reports it).

Redis keys (under the prefix): ``presence:{C}`` sorted set connection → lease expiry (ms);
``presence-conn:{C}`` hash connection → user; ``presence-users:{C}`` hash user → sessions;
``presence-channels`` set of channels with entries (what the sweepers look at).

``stats`` has no presence: every user may read it, and presence would show them each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import orjson

from pulse.channels import STATS
from pulse.logging import get_logger
from pulse.service import sleep_unless_stopped

if TYPE_CHECKING:
    import asyncio

    from pulse.channels import ChannelKeys
    from pulse.clients import RedisClient

__all__ = ["Presence", "PresenceKeys", "has_presence"]

log = get_logger("ws_gateway.presence")

# KEYS: leases, conns, users, channels set, live; ARGV: conn, user, expiry ms, channel, frame
_JOIN_LUA: Final = """
local existed = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[4])
if existed then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('HINCRBY', KEYS[3], ARGV[2], 1) == 1 then
  redis.call('SPUBLISH', KEYS[5], ARGV[5])
  return 1
end
return 0
"""

# KEYS: leases, conns, users, channels set, live
# ARGV: '' to remove ARGV[4] only, or a time in ms to remove every lease expired by then;
#       JSON-encoded channel; channel; connection
_LEAVE_LUA: Final = """
local conns
if ARGV[1] == '' then
  conns = {ARGV[4]}
else
  conns = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
end
local left = 0
for _, conn in ipairs(conns) do
  if redis.call('ZREM', KEYS[1], conn) == 1 then
    local user = redis.call('HGET', KEYS[2], conn)
    redis.call('HDEL', KEYS[2], conn)
    if user then
      if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
        redis.call('HDEL', KEYS[3], user)
        redis.call('SPUBLISH', KEYS[5], '{"op":"presence","channel":' .. ARGV[2] ..
                   ',"left":{"user":' .. cjson.encode(user) .. '}}')
        left = left + 1
      end
    end
  end
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[3])
end
return left
"""


def has_presence(channel: str) -> bool:
    return channel != STATS


@dataclass(frozen=True)
class PresenceKeys:
    prefix: str

    def leases(self, channel: str) -> str:
        return f"{self.prefix}presence:{channel}"

    def conns(self, channel: str) -> str:
        return f"{self.prefix}presence-conn:{channel}"

    def users(self, channel: str) -> str:
        return f"{self.prefix}presence-users:{channel}"

    @property
    def channels(self) -> str:
        return f"{self.prefix}presence-channels"


class Presence:
    """This process's side of presence: its connections' entries, their leases, the sweep."""

    def __init__(
        self, redis: RedisClient, channel_keys: ChannelKeys, *, lease_seconds: float
    ) -> None:
        self._redis = redis
        self._live = channel_keys
        self.keys = PresenceKeys(channel_keys.prefix)
        self.lease_seconds = lease_seconds
        self._join = redis.register_script(_JOIN_LUA)
        self._leave = redis.register_script(_LEAVE_LUA)
        # (channel, connection id) -> user: what this process refreshes.
        self._local: dict[tuple[str, str], str] = {}

    def _keys(self, channel: str) -> list[str]:
        return [
            self.keys.leases(channel),
            self.keys.conns(channel),
            self.keys.users(channel),
            self.keys.channels,
            self._live.live(channel),
        ]

    async def join(self, channel: str, conn: str, user: str) -> None:
        self._local[(channel, conn)] = user
        await self._renew(channel, conn, user)

    async def _renew(self, channel: str, conn: str, user: str) -> None:
        frame = (
            '{"op":"presence","channel":'
            + orjson.dumps(channel).decode()
            + ',"joined":{"user":'
            + orjson.dumps(user).decode()
            + "}}"
        )
        expiry = int((time.time() + self.lease_seconds) * 1000)
        await self._join(keys=self._keys(channel), args=[conn, user, expiry, channel, frame])

    async def leave(self, channel: str, conn: str) -> None:
        if self._local.pop((channel, conn), None) is None:
            return
        await self._leave(keys=self._keys(channel), args=["", orjson.dumps(channel), channel, conn])

    async def sweep(self) -> int:
        """Remove every expired entry of every channel; returns the leave events published."""
        now = int(time.time() * 1000)
        left = 0
        async for raw in self._redis.sscan_iter(self.keys.channels, count=500):
            channel = raw.decode() if isinstance(raw, bytes) else str(raw)
            left += int(
                await self._leave(
                    keys=self._keys(channel), args=[now, orjson.dumps(channel), channel, ""]
                )
            )
        return left

    async def renew_all(self) -> None:
        for (channel, conn), user in list(self._local.items()):
            if (channel, conn) in self._local:
                await self._renew(channel, conn, user)

    async def users(self, channel: str) -> dict[str, int]:
        """Present users and their session counts."""
        raw = await self._redis.hgetall(self.keys.users(channel))
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}

    async def run(self, stopping: asyncio.Event) -> None:
        """Renew this process's leases and sweep everyone's, a few times per lease."""
        interval = self.lease_seconds / 3
        while not stopping.is_set():
            try:
                await self.renew_all()
                await self.sweep()
            except Exception as exc:
                log.warning("presence upkeep failed", error=str(exc))
            await sleep_unless_stopped(stopping, interval)
