"""The automatic disabling's writes against the real emulator: failing_since set once and
cleared, one winner of the disabling, its announcement due until recorded, a stale
failing_since in hand; and the pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pulse.clients import aws_client
from pulse.events import iso_timestamp
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse.webhook_endpoint_health import (
    WEBHOOK_ENDPOINT_DISABLED,
    Disabling,
    EndpointHealthTable,
    due_for_disabling,
    endpoint_disabled_event,
)
from pulse.webhook_endpoints import WEBHOOK_EVENT_TYPES, WebhookEndpoint, WebhookEndpoints
from pulse.webhook_targets import SsrfPolicy

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
DAY = 86_400


@pytest.fixture
def stores(
    topology: TopologyOutputs, stack_settings: PulseSettings
) -> tuple[WebhookEndpoints, EndpointHealthTable]:
    ddb = aws_client("dynamodb", stack_settings)
    names = WebhookNames.from_prefix(stack_settings.resource_prefix)
    store = WebhookEndpoints(ddb, aws_client("ssm", stack_settings), names, policy=SsrfPolicy())
    return store, EndpointHealthTable(ddb, names.table)


def _endpoint(store: WebhookEndpoints) -> WebhookEndpoint:
    return store.create("acct-h", "https://hooks.example.com/h", now=NOW).endpoint


def _disable(table: EndpointHealthTable, endpoint_id: str, since: str, now: datetime) -> Disabling:
    """Disable after five days."""
    return table.disable("acct-h", endpoint_id, since, disable_after_seconds=5 * DAY, now=now)


def _failing(
    stores: tuple[WebhookEndpoints, EndpointHealthTable],
) -> tuple[EndpointHealthTable, WebhookEndpoint, str]:
    """A new endpoint, failing since NOW."""
    store, table = stores
    endpoint = _endpoint(store)
    since = table.mark_failing("acct-h", endpoint.endpoint_id, now=NOW)
    assert since is not None
    return table, endpoint, since


def _read(store: WebhookEndpoints, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    found = store.get(endpoint.endpoint_id, "acct-h")
    assert found is not None
    return found


def test_failing_since_is_set_once_and_cleared_by_a_success(
    stores: tuple[WebhookEndpoints, EndpointHealthTable],
) -> None:
    store, table = stores
    endpoint = _endpoint(store)
    first = table.mark_failing("acct-h", endpoint.endpoint_id, now=NOW)
    later = table.mark_failing("acct-h", endpoint.endpoint_id, now=NOW + timedelta(hours=1))
    assert first == later == iso_timestamp(NOW)
    assert _read(store, endpoint).public()["failing_since"] == first
    assert table.clear_failing("acct-h", endpoint.endpoint_id)
    assert not table.clear_failing("acct-h", endpoint.endpoint_id)  # nothing left to clear
    assert _read(store, endpoint).failing_since is None
    assert table.mark_failing("acct-h", "ep_" + "0" * 32, now=NOW) is None  # no such endpoint


def test_one_caller_disables_and_the_announcement_is_due_until_recorded(
    stores: tuple[WebhookEndpoints, EndpointHealthTable],
) -> None:
    table, endpoint, since = _failing(stores)
    early = NOW + timedelta(days=4)
    assert not _disable(table, endpoint.endpoint_id, since, early).won

    late = NOW + timedelta(days=5, seconds=1)
    first = _disable(table, endpoint.endpoint_id, since, late)
    second = _disable(table, endpoint.endpoint_id, since, late)
    assert (first.won, first.announce) == (True, True)
    # the loser finds no announcement recorded: its winner may have died before sending it
    assert (second.won, second.announce) == (False, True)
    assert first.endpoint is not None
    assert first.endpoint.disabled
    assert table.pending_announcement("acct-h", endpoint.endpoint_id) == first.endpoint

    table.mark_announced(first.endpoint)
    third = _disable(table, endpoint.endpoint_id, since, late)
    assert (third.won, third.announce) == (False, False)
    assert table.pending_announcement("acct-h", endpoint.endpoint_id) is None


def test_a_success_in_between_or_a_stale_failing_since(
    stores: tuple[WebhookEndpoints, EndpointHealthTable],
) -> None:
    table, endpoint, stale = _failing(stores)
    table.clear_failing("acct-h", endpoint.endpoint_id)  # a success
    later = NOW + timedelta(days=3)
    table.mark_failing("acct-h", endpoint.endpoint_id, now=later)
    six_days = NOW + timedelta(days=6)
    kept = _disable(table, endpoint.endpoint_id, stale, six_days)
    assert (kept.won, kept.announce) == (False, False)
    assert kept.endpoint is not None
    assert not kept.endpoint.disabled

    # long enough since the newer one too: the stale one in hand disables by the newer one
    nine_days = NOW + timedelta(days=9)
    done = _disable(table, endpoint.endpoint_id, stale, nine_days)
    assert done.won
    assert done.endpoint is not None
    assert done.endpoint.failing_since == iso_timestamp(later)
    assert (done.endpoint.disabled_reason or "").startswith(
        f"failing continuously since {iso_timestamp(later)}"
    )


def test_the_rules_and_the_announcement() -> None:
    since = iso_timestamp(NOW)
    assert not due_for_disabling(since, NOW + timedelta(seconds=DAY - 1), DAY)
    assert due_for_disabling(since, NOW + timedelta(seconds=DAY), DAY)
    assert not due_for_disabling(since, NOW + timedelta(days=100), 0)  # 0: never
    assert not due_for_disabling(None, NOW, DAY)
    assert WEBHOOK_ENDPOINT_DISABLED in WEBHOOK_EVENT_TYPES

    endpoint = WebhookEndpoint(
        account_id="acct-h",
        endpoint_id="ep_" + "1" * 32,
        url="https://hooks.example.com/h",
        secret_parameter="/p",
        created_at=since,
        disabled=True,
        disabled_reason="failing continuously since …",
        updated_at=iso_timestamp(NOW + timedelta(days=5)),
        failing_since=since,
    )
    event = endpoint_disabled_event(endpoint)
    assert event.id == endpoint_disabled_event(endpoint).id  # a resend is the same event
    assert event.type == WEBHOOK_ENDPOINT_DISABLED
    assert event.data["disabled_at"] == endpoint.updated_at
    again = WebhookEndpoint(
        **{**endpoint.__dict__, "failing_since": iso_timestamp(NOW + timedelta(days=9))}
    )
    assert endpoint_disabled_event(again).id != event.id  # another failing period, another event
