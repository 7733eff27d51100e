"""The ``pulse`` command: run the local stack, issue dev tokens, send load, tail channels."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

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


if __name__ == "__main__":
    main()
