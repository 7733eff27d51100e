"""Client factories for AWS (boto3) and Redis, configured from :class:`PulseSettings`.

boto3 honours ``AWS_ENDPOINT_URL`` itself; we pass it explicitly as well so settings built in
code (tests, the CLI) reach the same emulator. Clients are thread-safe and meant to be
created once per process.

Every Redis client of every process comes from here, in the mode ``PULSE_REDIS_MODE``
names (see :mod:`pulse.settings`), with TLS and AUTH from the URLs and
``PULSE_REDIS_TLS_CA_FILE``:

- :func:`redis_client`: the asyncio client a service shares (:data:`RedisClient`);
- :func:`pubsub_client`: a client for one pub/sub connection;
- :func:`blocking_redis_client`: a blocking client, for the command line.

In cluster mode the clients are ``RedisCluster``s; in sentinel mode they are clients of the
master the sentinels name, which find the new master after a failover.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar
from urllib.parse import unquote, urlsplit

import boto3
import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from botocore.config import Config
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

if TYPE_CHECKING:
    from redis.typing import EncodableT

    from pulse.settings import PulseSettings

__all__ = [
    "FAILOVER_RETRIES",
    "BlockingRedisClient",
    "RedisClient",
    "aws_client",
    "blocking_redis_client",
    "pubsub_client",
    "redis_client",
]

RedisClient: TypeAlias = aioredis.Redis | aioredis.RedisCluster
"""What :func:`redis_client` returns: a client of one server (standalone, sentinel) or a
cluster's."""
BlockingRedisClient: TypeAlias = redis.Redis | redis.RedisCluster

# How many times a command is retried when its connection fails in cluster or sentinel
# mode; each retry asks again where the key's primary (the master) is. In sentinel mode the
# retries back off (0.1 s doubling up to 2 s, jittered: a few seconds in all), so a failover
# that completes within that time costs a delay, not an error. redis-py's cluster client
# retries at once, refreshing its slot map each time (its Retry sets only the count).
FAILOVER_RETRIES: Final = 6
_CONNECT_TIMEOUT: Final = 5.0
_SentinelT = TypeVar("_SentinelT", aiosentinel.Sentinel, redis.sentinel.Sentinel)


def aws_client(
    service_name: str,
    settings: PulseSettings,
    *,
    max_pool: int = 64,
    parameter_validation: bool = True,
    user_agent: str | None = None,
    read_timeout: float = 30.0,
    max_attempts: int = 5,
    session: boto3.session.Session | None = None,
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

    ``session`` gives the credentials (default: a new session, the standard chain).
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
    session = session or boto3.session.Session()
    return session.client(  # type: ignore[call-overload]
        service_name, endpoint_url=settings.aws_endpoint_url, config=config
    )


def redis_client(
    settings: PulseSettings,
    *,
    max_connections: int = 64,
    pool_timeout: float = 10.0,
    socket_timeout: float | None = None,
    failover_retries: int = FAILOVER_RETRIES,
) -> RedisClient:
    """The asyncio Redis client of ``settings`` (bytes responses), in its mode.

    At most ``max_connections`` commands are in flight (to each node, in cluster mode); a
    command waits up to ``pool_timeout`` seconds for one of them to finish rather than
    failing at once, so a burst of work (10,000 clients subscribing together) queues instead
    of erroring. ``socket_timeout`` bounds the wait for a reply (None: no bound).

    In cluster and sentinel mode a command whose connection fails is retried
    ``failover_retries`` times (see :data:`FAILOVER_RETRIES`); 0 fails at once, for callers
    that would rather go on without Redis than wait for it.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        "socket_timeout": socket_timeout,
        "health_check_interval": 30,
    }
    if settings.redis_mode == "cluster":
        return _QueueingCluster.from_url(
            settings.redis_url,
            max_connections=max_connections,
            wait_seconds=pool_timeout,
            retry=_failover_retry(failover_retries),
            **options,
            **_tls_options(settings),
        )
    if settings.redis_mode == "sentinel":
        return _master(
            settings,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=max_connections,
            timeout=pool_timeout,
            retry=_failover_retry(failover_retries),
            **options,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=pool_timeout,
        **options,
        **_tls_options(settings),
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it


def pubsub_client(settings: PulseSettings, *, client_name: str | None = None) -> RedisClient:
    """A client for one pub/sub connection: TCP keepalive, no health checks (redis-py's
    checks would read a reply on the connection while its reader task waits on it).

    In cluster mode a ``RedisCluster``: its ``pubsub()`` is redis-py's ``ClusterPubSub``
    (``ssubscribe`` reaches the node that serves each shard channel), which needs the slot
    map first: ``await client.initialize()`` before ``pubsub()``. ``client_name`` names the
    connection in ``CLIENT LIST``.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "client_name": client_name,
    }
    if settings.redis_mode == "cluster":
        return aioredis.RedisCluster.from_url(
            settings.redis_url, **options, **_tls_options(settings)
        )
    if settings.redis_mode == "sentinel":
        return _master(settings, **options)
    return aioredis.Redis.from_url(settings.redis_url, **options, **_tls_options(settings))


