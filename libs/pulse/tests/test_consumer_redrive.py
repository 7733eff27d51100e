"""A poison message is dead-lettered by the redrive policy while others keep flowing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from pulse.clients import aws_client
from pulse.consumer import SqsConsumer, SqsMessage
from pulse.errors import RetryableError
from pulse.metrics import StageMetrics
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, apply_topology, pulse_spec


async def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_poison_message_goes_to_the_dlq_after_max_receive_count(
    stack_settings: PulseSettings,
) -> None:
    topology = _queues_only(stack_settings)
    names = stack_settings.names
    sqs = aws_client("sqs", stack_settings)
    url, dlq_url = topology.queue_urls[names.fraud_queue], topology.queue_urls[names.fraud_dlq]
    poison_attempts: list[int] = []
    handled: list[str] = []

    async def handler(message: SqsMessage) -> None:
        body = message.body.decode()
        if body == "poison":
            poison_attempts.append(message.receive_count)
            raise RetryableError("always fails", delay=0)
        handled.append(body)

    consumer = SqsConsumer(sqs, url, handler, StageMetrics("redrive-test"), wait_time_seconds=1)
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    for i in range(10):
        await asyncio.to_thread(sqs.send_message, QueueUrl=url, MessageBody=f"good-{i}")
        await asyncio.sleep(0.05)
    dead: list[str] = []

    def arrived() -> bool:
        got = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10)
        dead.extend(m["Body"] for m in got.get("Messages", []))
        return bool(dead)

    await _until(arrived)
    await _until(lambda: len(handled) == 10)
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert dead == ["poison"]
    assert poison_attempts == [1, 2, 3, 4, 5]  # maxReceiveCount of the topology
    assert sorted(handled) == sorted(f"good-{i}" for i in range(10))


def _queues_only(settings: PulseSettings) -> TopologyOutputs:
    """The topic and queues without the tables: the emulator's table list stays short."""
    return apply_topology(settings, replace(pulse_spec(settings.names), tables=[]))
