"""Throttling through Redis: one budget per caller for every replica; fail open."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from pulse.clients import RedisClient, redis_client
from pulse.settings import PulseSettings
from pulse.throttling import Budget, Quota, Throttle, client_address
from pulse_dev.testing import free_port

if TYPE_CHECKING:
    from pulse_dev.redis_servers import RedisClusterGroup


def throttle_client(redis_url: str) -> RedisClient:
    """A client as ingest makes its throttles': a reply within 2 s, no retries."""
    settings = PulseSettings(redis_url=redis_url)
    return redis_client(settings, pool_timeout=2, socket_timeout=2, failover_retries=0)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    client = throttle_client(redis_url)
    yield client
    await client.aclose()


@pytest.mark.parametrize(
    ("per_second", "burst", "limit", "window"),
    [(50, 100, 100, 2), (10, 10, 10, 1), (0.5, 30, 30, 60), (100, 10, 10, 1)],
)
def test_a_rate_and_a_burst_make_a_quota(
    per_second: float, burst: int, limit: int, window: int
) -> None:
    quota = Quota.from_rate("api", per_second, burst)
    assert (quota.limit, quota.window_seconds) == (limit, window)


@pytest.mark.parametrize(
    ("name", "limit", "window"), [("", 1, 1), ("a b", 1, 1), ("a", 0, 1), ("a", 1, 0)]
)
def test_bad_quotas_are_refused(name: str, limit: int, window: int) -> None:
    with pytest.raises(ValueError, match="quota"):
        Quota(name, limit, window)


def test_headers_follow_the_ratelimit_fields_draft() -> None:
    quota = Quota("per-principal", 100, 2)
    assert Budget(quota, allowed=True, remaining=57, reset_seconds=1).headers() == {
        "RateLimit-Policy": '"per-principal";q=100;w=2',
        "RateLimit": '"per-principal";r=57;t=1',
    }
    refused = Budget(quota, allowed=False, remaining=0, reset_seconds=0).headers()
    assert refused["Retry-After"] == "1"  # never "retry after 0 seconds"


async def test_a_caller_gets_its_limit_per_window_and_others_are_apart(
    redis: RedisClient,
) -> None:
    throttle = Throttle(redis, Quota("t", 3, 3600), key_prefix=f"pulse:{uuid.uuid4().hex}:")
    answers = [await throttle.take("alice") for _ in range(5)]
    assert [a.allowed for a in answers if a] == [True, True, True, False, False]
    assert [a.remaining for a in answers if a] == [2, 1, 0, 0, 0]
    assert all(a is not None and 0 < a.reset_seconds <= 3600 for a in answers)
    bob = await throttle.take("bob")
    assert bob is not None
    assert bob.allowed


async def test_every_replica_draws_on_one_budget(redis_url: str) -> None:
    prefix = f"pulse:{uuid.uuid4().hex}:"
    clients = [throttle_client(redis_url) for _ in range(2)]
    replicas = [Throttle(client, Quota("t", 4, 3600), key_prefix=prefix) for client in clients]
    allowed = [
        budget.allowed
        for i in range(6)
        if (budget := await replicas[i % 2].take("carol")) is not None
    ]
    assert allowed == [True, True, True, True, False, False]
    for client in clients:
        await client.aclose()


@pytest.mark.parametrize(("limit", "reservation"), [(3, 1), (100, 5), (200, 10), (10_000, 16)])
def test_a_replica_reserves_a_twentieth_of_the_limit_at_most_16(
    limit: int, reservation: int
) -> None:
    assert Quota("t", limit, 60).reservation == reservation


async def test_a_busy_caller_costs_one_round_trip_per_reservation(
    redis: RedisClient, redis_url: str
) -> None:
    prefix = f"pulse:{uuid.uuid4().hex}:"
    throttle = Throttle(redis, Quota("t", 200, 3600), key_prefix=prefix)
    answers = [await throttle.take("frank") for _ in range(25)]
    assert all(a is not None and a.allowed for a in answers)
    assert [a.remaining for a in answers if a] == list(range(199, 174, -1))
    client = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(f"{prefix}*")]
    assert len(keys) == 1
    assert int(await client.get(keys[0]) or 0) == 30  # three reservations of 10
    assert 3590 < await client.ttl(keys[0]) <= 3600  # the window's count expires with it
    await client.aclose()


