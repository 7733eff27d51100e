"""Queues in the health report: how old the oldest message is (pure), and what a consumer
and a queue it does not consume read, against the real moto server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pulse.consumer import SqsConsumer, SqsMessage
from pulse.consumer.health import (
    UnconsumedQueueHealth,
    consumed_oldest_age,
    sampled_oldest_age,
)
from pulse.metrics import StageMetrics
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse_dev.testing import WorkQueue, eventually

METRICS = StageMetrics("consumer-health-test")


@pytest.mark.parametrize(
    ("depth", "in_flight", "ages", "expected"),
    [
        (0, 0, [4.0], 0.0),  # empty now: nothing is waiting, however old what was taken
        (3, 0, [0.5, 2.0], 2.0),
        (0, 2, [1.5], 1.5),  # only in flight: still in the queue until deleted
        (3, 1, [], None),  # messages there, none received or held here: unknown
    ],
)
def test_a_consumed_queue_is_as_old_as_the_oldest_message_taken_or_held(
    depth: int, in_flight: int, ages: list[float], expected: float | None
) -> None:
    assert consumed_oldest_age(depth, in_flight, ages) == expected


@pytest.mark.parametrize(
    ("depth", "in_flight", "sent_at", "expected"),
    [
        (0, 0, [], 0.0),
        (5, 0, [990.0, 940.0, 999.0], 60.0),  # the oldest of the sample
        (5, 0, [], None),  # the peek came back empty
        (1, 0, [1003.0], 0.0),  # a clock ahead of ours: not a negative age
    ],
)
def test_a_sampled_queue_is_as_old_as_the_oldest_message_sampled(
    depth: int, in_flight: int, sent_at: list[float], expected: float | None
) -> None:
    assert sampled_oldest_age(depth, in_flight, sent_at, 1000.0) == expected


@pytest.fixture
def queue(stack_settings: PulseSettings, queue_topology: TopologyOutputs) -> WorkQueue:
    return WorkQueue.fraud(stack_settings, queue_topology)


def _counts(queue: WorkQueue, url: str) -> tuple[int, int]:
    attributes = queue.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    values = attributes["Attributes"]
    return (
        int(values["ApproximateNumberOfMessages"]),
        int(values["ApproximateNumberOfMessagesNotVisible"]),
    )


def _by_role(reading: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["role"]: q for q in reading["queues"]}


@pytest.fixture
async def held(queue: WorkQueue) -> AsyncIterator[tuple[SqsConsumer, asyncio.Event, list[str]]]:
    """A running consumer whose handler holds each message until ``release`` is set."""
    release = asyncio.Event()
    seen: list[str] = []

    async def handler(message: SqsMessage) -> None:
        seen.append(message.body.decode())
        await release.wait()

    consumer = SqsConsumer(queue.sqs, queue.url, handler, METRICS, wait_time_seconds=1)
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    yield consumer, release, seen
    release.set()
    stopping.set()
    await asyncio.wait_for(task, 30)


async def test_five_dead_letters_read_as_depth_five_with_an_age_and_stay_there(
    queue: WorkQueue, held: tuple[SqsConsumer, asyncio.Event, list[str]]
) -> None:
    consumer, _release, _seen = held
    for n in range(5):
        queue.sqs.send_message(QueueUrl=queue.dlq_url, MessageBody=f"dead-{n}")
    await asyncio.sleep(0.05)  # SentTimestamp is in milliseconds

    dlq = _by_role(await consumer.health.read(1.0))["dlq"]
    assert dlq["name"] == queue.dlq_url.rsplit("/", 1)[-1]
    assert (dlq["depth"], dlq["in_flight"]) == (5, 0)
    assert dlq["oldest_age_s"] > 0
    # The peek left every message visible where it was.
    assert _counts(queue, queue.dlq_url) == (5, 0)
    again = _by_role(await consumer.health.read(1.0))["dlq"]
    assert again["depth"] == 5
    assert again["oldest_age_s"] >= dlq["oldest_age_s"]


async def test_a_consumer_reports_the_messages_it_holds_then_an_empty_queue(
    queue: WorkQueue, held: tuple[SqsConsumer, asyncio.Event, list[str]]
) -> None:
    consumer, release, seen = held
    empty = _by_role(await consumer.health.read(1.0))
    assert empty["queue"] == {
        "name": queue.url.rsplit("/", 1)[-1],
        "role": "queue",
        "depth": 0,
        "in_flight": 0,
        "oldest_age_s": 0.0,
    }
    assert empty["dlq"]["depth"] == 0

    queue.sqs.send_message(QueueUrl=queue.url, MessageBody="slow")
    await eventually(lambda: seen == ["slow"], timeout=10.0)
    await asyncio.sleep(0.2)
    holding = _by_role(await consumer.health.read(1.0))["queue"]
    assert holding["in_flight"] == 1
    assert holding["oldest_age_s"] >= 0.2  # held, so still in the queue, and aging

    release.set()
    await eventually(lambda: _counts(queue, queue.url) == (0, 0), timeout=10.0)
    done = _by_role(await consumer.health.read(1.0))["queue"]
    assert (done["depth"], done["in_flight"], done["oldest_age_s"]) == (0, 0, 0.0)


async def test_a_queue_nobody_here_consumes_is_never_received_from(
    queue: WorkQueue,
) -> None:
    # The fraud queue moves a message to its DLQ after five receives: reading its health
    # must not count as one.
    probe = UnconsumedQueueHealth(queue.sqs, queue.url, "failures")
    queue.sqs.send_message(QueueUrl=queue.url, MessageBody="set aside")
    for _ in range(6):
        reading = _by_role(await probe.read(1.0))
        assert reading["failures"]["depth"] == 1
        assert reading["failures"]["oldest_age_s"] is None  # not measured: it would count
        assert reading["dlq"]["depth"] == 0
    got = queue.sqs.receive_message(
        QueueUrl=queue.url, AttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=1
    )["Messages"]
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in got] == ["1"]  # this one


async def test_a_fifo_dead_letter_queue_is_sampled_too(
    stack_settings: PulseSettings, queue_topology: TopologyOutputs
) -> None:
    hooks = WebhookNames.from_prefix(stack_settings.resource_prefix)
    fifo = WorkQueue(
        WorkQueue.fraud(stack_settings, queue_topology).sqs,
        queue_topology.queue_urls[hooks.queue],
        queue_topology.queue_urls[hooks.dlq],
    )
    for n in range(3):
        fifo.sqs.send_message(
            QueueUrl=fifo.dlq_url,
            MessageBody=f"delivery-{n}",
            MessageGroupId=f"endpoint-{n % 2}",
            MessageDeduplicationId=f"d-{n}",
        )
    await asyncio.sleep(0.05)
    dlq = _by_role(await UnconsumedQueueHealth(fifo.sqs, fifo.url, "queue").read(1.0))["dlq"]
    assert (dlq["name"], dlq["depth"]) == (hooks.dlq, 3)
    assert dlq["oldest_age_s"] > 0
    assert _counts(fifo, fifo.dlq_url) == (3, 0)
