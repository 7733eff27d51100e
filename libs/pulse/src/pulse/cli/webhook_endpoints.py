"""``pulse webhooks``: an account's webhook endpoints (DynamoDB rows, secrets in SSM)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from pulse.cli.target import aws, settings, settings_of
from pulse.errors import ConfigurationError

__all__ = ["webhooks"]


@click.group(short_help="Register, list and remove webhook endpoints.")
def webhooks() -> None:
    """Manage webhook endpoints: events of an account POSTed, signed, to a third party.

    Endpoints live in the DynamoDB table {PULSE_RESOURCE_PREFIX}webhooks; each one's signing
    secret (Standard Webhooks, "whsec_<base64>") in SSM Parameter Store.
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
