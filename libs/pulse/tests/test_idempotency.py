"""The Redis idempotency guard against a real Redis: once per key, owners, leases, takeover."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio import RedisCluster

from pulse.consumer import SqsConsumer, SqsMessage
from pulse.idempotency import (
    Claim,
    IdempotencyConflictError,
    IdempotencyGuard,
    InProgressError,
    LeaseLostError,
    Outcome,
)
from pulse.metrics import StageMetrics
from pulse.replication import Replication
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import WorkQueue, eventually


@pytest.fixture
def prefix() -> str:
    return f"pulse:t{uuid.uuid4().hex[:10]}:"


def _guard(redis: aioredis.Redis, prefix: str, **options: Any) -> IdempotencyGuard:
    return IdempotencyGuard(redis, prefix, "test", **options)


async def test_work_runs_once_and_a_replay_returns_its_result(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    guard = _guard(async_redis, prefix)
    runs: list[int] = []

    async def work() -> bytes:
        runs.append(1)
        return b"decided:APPROVED"

    first = await guard.run("evt-1", b"payload", work)
    second = await guard.run("evt-1", b"payload", work)
    assert first == Outcome(b"decided:APPROVED", replayed=False)
    assert second == Outcome(b"decided:APPROVED", replayed=True)
    assert runs == [1]
    stored = await async_redis.hgetall(guard.key("evt-1"))
    assert stored[b"state"] == b"completed"
    assert 0 < await async_redis.ttl(guard.key("evt-1")) <= 7 * 24 * 3600


async def test_the_same_key_with_another_payload_is_refused(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    guard = _guard(async_redis, prefix)

    async def work() -> bytes:
        return b"ok"

    await guard.run("evt-1", b"amount=10", work)
    with pytest.raises(IdempotencyConflictError):
        await guard.run("evt-1", b"amount=99", work)


async def test_two_workers_racing_on_one_key_run_it_once(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    guard = _guard(async_redis, prefix, lease_seconds=5)
    runs: list[str] = []

    async def work(name: str) -> bytes:
        runs.append(name)
        await asyncio.sleep(0.2)
        return name.encode()

    results = await asyncio.gather(
        guard.run("evt-1", b"p", lambda: work("a")),
        guard.run("evt-1", b"p", lambda: work("b")),
        return_exceptions=True,
    )
    assert len(runs) == 1
    busy = [r for r in results if isinstance(r, InProgressError)]
    assert len(busy) == 1
    assert busy[0].delay is not None
    assert 4 < busy[0].delay <= 5  # retry when the winner's lease could have run out
    assert Outcome(runs[0].encode(), replayed=False) in results


async def test_a_paused_worker_whose_lease_was_taken_over_cannot_overwrite(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    guard = _guard(async_redis, prefix, lease_seconds=0.3)
    slow = await guard.acquire("evt-1", b"p")
    assert isinstance(slow, Claim)
    await asyncio.sleep(0.5)  # paused (a GC pause, a stalled network) past its lease

    async def fast_work() -> bytes:
        return b"from the new owner"

    taken = await guard.run("evt-1", b"p", fast_work)
    assert taken.replayed is False

    with pytest.raises(LeaseLostError):
        await guard.complete(slow, b"from the slow worker")
    assert await guard.release(slow) is False
    assert await guard.renew(slow) is False
    stored = await async_redis.hgetall(guard.key("evt-1"))
    assert stored[b"result"] == b"from the new owner"
    assert stored[b"state"] == b"completed"


async def test_a_wrong_owner_cannot_complete_or_release(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    guard = _guard(async_redis, prefix)
    claim = await guard.acquire("evt-1", b"p")
    assert isinstance(claim, Claim)
    impostor = Claim(claim.key, "not-the-owner")
    with pytest.raises(LeaseLostError):
        await guard.complete(impostor, b"forged")
    assert await guard.release(impostor) is False
    assert (await async_redis.hgetall(guard.key("evt-1")))[b"state"] == b"in_progress"
    await guard.complete(claim, b"real")
    assert (await async_redis.hgetall(guard.key("evt-1")))[b"result"] == b"real"


async def test_failed_work_releases_the_key_for_a_retry(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    guard = _guard(async_redis, prefix)
    attempts: list[int] = []

    async def flaky() -> bytes:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("dependency down")
        return b"ok"

    with pytest.raises(RuntimeError):
        await guard.run("evt-1", b"p", flaky)
    assert await async_redis.exists(guard.key("evt-1")) == 0
    assert (await guard.run("evt-1", b"p", flaky)).result == b"ok"
    assert len(attempts) == 2


@pytest.fixture
def fraud_queue(stack_settings: PulseSettings, queue_topology: TopologyOutputs) -> WorkQueue:
    return WorkQueue.fraud(stack_settings, queue_topology)


@asynccontextmanager
async def _consuming(
    sqs: Any, url: str, handler: Callable[[SqsMessage], Awaitable[None]], **options: Any
) -> AsyncIterator[None]:
    """A consumer of ``url`` runs ``handler`` while the block runs; it is stopped after."""
    consumer = SqsConsumer(
        sqs, url, handler, StageMetrics("idempotency-test"), wait_time_seconds=1, **options
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    try:
        yield
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)


async def test_the_consumer_heartbeat_renews_the_lease(
    async_redis: aioredis.Redis, prefix: str, fraud_queue: WorkQueue
) -> None:
    sqs, url = fraud_queue.sqs, fraud_queue.url
    guard = _guard(async_redis, prefix, lease_seconds=1)
    started = asyncio.Event()
    done: list[Outcome] = []

    async def slow_work() -> bytes:
        started.set()
        await asyncio.sleep(2.5)  # 2.5 leases
        return b"done"

    async def handler(message: SqsMessage) -> None:
        done.append(await guard.run(message.message_id, message.body, slow_work))

    async with _consuming(sqs, url, handler, visibility_timeout=5, heartbeat_seconds=0.3):
        sent = await asyncio.to_thread(sqs.send_message, QueueUrl=url, MessageBody="slow")
        await asyncio.wait_for(started.wait(), 10)
        for _ in range(4):  # past the 1 s lease, the key is still held by the live worker
            await asyncio.sleep(0.5)
            with pytest.raises(InProgressError):
                await guard.acquire(sent["MessageId"], b"slow")
        await eventually(lambda: done, timeout=5)
    assert done == [Outcome(b"done", replayed=False)]


async def test_a_handler_abandoned_at_shutdown_releases_its_key(
    async_redis: aioredis.Redis, prefix: str, fraud_queue: WorkQueue
) -> None:
    sqs, url = fraud_queue.sqs, fraud_queue.url
    guard = _guard(async_redis, prefix, lease_seconds=30)
    started = asyncio.Event()
    keys: list[str] = []

    async def endless() -> bytes:
        started.set()
        await asyncio.sleep(60)
        return b"never"

    async def handler(message: SqsMessage) -> None:
        keys.append(guard.key(message.message_id))
        await guard.run(message.message_id, message.body, endless)

    async with _consuming(sqs, url, handler, shutdown_grace_seconds=0.3):
        await asyncio.to_thread(sqs.send_message, QueueUrl=url, MessageBody="stuck")
        await asyncio.wait_for(started.wait(), 10)
        assert await async_redis.exists(keys[0]) == 1
    # Released at once, not after the 30 s lease: the next worker can take it right away.
    assert await async_redis.exists(keys[0]) == 0
    got = await asyncio.to_thread(sqs.receive_message, QueueUrl=url, WaitTimeSeconds=1)
    assert [m["Body"] for m in got.get("Messages", [])] == ["stuck"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got["Messages"][0]["ReceiptHandle"])


async def test_on_a_cluster_a_completion_replicated_by_wait_is_replayed(
    async_redis_cluster: RedisCluster, prefix: str
) -> None:
    guard = IdempotencyGuard(async_redis_cluster, prefix, "test", replication=Replication(1, 2000))
    runs: list[str] = []

    async def work() -> bytes:
        runs.append(key)
        return f"done:{key}".encode()

    for key in (f"evt-{n}" for n in range(12)):  # keys on every node
        assert await guard.run(key, b"p", work) == Outcome(f"done:{key}".encode(), replayed=False)
        assert await guard.run(key, b"p", work) == Outcome(f"done:{key}".encode(), replayed=True)
    assert len(runs) == 12
