"""kill -9 of a fraud worker mid-handler: the message comes back and its effects happen once."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import redis

from pulse.channels import ALERTS, ChannelKeys
from pulse.clients import aws_client
from pulse.events import PAYMENT_CREATED, new_event, stable_event_id
from pulse.payments import payment_from_item
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import free_port, queue_depth, stream_entries, until

# Short timeouts so the redelivery comes within seconds: visibility 2 s, lease 1.5 s.
FAST = {
    "PULSE_SQS_WAIT_TIME_SECONDS": "1",
    "PULSE_SQS_VISIBILITY_TIMEOUT": "2",
    "PULSE_SQS_HEARTBEAT_SECONDS": "0.5",
    "PULSE_SQS_MAX_BACKOFF_SECONDS": "1",
    "PULSE_IDEMPOTENCY_LEASE_SECONDS": "1.5",
}


def test_a_worker_killed_mid_decision_is_replaced_and_decides_once(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    service_process: Any,
    redis_url: str,
) -> None:
    names = stack_settings.names
    ddb = aws_client("dynamodb", stack_settings)
    sqs = aws_client("sqs", stack_settings)
    client = redis.Redis.from_url(redis_url)
    queue_url = topology.queue_urls[names.fraud_queue]
    payment_id = str(uuid.uuid4())
    item = {
        "payment_id": payment_id,
        "account_id": "acct-crash",
        "amount": "999999.00",
        "currency": "EUR",
        "merchant_id": "m-1",
        "status": "PENDING",
        "created_at": "2025-01-01T00:00:00.000Z",
        "updated_at": "2025-01-01T00:00:00.000Z",
        "request_hash": "h",
    }
    ddb.put_item(TableName=names.payments_table, Item={k: {"S": v} for k, v in item.items()})
    event = new_event(
        id=stable_event_id("record", payment_id),
        type=PAYMENT_CREATED,
        source="/pulse/stream-processor",
        subject=payment_id,
        data=payment_from_item(item),
    )
    guard_key = f"{stack_settings.redis_prefix}idem:fraud:{event.id}"

    def status() -> str:
        got = ddb.get_item(
            TableName=names.payments_table,
            Key={"payment_id": {"S": payment_id}},
            ConsistentRead=True,
        )
        return str(got["Item"]["status"]["S"])

    # The first worker scores the payment, then hangs for 30 s before writing: killed there.
    port = free_port()
    first = service_process(
        "fraud_worker", PULSE_HTTP_PORT=str(port), PULSE_DECISION_DELAY_SECONDS="30", **FAST
    ).start(wait_port=port)
    sqs.send_message(QueueUrl=queue_url, MessageBody=event.to_json().decode())
    until(lambda: client.hget(guard_key, "state") == b"in_progress")
    first.kill()
    assert status() == "PENDING"

    port = free_port()
    second = service_process("fraud_worker", PULSE_HTTP_PORT=str(port), **FAST).start(
        wait_port=port
    )
    until(lambda: status() != "PENDING")
    assert status() == "DECLINED"
    until(lambda: client.hget(guard_key, "state") == b"completed")
    assert client.hget(guard_key, "result") == b"DECLINED"

    alerts = stream_entries(client.xrange(ChannelKeys(stack_settings.redis_prefix).history(ALERTS)))
    assert [orjson.loads(f[b"e"])["data"]["payment_id"] for _, f in alerts] == [payment_id]
    # The velocity window counted the payment once, though two workers recorded it.
    assert client.zcard(f"{stack_settings.redis_prefix}fraud:velocity:acct-crash") == 1

    until(lambda: queue_depth(sqs, queue_url) == 0)
    assert second.stop() == 0
    client.close()
