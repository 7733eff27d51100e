"""Where an account's webhooks go: its endpoints (DynamoDB) and their signing secrets (SSM).

Both are read through a short-lived cache (``cachetools.TTLCache``, bounded), so a burst of
events for one account costs one query, while an endpoint added or removed with
``pulse webhooks`` takes effect within the cache's lifetime. A failed read is Pulse's error
of its kind (:mod:`pulse.aws_errors`): retried when AWS is throttling or unreachable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from cachetools import TTLCache

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Endpoint", "EndpointDirectory", "SecretStore"]

# Accounts (or secrets) remembered at once; the least recently used go first.
_CACHE_ENTRIES: Final = 10_000
_RETRY_SECONDS: Final = 2.0
V = TypeVar("V")


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


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    secret_parameter: str


class EndpointDirectory:
    """An account's endpoints from the webhooks table, cached for ``cache_seconds``."""

    def __init__(self, ddb: Any, table: str, *, cache_seconds: float) -> None:
        self._ddb = ddb
        self._table = table
        self._reads = _CachedRead(self._query, "webhook endpoints of", cache_seconds)

    def _query(self, account_id: str) -> list[Endpoint]:
        pages = self._ddb.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="account_id = :a",
            ExpressionAttributeValues={":a": {"S": account_id}},
            ConsistentRead=True,
        )
        return [
            Endpoint(i["endpoint_id"]["S"], i["url"]["S"], i["secret_parameter"]["S"])
            for page in pages
            for i in page.get("Items", [])
        ]

    async def endpoints(self, account_id: str) -> list[Endpoint]:
        return await self._reads.get(account_id)


class SecretStore:
    """Signing secrets from SSM Parameter Store, cached for ``cache_seconds``."""

    def __init__(self, ssm: Any, *, cache_seconds: float) -> None:
        self._ssm = ssm
        self._reads = _CachedRead(self._read, "webhook secret", cache_seconds)

    def _read(self, name: str) -> str | None:
        try:
            got = self._ssm.get_parameter(Name=name, WithDecryption=True)
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.NOT_FOUND:
                return None
            raise
        return str(got["Parameter"]["Value"])

    async def secret(self, name: str) -> str | None:
        """The secret, or None if the parameter does not exist (the endpoint was removed)."""
        return await self._reads.get(name)
