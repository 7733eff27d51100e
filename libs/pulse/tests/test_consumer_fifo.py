"""The consumer on a FIFO queue (the webhook deliveries'): order per group survives retries."""

from __future__ import annotations

import asyncio
from typing import Any

from pulse.clients import aws_client
from pulse.consumer import SqsConsumer, SqsMessage
from pulse.errors import PermanentError, RetryableError
from pulse.metrics import StageMetrics
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse_dev.testing import eventually


async def test_each_group_is_handled_in_order_across_a_retry(
    stack_settings: PulseSettings,
    queue_topology: TopologyOutputs,
) -> None:
    sqs = aws_client("sqs", stack_settings)
    hooks = WebhookNames.from_prefix(stack_settings.resource_prefix)
    url, dlq_url = queue_topology.queue_urls[hooks.queue], queue_topology.queue_urls[hooks.dlq]
    entries = [
        {
            "Id": f"{g}{i}",
            "MessageBody": f"{g}{i}",
            "MessageGroupId": g,
            "MessageDeduplicationId": f"{g}{i}",
        }
        for i in range(1, 4)
        for g in ("a", "b")
    ]
    entries.append(
        {"Id": "c1", "MessageBody": "poison", "MessageGroupId": "c", "MessageDeduplicationId": "c1"}
    )
    sqs.send_message_batch(QueueUrl=url, Entries=entries)
    done: list[str] = []
    failed_once: set[str] = set()

    async def handler(message: SqsMessage) -> None:
        body = message.body.decode()
        if body == "poison":
            raise PermanentError("cannot deliver")
        await asyncio.sleep(0.05)
        if body == "a2" and body not in failed_once:
            failed_once.add(body)
            raise RetryableError("receiver down", delay=1)
        done.append(body)

    consumer = SqsConsumer(sqs, url, handler, StageMetrics("fifo-test"), wait_time_seconds=1)
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    await eventually(lambda: len(done) == 6, timeout=15.0)
    dead: list[dict[str, Any]] = []

    def arrived() -> bool:
        got = sqs.receive_message(
            QueueUrl=dlq_url, AttributeNames=["All"], MessageAttributeNames=["All"]
        )
        dead.extend(got.get("Messages", []))
        return bool(dead)

    await eventually(arrived, timeout=15.0)
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert [b for b in done if b[0] == "a"] == ["a1", "a2", "a3"]
    assert [b for b in done if b[0] == "b"] == ["b1", "b2", "b3"]
    assert dead[0]["Body"] == "poison"
    assert dead[0]["Attributes"]["MessageGroupId"] == "c"
    assert dead[0]["MessageAttributes"]["error"]["StringValue"] == "cannot deliver"
