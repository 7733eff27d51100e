"""``pulse tail``: a channel's events, one readable line each (or raw JSON frames)."""

from __future__ import annotations

import asyncio
import sys
from typing import Final

import click

from pulse.auth import issue_token
from pulse.cli.target import local_stack
from pulse.settings import PulseSettings

__all__ = ["tail"]

_DEFAULT_URL: Final = "ws://127.0.0.1:8090/ws"


@click.command(short_help="Print channels' events as they arrive.")
@click.option(
    "--url",
    default=None,
    help="Gateway WebSocket URL. Default: the gateway of the stack `make run` started "
    f"(its .run/stack.json), else {_DEFAULT_URL}.",
)
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
    help="Connection token. Default: an ops token signed with PULSE_JWT_SECRET (unset: the "
    "development secret, the one `make run` uses).",
)
@click.option("--since", default=None, help="Replay events after this offset first.")
@click.option("--json", "raw", is_flag=True, help="Print the gateway's frames as they come.")
def tail(
    url: str | None,
    channels: tuple[str, ...],
    token_: str | None,
    since: str | None,
    *,
    raw: bool,
) -> None:
    """Print every event of the channels, one line each (local time, type, payment, account,
    amount, status), until Ctrl-C. A dropped connection is resumed from the last event
    printed. A refusal (bad or expired token, a channel forbidden or unknown) is printed
    with the gateway's reason and exits 1.
    """
    from pulse.tail import tail_channels  # noqa: PLC0415 - websockets, only here

    if url is None:
        stack = local_stack()
        url = stack.gateway_ws_url if stack is not None else _DEFAULT_URL
    if token_ is None:
        secret = PulseSettings().jwt_secret.get_secret_value()
        token_ = issue_token(secret, sub="pulse-tail", roles=["ops"])
    try:
        sys.exit(asyncio.run(tail_channels(url, list(channels), token_, since=since, raw=raw)))
    except KeyboardInterrupt:
        sys.exit(0)
    except BrokenPipeError:  # `pulse tail | head`: the reader is done
        sys.exit(0)
