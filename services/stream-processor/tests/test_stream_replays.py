"""Failed stream records, redriven: ``pulse dlq redrive stream-failures`` sends them to the
replay queue, and the running stream processor applies each through its own effects, once —
however often it is redriven; a record that fails again comes back with the new error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis
from click.testing import CliRunner

from pulse.cli import main
from pulse.clients import aws_client
from pulse.errors import PermanentError
from pulse.settings import PulseSettings
from pulse.topology import StreamFailureNames, TopologyOutputs
from pulse_dev.testing import (
    ServiceProcess,
    channel_history,
    free_port,
    pending_payment,
    put_payment,
    queue_depth,
    until,
)
from stream_processor.records import event_from_record
from stream_processor.replays import failed_record
from stream_processor.stats import StatsKeys

pytestmark = pytest.mark.timeout(150)


def test_a_failure_message_gives_back_its_record_and_its_event() -> None:
    record = {
        "eventID": "ev-7",
        "eventName": "INSERT",
        "dynamodb": {
            # as the failure queue carries it: a datetime written as ISO-8601 text
            "ApproximateCreationDateTime": "2026-01-01T12:00:00+00:00",
            "SequenceNumber": "42",
            "NewImage": {
                "payment_id": {"S": "pay_7"},
                "account_id": {"S": "A"},
                "amount": {"S": "1.00"},
                "currency": {"S": "EUR"},
                "status": {"S": "PENDING"},
            },
        },
    }
    body = orjson.dumps({"reason": "retries_exhausted", "record": record})
    assert failed_record(body) == record
    # the replayed event is the original: same id, same time
    assert event_from_record(failed_record(body)).time == "2026-01-01T12:00:00.000Z"
    for bad in (b"not json", b"[1]", b'{"record": "x"}'):
        with pytest.raises(PermanentError, match="not a stream failure message"):
            failed_record(bad)


def _messages(sqs: Any, url: str) -> list[dict[str, Any]]:
    """What a queue holds, read and left there (made visible again)."""
    got = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        WaitTimeSeconds=1,
        MessageAttributeNames=["All"],
    )
    return list(got.get("Messages", []))


def _audit_rows(ddb: Any, settings: PulseSettings, payment_id: str) -> list[dict[str, Any]]:
    return list(
        ddb.query(
            TableName=settings.names.events_table,
            KeyConditionExpression="payment_id = :p",
            ExpressionAttributeValues={":p": {"S": payment_id}},
            ConsistentRead=True,
        )["Items"]
    )


@dataclass
class Stack:
    """The test's stack as these tests look at it."""

    settings: PulseSettings
    topology: TopologyOutputs
    redis: redis.Redis
    ddb: Any = field(init=False)
    sqs: Any = field(init=False)

    def __post_init__(self) -> None:
        self.ddb = aws_client("dynamodb", self.settings)
        self.sqs = aws_client("sqs", self.settings)
        self.names = StreamFailureNames.from_prefix(self.settings.resource_prefix)
        self.failures_url = self.topology.queue_urls[self.names.queue]
        self.replays_url = self.topology.queue_urls[self.names.replays]

    def subjects(self, channel: str) -> list[str]:
        history = channel_history(self.redis, self.settings.redis_prefix, channel)
        return sorted(e["subject"] for e in history)

    def replays_done(self, failures_left: int) -> bool:
        """The replay queue drained (a message is deleted only after it was handled) and
        ``failures_left`` messages back in the failure queue."""
        return (
            queue_depth(self.sqs, self.replays_url) == 0
            and queue_depth(self.sqs, self.failures_url) == failures_left
        )


def _processor(service_process: Any, **env: str) -> ServiceProcess:
    """A stream processor process, quick to poll and to retry, started."""
    port = free_port()
    env = {"PULSE_POLL_INTERVAL_SECONDS": "0.05", "PULSE_MAX_RETRY_DELAY_SECONDS": "0.1", **env}
    process: ServiceProcess = service_process(
        "stream_processor", PULSE_HTTP_PORT=str(port), **env
    ).start(wait_port=port)
    return process


