"""Poison messages on the fraud and notify queues: each dead-lettered at once with its reason.

Each worker runs as a real process against the real emulator and Redis. Its queue gets a
batch of messages no handler can use (not JSON, JSON that is not an object, nesting deeper
than any parser allows, a CloudEvent missing its fields, an unknown type, the right type
with data of the wrong shape or types) between two good ones. Every poison message must
reach the worker's DLQ unchanged, carrying an ``error`` attribute that says why, on its first
receive (no retries: a permanent error); the good messages are handled as usual.

Malformed stream records are the stream processor's: see
services/stream-processor/tests/test_stream_failures.py (they go whole to its failure queue).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis

from pulse.channels import account_channel
from pulse.clients import aws_client
from pulse.events import NOTIFICATION, PAYMENT_CREATED, PAYMENT_UPDATED
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import (
    channel_history,
    free_port,
    payment_created,
    payment_updated,
    pending_payment,
    put_payment,
    until,
    updated_payment,
)

pytestmark = pytest.mark.timeout(90)


def _event(event_type: str, data: Any, **fields: Any) -> str:
    envelope = {
        "specversion": "1.0",
        "id": f"poison-{uuid.uuid4().hex[:8]}",
        "source": "/tests/poison",
        "type": event_type,
        "subject": "p-poison",
        "time": "2025-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
        **fields,
    }
    return orjson.dumps(envelope).decode()


def _poison(event_type: str) -> dict[str, str]:
    """Name -> body of every message a worker of ``event_type`` events must dead-letter."""
    payment = updated_payment(account_id="acct-poison", payment_id="p-poison")
    poison = {
        "not JSON": "this is not json",
        "a JSON array": "[1, 2, 3]",
        "a JSON string": '"pulse.payment.created"',
        "nested too deeply": "[" * 100_000,
        "a large body of garbage": "{" + "a" * 200_000,
        "missing CloudEvent fields": '{"specversion":"1.0","type":"' + event_type + '"}',
        "an unknown type": _event("pulse.payment.refunded", payment),
        "another stage's type": _event("pulse.stats", payment),
        "data not an object": _event(event_type, "p-poison"),
        "data null": _event(event_type, None),
        "data without its fields": _event(event_type, {"payment_id": "p-poison"}),
        "fields of the wrong type": _event(
            event_type, {**payment, "amount": {"cents": 1250}, "status": 7, "account_id": []}
        ),
        "an amount that is no number": _event(event_type, {**payment, "amount": "12,50 EUR"}),
    }
    if event_type == PAYMENT_UPDATED:  # the fraud worker never names the account's channel
        poison["an account id no channel can carry"] = _event(
            event_type, {**payment, "account_id": "acct poison/../x"}
        )
    return poison


@dataclass
class Worker:
    package: str
    event_type: str
    queue: str
    dlq: str
    # Sends a good message; returns a check that is true once it was handled.
    good: Callable[[Any, str, PulseSettings, redis.Redis], Callable[[], bool]]


def _good_payment(sqs: Any, queue_url: str, settings: PulseSettings, _: redis.Redis) -> Any:
    ddb = aws_client("dynamodb", settings)
    payment = put_payment(
        ddb, settings.names.payments_table, pending_payment(account_id="acct-good")
    )
    sqs.send_message(QueueUrl=queue_url, MessageBody=payment_created(payment).to_json().decode())

    def decided() -> bool:
        got = ddb.get_item(
            TableName=settings.names.payments_table,
            Key={"payment_id": {"S": payment["payment_id"]}},
            ConsistentRead=True,
        )
        return bool(got["Item"]["status"]["S"] != "PENDING")

    return decided


def _good_update(sqs: Any, queue_url: str, settings: PulseSettings, client: redis.Redis) -> Any:
    account = f"acct-good-{uuid.uuid4().hex[:6]}"
    event = payment_updated(updated_payment(account_id=account, payment_id="p-good"))
    sqs.send_message(QueueUrl=queue_url, MessageBody=event.to_json().decode())

    def notified() -> bool:
        history = channel_history(client, settings.redis_prefix, account_channel(account))
        return [e["type"] for e in history] == [NOTIFICATION]

    return notified


WORKERS = {
    "fraud": Worker("fraud_worker", PAYMENT_CREATED, "fraud_queue", "fraud_dlq", _good_payment),
    "notify": Worker("notify_worker", PAYMENT_UPDATED, "notify_queue", "notify_dlq", _good_update),
}


@pytest.mark.parametrize("name", list(WORKERS))
def test_poison_messages_are_dead_lettered_with_a_reason_and_good_ones_flow(
    name: str,
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    service_process: Any,
    redis_url: str,
) -> None:
    worker = WORKERS[name]
    sqs = aws_client("sqs", stack_settings)
    queue_url = topology.queue_urls[getattr(stack_settings.names, worker.queue)]
    dlq_url = topology.queue_urls[getattr(stack_settings.names, worker.dlq)]
    client = redis.Redis.from_url(redis_url)
    port = free_port()
    process = service_process(
        worker.package,
        PULSE_HTTP_PORT=str(port),
        PULSE_SQS_WAIT_TIME_SECONDS="1",
        PULSE_SQS_MAX_BACKOFF_SECONDS="1",
    ).start(wait_port=port)

    poison = _poison(worker.event_type)
    handled_first = worker.good(sqs, queue_url, stack_settings, client)
    for body in poison.values():
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    handled_last = worker.good(sqs, queue_url, stack_settings, client)

    dead: dict[str, dict[str, Any]] = {}

    def all_dead() -> bool:
        got = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
        for message in got:
            dead[message["Body"]] = message
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
        return len(dead) >= len(poison)

    until(all_dead, timeout=60)
    assert set(dead) == set(poison.values())
    for kind, body in poison.items():
        attributes = dead[body].get("MessageAttributes", {})
        reason = attributes.get("error", {}).get("StringValue", "")
        assert reason, (kind, attributes)
        assert attributes["receive_count"]["StringValue"] == "1", (kind, attributes)
    until(handled_first, timeout=30)
    until(handled_last, timeout=30)
    assert process.proc.poll() is None
    assert process.stop() == 0
    client.close()
