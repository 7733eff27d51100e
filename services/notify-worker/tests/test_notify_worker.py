"""Integration: ``python -m notify_worker`` as a real process against moto and Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis

from pulse.audit_positions import ACCOUNT_NUMBER, ACCOUNT_OFFSET, CHANNEL_EVENT_KEY, sortable_offset
from pulse.channels import ChannelKeys, account_channel
from pulse.clients import aws_client
from pulse.events import NOTIFICATION, stable_event_id
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import (
    ServiceProcess,
    channel_history,
    free_port,
    payment_updated,
    queue_depth,
    readyz,
    stream_entries,
    until,
    updated_payment,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def worker(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    service_process: Callable[..., ServiceProcess],
) -> ServiceProcess:
    port = free_port()
    process = service_process(
        "notify_worker", PULSE_HTTP_PORT=str(port), PULSE_SQS_WAIT_TIME_SECONDS="1"
    ).start(wait_port=port)
    ready = until(lambda: readyz(port))
    assert set(ready["checks"]) == {"redis", "sqs", "sqs_webhooks", "sqs_webhook_retries"}
    return process


@pytest.fixture
def history(stack_settings: PulseSettings, redis_url: str) -> Iterator[Callable[[str], list[Any]]]:
    client = redis.Redis.from_url(redis_url)

    def read(channel: str) -> list[Any]:
        return channel_history(client, stack_settings.redis_prefix, channel)

    yield read
    client.close()


def _updated(event_id: str, account_id: str, old_status: str, status: str) -> bytes:
    data = updated_payment(account_id=account_id, status=status, old_status=old_status)
    return payment_updated(data, event_id=event_id, traceparent=TRACEPARENT).to_json()


def test_a_status_change_notifies_the_account_once(
    worker: ServiceProcess,
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    history: Callable[[str], list[Any]],
    redis_url: str,
) -> None:
    sqs = aws_client("sqs", stack_settings)
    url = topology.queue_urls[stack_settings.names.notify_queue]
    body = _updated("ev-1", "acct-9", "PENDING", "APPROVED").decode()
    sqs.send_message(QueueUrl=url, MessageBody=body)
    # An update that does not change the status (another account): no notification.
    sqs.send_message(
        QueueUrl=url, MessageBody=_updated("ev-2", "acct-8", "APPROVED", "APPROVED").decode()
    )

    entries = until(lambda: history(account_channel("acct-9")))
    assert len(entries) == 1
    assert entries[0]["type"] == NOTIFICATION
    assert entries[0]["id"] == stable_event_id("ev-1", "notification")
    assert entries[0]["data"]["title"] == "Payment approved"
    assert entries[0]["data"]["message"] == (
        "Your payment of 12.50 EUR to merchant m-1 was approved."
    )
    until(lambda: queue_depth(sqs, url) == 0)

    sqs.send_message(QueueUrl=url, MessageBody=body)  # delivered again
    until(lambda: queue_depth(sqs, url) == 0)
    time.sleep(0.3)
    assert len(history(account_channel("acct-9"))) == 1
    assert history(account_channel("acct-8")) == []

    # Its durable row, where the gateway finds it in its place in the channel.
    notification_id = stable_event_id("ev-1", "notification")
    row = aws_client("dynamodb", stack_settings).get_item(
        TableName=stack_settings.names.events_table,
        Key={"payment_id": {"S": CHANNEL_EVENT_KEY + notification_id}, "sk": {"S": "0" * 40}},
    )["Item"]
    client = redis.Redis.from_url(redis_url)
    ((offset, _),) = stream_entries(
        client.xrange(ChannelKeys(stack_settings.redis_prefix).history(account_channel("acct-9")))
    )
    client.close()
    assert row["account_id"]["S"] == "acct-9"
    assert row[ACCOUNT_OFFSET]["S"] == sortable_offset(offset.decode())
    assert row[ACCOUNT_NUMBER]["N"] == "1"
    assert "time" not in row  # not in the index webhook replays read

    lines = [orjson.loads(line) for line in worker.logs().splitlines() if line[:1] == "{"]
    sent = [line for line in lines if line.get("event") == "notification sent"]
    assert [line["event_id"] for line in sent] == ["ev-1"]
    assert sent[0]["trace_id"] == TRACEPARENT.split("-")[1]
    assert worker.stop() == 0