def _set_aside_while_redis_is_down(
    stack: Stack, service_process: Any, good: list[str], poison: str
) -> list[str]:
    """Run the processor without Redis until every record is in stream-failures; check what
    ``pulse dlq show`` says of them; return copies of the failure messages."""
    broken = _processor(
        service_process, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PULSE_MAX_RETRIES="1"
    )
    until(lambda: queue_depth(stack.sqs, stack.failures_url) == 4, timeout=60)
    assert broken.stop() == 0
    assert stack.subjects("payments") == []
    shown = CliRunner().invoke(main, ["dlq", "show", "stream-failures", "--json"])
    assert shown.exit_code == 0, shown.output
    letters = [orjson.loads(line) for line in shown.output.splitlines()]
    errors = {
        letter["body"]["record"]["dynamodb"]["NewImage"]["payment_id"]["S"]: letter["error"]
        for letter in letters
    }
    assert set(errors) == {*good, poison}  # one message per record
    assert all(errors[p].startswith("ConnectionError: Error 111 connecting") for p in good)
    assert errors[poison].startswith("InvalidOperation")
    return [m["Body"] for m in _messages(stack.sqs, stack.failures_url)]


def _assert_applied_once(stack: Stack, good: list[str]) -> None:
    assert stack.subjects("payments") == sorted(good)
    assert stack.subjects("account:acct-r") == sorted(good)
    for payment_id in good:
        (row,) = _audit_rows(stack.ddb, stack.settings, payment_id)
        assert orjson.loads(row["event"]["S"])["type"] == "pulse.payment.created"
    totals = StatsKeys(stack.settings.redis_prefix).totals
    assert stack.redis.hget(totals, "events:created") == b"3"


def test_failed_records_are_redriven_and_applied_once_however_often(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    service_process: Any,
    redis_url: str,
) -> None:
    stack = Stack(stack_settings, topology, redis.Redis.from_url(redis_url))
    table = stack_settings.names.payments_table
    good = [
        put_payment(stack.ddb, table, pending_payment(account_id="acct-r"))["payment_id"]
        for _ in range(3)
    ]
    poison = put_payment(
        stack.ddb, table, pending_payment(account_id="acct-r", amount="not-a-number")
    )["payment_id"]
    # 1. Redis is out of reach: every record's effects fail, and each goes to stream-failures
    saved = _set_aside_while_redis_is_down(stack, service_process, good, poison)

    # 2. the cause fixed (Redis back), the processor running: redrive, applied once
    processor = _processor(
        service_process, PULSE_SQS_WAIT_TIME_SECONDS="1", PULSE_SQS_MAX_BACKOFF_SECONDS="1"
    )
    try:
        redriven = CliRunner().invoke(main, ["dlq", "redrive", "stream-failures"])
        assert redriven.exit_code == 0, redriven.output
        assert "moved 4 message(s) from stream-failures to stream-replays" in redriven.output
        # the poison record failed again, at once (it can never be an event): back it came
        until(lambda: stack.replays_done(failures_left=1), timeout=60)
        _assert_applied_once(stack, good)
        (back,) = _messages(stack.sqs, stack.failures_url)
        attributes = back["MessageAttributes"]
        assert attributes["source_queue"]["StringValue"] == stack.names.replays
        assert "InvalidOperation" in attributes["error"]["StringValue"]
        assert orjson.loads(back["Body"])["record"]["dynamodb"]["NewImage"]["payment_id"] == {
            "S": poison
        }
        again = CliRunner().invoke(main, ["dlq", "show", "stream-failures"])
        assert "  first:    InvalidOperation" in again.output  # the processor's first error too

        # 3. the same failures redriven a second time: nothing is applied twice
        for body in saved:
            stack.sqs.send_message(QueueUrl=stack.failures_url, MessageBody=body)
        twice = CliRunner().invoke(main, ["dlq", "redrive", "stream-failures"])
        assert twice.exit_code == 0, twice.output
        until(lambda: stack.replays_done(failures_left=2), timeout=60)
        _assert_applied_once(stack, good)
        # the replayed events went on to the fraud worker's queue too (it deduplicates)
        fraud_url = topology.queue_urls[stack_settings.names.fraud_queue]
        assert queue_depth(stack.sqs, fraud_url) >= 3
        assert processor.stop() == 0
    finally:
        stack.redis.close()
