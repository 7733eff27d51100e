"""kill -9 of a fraud worker mid-handler: the message comes back and its effects happen once."""

from __future__ import annotations

from typing import Any

import redis

from fraud_worker.activity import velocity_key
from pulse.channels import ALERTS
from pulse.clients import aws_client
from pulse.idempotency import idempotency_record_key
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import (
    FAST_REDELIVERY_ENV,
    channel_history,
    free_port,
    payment_created,
    pending_payment,
    put_payment,
    queue_depth,
    until,
)


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
    payment = pending_payment(account_id="acct-crash", amount="999999.00")
    payment_id = put_payment(ddb, names.payments_table, payment)["payment_id"]
    event = payment_created(payment)
    guard_key = idempotency_record_key(stack_settings.redis_prefix, "fraud", event.id)

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
        "fraud_worker",
        PULSE_HTTP_PORT=str(port),
        PULSE_DECISION_DELAY_SECONDS="30",
        **FAST_REDELIVERY_ENV,
    ).start(wait_port=port)
    sqs.send_message(QueueUrl=queue_url, MessageBody=event.to_json().decode())
    until(lambda: client.hget(guard_key, "state") == b"in_progress")
    first.kill()
    assert status() == "PENDING"

    port = free_port()
    second = service_process(
        "fraud_worker", PULSE_HTTP_PORT=str(port), **FAST_REDELIVERY_ENV
    ).start(wait_port=port)
    until(lambda: status() != "PENDING")
    assert status() == "DECLINED"
    until(lambda: client.hget(guard_key, "state") == b"completed")
    assert client.hget(guard_key, "result") == b"DECLINED"

    alerts = channel_history(client, stack_settings.redis_prefix, ALERTS)
    assert [alert["data"]["payment_id"] for alert in alerts] == [payment_id]
    # The velocity window counted the payment once, though two workers recorded it.
    assert client.zcard(velocity_key(stack_settings.redis_prefix, "acct-crash")) == 1

    until(lambda: queue_depth(sqs, queue_url) == 0)
    assert second.stop() == 0
    client.close()
