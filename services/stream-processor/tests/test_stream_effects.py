"""Integration: the SNS and audit effects against the real emulator — what they write, and
how AWS failures come out (Pulse errors, by :mod:`pulse.aws_errors`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import orjson
import pytest
import redis.asyncio as aioredis

from pulse.audit_positions import ACCOUNT_EPOCH, ACCOUNT_NUMBER, ACCOUNT_OFFSET, sortable_offset
from pulse.channels import ChannelPublisher, account_channel, channel_epoch
from pulse.clients import aws_client
from pulse.errors import ResourceNotFoundError, RetryableError
from pulse.events import PAYMENT_CREATED, new_event
from pulse.settings import PulseSettings
from pulse.topology import AUDIT_OFFSET_INDEX, TopologyOutputs
from pulse_dev.testing import stream_entries
from stream_processor.effects import AuditTrail, BatchEffects, ProcessedEvent, TopicPublisher

pytestmark = pytest.mark.timeout(60)


def _processed(
    count: int, *, account: str | None = None, first: int = 1000
) -> list[ProcessedEvent]:
    """``count`` created events (of ``account``, if given), stream positions from ``first``."""
    data = {"amount": "1.00"} if account is None else {"amount": "1.00", "account_id": account}
    return [
        ProcessedEvent(
            new_event(
                type=PAYMENT_CREATED,
                source="/pulse/stream-processor",
                subject=f"pay_{uuid.uuid4().hex}",
                data=data,
            ),
            sequence_number=str(first + index),
            event_name="INSERT",
        )
        for index in range(count)
    ]


async def test_every_event_reaches_the_topic_in_chunks_of_ten(
    topology: TopologyOutputs, stack_settings: PulseSettings
) -> None:
    processed = _processed(23)
    publisher = TopicPublisher(aws_client("sns", stack_settings), topology.topic_arn)
    await publisher.publish([p.event for p in processed], [p.json for p in processed])
    sqs = aws_client("sqs", stack_settings)
    url = topology.queue_urls[stack_settings.names.fraud_queue]
    seen: set[str] = set()
    deadline = time.monotonic() + 15
    while len(seen) < len(processed) and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            seen.add(orjson.loads(message["Body"])["id"])
    assert seen == {p.event.id for p in processed}


async def test_a_missing_topic_fails_the_batch_as_not_found_without_local_retries(
    stack_settings: PulseSettings,
) -> None:
    sns = aws_client("sns", stack_settings)
    calls: list[str] = []
    sns.meta.events.register("before-call.sns.PublishBatch", lambda **_: calls.append("call"))
    region, prefix = stack_settings.aws_region, stack_settings.resource_prefix
    publisher = TopicPublisher(sns, f"arn:aws:sns:{region}:123456789012:{prefix}gone")
    processed = _processed(3)
    with pytest.raises(ResourceNotFoundError, match=r"^SNS PublishBatch: .*NotFound"):
        await publisher.publish([p.event for p in processed])
    assert calls == ["call"]  # the reader retries the batch; no tries are spent here


async def test_audit_rows_are_written_one_per_event(
    topology: TopologyOutputs, stack_settings: PulseSettings
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    table = stack_settings.names.events_table
    processed = _processed(30)  # two BatchWriteItem calls
    await AuditTrail(ddb, table, ttl_days=1).record(processed)
    for p in processed:
        key = {"payment_id": {"S": p.event.subject or ""}, "sk": {"S": p.sequence_number.zfill(40)}}
        item = ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
        assert item["event_id"]["S"] == p.event.id


async def test_a_missing_audit_table_is_retryable_not_found(
    stack_settings: PulseSettings,
) -> None:
    audit = AuditTrail(
        aws_client("dynamodb", stack_settings), f"{stack_settings.resource_prefix}gone", ttl_days=1
    )
    with pytest.raises(RetryableError, match=r"^audit BatchWriteItem: ") as raised:
        await audit.record(_processed(2))
    assert isinstance(raised.value, ResourceNotFoundError)
    assert raised.value.delay == 1.0


async def test_audit_rows_keep_where_their_events_are_in_the_account_channel_across_a_retry(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    async_redis: aioredis.Redis,
    stack_prefix: str,
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    table = stack_settings.names.events_table
    channels = ChannelPublisher(async_redis, f"pulse:{stack_prefix}")
    effects = BatchEffects(
        TopicPublisher(aws_client("sns", stack_settings), topology.topic_arn),
        channels,
        AuditTrail(ddb, table, ttl_days=1),
    )
    account = f"acct-{uuid.uuid4().hex[:8]}"
    processed = _processed(4, account=account, first=5000)
    await effects.publish_live(processed)  # then the process dies: no audit rows
    # The batch is read again from its checkpoint: the same records, new objects.
    await effects.apply([replace(p, channel_positions={}) for p in processed])

    history = channels.keys.history(account_channel(account))
    entries = stream_entries(await async_redis.xrange(history))
    rows = ddb.query(
        TableName=table,
        IndexName=AUDIT_OFFSET_INDEX,
        KeyConditionExpression="account_id = :a",
        ExpressionAttributeValues={":a": {"S": account}},
    )["Items"]
    assert [r["event_id"]["S"] for r in rows] == [p.event.id for p in processed]
    assert [r[ACCOUNT_OFFSET]["S"] for r in rows] == [
        sortable_offset(raw_id.decode()) for raw_id, _ in entries
    ]
    assert [int(r[ACCOUNT_NUMBER]["N"]) for r in rows] == [1, 2, 3, 4]
    epoch = await channel_epoch(
        async_redis, channels.keys, account_channel(account), ttl_seconds=60
    )
    assert {r[ACCOUNT_EPOCH]["S"] for r in rows} == {epoch}
