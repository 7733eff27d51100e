"""Wiring: clients, the ops HTTP app (/healthz, /readyz, /metrics) and the processor."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

from pulse.channels import ChannelPublisher
from pulse.clients import aws_client, redis_client
from pulse.errors import RetryableError
from pulse.logging import get_logger
from pulse.service import (
    Lifecycle,
    redis_check,
    retry_until_found,
    serving_ops,
    table_check,
)
from stream_processor.effects import AuditTrail, BatchEffects, TopicPublisher
from stream_processor.failures import FAILURE_QUEUE_SUFFIX, FailureQueue
from stream_processor.leases import LeaseTable
from stream_processor.metrics import ITERATOR_AGE
from stream_processor.processor import StreamProcessor
from stream_processor.settings import StreamProcessorSettings, load_stream_processor_settings
from stream_processor.stats import StatsKeys
from stream_processor.stats_publisher import StatsPublisher

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["failure_queue_name", "find_topic_arn", "serve"]


def _log() -> Any:
    return get_logger("stream_processor.server")


def failure_queue_name(settings: StreamProcessorSettings) -> str:
    """``{resource prefix}stream-failures`` (to move into the shared topology)."""
    return f"{settings.resource_prefix}{FAILURE_QUEUE_SUFFIX}"


def find_topic_arn(sns: Any, name: str) -> str:
    """The ARN of the topic called ``name``; :class:`RetryableError` while it does not exist."""
    for page in sns.get_paginator("list_topics").paginate():
        for topic in page.get("Topics", []):
            arn = str(topic["TopicArn"])
            if arn.rsplit(":", 1)[-1] == name:
                return arn
    raise RetryableError(f"SNS topic {name} not found", delay=5.0)


async def serve(lifecycle: Lifecycle) -> None:
    """Run the processor until SIGTERM; the batches in flight finish before returning."""
    settings = lifecycle.settings
    if not isinstance(settings, StreamProcessorSettings):
        settings = load_stream_processor_settings()
    names = settings.names
    ddb = aws_client("dynamodb", settings)
    streams = aws_client("dynamodbstreams", settings)
    sns = aws_client("sns", settings)
    sqs = aws_client("sqs", settings)
    redis = redis_client(settings)

    lifecycle.add_check("dynamodb", table_check(ddb, names.payments_table))
    lifecycle.add_check("redis", redis_check(redis))
    try:
        async with serving_ops(lifecycle):
            await _process(
                settings, lifecycle, ddb=ddb, streams=streams, sns=sns, sqs=sqs, redis=redis
            )
    finally:
        await redis.aclose()


async def _process(
    settings: StreamProcessorSettings,
    lifecycle: Lifecycle,
    *,
    ddb: Any,
    streams: Any,
    sns: Any,
    sqs: Any,
    redis: aioredis.Redis,
) -> None:
    names = settings.names
    topic_arn = await retry_until_found(
        "topic", partial(find_topic_arn, sns, names.topic), lifecycle.stopping
    )
    failures = FailureQueue(sqs, failure_queue_name(settings))
    if (
        topic_arn is None
        or await retry_until_found("failure queue", failures.ensure, lifecycle.stopping) is None
    ):
        return
    channels = ChannelPublisher(redis, settings.redis_prefix)
    stats_keys = StatsKeys(settings.redis_prefix)
    stats = StatsPublisher(redis, channels, stats_keys, interval=settings.stats_interval_seconds)
    effects = BatchEffects(
        TopicPublisher(sns, topic_arn, max_attempts=settings.sns_max_attempts),
        channels,
        AuditTrail(ddb, names.events_table, ttl_days=settings.audit_ttl_days),
        stats=stats_keys,
        on_counted=stats.changed,
    )
    processor = StreamProcessor(
        settings,
        ddb=ddb,
        streams=streams,
        leases=LeaseTable(ddb, names.leases_table, settings.worker_id),
        effects=effects,
        stopping=lifecycle.stopping,
        failures=failures,
    )
    ITERATOR_AGE.set_function(processor.ages.max)
    _log().info("stream processor started", worker_id=settings.worker_id, topic=topic_arn)
    stats_task = asyncio.create_task(stats.run(lifecycle.stopping), name="stats")
    try:
        await processor.run()
    finally:
        lifecycle.stopping.set()
        await stats_task
