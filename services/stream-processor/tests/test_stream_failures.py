"""Records that cannot be applied: retried, then sent whole to the failure queue; the shard
moves on and the checkpoint never passes a record whose effects failed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from pulse.channels import ChannelPublisher
from pulse.clients import aws_client, redis_client
from pulse.errors import RetryableError
from pulse.events import stable_event_id
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import channel_history, free_port, pending_payment, put_payment
from stream_processor.effects import AuditTrail, BatchEffects, ProcessedEvent, TopicPublisher
from stream_processor.failures import MAX_BODY_BYTES, FailureQueue, failure_message
from stream_processor.leases import LeaseTable
from stream_processor.processor import StreamProcessor
from stream_processor.settings import StreamProcessorSettings

pytestmark = pytest.mark.timeout(90)

RECORD: dict[str, Any] = {
    "eventID": "ev-1",
    "eventName": "INSERT",
    "dynamodb": {
        "ApproximateCreationDateTime": datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        "SequenceNumber": "4200",
        "NewImage": {"payment_id": {"S": "pay_1"}, "blob": {"B": b"\x00\x01"}},
    },
}


def test_a_failure_message_carries_the_whole_record_and_the_error() -> None:
    body = orjson.loads(
        failure_message(
            RECORD,
            ValueError("bad amount"),
            reason="malformed",
            shard_id="shard-1",
            stream_arn="arn:stream",
            attempts=3,
            now=0.0,
        )
    )
    assert body["record"]["dynamodb"]["NewImage"]["payment_id"] == {"S": "pay_1"}
    assert body["record"]["dynamodb"]["NewImage"]["blob"] == {"B": "AAE="}
    assert body["record"]["dynamodb"]["ApproximateCreationDateTime"].startswith("2026-01-01T12")
    assert body["error"] == {"type": "ValueError", "message": "bad amount"}
    assert (body["reason"], body["attempts"], body["shard_id"]) == ("malformed", 3, "shard-1")
    assert body["sequence_number"] == "4200"
    assert body["event_id"] == stable_event_id("ev-1")
    assert body["failed_at"] == "1970-01-01T00:00:00.000Z"


def test_a_record_too_large_for_sqs_keeps_its_keys_but_not_its_images() -> None:
    huge = {
        **RECORD,
        "dynamodb": {
            **RECORD["dynamodb"],
            "Keys": {"payment_id": {"S": "pay_1"}},
            "NewImage": {"payment_id": {"S": "pay_1"}, "metadata": {"S": "x" * 300_000}},
        },
    }
    encoded = failure_message(
        huge, ValueError("x"), reason="malformed", shard_id="s", stream_arn="a", attempts=1
    )
    assert len(encoded) <= MAX_BODY_BYTES
    body = orjson.loads(encoded)
    assert body["truncated"] == ["NewImage"]
    assert body["record"]["dynamodb"]["Keys"] == {"payment_id": {"S": "pay_1"}}
    assert body["record"]["dynamodb"]["SequenceNumber"] == "4200"
    assert "NewImage" not in body["record"]["dynamodb"]


def _put(ddb: Any, settings: PulseSettings, amount: str = "5.00") -> str:
    payment = pending_payment(account_id="acct-f", amount=amount)
    return put_payment(ddb, settings.names.payments_table, payment)["payment_id"]


def _failures(sqs: Any, settings: PulseSettings, want: int, timeout: float = 20.0) -> list[Any]:
    url = sqs.get_queue_url(QueueName=f"{settings.resource_prefix}stream-failures")["QueueUrl"]
    bodies: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < want and time.monotonic() < deadline:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        bodies.extend((orjson.loads(m["Body"]), m["MessageAttributes"]) for m in messages)
        time.sleep(0.05)
    return bodies


def _history(client: redis.Redis, settings: PulseSettings) -> list[str]:
    return [e["subject"] for e in channel_history(client, settings.redis_prefix, "payments")]


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_malformed_record_goes_whole_to_the_failure_queue_and_later_records_flow(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    service_process: Any,
    redis_url: str,
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    sqs = aws_client("sqs", stack_settings)
    client = redis.Redis.from_url(redis_url)
    before = _put(ddb, stack_settings)
    poison = _put(ddb, stack_settings, amount="not-a-number")
    after = [_put(ddb, stack_settings) for _ in range(3)]
    port = free_port()
    process = service_process(
        "stream_processor", PULSE_HTTP_PORT=str(port), PULSE_POLL_INTERVAL_SECONDS="0.05"
    ).start(wait_port=port)
    try:
        _wait(lambda: len(_history(client, stack_settings)) >= 4)
        assert _history(client, stack_settings) == [before, *after]
        ((body, attributes),) = _failures(sqs, stack_settings, want=1)
        assert body["reason"] == "malformed"
        assert body["record"]["dynamodb"]["NewImage"]["payment_id"] == {"S": poison}
        assert body["record"]["dynamodb"]["NewImage"]["amount"] == {"S": "not-a-number"}
        assert body["record"]["eventName"] == "INSERT"
        assert body["error"]["type"] == "InvalidOperation"
        assert attributes["reason"]["StringValue"] == "malformed"
        assert attributes["event_id"]["StringValue"] == body["event_id"]
        assert process.stop() == 0
    finally:
        client.close()


def _dead_letters(reason: str) -> float:
    sample = REGISTRY.get_sample_value("pulse_stream_dead_letters_total", {"reason": reason})
    return sample or 0.0


class FailingFor(BatchEffects):
    """The real effects, except that one payment's always fail (a poison record)."""

    def __init__(self, inner: BatchEffects, poison: set[str]) -> None:
        self._inner = inner
        self.poison = poison
        self.attempts = 0

    async def publish_live(self, processed: list[ProcessedEvent]) -> None:
        if any(p.event.subject in self.poison for p in processed):
            self.attempts += 1
            raise RetryableError("the downstream refuses this payment", delay=0.01)
        await self._inner.publish_live(processed)

    async def propagate(self, processed: list[ProcessedEvent]) -> None:
        await self._inner.propagate(processed)


