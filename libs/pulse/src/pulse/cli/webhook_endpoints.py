"""``pulse webhooks``: an account's webhook endpoints, on the code path of ingest's
``/v1/webhook-endpoints`` (:mod:`pulse.webhook_endpoints`, :mod:`pulse.webhook_deliveries`),
and their attempt log (:mod:`pulse.webhook_attempts`)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import click

from pulse.cli.arguments import identifiers
from pulse.cli.target import aws, settings, settings_of

if TYPE_CHECKING:
    from pulse.webhook_attempts import AttemptLog, AttemptRecord
    from pulse.webhook_deliveries import DeliveryQueue
    from pulse.webhook_endpoints import WebhookEndpoint, WebhookEndpoints

__all__ = ["webhooks"]

_EXCERPT_SHOWN: Final = 80


@click.group(short_help="Register, test, replay, recover and remove webhook endpoints.")
def webhooks() -> None:
    """Manage webhook endpoints: events of an account POSTed, signed, to a third party.

    Endpoints live in the DynamoDB table {PULSE_RESOURCE_PREFIX}webhooks; each one's signing
    secret (Standard Webhooks, "whsec_<base64>") in SSM Parameter Store. Account holders do
    the same through ingest's /v1/webhook-endpoints. Every attempt to deliver an event is
    logged in {PULSE_RESOURCE_PREFIX}webhook-attempts (`pulse webhooks attempts`).
    """


class _Refused(click.ClickException):
    """One line, exit code 2: bad input, as click's own usage errors."""

    exit_code = 2


def _now() -> datetime:
    return datetime.now(UTC)


def _endpoints() -> WebhookEndpoints:
    """The endpoints of the target stack, under its URL policy (PULSE_WEBHOOK_ALLOW_HTTP,
    PULSE_WEBHOOK_ALLOWED_NETWORKS) and secret overlap as that stack sets them."""
    from pulse.topology import WebhookNames  # noqa: PLC0415 - boto3 only for these commands
    from pulse.webhook_endpoints import (  # noqa: PLC0415
        WebhookEndpoints,
        WebhookEndpointSettings,
    )

    names = WebhookNames.from_prefix(settings().resource_prefix)
    options = settings_of(WebhookEndpointSettings)
    return WebhookEndpoints.of(aws("dynamodb"), aws("ssm"), names, options)


def _queue() -> DeliveryQueue:
    from pulse.topology import WebhookNames  # noqa: PLC0415
    from pulse.webhook_deliveries import DeliveryQueue  # noqa: PLC0415

    return DeliveryQueue(aws("sqs"), WebhookNames.from_prefix(settings().resource_prefix).queue)


def _endpoint(store: WebhookEndpoints, endpoint_id: str, account: str | None) -> WebhookEndpoint:
    found = store.get(endpoint_id, account)
    if found is None:
        whose = f" for account {account}" if account is not None else ""
        click.echo(f"no endpoint {endpoint_id}{whose}", err=True)
        sys.exit(1)
    return found


def _refused(exc: Any) -> _Refused:
    """An :class:`~pulse.webhook_endpoints.InvalidField` as the option it came from."""
    option = {"event_types": "--event-type", "rate_per_second": "--rate"}.get(
        exc.field, f"--{exc.field}"
    )
    verb = "refused" if exc.field == "url" else "invalid"
    return _Refused(f"{option} {verb}: {exc.message}")


_ENDPOINT = click.option(
    "--endpoint", "endpoint_id", required=True, help="The endpoint id (ep_...)."
)
_ACCOUNT = click.option(
    "--account",
    default=None,
    callback=identifiers,
    help="Its account (found from the endpoint id when left out).",
)


