"""Integration: ``python -m stream_processor`` as a real process against moto and Redis.

Items are written straight into the payments table (shaped as ingest writes them); the
test then watches what a user of the pipeline sees: channel history and live frames in
Redis, audit rows, and the CloudEvents the fraud and notify queues receive.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from pulse.channels import ChannelKeys, ChannelPublisher
from pulse.clients import aws_client, redis_client
from pulse.errors import RetryableError
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import (
    ServiceProcess,
    channel_history,
    eventually,
    free_port,
    pending_payment,
    put_payment,
)
from stream_processor.effects import AuditTrail, BatchEffects, ProcessedEvent, TopicPublisher
from stream_processor.leases import LeaseTable
from stream_processor.processor import StreamProcessor
from stream_processor.settings import StreamProcessorSettings

pytestmark = pytest.mark.timeout(90)

# The real effects of a batch with the given topic (processor_effects), for the tests that
# run the processor in process (_running) to break and mend its dependencies.
RealEffects = Callable[[StreamProcessorSettings, TopicPublisher], BatchEffects]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@dataclass
class Stack:
    settings: PulseSettings
    topology: TopologyOutputs
    ddb: Any
    sqs: Any
    redis: redis.Redis
    keys: ChannelKeys
    start_processor: Callable[[], tuple[ServiceProcess, int]]

    def put_payment(self, account_id: str, amount: str = "12.50") -> str:
        payment = pending_payment(account_id=account_id, amount=amount, traceparent=TRACEPARENT)
        return put_payment(self.ddb, self.settings.names.payments_table, payment)["payment_id"]

    def history(self, channel: str) -> list[dict[str, Any]]:
        return channel_history(self.redis, self.settings.redis_prefix, channel)

    def wait_history(self, channel: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.history(channel)
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(0.05)

    def drain(self, queue: str, want: int = 0, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Receive and delete every message of ``queue`` (waiting for ``want`` of them)."""
        url = self.topology.queue_urls[queue]
        bodies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            for message in messages:
                bodies.append(orjson.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            if not messages and (len(bodies) >= want or time.monotonic() > deadline):
                return bodies
            if not messages:
                time.sleep(0.1)

    def checkpoint(self) -> int:
        checkpoint = self.checkpoint_or_none()
        assert checkpoint is not None
        return checkpoint

    def checkpoint_or_none(self) -> int | None:
        items = self.ddb.scan(TableName=self.settings.names.leases_table, ConsistentRead=True)
        (lease,) = items["Items"]
        return int(lease["checkpoint"]["S"]) if "checkpoint" in lease else None


@pytest.fixture
def stack(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    service_process: Any,
    redis_url: str,
) -> Iterator[Stack]:
    client = redis.Redis.from_url(redis_url)

    def start() -> tuple[ServiceProcess, int]:
        port = free_port()
        process = service_process(
            "stream_processor",
            PULSE_HTTP_PORT=str(port),
            PULSE_POLL_INTERVAL_SECONDS="0.05",
            PULSE_SHARD_REFRESH_SECONDS="2",
        ).start(wait_port=port)
        return process, port

    stack = Stack(
        stack_settings,
        topology,
        aws_client("dynamodb", stack_settings),
        aws_client("sqs", stack_settings),
        client,
        ChannelKeys(stack_settings.redis_prefix),
        start,
    )
    yield stack
    for queue in (stack_settings.names.fraud_queue, stack_settings.names.notify_queue):
        stack.sqs.purge_queue(QueueUrl=topology.queue_urls[queue])
    client.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _live_frames(pubsub: Any, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            frames.append(orjson.loads(message["data"]))
    return frames


def _sample(metrics: bytes, name: str) -> float:
    """The value of the unlabelled sample ``name`` in a ``/metrics`` answer."""
    found = re.search(rb"^" + re.escape(name.encode()) + rb" (\S+)$", metrics, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


def test_changes_reach_channels_audit_trail_and_queues(stack: Stack) -> None:
    pubsub = stack.redis.pubsub()
    pubsub.ssubscribe(stack.keys.live("payments"))
    accounts = ["acct-a", "acct-b", "acct-c"]
    payment_ids = [stack.put_payment(account) for account in accounts]
    process, port = stack.start_processor()

    created = stack.wait_history("payments", 3)
    assert [e["subject"] for e in created] == payment_ids
    for event, account in zip(created, accounts, strict=True):
        assert event["type"] == "pulse.payment.created"
        assert event["source"] == "/pulse/stream-processor"
        assert event["data"]["account_id"] == account
        assert event["data"]["amount"] == "12.50"
        assert event["data"]["status"] == "PENDING"
        assert "request_hash" not in event["data"]
        assert event["traceparent"].split("-")[1] == TRACE_ID
        assert stack.history(f"account:{account}") == [event]

    frames = _live_frames(pubsub, 3)
    assert [f["event"]["id"] for f in frames] == [e["id"] for e in created]
    assert all(f["op"] == "event" and f["channel"] == "payments" for f in frames)

    fraud = stack.drain(stack.settings.names.fraud_queue, want=3)
    assert sorted(e["id"] for e in fraud) == sorted(e["id"] for e in created)
    assert {e["type"] for e in fraud} == {"pulse.payment.created"}

    audit = stack.ddb.query(
        TableName=stack.settings.names.events_table,
        KeyConditionExpression="payment_id = :p",
        ExpressionAttributeValues={":p": {"S": payment_ids[0]}},
    )["Items"]
    assert len(audit) == 1
    assert audit[0]["event_id"]["S"] == created[0]["id"]
    assert len(audit[0]["sk"]["S"]) == 40
    assert orjson.loads(audit[0]["event"]["S"]) == created[0]
    assert int(audit[0]["expires_at"]["N"]) > time.time() + 29 * 86400

    # A status change goes to the notify queue (and not to the fraud queue).
    stack.ddb.update_item(
        TableName=stack.settings.names.payments_table,
        Key={"payment_id": {"S": payment_ids[0]}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "APPROVED"}},
    )
    (updated,) = stack.drain(stack.settings.names.notify_queue, want=1)
    assert updated["type"] == "pulse.payment.updated"
    assert updated["subject"] == payment_ids[0]
    assert (updated["data"]["old_status"], updated["data"]["status"]) == ("PENDING", "APPROVED")
    assert stack.wait_history("account:acct-a", 2)[-1] == updated

    stack.ddb.delete_item(
        TableName=stack.settings.names.payments_table, Key={"payment_id": {"S": payment_ids[1]}}
    )
    deleted = stack.wait_history("account:acct-b", 2)[-1]
    assert deleted["type"] == "pulse.payment.deleted"
    assert deleted["data"]["payment_id"] == payment_ids[1]
    assert stack.drain(stack.settings.names.fraud_queue) == []

    status, body = _get(port, "/readyz")
    assert status == 200, body
    _status, metrics = _get(port, "/metrics")
    assert b'pulse_stream_records_processed_total{event_name="INSERT"} 3.0' in metrics
    assert b'pulse_stream_records_processed_total{event_name="MODIFY"} 1.0' in metrics
    assert b"pulse_stream_iterator_age_seconds" in metrics
    # The hot path's duration, once per batch read: the inserts, the update, the delete.
    assert 3 <= _sample(metrics, "pulse_stream_live_publish_duration_seconds_count") <= 5

    assert process.stop() == 0
    lines = [orjson.loads(line) for line in process.logs().splitlines() if line.startswith("{")]
    processed = [line for line in lines if line.get("event") == "event processed"]
    assert {line["event_id"] for line in processed} >= {e["id"] for e in created}
    assert {line["trace_id"] for line in processed} == {TRACE_ID}


def test_restart_resumes_from_the_checkpoint(stack: Stack) -> None:
    first = [stack.put_payment(f"acct-{i}") for i in range(5)]
    process, _port = stack.start_processor()
    assert len(stack.wait_history("payments", 5)) == 5
    assert stack.drain(stack.settings.names.fraud_queue, want=5)
    assert process.stop() == 0
    checkpoint = stack.checkpoint()

    second = [stack.put_payment(f"acct-{i}") for i in range(4)]
    process, _port = stack.start_processor()
    events = stack.wait_history("payments", 9)
    time.sleep(1.0)  # long enough for a replay from the start to show up
    events = stack.history("payments")
    assert [e["subject"] for e in events] == first + second
    assert len({e["id"] for e in events}) == 9
    fraud = stack.drain(stack.settings.names.fraud_queue, want=4)
    assert sorted(e["subject"] for e in fraud) == sorted(second)
    assert process.stop() == 0
    assert stack.checkpoint() > checkpoint


@pytest.fixture
async def processor_effects(
    stack_settings: PulseSettings,
) -> AsyncIterator[RealEffects]:
    """The real effects of a batch: SNS through the given topic publisher, the channels in
    the test's Redis, audit rows kept for a day."""
    redis = redis_client(stack_settings)

    def effects(settings: StreamProcessorSettings, topic: TopicPublisher) -> BatchEffects:
        return BatchEffects(
            topic,
            ChannelPublisher(redis, settings.redis_prefix),
            AuditTrail(aws_client("dynamodb", settings), settings.names.events_table, ttl_days=1),
        )

    yield effects
    await redis.aclose()


@asynccontextmanager
async def _running(settings: StreamProcessorSettings, effects: BatchEffects) -> AsyncIterator[None]:
    """A processor with these settings and effects runs while the block runs; then it is
    stopped and its batches in flight are waited for."""
    ddb = aws_client("dynamodb", settings)
    stopping = asyncio.Event()
    processor = StreamProcessor(
        settings,
        ddb=ddb,
        streams=aws_client("dynamodbstreams", settings),
        leases=LeaseTable(ddb, settings.names.leases_table, settings.worker_id),
        effects=effects,
        stopping=stopping,
    )
    task = asyncio.create_task(processor.run())
    try:
        yield
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)


def _batch_failures() -> float:
    return REGISTRY.get_sample_value("pulse_stream_failures_total", {"reason": "batch"}) or 0.0


async def test_a_failed_publish_moves_no_checkpoint_and_the_batch_is_retried(
    stack: Stack, processor_effects: RealEffects
) -> None:
    """In process, so the topic can be broken and then repaired while the processor runs."""
    settings = StreamProcessorSettings(
        poll_interval_seconds=0.05,
        max_retry_delay_seconds=0.2,
        shard_refresh_seconds=0.5,
        worker_id="test-worker",
    )
    names = settings.names
    topic = TopicPublisher(
        aws_client("sns", settings), f"{stack.topology.topic_arn}-gone", max_attempts=2
    )
    payment_ids = [stack.put_payment(f"acct-{i}") for i in range(3)]
    failures_before = _batch_failures()
    async with _running(settings, processor_effects(settings, topic)):
        await eventually(lambda: _batch_failures() >= failures_before + 2, timeout=15.0)
        leases = stack.ddb.scan(TableName=names.leases_table, ConsistentRead=True)["Items"]
        assert [lease.get("checkpoint") for lease in leases] == [None]
        assert leases[0]["leaseOwner"]["S"] == "test-worker"
        # The hot path ran before SNS failed; every retry of the batch applied it again,
        # and the once-per-event guard kept the history at one entry per payment.
        assert [e["subject"] for e in stack.history("payments")] == payment_ids

        topic.topic_arn = stack.topology.topic_arn  # the dependency recovers
        await eventually(lambda: stack.checkpoint_or_none() is not None, timeout=15.0)
    assert [e["subject"] for e in stack.history("payments")] == payment_ids
    fraud = stack.drain(names.fraud_queue, want=3)
    assert sorted(e["subject"] for e in fraud) == sorted(payment_ids)
    assert stack.checkpoint() > 0


class HeldBack(BatchEffects):
    """The real effects, except that the SNS and audit writes of the batch holding
    ``slow`` wait for ``release`` and then fail once (a slow, then failing, dependency)."""

    def __init__(self, inner: BatchEffects, slow: str) -> None:
        self._inner = inner
        self.slow = slow
        self.release = asyncio.Event()
        self.failed = False

    async def publish_live(self, processed: list[ProcessedEvent]) -> None:
        await self._inner.publish_live(processed)

    async def propagate(self, processed: list[ProcessedEvent]) -> None:
        if any(p.event.subject == self.slow for p in processed) and not self.failed:
            await self.release.wait()
            self.failed = True
            raise RetryableError("SNS timed out", delay=0.01)
        await self._inner.propagate(processed)


async def test_live_events_do_not_wait_for_a_slow_topic_and_checkpoints_stay_in_order(
    stack: Stack, processor_effects: RealEffects
) -> None:
    """Batches of two, at most two in flight: while the first batch's SNS write hangs, the
    second is published live but nothing is checkpointed and the third is not read; when
    the first fails, everything is applied again from the start, and each payment still
    has one history entry."""
    settings = StreamProcessorSettings(
        batch_size=2,
        max_batches_in_flight=2,
        poll_interval_seconds=0.05,
        max_retry_delay_seconds=0.05,
        worker_id="pipelined-worker",
    )
    payment_ids = [stack.put_payment(f"acct-{i}") for i in range(6)]
    topic = TopicPublisher(aws_client("sns", settings), stack.topology.topic_arn)
    effects = HeldBack(processor_effects(settings, topic), slow=payment_ids[0])

    def subjects() -> list[str]:
        return [e["subject"] for e in stack.history("payments")]

    async with _running(settings, effects):
        await eventually(lambda: len(subjects()) >= 4, timeout=15.0)
        await asyncio.sleep(0.5)  # time enough for a third batch, were it read
        assert subjects() == payment_ids[:4]
        assert stack.checkpoint_or_none() is None  # the second batch is done, the first not

        effects.release.set()  # the first batch's SNS write fails: all is applied again
        await eventually(lambda: len(subjects()) >= 6, timeout=15.0)
        last = _last_sequence_number(stack)
        await eventually(lambda: stack.checkpoint_or_none() == last, timeout=15.0)
    assert effects.failed
    assert subjects() == payment_ids
    fraud = stack.drain(settings.names.fraud_queue, want=6)
    assert {e["subject"] for e in fraud} == set(payment_ids)  # at least once


def _last_sequence_number(stack: Stack) -> int:
    streams = aws_client("dynamodbstreams", stack.settings)
    arn = stack.topology.stream_arns[stack.settings.names.payments_table]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    return int(records[-1]["dynamodb"]["SequenceNumber"])
