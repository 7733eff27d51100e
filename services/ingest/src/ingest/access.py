"""The door of every ``/v1/`` route: who is asking, and whether they may ask now.

In order, for each request:

1. an address that sent ``auth_failures_per_minute`` refused credentials within a minute
   gets 429 (``too-many-failed-credentials``) until its minute is over, before its
   credential is even looked at — guessing keys is slow;
2. the bearer credential becomes a :class:`~pulse.credentials.Principal`
   (:class:`~pulse.credentials.Authenticator`); a refused one is 401 with its RFC 6750
   challenge and counts against the address; keys that cannot be checked now are 503;
3. the principal spends one request of its budget (:class:`~pulse.throttling.Throttle`,
   shared by every replica through Redis): over it, 429 (``rate-limited``).

Every answer from then on — success, problem, an unknown route, a failing dependency —
carries the budget's ``RateLimit-Policy`` and ``RateLimit`` fields: the middleware sits
outside the one that renders problems, and renders its own refusals itself. The principal is
``request[PRINCIPAL]`` for the handlers, which ask :func:`ingest.authz.authorize` what it may
do. Health, readiness, metrics and
``/openapi.json`` stay open. Authentication never depends on Redis: when Redis is out of
reach the throttles let requests through (:mod:`pulse.throttling`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from aiohttp import web
from cachetools import TTLCache
from prometheus_client import Counter

from pulse.credentials import (
    AUTH_FAILURES,
    CredentialError,
    CredentialUnavailableError,
    bearer_credential,
    unauthorized,
)
from pulse.logging import get_logger
from pulse.problems import Problem
from pulse.throttling import client_address

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pulse.credentials import Authenticator, Principal
    from pulse.throttling import Budget, Throttle

__all__ = ["PRINCIPAL", "THROTTLED", "AccessControl"]

log = get_logger("ingest.access")

PRINCIPAL: Final = "pulse.principal"
THROTTLED: Final = Counter(
    "pulse_http_throttled_total",
    "HTTP requests refused with 429, by who was throttled (jwt, api_key, address)",
    ["kind"],
)
for _kind in ("jwt", "api_key", "address"):
    THROTTLED.labels(_kind)

_PROTECTED_PREFIX: Final = "/v1/"
_BLOCKED_ADDRESSES: Final = 100_000


class AccessControl:
    """The aiohttp middleware of the door (see the module docstring)."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        budget: Throttle | None,
        failures: Throttle | None,
        trusted_proxy_hops: int = 0,
    ) -> None:
        self._authenticator = authenticator
        self._budget = budget
        self._failures = failures
        self._hops = trusted_proxy_hops
        # Addresses over their failure quota on this replica, with the time they may try
        # again: checked without a Redis call (each replica learns it from the shared
        # counter on its own next refusal).
        self._blocked: TTLCache[str, float] = TTLCache(maxsize=_BLOCKED_ADDRESSES, ttl=60)

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if not request.path.startswith(_PROTECTED_PREFIX):
            return await handler(request)
        try:
            principal = await self._principal(request)
            budget = await self._spend(principal)
        except Problem as refusal:
            return refusal.response()
        request[PRINCIPAL] = principal
        response = await handler(request)  # never raises: problems are rendered inside
        if budget is not None:
            response.headers.update(budget.headers())
        return response

    async def _principal(self, request: web.Request) -> Principal:
        address = client_address(request.remote, request.headers.get("X-Forwarded-For"), self._hops)
        self._refuse_if_blocked(address)
        try:
            credential = bearer_credential(request.headers.get("Authorization"))
            return await self._authenticator.authenticate(credential)
        except CredentialError as exc:
            AUTH_FAILURES.labels(exc.reason).inc()
            log.info("credential refused", reason=exc.reason, address=address)
            if exc.reason != "missing":  # a request without one guesses nothing
                await self._count_failure(address)
            raise unauthorized(exc) from None
        except CredentialUnavailableError as exc:
            log.warning("credentials cannot be checked", error=str(exc))
            raise Problem(
                503,
                "unavailable",
                "Service unavailable",
                "credentials cannot be checked now; retry later",
                headers={"Retry-After": "1"},
            ) from None

    def _refuse_if_blocked(self, address: str) -> None:
        until = self._blocked.get(address)
        if until is None:
            return
        wait = until - time.monotonic()
        if wait > 0:
            THROTTLED.labels("address").inc()
            raise _too_many_failures(max(1, round(wait)))

    async def _count_failure(self, address: str) -> None:
        if self._failures is None:
            return
        budget = await self._failures.take(address)
        if budget is not None and not budget.allowed:
            self._blocked[address] = time.monotonic() + budget.reset_seconds
            THROTTLED.labels("address").inc()
            log.warning("address blocked after refused credentials", address=address)
            raise _too_many_failures(budget.reset_seconds, budget)

    async def _spend(self, principal: Principal) -> Budget | None:
        if self._budget is None:
            return None
        budget = await self._budget.take(principal.label)
        if budget is not None and not budget.allowed:
            THROTTLED.labels(principal.kind).inc()
            raise Problem(
                429,
                "rate-limited",
                "Too many requests",
                f"more than {budget.quota.limit} requests in {budget.quota.window_seconds} s; "
                "retry after the time in Retry-After",
                headers=budget.headers(),
            )
        return budget


def _too_many_failures(seconds: int, budget: Budget | None = None) -> Problem:
    headers = budget.headers() if budget is not None else {"Retry-After": str(seconds)}
    return Problem(
        429,
        "too-many-failed-credentials",
        "Too many failed credentials",
        f"too many refused credentials from this address; retry in {seconds} s",
        headers=headers,
    )
