"""Where an account's webhooks go: its endpoints (DynamoDB) and their signing secrets (SSM),
read through :mod:`pulse.webhook_endpoints` (the code ingest's endpoints API and
``pulse webhooks`` write them with).

Both are read through a short-lived cache (``cachetools.TTLCache``, bounded), so a burst of
events for one account costs one query, while an endpoint added, changed or removed takes
effect within the cache's lifetime. A secret is cached with the one a rotation replaced and
that one's expiry, so the old secret stops signing when its overlap ends, not a cache
lifetime later. A failed read is Pulse's error of its kind (:mod:`pulse.aws_errors`):
retried when AWS is throttling or unreachable.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from cachetools import TTLCache

from pulse.aws_errors import AWS_ERRORS, as_pulse_error
from pulse.webhook_endpoints import (
    SigningSecrets,
    WebhookEndpoint,
    query_account_endpoints,
    read_signing_secrets,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Endpoint", "EndpointDirectory", "SecretStore"]

# Accounts (or secrets) remembered at once; the least recently used go first.
_CACHE_ENTRIES: Final = 10_000
_RETRY_SECONDS: Final = 2.0
V = TypeVar("V")

Endpoint = WebhookEndpoint


class _CachedRead(Generic[V]):
    """``read(key)`` (blocking, run in a thread) remembered for ``seconds`` per key."""

    def __init__(self, read: Callable[[str], V], what: str, seconds: float) -> None:
        self._read = read
        self._what = what
        self._cache: TTLCache[str, V] | None = (
            TTLCache(maxsize=_CACHE_ENTRIES, ttl=seconds) if seconds > 0 else None
        )

    async def get(self, key: str) -> V:
        cache = self._cache
        if cache is not None and key in cache:
            return cache[key]
        try:
            value = await asyncio.to_thread(self._read, key)
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"{self._what} {key}", delay=_RETRY_SECONDS) from exc
        if cache is not None:
            cache[key] = value
        return value


class EndpointDirectory:
    """An account's endpoints from the webhooks table, cached for ``cache_seconds``."""

    def __init__(self, ddb: Any, table: str, *, cache_seconds: float) -> None:
        self._ddb = ddb
        self._table = table
        self._reads = _CachedRead(self._query, "webhook endpoints of", cache_seconds)

    def _query(self, account_id: str) -> list[WebhookEndpoint]:
        return query_account_endpoints(self._ddb, self._table, account_id)

    async def endpoints(self, account_id: str) -> list[WebhookEndpoint]:
        """Every endpoint of the account, disabled ones and their filters included: the
        fan-out asks each whether it wants an event (:meth:`WebhookEndpoint.accepts`)."""
        return await self._reads.get(account_id)

    async def endpoint(self, account_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        """The endpoint as the cache last read it (None: removed): its delivery window and
        rate, which a change reaches within the cache's lifetime."""
        found = await self.endpoints(account_id)
        return next((e for e in found if e.endpoint_id == endpoint_id), None)


class SecretStore:
    """Signing secrets from SSM Parameter Store, cached for ``cache_seconds``."""

    def __init__(self, ssm: Any, *, cache_seconds: float) -> None:
        self._ssm = ssm
        self._reads = _CachedRead(self._read, "webhook secret", cache_seconds)

    def _read(self, name: str) -> SigningSecrets | None:
        return read_signing_secrets(self._ssm, name)

    async def secrets(self, name: str) -> tuple[str, ...]:
        """The secrets that sign a delivery now: the current one, and during a rotation's
        overlap the one it replaced; empty if the endpoint was removed."""
        found = await self._reads.get(name)
        return () if found is None else found.valid(time.time())
