"""``pulse tail``: a channel's events, one JSON line each."""

from __future__ import annotations

import asyncio
import sys

import click

from pulse.auth import issue_token
from pulse.settings import PulseSettings

__all__ = ["tail"]


@click.command(short_help="Print channels' events as they arrive.")
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
    from pulse.tail import tail_channels  # noqa: PLC0415 - websockets, only here

    if token_ is None:
        secret = PulseSettings().jwt_secret.get_secret_value()
        token_ = issue_token(secret, sub="pulse-tail", roles=["ops"])
    try:
        sys.exit(asyncio.run(tail_channels(url, list(channels), token_, since=since)))
    except KeyboardInterrupt:
        sys.exit(0)
