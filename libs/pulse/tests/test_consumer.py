"""The SQS consumer runtime against the real moto server: deletes, retries, DLQ, shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

import pulse.consumer
from pulse.consumer import SqsConsumer, SqsMessage
from pulse.errors import PermanentError, RetryableError
from pulse.metrics import StageMetrics
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import WorkQueue, eventually, queue_depth

METRICS = StageMetrics("consumer-test")


class Queues(WorkQueue):
    def send(self, *bodies: str) -> None:
        for body in bodies:
            self.sqs.send_message(
                QueueUrl=self.url,
                MessageBody=body,
                MessageAttributes={"type": {"DataType": "String", "StringValue": "created"}},
            )

    def depth(self, url: str | None = None) -> int:
        return queue_depth(self.sqs, url or self.url)

    def drain_dlq(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.dlq_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                return out
            for message in got:
                self.sqs.delete_message(
                    QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"]
                )
            out.extend(got)


@pytest.fixture
def queues(stack_settings: PulseSettings, queue_topology: TopologyOutputs) -> Queues:
    return Queues.fraud(stack_settings, queue_topology)


@dataclass
class Running:
    consumer: SqsConsumer
    stopping: asyncio.Event
    task: asyncio.Task[None]

    async def stop(self, within: float = 5.0) -> float:
        """Set stopping; the seconds run() took to return."""
        start = time.monotonic()
        self.stopping.set()
        await asyncio.wait_for(self.task, timeout=within)
        return time.monotonic() - start


@pytest.fixture
async def start(queues: Queues) -> AsyncIterator[Callable[..., Running]]:
    running: list[Running] = []

    def make(handler: Callable[[SqsMessage], Awaitable[None]], **options: Any) -> Running:
        options.setdefault("wait_time_seconds", 1)
        consumer = SqsConsumer(queues.sqs, queues.url, handler, METRICS, **options)
        stopping = asyncio.Event()
        run = Running(consumer, stopping, asyncio.create_task(consumer.run(stopping)))
        running.append(run)
        return run

    yield make
    for run in running:
        if not run.task.done():
            await run.stop(within=30)


def test_the_public_surface_is_pinned() -> None:
    types = {"MessageHandler", "SqsConsumer", "SqsConsumerSettings", "SqsMessage"}
    functions = {"consume", "on_heartbeat", "wait_for_queue_url"}
    assert set(pulse.consumer.__all__) == types | functions
    assert len(pulse.consumer.__all__) == len(types | functions)
    assert all(hasattr(pulse.consumer, name) for name in pulse.consumer.__all__)


async def test_handled_messages_are_deleted(queues: Queues, start: Any) -> None:
    seen: list[bytes] = []

    async def handler(message: SqsMessage) -> None:
        seen.append(message.body)

    run = start(handler)
    queues.send("one", "two", "three")
    await eventually(lambda: len(seen) == 3, timeout=10.0)
    await run.stop()
    assert sorted(seen) == [b"one", b"three", b"two"]
    assert queues.depth() == 0


async def test_a_retryable_failure_leaves_the_message_for_redelivery(
    queues: Queues, start: Any
) -> None:
    attempts: list[int] = []

    async def handler(message: SqsMessage) -> None:
        attempts.append(message.receive_count)
        if len(attempts) == 1:
            raise RetryableError("dependency down", delay=1)

    run = start(handler)
    queues.send("flaky")
    await eventually(lambda: len(attempts) == 2, timeout=10.0)
    await run.stop()
    assert attempts == [1, 2]
    assert queues.depth() == 0
    assert queues.drain_dlq() == []


async def test_an_unexpected_exception_is_retried_not_lost(queues: Queues, start: Any) -> None:
    attempts: list[int] = []

    async def handler(message: SqsMessage) -> None:
        attempts.append(message.receive_count)
        if len(attempts) == 1:
            raise KeyError("bug")

    # The backoff of a first failure is up to 2 s; keep this test short by capping it.
    run = start(handler, max_backoff_seconds=1)
    queues.send("buggy")
    await eventually(lambda: len(attempts) == 2, timeout=10.0)
    await run.stop()
    assert queues.depth() == 0


async def test_a_permanent_failure_goes_to_the_dlq_with_the_reason(
    queues: Queues, start: Any
) -> None:
    handled: list[str] = []

    async def handler(message: SqsMessage) -> None:
        handled.append(message.message_id)
        raise PermanentError("amount is not a number")

    run = start(handler)  # no dlq_url: found from the queue's RedrivePolicy
    queues.send("poison")
    await eventually(lambda: len(handled) == 1, timeout=10.0)
    dead: list[dict[str, Any]] = []

    def arrived() -> bool:
        dead.extend(queues.drain_dlq())
        return bool(dead)

    await eventually(arrived, timeout=10.0)
    await run.stop()
    assert len(handled) == 1
    assert [m["Body"] for m in dead] == ["poison"]
    attributes = dead[0]["MessageAttributes"]
    assert attributes["error"]["StringValue"] == "amount is not a number"
    assert attributes["type"]["StringValue"] == "created"  # the original attributes travel
    assert queues.depth() == 0


async def test_in_flight_messages_are_bounded(queues: Queues, start: Any) -> None:
    active = 0
    peak = 0
    done: list[bytes] = []

    async def handler(message: SqsMessage) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.2)
        active -= 1
        done.append(message.body)

    run = start(handler, max_in_flight=2)
    queues.send(*(f"m{i}" for i in range(5)))
    await eventually(lambda: len(done) == 5, timeout=10.0)
    await run.stop()
    assert peak == 2
    assert queues.depth() == 0


async def test_stop_returns_at_once_while_a_long_poll_is_pending(
    queues: Queues, start: Any
) -> None:
    run = start(lambda _m: asyncio.sleep(0), wait_time_seconds=20)
    await asyncio.sleep(0.5)  # the 20 s long poll is now waiting on an empty queue
    took = await run.stop()
    assert took < 1.0

    # A message the abandoned poll picks up later is handed straight back, not hidden.
    queues.send("late")
    await asyncio.sleep(0.5)
    got = await asyncio.to_thread(
        queues.sqs.receive_message,
        QueueUrl=queues.url,
        WaitTimeSeconds=5,
        AttributeNames=["ApproximateReceiveCount"],
    )
    messages = got.get("Messages", [])
    assert [m["Body"] for m in messages] == ["late"]
    assert messages[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    queues.sqs.delete_message(QueueUrl=queues.url, ReceiptHandle=messages[0]["ReceiptHandle"])


async def test_stop_lets_in_flight_handlers_finish_and_deletes_them(
    queues: Queues, start: Any
) -> None:
    started = asyncio.Event()
    finished: list[bytes] = []

    async def handler(message: SqsMessage) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.append(message.body)

    run = start(handler, shutdown_grace_seconds=5)
    queues.send("slow")
    await asyncio.wait_for(started.wait(), timeout=10)
    await run.stop()
    assert finished == [b"slow"]
    assert queues.depth() == 0


class _CountingSqs:
    """The real SQS client, counting ReceiveMessage calls."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.receives = 0

    def receive_message(self, **kwargs: Any) -> Any:
        self.receives += 1
        return self._sqs.receive_message(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


async def test_a_trickle_is_received_in_batches(queues: Queues) -> None:
    seen: list[bytes] = []

    async def handler(message: SqsMessage) -> None:
        seen.append(message.body)

    counting = _CountingSqs(queues.sqs)
    consumer = SqsConsumer(
        counting, queues.url, handler, METRICS, wait_time_seconds=1, batch_window_seconds=1.0
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    for i in range(20):  # one message every 50 ms
        await asyncio.to_thread(queues.send, f"m{i}")
        await asyncio.sleep(0.05)
    await eventually(lambda: len(seen) == 20, timeout=20)
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert counting.receives <= 10  # without the window: about one receive per message
    assert queues.depth() == 0