def blocking_redis_client(settings: PulseSettings) -> BlockingRedisClient:
    """A blocking Redis client of ``settings``, in its mode, for short-lived commands (the
    command line). Use it as a context manager: leaving closes its connections."""
    options: dict[str, Any] = {"socket_connect_timeout": _CONNECT_TIMEOUT}
    if settings.redis_mode == "cluster":
        return redis.RedisCluster.from_url(settings.redis_url, **options, **_tls_options(settings))
    if settings.redis_mode == "sentinel":
        sentinel = _sentinel(settings, redis.sentinel.Sentinel)
        # redis-py's blocking Sentinel carries no annotations
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            _master_name(settings), redis_class=_BlockingSentinelMaster, **options
        )
        return client
    return redis.Redis.from_url(settings.redis_url, **options, **_tls_options(settings))


class _QueueingCluster(aioredis.RedisCluster):
    """A ``RedisCluster`` whose commands wait their turn when ``max_connections`` are in
    flight, as the blocking pool makes them wait in the other modes: redis-py's cluster
    client raises ``MaxConnectionsError`` when a node's connections are all busy. (A
    pipeline takes its connections apart from this count.)"""

    def __init__(self, *, max_connections: int, wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._turns = asyncio.Semaphore(max_connections)
        self._wait_seconds = wait_seconds

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._wait_seconds):
                await self._turns.acquire()
        except TimeoutError as exc:
            raise redis.ConnectionError("No connection available.") from exc
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._turns.release()


class _BlockingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The pool of the master the sentinels name, waiting for a free connection (``timeout``
    seconds) when all ``max_connections`` are busy, like the standalone pool."""


class _SentinelMaster(aioredis.Redis):
    """A client of the master the sentinels name; closing it closes its sentinel
    connections too (each client has sentinel clients of its own)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:  # noqa: FBT001 - redis-py's signature
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, aiosentinel.SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


class _BlockingSentinelMaster(redis.Redis):
    """:class:`_SentinelMaster`, blocking."""

    def close(self) -> None:
        super().close()
        pool = self.connection_pool
        if isinstance(pool, redis.sentinel.SentinelConnectionPool):
            pool.sentinel_manager.close()


def _master(settings: PulseSettings, **options: Any) -> aioredis.Redis:
    """An asyncio client of the master the sentinels name, with ``options`` for its pool."""
    sentinel = _sentinel(settings, aiosentinel.Sentinel)
    client: aioredis.Redis = sentinel.master_for(
        _master_name(settings), redis_class=_SentinelMaster, **options
    )
    return client


def _sentinel(settings: PulseSettings, sentinel_class: type[_SentinelT]) -> _SentinelT:
    """The sentinels of ``settings``, holding the options of connections to the master:
    the user, password, database and TLS of ``REDIS_URL`` (its host is the sentinels' to
    name)."""
    master = {
        name: value
        for name, value in parse_url(settings.redis_url).items()
        if name not in {"host", "port", "path", "connection_class"}
    }
    if settings.redis_tls:
        master.update(ssl=True, **_ca_options(settings))
    return sentinel_class(
        settings.redis_sentinel_addresses, sentinel_kwargs=_sentinel_options(settings), **master
    )


def _sentinel_options(settings: PulseSettings) -> dict[str, Any]:
    """How to reach the sentinels: their URLs' scheme and user (the first URL's), and the
    password of ``PULSE_REDIS_SENTINEL_PASSWORD`` (else the URL's)."""
    first = urlsplit(settings.redis_sentinels[0])
    password = unquote(first.password) if first.password else None
    if settings.redis_sentinel_password is not None:
        password = settings.redis_sentinel_password.get_secret_value()
    options: dict[str, Any] = {
        "username": unquote(first.username) if first.username else None,
        "password": password,
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        "socket_timeout": _CONNECT_TIMEOUT,
    }
    if first.scheme == "rediss":
        options.update(ssl=True, **_ca_options(settings))
    return options


def _master_name(settings: PulseSettings) -> str:
    if settings.redis_master_name is None:  # the settings refuse sentinel mode without it
        raise ValueError("PULSE_REDIS_MASTER_NAME is required with PULSE_REDIS_MODE=sentinel")
    return settings.redis_master_name


def _tls_options(settings: PulseSettings) -> dict[str, Any]:
    """The TLS options to add to ``REDIS_URL``'s (which says whether to use TLS)."""
    return _ca_options(settings) if settings.redis_tls else {}


def _ca_options(settings: PulseSettings) -> dict[str, Any]:
    ca_file = settings.redis_tls_ca_file
    return {"ssl_ca_certs": str(ca_file)} if ca_file is not None else {}


def _failover_retry(retries: int) -> Retry:
    if retries <= 0:
        return Retry(NoBackoff(), 0)
    return Retry(ExponentialWithJitterBackoff(base=0.1, cap=2.0), retries)
