"""Wiring: clients, the ops HTTP app (/healthz, /readyz, /metrics) and the processor."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pulse.channels import ChannelPublisher
from pulse.clients import aws_client, redis_client
from pulse.errors import RetryableError
from pulse.logging import get_logger
from pulse.service import Lifecycle, ops_app, start_http_app
from stream_processor.effects import AuditTrail, BatchEffects, TopicPublisher
from stream_processor.leases import LeaseTable
from stream_processor.metrics import ITERATOR_AGE
from stream_processor.processor import StreamProcessor
from stream_processor.settings import StreamProcessorSettings, load_stream_processor_settings

__all__ = ["find_topic_arn", "serve"]


def _log() -> Any:
    return get_logger("stream_processor.server")


def find_topic_arn(sns: Any, name: str) -> str:
    """The ARN of the topic called ``name``; :class:`RetryableError` while it does not exist."""
    for page in sns.get_paginator("list_topics").paginate():
        for topic in page.get("Topics", []):
            arn = str(topic["TopicArn"])
            if arn.rsplit(":", 1)[-1] == name:
                return arn
    raise RetryableError(f"SNS topic {name} not found", delay=5.0)


async def _topic_arn(
    settings: StreamProcessorSettings, sns: Any, stopping: asyncio.Event
) -> str | None:
    """Wait for the topic to exist (the topology may still be being applied); None on stop."""
    while not stopping.is_set():
        try:
            return await asyncio.to_thread(find_topic_arn, sns, settings.names.topic)
        except Exception as exc:
            _log().warning("topic not available yet", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=2.0)
    return None


async def serve(lifecycle: Lifecycle) -> None:
    """Run the processor until SIGTERM; the batches in flight finish before returning."""
    settings = lifecycle.settings
    if not isinstance(settings, StreamProcessorSettings):
        settings = load_stream_processor_settings()
    names = settings.names
    ddb = aws_client("dynamodb", settings)
    streams = aws_client("dynamodbstreams", settings)
    sns = aws_client("sns", settings)
    redis = redis_client(settings)

    async def check_dynamodb() -> None:
        await asyncio.to_thread(ddb.describe_table, TableName=names.payments_table)

    async def check_redis() -> None:
        await redis.ping()

    lifecycle.add_check("dynamodb", check_dynamodb)
    lifecycle.add_check("redis", check_redis)
    runner = await start_http_app(ops_app(lifecycle), settings.http_host, settings.http_port)
    try:
        topic_arn = await _topic_arn(settings, sns, lifecycle.stopping)
        if topic_arn is None:
            return
        effects = BatchEffects(
            TopicPublisher(sns, topic_arn, max_attempts=settings.sns_max_attempts),
            ChannelPublisher(redis, settings.redis_prefix),
            AuditTrail(ddb, names.events_table, ttl_days=settings.audit_ttl_days),
        )
        processor = StreamProcessor(
            settings,
            ddb=ddb,
            streams=streams,
            leases=LeaseTable(ddb, names.leases_table, settings.worker_id),
            effects=effects,
            stopping=lifecycle.stopping,
        )
        ITERATOR_AGE.set_function(processor.ages.max)
        _log().info("stream processor started", worker_id=settings.worker_id, topic=topic_arn)
        await processor.run()
    finally:
        await runner.cleanup()
        await redis.aclose()
