"""``pulse webhooks``: an account's webhook endpoints (DynamoDB rows, secrets in SSM) and
their attempt log."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any, Final

import click

from pulse.cli.target import aws, settings, settings_of
from pulse.errors import ConfigurationError

if TYPE_CHECKING:
    from pulse.webhook_attempts import AttemptRecord

__all__ = ["webhooks"]

_EXCERPT_SHOWN: Final = 80


@click.group(short_help="Register, list and remove webhook endpoints; read their attempts.")
def webhooks() -> None:
    """Manage webhook endpoints: events of an account POSTed, signed, to a third party.

    Endpoints live in the DynamoDB table {PULSE_RESOURCE_PREFIX}webhooks; each one's signing
    secret (Standard Webhooks, "whsec_<base64>") in SSM Parameter Store; every attempt to
    deliver an event in {PULSE_RESOURCE_PREFIX}webhook-attempts.
    """


def _webhook_names() -> Any:
    from pulse.topology import WebhookNames  # noqa: PLC0415

    return WebhookNames.from_prefix(settings().resource_prefix)


class _RefusedUrl(click.ClickException):
    """One line, exit code 2: bad input, as click's own usage errors."""

    exit_code = 2


def _check_target(url: str) -> None:
    """Refuse a URL the notify worker would refuse by its look alone (scheme, a literal
    internal address), under PULSE_WEBHOOK_ALLOW_HTTP / PULSE_WEBHOOK_ALLOWED_NETWORKS as
    the target stack sets them; the worker checks again, resolving, at delivery."""
    from pulse.webhook_targets import (  # noqa: PLC0415
        SsrfPolicy,
        TargetRefused,
        WebhookTargetSettings,
        check_url,
    )

    try:
        check_url(url, SsrfPolicy.from_settings(settings_of(WebhookTargetSettings)))
    except TargetRefused as exc:
        raise _RefusedUrl(f"--url refused: {exc}") from exc
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc


@webhooks.command(name="add")
@click.option("--account", required=True, help="Account whose events are sent.")
@click.option(
    "--url",
    required=True,
    help="The receiver's https:// URL (no internal address; see docs/security.md).",
)
def webhooks_add(account: str, url: str) -> None:
    """Register an endpoint; prints its id and signing secret (shown only here)."""
    import base64  # noqa: PLC0415
    import secrets  # noqa: PLC0415
    import uuid  # noqa: PLC0415
    from datetime import UTC, datetime  # noqa: PLC0415

    _check_target(url)
    names = _webhook_names()
    endpoint_id = f"ep_{uuid.uuid4().hex}"
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    parameter = names.secret_parameter(endpoint_id)
    aws("ssm").put_parameter(Name=parameter, Value=secret, Type="SecureString", Overwrite=True)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    aws("dynamodb").put_item(
        TableName=names.table,
        Item={
            "account_id": {"S": account},
            "endpoint_id": {"S": endpoint_id},
            "url": {"S": url},
            "secret_parameter": {"S": parameter},
            "created_at": {"S": now},
        },
    )
    click.echo(f"endpoint: {endpoint_id}")
    click.echo(f"secret: {secret}")


@webhooks.command(name="list")
@click.option("--account", default=None, help="Only this account's endpoints.")
def webhooks_list(account: str | None) -> None:
    """Print endpoints, one `account endpoint url` line each."""
    names = _webhook_names()
    ddb = aws("dynamodb")
    if account is None:
        pages = ddb.get_paginator("scan").paginate(TableName=names.table)
    else:
        pages = ddb.get_paginator("query").paginate(
            TableName=names.table,
            KeyConditionExpression="account_id = :a",
            ExpressionAttributeValues={":a": {"S": account}},
        )
    rows = sorted(
        (i["account_id"]["S"], i["endpoint_id"]["S"], i["url"]["S"])
        for page in pages
        for i in page.get("Items", [])
    )
    for row in rows:
        click.echo(" ".join(row))


@webhooks.command(name="remove")
@click.option("--account", required=True)
@click.option("--endpoint", "endpoint_id", required=True, help="The endpoint id (ep_...).")
def webhooks_remove(account: str, endpoint_id: str) -> None:
    """Remove an endpoint and its secret; deliveries already queued for it are dropped."""
    names = _webhook_names()
    got = aws("dynamodb").delete_item(
        TableName=names.table,
        Key={"account_id": {"S": account}, "endpoint_id": {"S": endpoint_id}},
        ReturnValues="ALL_OLD",
    )
    if not got.get("Attributes"):
        click.echo(f"no endpoint {endpoint_id} for account {account}", err=True)
        sys.exit(1)
    ssm = aws("ssm")
    with contextlib.suppress(ssm.exceptions.ParameterNotFound):
        ssm.delete_parameter(Name=names.secret_parameter(endpoint_id))
    click.echo(f"removed {endpoint_id}")


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
    from pulse.webhook_attempts import AttemptLog  # noqa: PLC0415

    log = AttemptLog(aws("dynamodb"), _webhook_names().attempts)
    try:
        page = log.query(
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
