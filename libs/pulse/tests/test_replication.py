"""Script calls against a real standalone Redis: WAIT, shortfalls, scripts the server lacks."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from pulse.channels import ChannelAppend, ChannelPublisher, CounterIncrement
from pulse.errors import RetryableError
from pulse.events import new_event
from pulse.idempotency import Claim, IdempotencyGuard
from pulse.replication import Replication, ReplicationShortfallError
from pulse_dev.emulators import free_port, start_redis, stop_process
from pulse_dev.testing import stream_entries

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


def shortfalls() -> float:
    return REGISTRY.get_sample_value("pulse_redis_wait_shortfalls_total") or 0.0


@pytest.fixture
def prefix(stack_prefix: str) -> str:
    return f"pulse:{stack_prefix}"


async def test_a_write_no_replica_acknowledged_is_retryable_and_its_retry_changes_nothing(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    """The test Redis has no replica: WAIT 1 can only fall short."""
    waiting = ChannelPublisher(async_redis, prefix, replication=Replication(1, 20))
    event = new_event(type="t", source="/t", data={})
    counters = [CounterIncrement(waiting.keys.counter("totals"), "n", 1)]
    before = shortfalls()

    for _ in range(2):  # the first attempt, and a retry that finds everything applied
        with pytest.raises(ReplicationShortfallError, match="0 of 1") as raised:
            await waiting.append(event, ["payments", "alerts"], counters=counters)
        assert isinstance(raised.value, RetryableError)

    assert shortfalls() == before + 2
    assert await async_redis.xlen(waiting.keys.history("payments")) == 1
    assert await async_redis.xlen(waiting.keys.history("alerts")) == 1
    assert await async_redis.hget(waiting.keys.counter("totals"), "n") == b"1"
    replay = await ChannelPublisher(async_redis, prefix).append(
        event, ["payments", "alerts"], counters=counters
    )
    assert not replay.applied


async def test_a_completion_no_replica_acknowledged_is_retryable_and_kept(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    guard = IdempotencyGuard(async_redis, prefix, "t", replication=Replication(1, 20))
    claim = await guard.acquire("k", b"payload")
    assert isinstance(claim, Claim)
    with pytest.raises(ReplicationShortfallError):
        await guard.complete(claim, b"done")
    again = await guard.acquire("k", b"payload")
    assert not isinstance(again, Claim)
    assert (again.result, again.replayed) == (b"done", True)


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[aioredis.Redis]:
    """A Redis of this test alone: it flushes the server's scripts."""
    port = free_port()
    server = start_redis(port, tmp_path)
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        yield client
    finally:
        await client.aclose()
        stop_process(server)


async def test_scripts_the_server_lost_are_loaded_again_and_each_call_runs_once(
    own_redis: aioredis.Redis,
) -> None:
    publisher = ChannelPublisher(own_redis, "pulse:")
    events = [new_event(type="t", source="/t", data={"n": n}) for n in range(3)]
    counter = [CounterIncrement(publisher.keys.counter("totals"), "n", 1)]
    await publisher.append(events[0], ["payments"], counters=counter)
    await own_redis.script_flush()

    results = await publisher.append_many(
        [ChannelAppend(e, ["payments", "account:a"], counters=counter) for e in events]
    )

    assert [r.applied for r in results] == [True, True, True]
    assert [sorted(r.offsets) for r in results] == [["account:a"], *[["account:a", "payments"]] * 2]
    assert await own_redis.xlen(publisher.keys.history("payments")) == 3
    assert await own_redis.hget(publisher.keys.counter("totals"), "n") == b"3"


async def test_a_call_cancelled_while_waiting_leaves_nothing_for_the_next_one(
    own_redis: aioredis.Redis,
) -> None:
    url = "redis://{host}:{port}/0".format(**own_redis.connection_pool.connection_kwargs)
    one_connection = aioredis.BlockingConnectionPool.from_url(url, max_connections=1)
    client = aioredis.Redis.from_pool(one_connection)  # closes the pool with it
    waiting = ChannelPublisher(client, "pulse:", replication=Replication(1, 10_000))
    plain = ChannelPublisher(client, "pulse:")
    warm, first, second = (new_event(type="t", source="/t", data={"n": n}) for n in range(3))
    await plain.append(warm, ["payments"])  # the script is loaded
    pending = asyncio.create_task(waiting.append(first, ["payments"]))
    await asyncio.sleep(0.5)  # applied; its WAIT blocks: no replica will answer
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending

    try:
        result = await plain.append(second, ["payments"])
        entries = stream_entries(await client.xrange(plain.keys.history("payments")))
    finally:
        await client.aclose()
    assert result.applied
    assert len(entries) == 3
    assert entries[-1][0].decode() == result.offsets["payments"]
