"""Integration: the SNS and audit effects against the real emulator — what they write, and
how AWS failures come out (Pulse errors, by :mod:`pulse.aws_errors`)."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from pulse.clients import aws_client
from pulse.errors import ResourceNotFoundError, RetryableError
from pulse.events import PAYMENT_CREATED, new_event
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from stream_processor.effects import AuditTrail, ProcessedEvent, TopicPublisher

pytestmark = pytest.mark.timeout(60)


def _processed(count: int) -> list[ProcessedEvent]:
    return [
        ProcessedEvent(
            new_event(
                type=PAYMENT_CREATED,
                source="/pulse/stream-processor",
                subject=f"pay_{uuid.uuid4().hex}",
                data={"amount": "1.00"},
            ),
            sequence_number=str(1000 + index),
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