@webhooks.command(name="add")
@click.option(
    "--account", required=True, callback=identifiers, help="Account whose events are sent."
)
@click.option(
    "--url",
    required=True,
    help="The receiver's https:// URL (no internal address; see docs/security.md).",
)
@click.option("--description", default=None, help="What the endpoint is for.")
@click.option(
    "--event-type",
    "event_types",
    multiple=True,
    help="Send only events of this type (repeatable; default: every type).",
)
@click.option(
    "--schedule",
    default=None,
    help="Delivery windows: a five-field cron expression, in UTC (such as '* 9-17 * * 1-5'); "
    "outside them events wait (default: always open).",
)
@click.option(
    "--rate",
    type=int,
    default=None,
    help="Requests a second to the endpoint at most (default: PULSE_WEBHOOK_RATE_PER_SECOND).",
)
def webhooks_add(  # click passes options by name
    *,
    account: str,
    url: str,
    description: str | None,
    event_types: tuple[str, ...],
    schedule: str | None,
    rate: int | None,
) -> None:
    """Register an endpoint; prints its id and signing secret (shown only here)."""
    from pulse.webhook_endpoints import InvalidFields  # noqa: PLC0415

    try:
        made = _endpoints().create(
            account,
            url,
            description=description,
            event_types=list(event_types) or None,
            schedule=schedule,
            rate_per_second=rate,
            now=_now(),
        )
    except InvalidFields as exc:
        raise _refused(exc.url_refused or exc.errors[0]) from exc
    click.echo(f"endpoint: {made.endpoint.endpoint_id}")
    click.echo(f"secret: {made.secret}")


@webhooks.command(name="list")
@click.option(
    "--account", default=None, callback=identifiers, help="Only this account's endpoints."
)
def webhooks_list(account: str | None) -> None:
    """Print endpoints, one `account endpoint url` line each (a disabled one ends in
    `(disabled)`)."""
    store = _endpoints()
    found: list[WebhookEndpoint] = []
    cursor: str | None = None
    while True:
        page = store.page(account, limit=100, cursor=cursor)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    for e in sorted(found, key=lambda e: (e.account_id, e.endpoint_id)):
        click.echo(f"{e.account_id} {e.endpoint_id} {e.url}" + " (disabled)" * e.disabled)


@webhooks.command(name="show")
@_ACCOUNT
@_ENDPOINT
def webhooks_show(account: str | None, endpoint_id: str) -> None:
    """Print the endpoint as JSON, as GET /v1/webhook-endpoints/{id} shows it (its URL,
    filter, schedule, rate_per_second, ...; never its secret)."""
    import orjson  # noqa: PLC0415

    endpoint = _endpoint(_endpoints(), endpoint_id, account)
    click.echo(orjson.dumps(endpoint.public(), option=orjson.OPT_INDENT_2).decode())


@webhooks.command(name="remove")
@_ACCOUNT
@_ENDPOINT
def webhooks_remove(account: str | None, endpoint_id: str) -> None:
    """Remove an endpoint and its secret; deliveries already queued for it are dropped."""
    store = _endpoints()
    endpoint = _endpoint(store, endpoint_id, account)
    if store.delete(endpoint.account_id, endpoint.endpoint_id) is None:
        click.echo(f"no endpoint {endpoint_id} for account {endpoint.account_id}", err=True)
        sys.exit(1)
    click.echo(f"removed {endpoint_id}")


@webhooks.command(name="rotate-secret")
@_ACCOUNT
@_ENDPOINT
def webhooks_rotate_secret(account: str | None, endpoint_id: str) -> None:
    """A new signing secret, printed once; the old one keeps signing (beside it) for
    PULSE_WEBHOOK_SECRET_OVERLAP_SECONDS."""
    store = _endpoints()
    rotated = store.rotate_secret(_endpoint(store, endpoint_id, account), now=_now())
    if rotated is None:
        click.echo(f"no endpoint {endpoint_id}", err=True)
        sys.exit(1)
    click.echo(f"secret: {rotated.secret}")
    click.echo(f"previous secret valid until: {rotated.previous_valid_until or 'now'}")


@webhooks.command(name="test")
@_ACCOUNT
@_ENDPOINT
def webhooks_test(account: str | None, endpoint_id: str) -> None:
    """Send the endpoint a pulse.webhook.test event (queued like any delivery)."""
    from pulse.webhook_deliveries import WEBHOOK_TEST, send_test  # noqa: PLC0415

    endpoint = _endpoint(_endpoints(), endpoint_id, account)
    event = send_test(_queue(), endpoint, now=_now())
    click.echo(f"queued {WEBHOOK_TEST} {event.id} for {endpoint_id}")


