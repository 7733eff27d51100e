"""The GCRA script on a real Redis, standalone and as a 3-master cluster: one key per
endpoint, Redis's clock, the wait it answers; timing over real sends is in
test_notify_webhooks.py."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
from redis.asyncio import RedisCluster

from notify_worker.rate_limit import (
    IN_TRANSIT_MARGIN_US,
    RATE_LIMITED,
    EndpointRateLimit,
    interval_us,
    rate_key,
)
from pulse.replication import ScriptRunner

RATE = 5
INTERVAL_US = (1_000_000 + IN_TRANSIT_MARGIN_US) // RATE
ENDPOINTS = [f"ep_{n}" for n in range(12)]  # their keys on every node of a cluster


async def _check(client: aioredis.Redis | RedisCluster, prefix: str) -> None:
    limit = EndpointRateLimit(client, prefix, rate_per_second=RATE)
    runner = ScriptRunner(client)
    for endpoint in ENDPOINTS:
        call = limit.script_call(endpoint)
        (key,) = call.keys
        before = int(time.time() * 1_000_000)  # the local Redis shares this clock
        assert await runner.call(call, idempotent=True) == 0  # the first goes at once
        stored = await client.get(key)  # microseconds, written out whole
        assert stored is not None
        assert before + INTERVAL_US - 1000 <= int(stored) <= before + INTERVAL_US + 1_000_000
        wait = await runner.call(call, idempotent=True)
        assert 0 < wait <= INTERVAL_US  # the next waits for the rest of the interval
        assert 0 < await client.pttl(key) <= INTERVAL_US // 1000 + 1001
    waited = RATE_LIMITED._value.get()
    await limit.turn(ENDPOINTS[0])  # waits out the interval, then takes the turn
    assert RATE_LIMITED._value.get() == waited + 1
    assert await runner.call(limit.script_call(ENDPOINTS[0]), idempotent=True) > 0


async def test_one_turn_per_interval_per_endpoint_on_one_redis(
    async_redis: aioredis.Redis, stack_prefix: str
) -> None:
    await _check(async_redis, f"pulse:{stack_prefix}")


@pytest.mark.timeout(180)
async def test_one_turn_per_interval_per_endpoint_on_a_redis_cluster(
    async_redis_cluster: RedisCluster,
) -> None:
    nodes = [async_redis_cluster.get_node_from_key(rate_key("pulse:", e)) for e in ENDPOINTS]
    assert len({node.name for node in nodes if node is not None}) == 3  # every master
    await _check(async_redis_cluster, "pulse:")


async def test_an_endpoints_own_rate_sets_its_interval(
    async_redis: aioredis.Redis, stack_prefix: str
) -> None:
    """A turn at the endpoint's own rate (here 1/s against a default of 5/s) waits its own,
    longer interval; a turn without one keeps the default's."""
    limit = EndpointRateLimit(async_redis, f"pulse:{stack_prefix}", rate_per_second=RATE)
    runner = ScriptRunner(async_redis)
    own = limit.script_call("ep_own", 1)
    assert own.args == (interval_us(1),)
    assert limit.script_call("ep_default").args == (INTERVAL_US,)
    assert await runner.call(own, idempotent=True) == 0
    wait = await runner.call(own, idempotent=True)
    assert INTERVAL_US < wait <= interval_us(1)
