"""Webhook endpoints against the real emulator: registered, listed, changed, removed, their
secrets rotated with an overlap; accounts kept apart; the event-type filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from typing import Any

import pytest

from pulse.clients import aws_client
from pulse.events import NOTIFICATION
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, WebhookNames
from pulse.webhook_endpoints import (
    InvalidCursorError,
    InvalidFields,
    WebhookEndpoint,
    WebhookEndpoints,
    accepts,
    previous_secret_parameter,
    read_signing_secrets,
    validate_rate,
)
from pulse.webhook_targets import SsrfPolicy

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
URL = "https://hooks.example.com/pulse"


@pytest.fixture
def store(topology: TopologyOutputs, stack_settings: PulseSettings) -> WebhookEndpoints:
    return WebhookEndpoints(
        aws_client("dynamodb", stack_settings),
        aws_client("ssm", stack_settings),
        WebhookNames.from_prefix(stack_settings.resource_prefix),
        policy=SsrfPolicy(),
        overlap_seconds=3600,
    )


def _ssm(stack_settings: PulseSettings) -> Any:
    return aws_client("ssm", stack_settings)


def test_an_endpoint_is_registered_read_changed_and_removed(
    store: WebhookEndpoints, stack_settings: PulseSettings
) -> None:
    made = store.create("acct-1", URL, description="orders", event_types=[NOTIFICATION], now=NOW)
    endpoint = made.endpoint
    assert endpoint.endpoint_id.startswith("ep_")
    assert made.secret.startswith("whsec_")
    assert endpoint.public()["event_types"] == [NOTIFICATION]
    assert "secret" not in endpoint.public()
    assert "secret_parameter" not in endpoint.public()
    # the secret is kept in SSM only, and is the one shown
    secrets = read_signing_secrets(_ssm(stack_settings), endpoint.secret_parameter)
    assert secrets is not None
    assert secrets.valid(NOW.timestamp()) == (made.secret,)

    assert store.get(endpoint.endpoint_id, "acct-1") == endpoint
    assert store.get(endpoint.endpoint_id, None) == endpoint  # an operator's look-up

    later = NOW + timedelta(minutes=1)
    changed = store.update(
        endpoint,
        {
            "url": "https://hooks.example.com/v2",
            "description": None,
            "event_types": None,
            "schedule": "0 9-17 * * mon-fri",
            "rate_per_second": 2,
            "disabled": True,
        },
        now=later,
    )
    assert changed is not None
    assert changed.url == "https://hooks.example.com/v2"
    assert (changed.description, changed.event_types) == (None, None)
    assert (changed.schedule, changed.rate_per_second) == ("0 9-17 * * mon-fri", 2)
    assert changed.public()["rate_per_second"] == 2
    assert changed.disabled
    assert changed.public()["updated_at"] == "2026-12-04T10:01:00.000Z"
    assert store.get(endpoint.endpoint_id, "acct-1") == changed
    enabled = store.update(changed, {"disabled": False}, now=later)
    assert enabled is not None
    assert not enabled.disabled

    removed = store.delete("acct-1", endpoint.endpoint_id)
    assert removed is not None
    assert store.get(endpoint.endpoint_id, "acct-1") is None
    assert read_signing_secrets(_ssm(stack_settings), endpoint.secret_parameter) is None
    assert store.delete("acct-1", endpoint.endpoint_id) is None
    assert store.update(endpoint, {"description": "x"}, now=later) is None


def test_accounts_never_see_each_others_endpoints(store: WebhookEndpoints) -> None:
    mine = store.create("acct-a", URL, now=NOW).endpoint
    theirs = store.create("acct-b", URL, now=NOW).endpoint

    assert store.get(theirs.endpoint_id, "acct-a") is None
    assert store.delete("acct-a", theirs.endpoint_id) is None
    assert store.get(theirs.endpoint_id, "acct-b") == theirs  # still there
    assert [e.endpoint_id for e in store.account_endpoints("acct-a")] == [mine.endpoint_id]
    page = store.page("acct-a", limit=10, cursor=None)
    assert [e.endpoint_id for e in page.items] == [mine.endpoint_id]
    # an operator lists every account's
    everyone = store.page(None, limit=10, cursor=None)
    assert {e.endpoint_id for e in everyone.items} >= {mine.endpoint_id, theirs.endpoint_id}


def test_listing_goes_on_page_by_page_and_refuses_another_listings_cursor(
    store: WebhookEndpoints,
) -> None:
    made = {store.create("acct-p", URL, now=NOW).endpoint.endpoint_id for _ in range(3)}
    seen: list[str] = []
    cursor = None
    while True:
        page = store.page("acct-p", limit=2, cursor=cursor)
        seen += [e.endpoint_id for e in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        with pytest.raises(InvalidCursorError):
            store.page("acct-q", limit=2, cursor=cursor)
    assert sorted(seen) == sorted(made)
    with pytest.raises(InvalidCursorError):
        store.page(None, limit=2, cursor="not-a-cursor")


def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends_then_only_the_new(
    store: WebhookEndpoints, stack_settings: PulseSettings
) -> None:
    made = store.create("acct-r", URL, now=NOW)
    rotated = store.rotate_secret(made.endpoint, now=NOW)
    assert rotated is not None
    assert rotated.secret != made.secret
    assert rotated.previous_valid_until == "2026-12-04T11:00:00.000Z"
    assert rotated.endpoint.previous_secret_expires_at == "2026-12-04T11:00:00.000Z"
    assert rotated.endpoint.secret_rotated_at == "2026-12-04T10:00:00.000Z"

    secrets = read_signing_secrets(_ssm(stack_settings), made.endpoint.secret_parameter)
    assert secrets is not None
    during = (NOW + timedelta(minutes=59)).timestamp()
    after = (NOW + timedelta(minutes=60)).timestamp()
    assert secrets.valid(during) == (rotated.secret, made.secret)
    assert secrets.valid(after) == (rotated.secret,)

    # rotating again within the overlap: the oldest secret stops at once, two sign at most
    again = store.rotate_secret(rotated.endpoint, now=NOW + timedelta(minutes=1))
    assert again is not None
    secrets = read_signing_secrets(_ssm(stack_settings), made.endpoint.secret_parameter)
    assert secrets is not None
    assert secrets.valid(during) == (again.secret, rotated.secret)

    # removing the endpoint removes both secrets
    store.delete("acct-r", made.endpoint.endpoint_id)
    ssm = _ssm(stack_settings)
    left = ssm.get_parameters(
        Names=[
            made.endpoint.secret_parameter,
            previous_secret_parameter(made.endpoint.secret_parameter),
        ]
    )
    assert left["Parameters"] == []


def test_without_an_overlap_the_old_secret_stops_at_once(
    store: WebhookEndpoints, stack_settings: PulseSettings
) -> None:
    abrupt = WebhookEndpoints(
        aws_client("dynamodb", stack_settings),
        _ssm(stack_settings),
        WebhookNames.from_prefix(stack_settings.resource_prefix),
        policy=SsrfPolicy(),
        overlap_seconds=0,
    )
    made = abrupt.create("acct-z", URL, now=NOW)
    rotated = abrupt.rotate_secret(made.endpoint, now=NOW)
    assert rotated is not None
    assert rotated.previous_valid_until is None
    secrets = read_signing_secrets(_ssm(stack_settings), made.endpoint.secret_parameter)
    assert secrets is not None
    assert secrets.valid(NOW.timestamp()) == (rotated.secret,)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"url": "https://169.254.169.254/latest"}, "url", "cloud metadata service"),
        ({"url": "http://hooks.example.com/h"}, "url", "PULSE_WEBHOOK_ALLOW_HTTP=true"),
        ({"url": "https://hooks.example.com/a b"}, "url", "without spaces"),
        ({"event_types": ["pulse.payment.deleted"]}, "event_types", "unknown event type"),
        ({"event_types": []}, "event_types", "non-empty list"),
        ({"schedule": "every day"}, "schedule", "five fields"),
        ({"schedule": "* * * * * *"}, "schedule", "five fields"),
        ({"schedule": "61 * * * *"}, "schedule", "five fields"),
        ({"schedule": "0 0 1 1 *"}, "schedule", "at most 7 days for a window"),
        ({"rate_per_second": 0}, "rate_per_second", "from 1 to 10000"),
        ({"rate_per_second": True}, "rate_per_second", "whole number"),
        ({"rate_per_second": 1.5}, "rate_per_second", "whole number"),
        ({"description": "x" * 257}, "description", "at most 256"),
    ],
)
def test_a_bad_field_is_refused_by_name_and_nothing_is_stored(
    store: WebhookEndpoints, fields: dict[str, Any], field: str, words: str
) -> None:
    request = {"url": URL, **fields}
    with pytest.raises(InvalidFields) as refused:
        store.create("acct-v", request.pop("url"), now=NOW, **request)
    assert [e.field for e in refused.value.errors] == [field]
    assert words in refused.value.errors[0].message
    assert store.account_endpoints("acct-v") == []


def test_every_bad_field_is_named_and_a_changed_url_is_checked_again(
    store: WebhookEndpoints,
) -> None:
    endpoint = store.create("acct-w", URL, now=NOW).endpoint
    with pytest.raises(InvalidFields) as refused:
        store.update(
            endpoint,
            {"url": "https://10.0.0.7/h", "disabled": "yes", "secret": "mine"},
            now=NOW,
        )
    assert {e.field for e in refused.value.errors} == {"url", "disabled", "secret"}
    assert refused.value.url_refused is not None
    assert "private" in refused.value.url_refused.message
    assert store.get(endpoint.endpoint_id, "acct-w") == endpoint  # unchanged


def test_an_allowed_network_lets_an_internal_receiver_be_registered(
    stack_settings: PulseSettings, topology: TopologyOutputs
) -> None:
    local = WebhookEndpoints(
        aws_client("dynamodb", stack_settings),
        _ssm(stack_settings),
        WebhookNames.from_prefix(stack_settings.resource_prefix),
        policy=SsrfPolicy(allow_http=True, allowed_networks=(ip_network("127.0.0.0/8"),)),
    )
    assert local.create("acct-l", "http://127.0.0.1:9000/h", now=NOW).endpoint.url.startswith(
        "http://127.0.0.1"
    )


def _endpoint(**changes: Any) -> WebhookEndpoint:
    base = WebhookEndpoint("a", "ep_" + "0" * 32, URL, "/p", "2026-12-04T10:00:00.000Z")
    return WebhookEndpoint(**{**base.__dict__, **changes})


def test_the_event_type_filter_and_disabled_endpoints() -> None:
    assert accepts(None, NOTIFICATION)
    assert accepts((NOTIFICATION,), NOTIFICATION)
    assert not accepts(("pulse.other",), NOTIFICATION)
    assert _endpoint().accepts(NOTIFICATION)
    assert _endpoint(event_types=(NOTIFICATION,)).accepts(NOTIFICATION)
    assert not _endpoint(event_types=("pulse.other",)).accepts(NOTIFICATION)
    assert not _endpoint(disabled=True).accepts(NOTIFICATION)


def test_an_item_round_trips() -> None:
    endpoint = _endpoint(
        description="d",
        event_types=(NOTIFICATION,),
        disabled=True,
        disabled_reason="failing for 5 days",
        schedule="*/5 * * * *",
        updated_at="2026-12-04T10:01:00.000Z",
        secret_rotated_at="2026-12-04T10:01:00.000Z",
        previous_secret_expires_at="2026-12-05T10:01:00.000Z",
    )
    assert WebhookEndpoint.from_item(endpoint.to_item()) == endpoint
    assert WebhookEndpoint.from_item(_endpoint().to_item()) == _endpoint()


def test_a_disabled_endpoint_says_why_until_it_is_enabled_again(store: WebhookEndpoints) -> None:
    endpoint = store.create("acct-d", URL, now=NOW).endpoint
    disabled = store.disable(endpoint, "failing since 2026-11-29", now=NOW)
    assert disabled is not None
    assert (disabled.disabled, disabled.disabled_reason) == (True, "failing since 2026-11-29")
    assert not disabled.accepts(NOTIFICATION)
    enabled = store.update(disabled, {"disabled": False}, now=NOW)
    assert enabled is not None
    assert (enabled.disabled, enabled.disabled_reason) == (False, None)
    assert enabled.accepts(NOTIFICATION)


def test_a_rate_written_as_a_whole_json_number_is_that_number() -> None:
    # JSON Schema's "integer" is any number without a fraction: 12.0 is 12.
    assert validate_rate(12.0) == 12
    assert isinstance(validate_rate(12.0), int)
