"""Depth gauges: ``pulse_sqs_queue_depth{queue}`` and ``pulse_sqs_dlq_depth{queue}``, polled."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pulse.consumer.metrics import DLQ_DEPTH, QUEUE_DEPTH
from pulse.logging import get_logger

if TYPE_CHECKING:
    from pulse.consumer.dead_letter import DeadLetters

__all__ = ["poll_depths", "queue_depth"]

log = get_logger("pulse.consumer")


async def queue_depth(sqs_client: Any, queue_url: str) -> int:
    """Messages in the queue: visible plus in flight."""
    response = await asyncio.to_thread(
        sqs_client.get_queue_attributes,
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response.get("Attributes") or {}
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


async def poll_depths(
    sqs_client: Any, queue_url: str, queue_name: str, dead_letters: DeadLetters, every: float
) -> None:
    """Every ``every`` seconds, read the queue's and its dead-letter queue's depths into the
    gauges, until cancelled; a failed read is logged and tried again on the next poll."""
    queue_gauge = QUEUE_DEPTH.labels(queue_name)
    dlq_gauge = DLQ_DEPTH.labels(queue_name)
    while True:
        try:
            queue_gauge.set(await queue_depth(sqs_client, queue_url))
            dlq = await dead_letters.url()
            if dlq is not None:
                dlq_gauge.set(await queue_depth(sqs_client, dlq))
        except Exception as exc:
            log.warning("could not read queue depth", error=str(exc))
        await asyncio.sleep(every)
