"""The development commands ``pulse dev`` and ``pulse load``, added to the ``pulse`` command
through the ``pulse.commands`` entry points of this package."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

__all__ = ["dev", "load"]

_DEFAULT_INGEST_URL = "http://127.0.0.1:8080"


@click.command(short_help="Run the whole system locally (what `make run` does).")
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
    from pulse_dev.devstack import DevStackConfig, run_dev_stack  # noqa: PLC0415 - only when run

    demo = opts.pop("demo")
    rate = opts.pop("demo_rate")
    config = DevStackConfig(**opts, demo_rate=rate if demo else 0.0)
    sys.exit(asyncio.run(run_dev_stack(config)))


@click.command(short_help="Send payments at a steady rate and report latency.")
@click.option(
    "--url",
    default=None,
    help="Ingest base URL. Default: the stack `make run` started (its .run/stack.json), "
    "else http://127.0.0.1:8080.",
)
@click.option("--rate", type=click.FloatRange(min=0.1), default=10.0, help="Payments per second.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=10.0, help="Seconds.")
@click.option("--accounts", type=click.IntRange(1), default=20, help="Distinct accounts.")
@click.option("--seed", type=int, default=None, help="Seed for reproducible payloads.")
@click.option(
    "--token",
    default=None,
    help="Bearer credential for every payment (a JWT or an API key). Default: a development "
    "token per account, signed with PULSE_JWT_SECRET.",
)
def load(url: str | None, token: str | None, **options: Any) -> None:
    """Send payments at a steady rate with a progress bar; print the statuses and latency
    percentiles. Exits 1 when a payment was not created.

    Each account's payments carry its own credential, so each spends its own budget
    (PULSE_RATE_LIMIT_PER_SECOND); with --token all share that one's.
    """
    from pulse.cli.target import local_stack  # noqa: PLC0415 - only when run
    from pulse.settings import PulseSettings  # noqa: PLC0415
    from pulse_dev.load import AccountTokens, CannotConnectError, run_load  # noqa: PLC0415

    if url is None:
        stack = local_stack()
        url = stack.ingest_url if stack is not None else _DEFAULT_INGEST_URL
    secret = PulseSettings().jwt_secret.get_secret_value()
    tokens = AccountTokens(secret, fixed=token)
    try:
        result = asyncio.run(run_load(url, tokens=tokens, **options))
    except CannotConnectError as exc:
        raise click.ClickException(str(exc)) from None
    summary = result.summary()
    click.echo(f"sent {result.sent} in {result.elapsed_s:.1f} s ({summary['rate_per_s']:.1f}/s)")
    click.echo("")
    for line in result.status_table():
        click.echo(line)
    click.echo("")
    latencies = "  ".join(
        f"{key.removesuffix('_ms')} {summary[key]:.1f} ms"
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")
    )
    click.echo(f"latency  {latencies}")
    if summary["ok"] < result.sent:
        sys.exit(1)
