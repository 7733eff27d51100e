"""The ``pulse`` command: run the local stack, issue dev tokens, send load, tail channels,
manage the fraud blocklists."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import click

from pulse.blocklists import BLOCKLIST_KINDS, blocklist_key
from pulse.settings import PulseSettings

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main() -> None:
    """Pulse: a self-reporting, real-time event pipeline.

    \b
    pulse dev          run the whole system locally (what `make run` does)
    pulse token        print a development connection token
    pulse load         send payments at a steady rate and report latency
    pulse tail         print a channel's events as they arrive
    pulse fraud        block and unblock accounts and merchants
    pulse webhooks     register, list and remove an account's webhook endpoints
    """


@main.command()
@click.option("--demo", is_flag=True, help="Send a steady trickle of demo payments.")
@click.option("--demo-rate", type=float, default=2.0, help="Demo payments per second.")
@click.option("--emulator-port", type=int, default=4566, help="AWS emulator port.")
@click.option("--redis-url", default=None, help="Use this Redis instead of 127.0.0.1:6379.")
@click.option("--ingest-port", type=int, default=8080)
@click.option("--gateway-port", type=int, default=8090)
@click.option("--ops-port-base", type=int, default=9101, help="First of the workers' ops ports.")
@click.option("--resource-prefix", default="pulse-", help="Prefix of AWS resource names.")
@click.option("--redis-prefix", default="pulse:", help="Prefix of every Redis key.")
@click.option("--json-logs", is_flag=True, help="Raw JSON log lines instead of console format.")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info"
)
def dev(**opts: Any) -> None:
    """Run Pulse locally: AWS emulator, Redis, topology and all five services.

    Reuses an emulator already listening on the emulator port and the Redis on
    127.0.0.1:6379 if it answers; starts them otherwise. Ctrl-C stops everything.
    """
    from pulse.devstack import DevStackConfig, run_dev_stack  # noqa: PLC0415 - heavy, dev only

    demo = opts.pop("demo")
    rate = opts.pop("demo_rate")
    config = DevStackConfig(**opts, demo_rate=rate if demo else 0.0)
    sys.exit(asyncio.run(run_dev_stack(config)))


@main.command()
@click.option("--sub", required=True, help="Subject: the account id or user name.")
@click.option("--roles", default="", help="Comma-separated roles, e.g. ops.")
@click.option(
    "--ttl", type=click.IntRange(1, 30 * 24 * 3600), default=3600, help="Lifetime in seconds."
)
def token(sub: str, roles: str, ttl: int) -> None:
    """Print an HS256 connection token signed with PULSE_JWT_SECRET (dev default if unset)."""
    from pulse.auth import issue_token  # noqa: PLC0415

    secret = PulseSettings().jwt_secret.get_secret_value()
    role_list = [r.strip() for r in roles.split(",") if r.strip()]
    click.echo(issue_token(secret, sub=sub, roles=role_list, ttl_seconds=ttl))


@main.command()
@click.option("--url", default="http://127.0.0.1:8080", help="Ingest base URL.")
@click.option("--rate", type=click.FloatRange(min=0.1), default=10.0, help="Payments per second.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=10.0, help="Seconds.")
@click.option("--accounts", type=click.IntRange(1), default=20, help="Distinct accounts.")
@click.option("--seed", type=int, default=None, help="Seed for reproducible payloads.")
def load(url: str, rate: float, duration: float, accounts: int, seed: int | None) -> None:
    """Send payments at a steady rate with a progress bar; print latency percentiles."""
    from pulse.load import run_load  # noqa: PLC0415

    result = asyncio.run(run_load(url, rate=rate, duration=duration, accounts=accounts, seed=seed))
    summary = result.summary()
    click.echo(
        f"sent {result.sent} in {result.elapsed_s:.1f}s "
        f"({summary['rate_per_s']:.1f}/s); statuses: {dict(result.statuses)}"
    )
    for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
        click.echo(f"{key}: {summary[key]:.1f}")
    if summary["ok"] < result.sent:
        sys.exit(1)


@main.command()
@click.option("--url", default="ws://127.0.0.1:8090/ws", help="Gateway WebSocket URL.")
@click.option(
    "--channel",
    "channels",
    multiple=True,
    default=["payments"],
    help="Channel to subscribe to (repeatable).",
)
@click.option(
    "--token",
    "token_",
    default=None,
    help="Connection token (default: a dev ops token from PULSE_JWT_SECRET).",
)
@click.option("--since", default=None, help="Replay events after this offset first.")
def tail(url: str, channels: tuple[str, ...], token_: str | None, since: str | None) -> None:
    """Print every event of the channels as one JSON line each, until Ctrl-C."""
    from pulse.tail import tail_channels  # noqa: PLC0415

    if token_ is None:
        from pulse.auth import issue_token  # noqa: PLC0415

        secret = PulseSettings().jwt_secret.get_secret_value()
        token_ = issue_token(secret, sub="pulse-tail", roles=["ops"])
    try:
        sys.exit(asyncio.run(tail_channels(url, list(channels), token_, since=since)))
    except KeyboardInterrupt:
        sys.exit(0)


@main.group()
def fraud() -> None:
    """Manage the fraud worker's blocklists (Redis sets under REDIS_URL and PULSE_REDIS_PREFIX).

    A payment from a blocked account or to a blocked merchant is declined with the reason
    blocked_account or blocked_merchant; a change applies to the next payment scored.
    """


def _blocklist_ids(accounts: tuple[str, ...], merchants: tuple[str, ...]) -> dict[str, list[str]]:
    ids = {"accounts": [a for a in accounts if a], "merchants": [m for m in merchants if m]}
    if not any(ids.values()):
        raise click.UsageError("name at least one --account or --merchant")
    return ids


def _sync_redis() -> tuple[Any, str]:
    import redis  # noqa: PLC0415 - only these commands need the blocking client

    settings = PulseSettings()
    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5), settings.redis_prefix


_ACCOUNT_OPTION = click.option(
    "--account", "accounts", multiple=True, help="Account id (repeatable)."
)
_MERCHANT_OPTION = click.option(
    "--merchant", "merchants", multiple=True, help="Merchant id (repeatable)."
)


@fraud.command()
@_ACCOUNT_OPTION
@_MERCHANT_OPTION
def block(accounts: tuple[str, ...], merchants: tuple[str, ...]) -> None:
    """Decline every further payment of these accounts or to these merchants."""
    ids = _blocklist_ids(accounts, merchants)
    client, prefix = _sync_redis()
    with client:
        for kind, values in ids.items():
            if values:
                added = client.sadd(blocklist_key(prefix, kind), *values)
                click.echo(f"blocked {len(values)} {kind} ({added} new)")


@fraud.command()
@_ACCOUNT_OPTION
@_MERCHANT_OPTION
def unblock(accounts: tuple[str, ...], merchants: tuple[str, ...]) -> None:
    """Take accounts or merchants off the blocklists."""
    ids = _blocklist_ids(accounts, merchants)
    client, prefix = _sync_redis()
    with client:
        for kind, values in ids.items():
            if values:
                removed = client.srem(blocklist_key(prefix, kind), *values)
                click.echo(f"unblocked {removed} of {len(values)} {kind}")


@fraud.command(name="list")
def list_blocked() -> None:
    """Print the blocked accounts and merchants, one `kind id` line each."""
    client, prefix = _sync_redis()
    with client:
        for kind in BLOCKLIST_KINDS:
            for member in sorted(client.smembers(blocklist_key(prefix, kind))):
                click.echo(f"{kind[:-1]} {member.decode()}")


@main.group()
def webhooks() -> None:
    """Manage webhook endpoints: events of an account POSTed, signed, to a third party.

    Endpoints live in the DynamoDB table {PULSE_RESOURCE_PREFIX}webhooks; each one's signing
    secret (Standard Webhooks, "whsec_<base64>") in SSM Parameter Store.
    """


def _aws(service: str) -> Any:
    from pulse.clients import aws_client  # noqa: PLC0415

    return aws_client(service, PulseSettings())


def _webhook_names() -> Any:
    from pulse.topology import WebhookNames  # noqa: PLC0415

    return WebhookNames.from_prefix(PulseSettings().resource_prefix)


@webhooks.command(name="add")
@click.option("--account", required=True, help="Account whose events are sent.")
@click.option("--url", required=True, help="The receiver's URL (http or https).")
def webhooks_add(account: str, url: str) -> None:
    """Register an endpoint; prints its id and signing secret (shown only here)."""
    import base64  # noqa: PLC0415
    import secrets  # noqa: PLC0415
    import uuid  # noqa: PLC0415
    from datetime import UTC, datetime  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise click.BadParameter("must be an http(s) URL", param_hint="--url")
    names = _webhook_names()
    endpoint_id = f"ep_{uuid.uuid4().hex}"
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    parameter = names.secret_parameter(endpoint_id)
    _aws("ssm").put_parameter(Name=parameter, Value=secret, Type="SecureString", Overwrite=True)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    _aws("dynamodb").put_item(
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
    ddb = _aws("dynamodb")
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
    got = _aws("dynamodb").delete_item(
        TableName=names.table,
        Key={"account_id": {"S": account}, "endpoint_id": {"S": endpoint_id}},
        ReturnValues="ALL_OLD",
    )
    if not got.get("Attributes"):
        click.echo(f"no endpoint {endpoint_id} for account {account}", err=True)
        sys.exit(1)
    ssm = _aws("ssm")
    with contextlib.suppress(ssm.exceptions.ParameterNotFound):
        ssm.delete_parameter(Name=names.secret_parameter(endpoint_id))
    click.echo(f"removed {endpoint_id}")


if __name__ == "__main__":
    main()
