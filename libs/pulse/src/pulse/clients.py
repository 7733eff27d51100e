"""Client factories for AWS (boto3) and Redis, configured from :class:`PulseSettings`.

boto3 honours ``AWS_ENDPOINT_URL`` itself; we pass it explicitly as well so settings built in
code (tests, the CLI) reach the same emulator. Clients are thread-safe and meant to be
created once per process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
import redis.asyncio as aioredis
from botocore.config import Config

if TYPE_CHECKING:
    from pulse.settings import PulseSettings

__all__ = ["aws_client", "redis_client"]


def aws_client(
    service_name: str,
    settings: PulseSettings,
    *,
    max_pool: int = 64,
    parameter_validation: bool = True,
    user_agent: str | None = None,
    read_timeout: float = 30.0,
    max_attempts: int = 5,
) -> Any:
    """A boto3 client for ``service_name`` with standard retries and a bounded pool.

    ``parameter_validation=False`` skips botocore's client-side check of every request
    against the API model (the service still rejects a bad request, as a ``ClientError``
    rather than a ``ParamValidationError``). For hot paths whose requests are built by
    code, not taken from users: the check walks every attribute of every item sent, a
    sizeable share of the client's CPU for a batch of 25 rows or ten messages.

    ``user_agent`` fixes the ``User-Agent`` header (botocore's ``Config(user_agent=)``;
    boto3 appends its name and version): otherwise botocore assembles it from a dozen
    sanitised components twice per request, a tenth of the client's CPU for a small call.

    ``read_timeout`` (seconds) and ``max_attempts`` (the first try included) bound a call
    that must not hang for long, such as a lease renewal racing its deadline.
    """
    config = Config(
        region_name=settings.aws_region,
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max_pool,
        connect_timeout=5,
        read_timeout=read_timeout,
        parameter_validation=parameter_validation,
        user_agent=user_agent,
    )
    session = boto3.session.Session()
    return session.client(  # type: ignore[call-overload]
        service_name, endpoint_url=settings.aws_endpoint_url, config=config
    )


def redis_client(
    settings: PulseSettings, *, max_connections: int = 64, pool_timeout: float = 10.0
) -> aioredis.Redis:
    """An asyncio Redis client from ``REDIS_URL`` (bytes responses).

    The pool waits up to ``pool_timeout`` seconds for a free connection when all
    ``max_connections`` are busy, rather than failing the command at once: a burst of
    work (10,000 clients subscribing together) queues instead of erroring.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it
