"""Integration: ``python -m fraud_worker`` as a real process against moto and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis

from pulse.channels import ALERTS
from pulse.clients import aws_client
from pulse.events import FRAUD_DECISION
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import (
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
