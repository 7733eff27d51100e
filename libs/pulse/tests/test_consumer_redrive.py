"""A poison message is dead-lettered on the last receive its queue allows, with its error,
while others keep flowing."""

from __future__ import annotations

import asyncio

from pulse.consumer import SqsConsumer, SqsMessage
from pulse.errors import RetryableError
from pulse.metrics import StageMetrics
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import WorkQueue, eventually


async def test_a_poison_message_goes_to_the_dlq_after_max_receive_count(
    stack_settings: PulseSettings,
    queue_topology: TopologyOutputs,
) -> None:
    queue = WorkQueue.fraud(stack_settings, queue_topology)
    sqs, url, dlq_url = queue.sqs, queue.url, queue.dlq_url
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
    errors: list[str] = []

    def arrived() -> bool:
        got = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        for m in got.get("Messages", []):
            dead.append(m["Body"])
            errors.append(m["MessageAttributes"]["error"]["StringValue"])
        return bool(dead)

    await eventually(arrived)
    await eventually(lambda: len(handled) == 10)
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert dead == ["poison"]
    assert errors == ["always fails (receive 5, the last the queue allows)"]
    assert poison_attempts == [1, 2, 3, 4, 5]  # maxReceiveCount of the topology
    assert sorted(handled) == sorted(f"good-{i}" for i in range(10))
