"""The fan-out against the real emulator: a notification is queued for each endpoint of its
account that wants it — not a disabled one, not one whose event-type filter leaves it out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from notify_worker.endpoints import EndpointDirectory
from notify_worker.webhooks import WebhookFanout
from pulse.clients import aws_client
from pulse.events import NOTIFICATION
from pulse.notifications import notification_event
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse.webhook_deliveries import Delivery
from pulse.webhook_endpoints import WebhookEndpoint, WebhookEndpoints
from pulse.webhook_targets import SsrfPolicy
from pulse_dev.testing import payment_updated, updated_payment

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


async def test_only_the_endpoints_that_want_the_event_get_it(
    topology: TopologyOutputs, stack_settings: PulseSettings
) -> None:
    ddb, sqs = aws_client("dynamodb", stack_settings), aws_client("sqs", stack_settings)
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    store = WebhookEndpoints(ddb, aws_client("ssm", stack_settings), names, policy=SsrfPolicy())

    def add(**fields: Any) -> WebhookEndpoint:
        return store.create("acct-f", "https://hooks.example.com/h", now=NOW, **fields).endpoint

    everything = add()
    notifications = add(event_types=[NOTIFICATION])
    disabled = add()
    store.update(disabled, {"disabled": True}, now=NOW)
    # a filter naming only another type (none exists yet: written as a later version would)
    other = add()
    item = {**other.to_item(), "event_types": {"L": [{"S": "pulse.webhook.other"}]}}
    ddb.put_item(TableName=names.table, Item=item)
    store.create("acct-g", "https://hooks.example.com/g", now=NOW)  # another account's

    fanout = WebhookFanout(sqs, names.queue, EndpointDirectory(ddb, names.table, cache_seconds=0))
    event = payment_updated(updated_payment(account_id="acct-f"), event_id="ev-f")
    notification = notification_event(event)
    assert notification is not None
    assert await fanout.notify(notification)

    url = topology.queue_urls[names.queue]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    queued = [Delivery.from_json(m["Body"].encode()) for m in got]
    assert sorted(d.endpoint_id for d in queued) == sorted(
        [everything.endpoint_id, notifications.endpoint_id]
    )
    assert {d.event["id"] for d in queued} == {notification.id}
