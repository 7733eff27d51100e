"""The consumer's visibility heartbeat and depth gauges, against the real moto server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from pulse.consumer import SqsConsumer, SqsConsumerSettings, SqsMessage, on_heartbeat
from pulse.errors import ConfigurationError, PermanentError
from pulse.metrics import StageMetrics
from pulse.settings import PulseSettings, load_settings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import WorkQueue, eventually

METRICS = StageMetrics("heartbeat-test")


class Queue(WorkQueue):
    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=body)

    def receive_now(self) -> list[dict[str, Any]]:
        got = self.sqs.receive_message(QueueUrl=self.url, WaitTimeSeconds=0, VisibilityTimeout=30)
        return list(got.get("Messages", []))


@pytest.fixture
def queue(stack_settings: PulseSettings, queue_topology: TopologyOutputs) -> Queue:
    return Queue.fraud(stack_settings, queue_topology)


@pytest.fixture
async def consume(queue: Queue) -> AsyncIterator[Callable[..., SqsConsumer]]:
    tasks: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(handler: Callable[[SqsMessage], Awaitable[None]], **options: Any) -> SqsConsumer:
        options.setdefault("wait_time_seconds", 1)
        consumer = SqsConsumer(queue.sqs, queue.url, handler, METRICS, **options)
        stopping = asyncio.Event()
        tasks.append((stopping, asyncio.create_task(consumer.run(stopping))))
        return consumer

    yield start
    for stopping, task in tasks:
        stopping.set()
        await asyncio.wait_for(task, 30)


def _sample(name: str, queue: str) -> float:
    return REGISTRY.get_sample_value(name, {"queue": queue}) or 0.0


async def test_a_slow_handler_keeps_its_message_hidden(queue: Queue, consume: Any) -> None:
    started = asyncio.Event()
    handled: list[bytes] = []

    async def slow(message: SqsMessage) -> None:
        started.set()
        await asyncio.sleep(3.5)  # well past the 2 s visibility timeout
        handled.append(message.body)

    extensions = _sample("pulse_sqs_visibility_extensions_total", queue.name)
    consume(slow, visibility_timeout=2, heartbeat_seconds=0.5)
    queue.send("slow")
    await asyncio.wait_for(started.wait(), 10)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # another consumer never sees it meanwhile
        assert await asyncio.to_thread(queue.receive_now) == []
        await asyncio.sleep(0.3)
    await eventually(lambda: handled == [b"slow"], timeout=10.0)
    assert _sample("pulse_sqs_visibility_extensions_total", queue.name) >= extensions + 3


async def test_a_refused_extension_stops_the_handler(queue: Queue, consume: Any) -> None:
    held: list[SqsMessage] = []
    outcome: list[str] = []

    async def handler(message: SqsMessage) -> None:
        held.append(message)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("finished")

    lost = _sample("pulse_sqs_visibility_lost_total", queue.name)
    consume(handler, visibility_timeout=5, heartbeat_seconds=0.3)
    queue.send("contested")
    await eventually(lambda: bool(held), timeout=10.0)
    # The message slips away (as after a long pause): another consumer takes and finishes it.
    queue.sqs.change_message_visibility(
        QueueUrl=queue.url, ReceiptHandle=held[0].receipt_handle, VisibilityTimeout=0
    )
    other = await asyncio.to_thread(queue.receive_now)
    assert [m["Body"] for m in other] == ["contested"]
    queue.sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=other[0]["ReceiptHandle"])
    await eventually(lambda: outcome == ["cancelled"], timeout=5)
    assert _sample("pulse_sqs_visibility_lost_total", queue.name) == lost + 1


async def test_a_lost_lease_stops_the_handler_and_leaves_the_message(
    queue: Queue, consume: Any
) -> None:
    outcome: list[str] = []
    beats: list[float] = []

    async def renew() -> bool:
        beats.append(time.monotonic())
        return len(beats) < 2  # the second renewal finds the lease gone

    async def handler(_message: SqsMessage) -> None:
        assert on_heartbeat(renew) is not None
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    assert on_heartbeat(renew) is None  # outside a handler: nothing to attach to
    consume(handler, visibility_timeout=3, heartbeat_seconds=0.3)
    queue.send("leased")
    await eventually(lambda: outcome == ["cancelled"], timeout=5)
    assert len(beats) == 2
    # Not deleted, not released: it reappears when its visibility runs out, for a new owner.
    assert await asyncio.to_thread(queue.receive_now) == []
    await asyncio.sleep(3.2)
    again = await asyncio.to_thread(queue.receive_now)
    assert [m["Body"] for m in again] == ["leased"]
    queue.sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=again[0]["ReceiptHandle"])


async def test_dlq_depth_is_a_gauge(queue: Queue, consume: Any) -> None:
    async def poison(_message: SqsMessage) -> None:
        raise PermanentError("bad")

    consume(poison, depth_poll_seconds=0.2)
    queue.send("p1")
    queue.send("p2")
    await eventually(lambda: _sample("pulse_sqs_dlq_depth", queue.name) == 2, timeout=10.0)
    await eventually(lambda: _sample("pulse_sqs_queue_depth", queue.name) == 0, timeout=10.0)


def test_a_heartbeat_must_beat_within_the_visibility_timeout(queue: Queue) -> None:
    async def handler(_message: SqsMessage) -> None:
        return None

    with pytest.raises(ValueError, match="heartbeat"):
        SqsConsumer(
            queue.sqs, queue.url, handler, METRICS, visibility_timeout=3, heartbeat_seconds=3
        )


def test_settings_refuse_a_heartbeat_slower_than_the_visibility_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_SQS_VISIBILITY_TIMEOUT", "10")
    monkeypatch.setenv("PULSE_SQS_HEARTBEAT_SECONDS", "12")
    with pytest.raises(ConfigurationError, match="sqs_heartbeat_seconds must be below"):
        load_settings(SqsConsumerSettings)
    monkeypatch.setenv("PULSE_SQS_HEARTBEAT_SECONDS", "4")
    assert load_settings(SqsConsumerSettings).sqs_heartbeat_seconds == 4


def test_the_default_heartbeat_beats_within_the_visibility_timeout_and_the_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_SQS_VISIBILITY_TIMEOUT", "300")
    monkeypatch.setenv("PULSE_IDEMPOTENCY_LEASE_SECONDS", "60")
    assert load_settings(SqsConsumerSettings).heartbeat_seconds == 20
    monkeypatch.setenv("PULSE_SQS_HEARTBEAT_SECONDS", "90")
    with pytest.raises(ConfigurationError, match="idempotency_lease_seconds must be above"):
        load_settings(SqsConsumerSettings)