class _Moment(click.ParamType[datetime]):
    """An ISO 8601 time (2026-12-04T10:00:00Z, or a date); UTC without a zone."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time such as 2026-12-04T10:00:00Z", param, ctx)


@webhooks.command(name="replay")
@_ACCOUNT
@_ENDPOINT
@click.option("--since", required=True, type=_Moment(), help="From this time (ISO 8601).")
@click.option("--until", default=None, type=_Moment(), help="Up to this time (default: now).")
def webhooks_replay(
    account: str | None, endpoint_id: str, since: datetime, until: datetime | None
) -> None:
    """Send the account's notifications of a time span to the endpoint again, with their
    original ids (webhook-id), oldest first, at most PULSE_WEBHOOK_REPLAY_MAX_EVENTS."""
    from pulse.webhook_deliveries import replay, replay_window  # noqa: PLC0415
    from pulse.webhook_endpoints import InvalidField, WebhookEndpointSettings  # noqa: PLC0415

    endpoint = _endpoint(_endpoints(), endpoint_id, account)
    try:
        start, end = replay_window(since, until, now=_now())
    except InvalidField as exc:
        raise _refused(exc) from exc
    limit = settings_of(WebhookEndpointSettings).webhook_replay_max_events
    done = replay(
        _queue(),
        aws("dynamodb"),
        settings().names.events_table,
        endpoint,
        since=start,
        until=end,
        limit=limit,
    )
    click.echo(f"queued {len(done.events)} events for {endpoint_id}")
    if done.next_since is not None:
        click.echo(f"more after the first {limit}: run again with --since {done.next_since}")


@webhooks.command(name="recover")
@click.argument("endpoint_id")
@click.option("--since", required=True, type=_Moment(), help="Failed since this time (ISO 8601).")
def webhooks_recover(endpoint_id: str, since: datetime) -> None:
    """Send the endpoint again, once each and with their original ids (webhook-id), the
    events whose latest attempt since --since was dead-lettered, oldest first, at most
    PULSE_WEBHOOK_REPLAY_MAX_EVENTS (the code of POST /v1/webhook-endpoints/{id}/recover)."""
    from pulse.webhook_deliveries import recover  # noqa: PLC0415
    from pulse.webhook_endpoints import WebhookEndpointSettings  # noqa: PLC0415

    endpoint = _endpoint(_endpoints(), endpoint_id, None)
    limit = settings_of(WebhookEndpointSettings).webhook_replay_max_events
    done = recover(
        _queue(),
        _attempt_log(),
        aws("dynamodb"),
        settings().names.events_table,
        endpoint,
        since=since,
        limit=limit,
    )
    click.echo(f"queued {len(done.events)} of {done.failed} failed events for {endpoint_id}")
    for event in done.events:
        click.echo(f"  {event.id}")
    if done.missing:
        click.echo(f"not in the audit trail (not sent): {' '.join(done.missing)}", err=True)
    if done.failed > limit:
        click.echo(f"more than {limit}: run again once these were attempted", err=True)


def _attempt_log() -> AttemptLog:
    from pulse.topology import WebhookNames  # noqa: PLC0415
    from pulse.webhook_attempts import AttemptLog  # noqa: PLC0415

    return AttemptLog(
        aws("dynamodb"), WebhookNames.from_prefix(settings().resource_prefix).attempts
    )


@webhooks.command(name="attempts")
@click.argument("endpoint_id")
@click.option("--event", "event_id", default=None, help="Only this event's attempts.")
@click.option(
    "--status",
    type=click.Choice(["failed", "succeeded"]),
    default=None,
    help="Only the attempts that failed, or that succeeded.",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, help="Attempts shown.")
@click.option("--cursor", default=None, help="Go on after a page (printed when there are more).")
def webhooks_attempts(
    endpoint_id: str, event_id: str | None, status: str | None, limit: int, cursor: str | None
) -> None:
    """Print an endpoint's delivery attempts, newest first, one a line: time, event,
    attempt number, outcome, HTTP status, latency, then the error, what follows a failure
    and the start of the answer."""
    try:
        page = _attempt_log().query(
            endpoint_id,
            event_id=event_id,
            status=status,
            limit=limit,
            cursor=cursor,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cursor") from exc
    for record in page.items:
        click.echo(_attempt_line(record))
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


def _attempt_line(record: AttemptRecord) -> str:
    seen = record.to_json()
    parts = [
        record.attempted_at,
        record.event_id,
        f"#{record.attempt}",
        record.state,
        str(record.status_code) if record.status_code is not None else "-",
        f"{record.latency_ms}ms" if record.latency_ms is not None else "-",
    ]
    if record.error:
        parts.append(f"error: {record.error}")
    if record.next == "retry":
        parts.append(f"next attempt at {seen['next_at']}")
    elif record.next == "dead":
        parts.append("dead-lettered")
    if record.response:
        excerpt = record.response[:_EXCERPT_SHOWN]
        parts.append(f"response: {excerpt!r}")
    return "  ".join(parts)
