"""Integration: ``python -m fraud_worker`` as a real process against moto and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis
from click.testing import CliRunner

from fraud_worker.activity import velocity_key
from pulse.channels import ALERTS
from pulse.cli import main
from pulse.clients import aws_client
from pulse.dead_letter_sqs import DeadLetterQueues
from pulse.dead_letters import dead_letter_queues, find_queue
from pulse.events import FRAUD_DECISION
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import (
    KilledBeforeDelete,
    ServiceProcess,
    channel_history,
    free_port,
    payment_created,
    pending_payment,
    put_payment,
    queue_depth,
    readyz,
    until,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Stack:
    settings: PulseSettings
    ddb: Any
    sqs: Any
    redis: redis.Redis
    queue_url: str
    dlq_url: str
    process: ServiceProcess

    def put_pending(self, amount: str, account_id: str = "acct-1") -> dict[str, str]:
        payment = pending_payment(account_id=account_id, amount=amount, traceparent=TRACEPARENT)
        return put_payment(self.ddb, self.settings.names.payments_table, payment)

    def send_created(self, payment: dict[str, str]) -> bytes:
        body = payment_created(payment).to_json()
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body.decode())
        return body

    def item(self, payment_id: str) -> dict[str, Any]:
        return dict(
            self.ddb.get_item(
                TableName=self.settings.names.payments_table,
                Key={"payment_id": {"S": payment_id}},
                ConsistentRead=True,
            )["Item"]
        )

    def alerts(self) -> list[dict[str, Any]]:
        return channel_history(self.redis, self.settings.redis_prefix, ALERTS)

    def depth(self, url: str) -> int:
        return queue_depth(self.sqs, url)


@pytest.fixture
def stack(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    service_process: Any,
    redis_url: str,
) -> Iterator[Stack]:
    port = free_port()
    process = service_process(
        "fraud_worker",
        PULSE_HTTP_PORT=str(port),
        PULSE_SQS_WAIT_TIME_SECONDS="1",
        PULSE_SQS_MAX_BACKOFF_SECONDS="1",
    ).start(wait_port=port)
    ready = until(lambda: readyz(port))
    assert set(ready["checks"]) == {"dynamodb", "redis", "sqs"}
    names = stack_settings.names
    client = redis.Redis.from_url(redis_url)
    yield Stack(
        stack_settings,
        aws_client("dynamodb", stack_settings),
        aws_client("sqs", stack_settings),
        client,
        topology.queue_urls[names.fraud_queue],
        topology.queue_urls[names.fraud_dlq],
        process,
    )
    client.close()


def test_small_payment_is_approved_and_a_huge_one_declined_once(stack: Stack) -> None:
    small = stack.put_pending("12.50")
    huge = stack.put_pending("999999.00", account_id="acct-2")
    stack.send_created(small)
    huge_body = stack.send_created(huge)

    small_id, huge_id = small["payment_id"], huge["payment_id"]
    until(lambda: stack.item(small_id)["status"]["S"] != "PENDING")
    until(lambda: stack.item(huge_id)["status"]["S"] != "PENDING")
    approved, declined = stack.item(small_id), stack.item(huge_id)
    assert approved["status"]["S"] == "APPROVED"
    assert declined["status"]["S"] == "DECLINED"
    assert declined["fraud_reasons"]["L"] == [{"S": "amount_above_decline_limit"}]
    assert int(declined["fraud_score"]["N"]) >= 80
    assert declined["traceparent"]["S"] == TRACEPARENT  # kept for tracing the update
    assert declined["decided_at"]["S"] == declined["updated_at"]["S"]

    alerts = until(stack.alerts)
    assert len(alerts) == 1
    assert alerts[0]["type"] == FRAUD_DECISION
    assert alerts[0]["data"]["payment_id"] == huge_id
    assert alerts[0]["data"]["decision"] == "DECLINED"
    assert alerts[0]["data"]["amount"] == "999999.00"
    until(lambda: stack.depth(stack.queue_url) == 0)

    # The same message again (at-least-once delivery): nothing more happens.
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=huge_body.decode())
    until(lambda: stack.depth(stack.queue_url) == 0)
    time.sleep(0.3)
    assert stack.item(huge_id) == declined
    assert len(stack.alerts()) == 1

    # Logs carry the event id and the trace id.
    lines = [orjson.loads(line) for line in stack.process.logs().splitlines() if line[:1] == "{"]
    decided = [line for line in lines if line.get("event") == "payment decided"]
    assert decided
    assert all(line.get("trace_id") == TRACEPARENT.split("-")[1] for line in decided)
    assert all(line.get("event_id") for line in decided)

    assert stack.process.stop() == 0


def test_a_garbage_body_lands_in_the_dlq_with_the_reason(stack: Stack) -> None:
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody="this is not json")

    def dead() -> list[dict[str, Any]]:
        got = stack.sqs.receive_message(
            QueueUrl=stack.dlq_url, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        return list(got.get("Messages", []))

    messages = until(dead)
    assert messages[0]["Body"] == "this is not json"
    assert "not a CloudEvent" in messages[0]["MessageAttributes"]["error"]["StringValue"]
    stack.sqs.delete_message(QueueUrl=stack.dlq_url, ReceiptHandle=messages[0]["ReceiptHandle"])
    until(lambda: stack.depth(stack.queue_url) == 0)
    assert stack.process.stop() == 0


def test_a_poison_message_is_dead_lettered_redriven_once_fixed_and_decided_once(
    stack: Stack,
) -> None:
    """The issue's scenario: poison → DLQ with its error → fix the cause → ``pulse dlq
    redrive`` → applied exactly once, though the redrive was killed between send and delete
    and run again (the message reached the worker twice)."""
    payment = stack.put_pending("6000.00", account_id="acct-poison")  # REVIEW: one alert
    payment_id = payment["payment_id"]
    # The cause: the account's velocity window corrupted (a key of the wrong type).
    velocity = velocity_key(stack.settings.redis_prefix, "acct-poison")
    stack.redis.set(velocity, "not a sorted set")
    stack.send_created(payment)
    until(lambda: stack.depth(stack.dlq_url) == 1, timeout=60)  # five receives, then the DLQ
    assert stack.item(payment_id)["status"]["S"] == "PENDING"
    shown = CliRunner().invoke(main, ["dlq", "show", "fraud-dlq"])
    assert shown.exit_code == 0, shown.output
    assert "  error:    ResponseError: WRONGTYPE" in shown.output
    assert "(receive 5, the last the queue allows)" in shown.output
    assert "  receives: 5" in shown.output
    assert f"(subject {payment_id})" in shown.output

    stack.redis.delete(velocity)  # the cause fixed
    queue = find_queue(dead_letter_queues(stack.settings.names), "fraud-dlq")
    with pytest.raises(KeyboardInterrupt):  # sent on to the fraud queue, never deleted
        DeadLetterQueues(KilledBeforeDelete(stack.sqs, die_on=1), hold_seconds=1).redrive(queue)
    until(lambda: stack.item(payment_id)["status"]["S"] == "REVIEW")
    until(lambda: stack.depth(stack.queue_url) == 0)
    decided = stack.item(payment_id)
    until(lambda: DeadLetterQueues(stack.sqs).counts(queue) == (1, 0))  # its hold ran out
    again = CliRunner().invoke(main, ["dlq", "redrive", "fraud-dlq"])
    assert again.exit_code == 0, again.output
    assert "moved 1 message(s) from fraud-dlq to fraud" in again.output
    until(lambda: stack.depth(stack.queue_url) == 0)  # handled (deleted after its handler)
    assert stack.depth(stack.dlq_url) == 0
    assert stack.item(payment_id) == decided  # decided once
    assert [a["data"]["payment_id"] for a in stack.alerts()] == [payment_id]  # alerted once
    assert stack.redis.zcard(velocity) == 1  # counted once in the account's window
    assert stack.process.stop() == 0
