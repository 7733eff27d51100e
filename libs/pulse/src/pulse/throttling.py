"""Throttling shared by every replica through Redis, with the IETF RateLimit header fields.

A :class:`Quota` allows ``limit`` requests per ``window_seconds`` to each caller, counted
in Redis, so every replica of a service draws on one budget. Set from a rate and a burst
(:meth:`Quota.from_rate`), it is a token bucket's rate and burst: ``burst`` requests per
``burst / rate`` seconds, which a caller may spend at once.

The count lives in Redis (an ``INCRBY`` with an expiry, one script on one key, so it runs
alike on a server, a sentinel-watched master or a cluster), in windows aligned to the
clock, so the reset time is known without asking. (The ``limits`` library's Redis storage
did this count before Pulse spoke Cluster and Sentinel; its cluster and sentinel storages
open clients of their own that a service can neither share, close nor point at its CA and
sentinel password, so the one three-line script lives here.) A replica does not ask Redis for every
request: it reserves a few requests of a caller's budget at once
(:meth:`Quota.reservation`: 1 for small quotas, at most 16, a twentieth of the limit) and
spends them locally, so a busy caller costs one round trip per reservation. Reservations
are counted in Redis when made, so all replicas together never allow more than the limit;
what a replica reserved and did not spend by the window's end is lost (at most a
reservation less per replica and window). The price of aligned windows: across a window's
boundary a caller may spend up to twice its burst in a moment; over any longer span the
rate holds. (A sliding window costs two scripts of a dozen commands per request; the
benchmark of ingest measures what each round trip costs.)

Each answer is a :class:`Budget`: allowed or not, what remains, and when the window moves
on; :meth:`Budget.headers` renders the ``RateLimit-Policy`` and ``RateLimit`` fields of
draft-ietf-httpapi-ratelimit-headers (``"name";q=100;w=2`` and ``"name";r=57;t=1``), plus
``Retry-After`` when refused.

The throttle takes its Redis client from the caller (:func:`pulse.clients.redis_client`,
best with a short ``socket_timeout`` and no failover retries; the process's throttles can
share one). If Redis cannot be reached the throttle fails open: :meth:`Throttle.take`
answers None (the request goes on), counts ``pulse_ratelimit_unavailable_total`` and logs
at most once per ``log_interval_seconds``. After a failure it does not ask Redis again for
``retry_after_seconds``, so a Redis that hangs rather than refuses costs one timeout per
interval, not one per request. Throttling must never be why a healthy API refuses work.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cachetools import TTLCache
from prometheus_client import Counter
from redis.exceptions import RedisError

from pulse.logging import get_logger

if TYPE_CHECKING:
    from pulse.clients import RedisClient

__all__ = ["UNAVAILABLE", "Budget", "Quota", "Throttle", "client_address"]

_MAX_RESERVATION: Final = 16
_CALLERS: Final = 100_000

log = get_logger("pulse.throttling")

# Count ARGV[2] more requests; the first count of a window starts its expiry (ARGV[1] s).
_RESERVE: Final = """
local count = redis.call("INCRBY", KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then
    redis.call("EXPIRE", KEYS[1], ARGV[1])
end
return count
"""

UNAVAILABLE: Final = Counter(
    "pulse_ratelimit_unavailable_total",
    "Requests let through unthrottled because the rate limiter's Redis could not be reached",
    ["quota"],
)


@dataclass(frozen=True)
class Quota:
    """``limit`` requests per ``window_seconds`` per caller, named ``name`` in the headers."""

    name: str
    limit: int
    window_seconds: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window_seconds < 1:
            raise ValueError("a quota needs a limit and a window of at least 1")
        if not self.name or not self.name.replace("-", "").isalnum():
            raise ValueError("a quota's name is letters, digits and dashes")

    @classmethod
    def from_rate(cls, name: str, per_second: float, burst: int) -> Quota:
        """``burst`` requests per ``burst / per_second`` seconds (whole seconds, at least 1)."""
        if per_second <= 0:
            raise ValueError("a rate must be above 0")
        return cls(name, burst, max(1, round(burst / per_second)))

    @property
    def reservation(self) -> int:
        """How many requests a replica reserves at once."""
        return max(1, min(_MAX_RESERVATION, self.limit // 20))

    @property
    def policy_field(self) -> str:
        """The ``RateLimit-Policy`` member of this quota."""
        return f'"{self.name}";q={self.limit};w={self.window_seconds}'


@dataclass(frozen=True)
class Budget:
    """What a caller has left of a quota after a request."""

    quota: Quota
    allowed: bool
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        """The RateLimit fields; with ``Retry-After`` when the request was refused."""
        fields = {
            "RateLimit-Policy": self.quota.policy_field,
            "RateLimit": f'"{self.quota.name}";r={self.remaining};t={self.reset_seconds}',
        }
        if not self.allowed:
            fields["Retry-After"] = str(max(self.reset_seconds, 1))
        return fields


@dataclass
class _Reserved:
    """What this replica holds of a caller's budget in one window."""

    window: int  # the window's number (time // window_seconds)
    tokens: int  # reserved, not yet spent
    counted: int  # the caller's count in Redis, every replica's, after the reservation


class Throttle:
    """One :class:`Quota`, counted per caller in ``redis`` under ``{key_prefix}rl:``."""

    def __init__(
        self,
        redis: RedisClient,
        quota: Quota,
        *,
        key_prefix: str,
        log_interval_seconds: float = 30.0,
        retry_after_seconds: float = 5.0,
    ) -> None:
        self.quota = quota
        self._reserve_script = redis.register_script(_RESERVE)
        self._key_prefix = f"{key_prefix}rl:{quota.name}/"
        self._unavailable = UNAVAILABLE.labels(quota.name)
        self._log_interval = log_interval_seconds
        self._logged_at = float("-inf")
        self._retry_after = retry_after_seconds
        self._down_until = float("-inf")
        self._reserved: TTLCache[str, _Reserved] = TTLCache(
            maxsize=_CALLERS, ttl=quota.window_seconds
        )
        self._pending: dict[str, asyncio.Future[None]] = {}

    async def take(self, caller: str) -> Budget | None:
        """Spend one request of ``caller``'s budget; None when Redis is out of reach."""
        window = self.quota.window_seconds
        number, into = divmod(time.time(), window)
        reset = max(1, math.ceil(window - into))
        held = await self._holding(caller, int(number))
        if held is None:
            self._unavailable.inc()
            return None
        limit = self.quota.limit
        if held.tokens == 0:  # the window's budget is spent, by every replica together
            return Budget(self.quota, allowed=False, remaining=0, reset_seconds=reset)
        held.tokens -= 1
        remaining = max(0, limit - held.counted) + held.tokens
        return Budget(self.quota, allowed=True, remaining=remaining, reset_seconds=reset)

    def _spent(self, held: _Reserved) -> bool:
        """Whether the caller's whole budget of the window is counted in Redis already."""
        return held.counted >= self.quota.limit

    async def _holding(self, caller: str, number: int) -> _Reserved | None:
        """This replica's reservation of ``caller``'s budget in window ``number``, reserved
        anew when spent (one reservation at a time per caller: concurrent requests wait for
        it); None when Redis is out of reach."""
        while time.monotonic() >= self._down_until:
            held = self._reserved.get(caller)
            if held is not None and held.window == number and (held.tokens or self._spent(held)):
                return held
            pending = self._pending.get(caller)
            if pending is None:
                return await self._reserve(caller, number)
            await pending  # another request of the caller is reserving: look again after it
        return None

    async def _reserve(self, caller: str, number: int) -> _Reserved | None:
        size = self.quota.reservation
        key = f"{self._key_prefix}{caller}/{number}"
        done = self._pending[caller] = asyncio.get_running_loop().create_future()
        try:
            counted = int(await self._reserve_script([key], [self.quota.window_seconds, size]))
        except (RedisError, OSError) as exc:
            self._fail_open(exc)
            return None
        finally:
            del self._pending[caller]
            done.set_result(None)
        granted = max(0, min(size, self.quota.limit - (counted - size)))
        held = self._reserved[caller] = _Reserved(number, granted, counted)
        return held

    def _fail_open(self, exc: Exception) -> None:
        now = time.monotonic()
        self._down_until = now + self._retry_after
        if now - self._logged_at >= self._log_interval:
            self._logged_at = now
            log.warning(
                "rate limiter unavailable; requests pass unthrottled",
                quota=self.quota.name,
                error=f"{type(exc).__name__}: {exc}",
            )


def client_address(remote: str | None, forwarded_for: str | None, trusted_hops: int) -> str:
    """The caller's address, for per-address limits.

    ``trusted_hops`` is how many proxies of our own (an Ingress controller, a load
    balancer) stand before the service, each appending the address it received from to
    ``X-Forwarded-For``: the caller is that many entries from the right. With 0, or a
    header shorter than that, the header is ignored — a caller can write anything into it,
    so only what our own proxies appended counts — and the socket's peer is the caller.
    """
    if trusted_hops > 0 and forwarded_for:
        hops = [part.strip() for part in forwarded_for.split(",") if part.strip()]
        if len(hops) >= trusted_hops:
            return hops[-trusted_hops]
    return remote or "unknown"
