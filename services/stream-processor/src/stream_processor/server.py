"""Wiring: clients, the ops HTTP app (/healthz, /readyz, /metrics), the processor and the
consumer of the replay queue (failed records redriven by ``pulse dlq``, :mod:`.replays`)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from pulse.channels import ChannelPublisher
from pulse.clients import aws_client, redis_client
from pulse.collector import BATCH_YOUNG_THRESHOLD, settle_collector
from pulse.consumer import consume
from pulse.consumer.health import UnconsumedQueueHealth
from pulse.errors import RetryableError
from pulse.health import HealthReporter, Throughput
from pulse.logging import get_logger
from pulse.metrics import StageMetrics
from pulse.service import (
    Lifecycle,
    redis_check,
    retry_until_found,
    serving_ops,
    table_check,
)
from pulse.topology import StreamFailureNames
from stream_processor.effects import AuditTrail, BatchEffects, TopicPublisher
from stream_processor.failures import FailureQueue
from stream_processor.form_body import encode_sns_forms_fast
from stream_processor.get_records import read_records_with_orjson
from stream_processor.lease_renewer import RENEWAL_THREADS
from stream_processor.leases import LeaseTable
from stream_processor.metrics import ITERATOR_AGE, STAGE
from stream_processor.processor import StreamProcessor
from stream_processor.replays import FailureReplays
from stream_processor.settings import StreamProcessorSettings, load_stream_processor_settings
from stream_processor.stats import StatsKeys
from stream_processor.stats_publisher import StatsPublisher

if TYPE_CHECKING:
    from pulse.clients import RedisClient

__all__ = ["failure_queue_name", "find_topic_arn", "serve"]


def _log() -> Any:
    return get_logger("stream_processor.server")


def failure_queue_name(settings: StreamProcessorSettings) -> str:
    """``{resource prefix}stream-failures``, declared in the shared topology."""
    return StreamFailureNames.from_prefix(settings.resource_prefix).queue


def find_topic_arn(sns: Any, name: str) -> str:
    """The ARN of the topic called ``name``; :class:`RetryableError` while it does not exist."""
    for page in sns.get_paginator("list_topics").paginate():
        for topic in page.get("Topics", []):
            arn = str(topic["TopicArn"])
            if arn.rsplit(":", 1)[-1] == name:
                return arn
    raise RetryableError(f"SNS topic {name} not found", delay=5.0)


_USER_AGENT: Final = "pulse-stream-processor"  # boto3 appends its name and version


async def serve(lifecycle: Lifecycle) -> None:
    """Run the processor until SIGTERM; the batches in flight finish before returning."""
    settings = lifecycle.settings
    if not isinstance(settings, StreamProcessorSettings):
        settings = load_stream_processor_settings()
    names = settings.names
    # asyncio.to_thread runs the boto3 calls: the default executor (cores + 4 threads)
    # would queue the SNS and audit writes of the batches in flight behind one another,
    # and the next GetRecords behind them.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=settings.aws_concurrency, thread_name_prefix="aws")
    )
    # The hot path's requests are built by this code, never from user input: botocore's
    # client-side check of each one against the API model is CPU spent per record for
    # nothing (the service still refuses a bad request). Their User-Agent is fixed too,
    # rather than assembled again for every request.
    hot_path = partial(
        aws_client,
        settings=settings,
        max_pool=settings.aws_concurrency,
        parameter_validation=False,
        user_agent=_USER_AGENT,
    )
    ddb = hot_path("dynamodb")
    # Lease renewals get a client of their own, whose pool the hot path cannot fill; a call
    # that hangs is given up after a third of the failover time and tried again (a retry
    # refused because the first attempt did land is recognised as such).
    renewal_ddb = aws_client(
        "dynamodb",
        settings,
        max_pool=RENEWAL_THREADS,
        read_timeout=max(settings.failover_seconds / 3, 1.0),
        max_attempts=2,
    )
    streams = read_records_with_orjson(hot_path("dynamodbstreams"))
    sns = encode_sns_forms_fast(hot_path("sns"))
    sqs = aws_client("sqs", settings, max_pool=settings.aws_concurrency)
    redis = redis_client(settings)
    # Imported modules and the clients' service models live as long as the process; a
    # batch's objects die young (the collector had taken about a tenth of the CPU).
    settle_collector(BATCH_YOUNG_THRESHOLD)

    lifecycle.add_check("dynamodb", table_check(ddb, names.payments_table))
    lifecycle.add_check("redis", redis_check(redis))
    try:
        async with serving_ops(lifecycle):
            await _process(
                settings,
                lifecycle,
                ddb=ddb,
                renewal_ddb=renewal_ddb,
                streams=streams,
                sns=sns,
                sqs=sqs,
                redis=redis,
            )
    finally:
        await redis.aclose()


async def _process(
    settings: StreamProcessorSettings,
    lifecycle: Lifecycle,
    *,
    ddb: Any,
    renewal_ddb: Any,
    streams: Any,
    sns: Any,
    sqs: Any,
    redis: RedisClient,
) -> None:
    names = settings.names
    topic_arn = await retry_until_found(
        "topic", partial(find_topic_arn, sns, names.topic), lifecycle.stopping
    )
    failures = FailureQueue(sqs, failure_queue_name(settings))
    if (
        topic_arn is None
        or await retry_until_found("failure queue", failures.url, lifecycle.stopping) is None
    ):
        return
    channels = ChannelPublisher.of(redis, settings)
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
        renewals=LeaseTable(renewal_ddb, names.leases_table, settings.worker_id),
    )
    ITERATOR_AGE.set_function(processor.ages.max)
    health = HealthReporter.of(redis, settings)
    health.add(
        Throughput(STAGE),
        processor.shard_health,
        UnconsumedQueueHealth(sqs, failures.url(), "failures"),
    )
    _log().info("stream processor started", worker_id=settings.worker_id, topic=topic_arn)
    stats_task = asyncio.create_task(stats.run(lifecycle.stopping), name="stats")
    replays = asyncio.create_task(
        consume(
            lifecycle,
            sqs,
            StreamFailureNames.from_prefix(settings.resource_prefix).replays,
            FailureReplays(effects).handle,
            stage_metrics=StageMetrics("replay"),
            settings=settings,
            check_name="replays",
        ),
        name="replays",
    )
    try:
        async with health.running(lifecycle.stopping):
            await processor.run()
    finally:
        lifecycle.stopping.set()
        await asyncio.gather(stats_task, replays)