async def test_a_record_whose_effects_keep_failing_is_retried_then_set_aside(
    topology: TopologyOutputs, stack_settings: PulseSettings, redis_url: str
) -> None:
    settings = StreamProcessorSettings(
        poll_interval_seconds=0.05,
        max_retry_delay_seconds=0.05,
        max_retries=3,
        failover_seconds=3,
        worker_id="failing-worker",
    )
    names = settings.names
    ddb = aws_client("dynamodb", settings)
    sqs = aws_client("sqs", settings)
    redis_async = redis_client(settings)
    client = redis.Redis.from_url(redis_url)
    inner = BatchEffects(
        TopicPublisher(aws_client("sns", settings), topology.topic_arn),
        ChannelPublisher(redis_async, settings.redis_prefix),
        AuditTrail(ddb, names.events_table, ttl_days=1),
    )
    payment_ids = [_put(ddb, stack_settings) for _ in range(5)]
    poison = payment_ids[2]
    effects = FailingFor(inner, {poison})
    failures = FailureQueue(sqs, f"{settings.resource_prefix}stream-failures")
    failures.url()  # as the server does at start
    stopping = asyncio.Event()
    processor = StreamProcessor(
        settings,
        ddb=ddb,
        streams=aws_client("dynamodbstreams", settings),
        leases=LeaseTable(ddb, names.leases_table, settings.worker_id),
        effects=effects,
        stopping=stopping,
        failures=failures,
    )
    dead_before = _dead_letters("retries_exhausted")
    task = asyncio.create_task(processor.run())
    try:
        bodies = await asyncio.to_thread(_failures, sqs, stack_settings, 1)
        ((body, _attributes),) = bodies
        assert body["reason"] == "retries_exhausted"
        assert body["record"]["dynamodb"]["NewImage"]["payment_id"] == {"S": poison}
        assert body["error"]["message"] == "the downstream refuses this payment"
        # The whole batch was tried 1 + max_retries times, then the poison record alone.
        assert effects.attempts == 1 + settings.max_retries + 1
        assert body["attempts"] == effects.attempts
        assert _dead_letters("retries_exhausted") == dead_before + 1
        await asyncio.to_thread(_wait, lambda: len(_history(client, stack_settings)) >= 4)
        assert _history(client, stack_settings) == [p for p in payment_ids if p != poison]

        later = _put(ddb, stack_settings)
        await asyncio.to_thread(_wait, lambda: len(_history(client, stack_settings)) >= 5)
        assert _history(client, stack_settings)[-1] == later
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)
        await redis_async.aclose()
        client.close()
    (lease,) = ddb.scan(TableName=names.leases_table, ConsistentRead=True)["Items"]
    assert "leaseOwner" not in lease  # released on stop
    assert int(lease["checkpoint"]["S"]) > 0


def test_the_failure_queue_is_looked_up_never_created(stack_settings: PulseSettings) -> None:
    """Without the topology the queue is missing: the processor waits for it (a retryable
    error) and does not create it, so it needs no sqs:CreateQueue."""
    sqs = aws_client("sqs", stack_settings)
    name = f"{stack_settings.resource_prefix}stream-failures"
    failures = FailureQueue(sqs, name)
    with pytest.raises(RetryableError, match="apply the topology"):
        failures.url()
    queues = sqs.list_queues(QueueNamePrefix=stack_settings.resource_prefix).get("QueueUrls", [])
    assert queues == []
