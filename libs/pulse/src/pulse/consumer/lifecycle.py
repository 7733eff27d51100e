"""A worker's consumer in its service's lifecycle: readiness, waiting for the queue, stopping."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pulse.consumer.runtime import SqsConsumer
from pulse.health import Throughput
from pulse.service import retry_until_found

if TYPE_CHECKING:
    from pulse.consumer.message import MessageHandler
    from pulse.consumer.settings import SqsConsumerSettings
    from pulse.health import HealthReporter
    from pulse.metrics import StageMetrics
    from pulse.service import Lifecycle

__all__ = ["consume", "wait_for_queue_url"]


async def wait_for_queue_url(
    sqs_client: Any, queue_name: str, stopping: asyncio.Event, *, retry_seconds: float = 2.0
) -> str | None:
    """The URL of ``queue_name``, retrying until it exists; None if ``stopping`` is set first."""

    def find() -> str:
        return str(sqs_client.get_queue_url(QueueName=queue_name)["QueueUrl"])

    return await retry_until_found(
        f"queue {queue_name}", find, stopping, retry_seconds=retry_seconds
    )


async def consume(
    lifecycle: Lifecycle,
    sqs_client: Any,
    queue_name: str,
    handler: MessageHandler,
    *,
    stage_metrics: StageMetrics,
    settings: SqsConsumerSettings,
    check_name: str = "sqs",
    health: HealthReporter | None = None,
) -> None:
    """Run a :class:`SqsConsumer` on ``queue_name`` until ``lifecycle.stopping`` is set.

    Adds a readiness check named ``check_name`` (``GetQueueAttributes`` on the queue) and
    waits for the queue to exist before consuming, so a worker started before its topology
    waits for it. With ``health``, the queue, its dead-letter queue and the stage's
    throughput are in its reports once the queue is found.
    """
    found: list[str] = []

    async def check_queue() -> None:
        url = found[0] if found else None
        if url is None:
            url = str(
                (await asyncio.to_thread(sqs_client.get_queue_url, QueueName=queue_name))[
                    "QueueUrl"
                ]
            )
        await asyncio.to_thread(
            sqs_client.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"]
        )

    lifecycle.add_check(check_name, check_queue)
    url = await wait_for_queue_url(sqs_client, queue_name, lifecycle.stopping)
    if url is None:
        return
    found.append(url)
    consumer = SqsConsumer(
        sqs_client,
        url,
        handler,
        stage_metrics,
        max_in_flight=settings.sqs_max_in_flight,
        wait_time_seconds=settings.sqs_wait_time_seconds,
        visibility_timeout=settings.sqs_visibility_timeout,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        max_backoff_seconds=settings.sqs_max_backoff_seconds,
        batch_window_seconds=settings.sqs_batch_window_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        depth_poll_seconds=settings.sqs_depth_poll_seconds,
    )
    if health is not None:
        health.add(consumer.health, Throughput(stage_metrics))
    await consumer.run(lifecycle.stopping)
