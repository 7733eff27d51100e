"""The per-endpoint rate limit: GCRA in Redis, a true limit in any one-second window.

The generic cell rate algorithm keeps one number per endpoint, its *theoretical arrival
time* (TAT): the earliest moment the next request may go. A request at ``now`` goes if
``TAT <= now`` and moves the TAT to ``now + interval``; otherwise it waits ``TAT - now``.
There is no burst allowance, and the interval is ``(1 s + 0.1 s) / rate``: any ``rate + 1``
requests to one endpoint leave at least 1.1 s apart from first to last. So no one-second
window holds more than ``rate`` of them — as they leave, and as the receiver sees them
arrive, as long as the way there (a new connection, a busy process, the network) does not
delay one of them by 0.1 s more than another. (The fixed per-second counter this replaces
let up to twice the rate through across a second's boundary.) The price: an endpoint gets
at most ``rate / 1.1`` requests a second, evenly spread — ten events at once to an endpoint
limited to 10/s take a second. The rate is the endpoint's own (``rate_per_second``, set
through the endpoints API) or else ``PULSE_WEBHOOK_RATE_PER_SECOND``, given with each turn.

One Lua script on one key, ``{prefix}{webhooks:E}:gcra`` (the endpoint's hash tag: a single
slot in a Redis Cluster), run by :class:`pulse.replication.ScriptRunner` in every Redis mode;
the clock is Redis's (``TIME``), so every worker process shares it. The key expires a second
after it stops mattering. Waiting holds the delivery (its message stays hidden by the
heartbeat) and spends no attempt. A Redis out of reach fails the delivery for a later
retry, without an attempt: the limit is never skipped.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Final

from prometheus_client import Counter

from pulse.replication import LuaScript, ScriptCall, ScriptRunner

if TYPE_CHECKING:
    from pulse.clients import RedisClient

__all__ = [
    "IN_TRANSIT_MARGIN_US",
    "RATE_LIMITED",
    "EndpointRateLimit",
    "interval_us",
    "rate_key",
]

RATE_LIMITED = Counter(
    "pulse_webhook_rate_limited_total",
    "Webhook requests that waited for their endpoint's rate limit",
)

# How much later than another a request may arrive without a receiver's one-second window
# ever holding more than the rate (module doc).
IN_TRANSIT_MARGIN_US: Final = 100_000

# KEYS[1] the endpoint's TAT (µs, Redis time); ARGV[1] the interval (µs)
# -> 0: go now; else the µs to wait
_GCRA_LUA: Final = LuaScript("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat > now then return tat - now end
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', now + interval),
  'PX', math.ceil(interval / 1000) + 1000)
return 0
""")


def rate_key(redis_prefix: str, endpoint_id: str) -> str:
    """The endpoint's GCRA state. Every Redis key of an endpoint carries the hash tag
    ``{webhooks:{endpoint id}}`` (one node of a Redis Cluster per endpoint)."""
    return f"{redis_prefix}{{webhooks:{endpoint_id}}}:gcra"


def interval_us(rate_per_second: int) -> int:
    """The GCRA interval of ``rate_per_second`` (module doc), in microseconds."""
    return math.ceil((1_000_000 + IN_TRANSIT_MARGIN_US) / rate_per_second)


class EndpointRateLimit:
    """At most ``rate_per_second`` requests to one endpoint in any one-second window (or
    the endpoint's own rate, given per turn)."""

    def __init__(self, redis: RedisClient, redis_prefix: str, *, rate_per_second: int) -> None:
        self._runner = ScriptRunner(redis)
        self._prefix = redis_prefix
        self._rate = rate_per_second

    def script_call(self, endpoint_id: str, rate: int | None = None) -> ScriptCall:
        """The one script call of a turn at ``rate`` (None: the default; pure: nothing is
        sent)."""
        key = rate_key(self._prefix, endpoint_id)
        interval = interval_us(rate or self._rate)
        return ScriptCall(_GCRA_LUA, (key,), (interval,), durable=False)

    async def turn(self, endpoint_id: str, rate: int | None = None) -> None:
        """Return when a request to ``endpoint_id`` may go at ``rate`` requests a second
        (None: the default rate); it is counted as gone. A changed rate applies from the
        next turn: the TAT already set is kept."""
        call = self.script_call(endpoint_id, rate)
        waited = False
        # Sent twice after a lost connection, a turn is at worst spent twice: the endpoint
        # gets fewer requests, never more.
        while wait_us := int(await self._runner.call(call, idempotent=True)):
            if not waited:
                RATE_LIMITED.inc()
                waited = True
            await asyncio.sleep(wait_us / 1_000_000)
