"""What is queued for webhook delivery, against the real emulator: a replay's notifications
rebuilt from the audit trail with their original ids, bounded; test events; the FIFO
messages; recovery of dead-lettered events (``pulse webhooks recover``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from pulse.cli import main
from pulse.clients import aws_client
from pulse.events import NOTIFICATION, CloudEvent, iso_timestamp, stable_event_id
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse.webhook_attempts import NEXT_RETRY, AttemptLog, AttemptResult, Claim
from pulse.webhook_deliveries import (
    WEBHOOK_TEST,
    Delivery,
    DeliveryQueue,
    replay,
    replay_notifications,
    replay_window,
    send_test,
)
from pulse.webhook_endpoints import InvalidField, WebhookEndpoint, WebhookEndpoints
from pulse.webhook_targets import SsrfPolicy
from pulse_dev.testing import payment_created, payment_updated, pending_payment, updated_payment
from stream_processor.records import audit_item

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


class Trail:
    """The events table, written as the stream processor writes it."""

    def __init__(self, ddb: Any, table: str) -> None:
        self.ddb = ddb
        self.table = table
        self.sequence = 0

    def record(self, event: CloudEvent) -> None:
        self.sequence += 1
        item = audit_item(event, str(self.sequence), expires_at=2_000_000_000)
        self.ddb.put_item(TableName=self.table, Item=item)

    def update(self, event_id: str, account: str, at: datetime, *, status: str = "APPROVED") -> str:
        """A payment update at ``at``; the id of the notification it makes."""
        data = updated_payment(account_id=account, status=status, payment_id=f"p-{event_id}")
        event = payment_updated(data, event_id=event_id)
        self.record(event.model_copy(update={"time": iso_timestamp(at)}))
        return stable_event_id(event_id, "notification")


@pytest.fixture
def trail(topology: TopologyOutputs, stack_settings: PulseSettings) -> Trail:
    return Trail(aws_client("dynamodb", stack_settings), stack_settings.names.events_table)


@pytest.fixture
def endpoints(topology: TopologyOutputs, stack_settings: PulseSettings) -> WebhookEndpoints:
    return WebhookEndpoints(
        aws_client("dynamodb", stack_settings),
        aws_client("ssm", stack_settings),
        WebhookNames.from_prefix(stack_settings.resource_prefix),
        policy=SsrfPolicy(),
    )


@pytest.fixture
def queue(topology: TopologyOutputs, stack_settings: PulseSettings) -> DeliveryQueue:
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    return DeliveryQueue(aws_client("sqs", stack_settings), names.queue)


def _queued(stack_settings: PulseSettings, topology: TopologyOutputs) -> list[dict[str, Any]]:
    """Every message of the FIFO delivery queue, in order (each received once)."""
    sqs = aws_client("sqs", stack_settings)
    url = topology.queue_urls[WebhookNames.from_prefix(stack_settings.resource_prefix).queue]
    got: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            AttributeNames=["MessageGroupId"],
            VisibilityTimeout=60,
            WaitTimeSeconds=1,  # not the queue's 20 s: the last, empty receive ends the read
        ).get("Messages", [])
        if not batch:
            return got
        got += batch


def test_a_replay_rebuilds_the_accounts_notifications_with_their_original_ids(
    trail: Trail, endpoints: WebhookEndpoints, stack_settings: PulseSettings
) -> None:
    ids = [trail.update(f"ev-{i}", "acct-1", T0 + timedelta(minutes=i)) for i in range(4)]
    trail.update("ev-same", "acct-1", T0, status="PENDING")  # no change: no notification
    created = payment_created(pending_payment(account_id="acct-1"))
    trail.record(created.model_copy(update={"time": iso_timestamp(T0)}))  # not an update
    trail.update("ev-other", "acct-2", T0)  # another account's
    endpoint = endpoints.create("acct-1", "https://hooks.example.com/h", now=T0).endpoint
    ddb, table = trail.ddb, trail.table

    found = replay_notifications(
        ddb, table, endpoint, since=T0, until=T0 + timedelta(hours=1), limit=10
    )
    assert [e.id for e in found.events] == ids
    assert {e.type for e in found.events} == {NOTIFICATION}
    assert found.next_since is None
    # the window's ends are included
    window = replay_notifications(
        ddb,
        table,
        endpoint,
        since=T0 + timedelta(minutes=1),
        until=T0 + timedelta(minutes=2),
        limit=10,
    )
    assert [e.id for e in window.events] == ids[1:3]
    # bounded: the rest start at next_since
    first = replay_notifications(
        ddb, table, endpoint, since=T0, until=T0 + timedelta(hours=1), limit=3
    )
    assert [e.id for e in first.events] == ids[:3]
    assert first.next_since == "2026-12-04T10:03:00.000Z"


def test_a_replay_honours_the_endpoints_event_type_filter(
    trail: Trail, stack_settings: PulseSettings
) -> None:
    trail.update("ev-f", "acct-f", T0)
    other = WebhookEndpoint(
        "acct-f", "ep_" + "1" * 32, "https://h.example.com", "/p", "t", event_types=("x.y",)
    )
    found = replay_notifications(
        trail.ddb, trail.table, other, since=T0, until=T0 + timedelta(hours=1), limit=10
    )
    assert found.events == []


def test_replays_and_tests_are_queued_for_the_one_endpoint_each_time_asked(
    trail: Trail,
    endpoints: WebhookEndpoints,
    queue: DeliveryQueue,
    stack_settings: PulseSettings,
    topology: TopologyOutputs,
) -> None:
    ids = [trail.update(f"ev-q{i}", "acct-q", T0 + timedelta(seconds=i)) for i in range(2)]
    endpoint = endpoints.create("acct-q", "https://hooks.example.com/q", now=T0).endpoint
    endpoints.create("acct-q", "https://hooks.example.com/other", now=T0)
    for _ in range(2):  # asked again: sent again
        replay(
            queue,
            trail.ddb,
            trail.table,
            endpoint,
            since=T0,
            until=T0 + timedelta(minutes=1),
            limit=10,
        )
    test = send_test(queue, endpoint, now=T0)

    messages = _queued(stack_settings, topology)
    deliveries = [Delivery.from_json(m["Body"].encode()) for m in messages]
    assert [d.event["id"] for d in deliveries] == [*ids, *ids, test.id]
    assert {d.endpoint_id for d in deliveries} == {endpoint.endpoint_id}
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {endpoint.endpoint_id}
    assert all(d.url == endpoint.url for d in deliveries)
    assert all(d.secret_parameter == endpoint.secret_parameter for d in deliveries)
    sent = deliveries[-1].event
    assert sent["type"] == WEBHOOK_TEST
    assert sent["subject"] == endpoint.endpoint_id
    assert sent["data"]["account_id"] == "acct-q"
    assert orjson.loads(orjson.dumps(sent)) == test.model_dump(mode="json", exclude_none=True)


def test_a_replay_window_starts_before_it_ends() -> None:
    naive = datetime(2026, 12, 4, 10, 0)  # noqa: DTZ001 - a time without a zone: UTC
    assert replay_window(naive, None, now=T0 + timedelta(hours=1)) == (
        T0,
        T0 + timedelta(hours=1),
    )
    with pytest.raises(InvalidField, match="before until"):
        replay_window(T0, T0, now=T0)
    with pytest.raises(InvalidField, match="before now"):
        replay_window(T0 + timedelta(seconds=1), None, now=T0)


def test_pulse_webhooks_recover_finds_an_event_whose_update_came_days_before_its_failure(
    trail: Trail,
    endpoints: WebhookEndpoints,
    stack_settings: PulseSettings,
    stack_env: dict[str, str],
    topology: TopologyOutputs,
) -> None:
    now = datetime.now(UTC)
    endpoint = endpoints.create("acct-r", "https://hooks.example.com/h", now=now).endpoint
    # updated three days ago, first tried two days ago, dead-lettered an hour ago
    late = trail.update("ev-late", "acct-r", now - timedelta(days=3))
    trail.update("ev-fine", "acct-r", now - timedelta(days=3, minutes=-1))
    log = AttemptLog(
        aws_client("dynamodb", stack_settings),
        WebhookNames.from_prefix(stack_settings.resource_prefix).attempts,
    )
    for attempt, at, step in ((1, timedelta(days=2), NEXT_RETRY), (2, timedelta(hours=1), "dead")):
        claim = log.claim(
            endpoint.endpoint_id,
            late,
            attempt,
            account_id="acct-r",
            owner="w",
            lease_seconds=30,
            now_ms=int((now - at).timestamp() * 1000),
        )
        assert isinstance(claim, Claim)
        log.finish(claim, AttemptResult(502, 9, "", "HTTP 502"), next_step=step)

    since = iso_timestamp(now - timedelta(hours=2))
    args = ["webhooks", "recover", endpoint.endpoint_id, "--since", since]
    recovered = CliRunner().invoke(main, args, env=stack_env)
    assert recovered.exit_code == 0, recovered.output
    assert recovered.output == f"queued 1 of 1 failed events for {endpoint.endpoint_id}\n  {late}\n"
    (message,) = _queued(stack_settings, topology)
    delivery = Delivery.from_json(message["Body"].encode())
    assert (delivery.event_id, delivery.endpoint_id) == (late, endpoint.endpoint_id)
    assert delivery.request  # its own series of attempts in the log

    unknown = CliRunner().invoke(
        main, ["webhooks", "recover", "ep_0", "--since", since], env=stack_env
    )
    assert unknown.exit_code == 1
    assert "no endpoint ep_0" in unknown.output
