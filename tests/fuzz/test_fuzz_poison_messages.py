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

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis

from pulse.channels import ChannelKeys, account_channel
from pulse.clients import aws_client
from pulse.events import NOTIFICATION, PAYMENT_CREATED, PAYMENT_UPDATED, new_event
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import free_port, stream_entries

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
    payment = {
        "payment_id": "p-poison",
        "account_id": "acct-poison",
        "amount": "12.50",
        "currency": "EUR",
        "merchant_id": "m-1",
        "status": "APPROVED",
        "old_status": "PENDING",
    }
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
    payment_id = str(uuid.uuid4())
    item = {
        "payment_id": payment_id,
        "account_id": "acct-good",
        "amount": "12.50",
        "currency": "EUR",
        "merchant_id": "m-1",
        "status": "PENDING",
        "created_at": "2025-01-01T00:00:00.000Z",
        "updated_at": "2025-01-01T00:00:00.000Z",
    }
    ddb.put_item(
        TableName=settings.names.payments_table, Item={k: {"S": v} for k, v in item.items()}
    )
    event = new_event(type=PAYMENT_CREATED, source="/tests/poison", subject=payment_id, data=item)
    sqs.send_message(QueueUrl=queue_url, MessageBody=event.to_json().decode())

    def decided() -> bool:
        got = ddb.get_item(
            TableName=settings.names.payments_table,
            Key={"payment_id": {"S": payment_id}},
            ConsistentRead=True,
        )
        return bool(got["Item"]["status"]["S"] != "PENDING")

    return decided


def _good_update(sqs: Any, queue_url: str, settings: PulseSettings, client: redis.Redis) -> Any:
    account = f"acct-good-{uuid.uuid4().hex[:6]}"
    event = new_event(
        type=PAYMENT_UPDATED,
        source="/tests/poison",
        subject="p-good",
        data={
            "payment_id": "p-good",
            "account_id": account,
            "amount": "12.50",
            "currency": "EUR",
            "merchant_id": "m-1",
            "status": "APPROVED",
            "old_status": "PENDING",
        },
    )
    sqs.send_message(QueueUrl=queue_url, MessageBody=event.to_json().decode())
    history = ChannelKeys(settings.redis_prefix).history(account_channel(account))

    def notified() -> bool:
        entries = stream_entries(client.xrange(history))
        return [orjson.loads(f[b"e"])["type"] for _, f in entries] == [NOTIFICATION]

    return notified


WORKERS = {
    "fraud": Worker("fraud_worker", PAYMENT_CREATED, "fraud_queue", "fraud_dlq", _good_payment),
    "notify": Worker("notify_worker", PAYMENT_UPDATED, "notify_queue", "notify_dlq", _good_update),
}


def until(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
    return value


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
    until(handled_first)
    until(handled_last)
    assert process.proc.poll() is None
    assert process.stop() == 0
    client.close()