async def test_replicas_reserving_together_never_allow_more_than_the_limit(
    redis_url: str,
) -> None:
    prefix = f"pulse:{uuid.uuid4().hex}:"
    clients = [throttle_client(redis_url) for _ in range(3)]
    replicas = [Throttle(client, Quota("t", 40, 3600), key_prefix=prefix) for client in clients]
    answers = await asyncio.gather(*(replicas[i % 3].take("grace") for i in range(90)))
    allowed = sum(1 for a in answers if a is not None and a.allowed)
    assert 40 - 3 * replicas[0].quota.reservation <= allowed <= 40
    refused = [a for a in answers if a is not None and not a.allowed]
    assert all(a.remaining == 0 for a in refused)
    for client in clients:
        await client.aclose()


async def test_an_unreachable_redis_fails_open_counts_and_logs_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    quota = Quota(f"q{uuid.uuid4().hex[:8]}", 1, 1)
    client = throttle_client(f"redis://127.0.0.1:{free_port()}/0")
    throttle = Throttle(client, quota, key_prefix="pulse:x:")
    assert [await throttle.take("dave") for _ in range(3)] == [None, None, None]
    metric = REGISTRY.get_sample_value("pulse_ratelimit_unavailable_total", {"quota": quota.name})
    assert metric == 3
    assert capsys.readouterr().out.count("rate limiter unavailable") == 1
    await client.aclose()


async def test_a_hanging_redis_costs_one_timeout_per_interval_not_one_per_request() -> None:
    # A peer that accepts the connection and never answers: each call waits for its timeout.
    server = await asyncio.start_server(_never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = throttle_client(f"redis://127.0.0.1:{port}/0")
    throttle = Throttle(
        client,
        Quota("hang", 5, 60),
        key_prefix="pulse:h:",
        retry_after_seconds=30,
    )
    try:
        started = time.monotonic()
        assert await throttle.take("eve") is None  # the first waits out the timeout ...
        assert time.monotonic() - started >= 1
        started = time.monotonic()
        assert [await throttle.take("eve") for _ in range(20)] == [None] * 20
        assert time.monotonic() - started < 0.5  # ... the next ones do not ask at all
    finally:
        await client.aclose()
        server.close()


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client gives up
    writer.close()


@pytest.mark.parametrize(
    ("remote", "forwarded", "hops", "caller"),
    [
        ("10.0.0.5", None, 0, "10.0.0.5"),
        ("10.0.0.5", "6.6.6.6", 0, "10.0.0.5"),  # nobody trusted: the header is the caller's
        ("10.0.0.5", "203.0.113.9", 1, "203.0.113.9"),  # one Ingress appended the caller
        ("10.0.0.5", "6.6.6.6, 203.0.113.9", 1, "203.0.113.9"),  # a forged entry is left
        ("10.0.0.5", "6.6.6.6, 203.0.113.9, 10.1.1.1", 2, "203.0.113.9"),
        ("10.0.0.5", "203.0.113.9", 2, "10.0.0.5"),  # fewer entries than proxies: the peer
        ("10.0.0.5", " , ", 1, "10.0.0.5"),
        (None, None, 0, "unknown"),
    ],
)
def test_the_caller_is_found_behind_our_own_proxies_only(
    remote: str | None, forwarded: str | None, hops: int, caller: str
) -> None:
    assert client_address(remote, forwarded, hops) == caller


async def test_replicas_share_one_budget_in_a_redis_cluster(
    redis_cluster: RedisClusterGroup,
) -> None:
    settings = PulseSettings(redis_mode="cluster", redis_url=redis_cluster.seed_url)
    clients = [redis_client(settings, socket_timeout=2, failover_retries=0) for _ in range(3)]
    prefix = f"pulse:{uuid.uuid4().hex}:"
    replicas = [Throttle(c, Quota("t", 40, 3600), key_prefix=prefix) for c in clients]
    try:
        # callers' counts live on different nodes; each caller's budget holds across replicas
        callers = [f"caller-{i}" for i in range(12)]
        answers = {
            caller: await asyncio.gather(*(replicas[i % 3].take(caller) for i in range(60)))
            for caller in callers
        }
        for caller, budgets in answers.items():
            assert all(b is not None for b in budgets), caller  # Redis answered every time
            allowed = sum(1 for b in budgets if b is not None and b.allowed)
            assert 40 - 3 * replicas[0].quota.reservation <= allowed <= 40, caller
        keys = [k async for k in clients[0].scan_iter(match=f"{prefix}*", target_nodes="primaries")]
        assert len(keys) == len(callers)
        masters = {redis_cluster.master_for_key(k.decode()).port for k in keys}
        assert len(masters) > 1  # all 12 on one of 3 masters: about 1 in 180,000
    finally:
        for client in clients:
            await client.aclose()
