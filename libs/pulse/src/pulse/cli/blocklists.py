"""``pulse fraud``: the fraud worker's blocklists (Redis sets)."""

from __future__ import annotations

import click

from pulse.blocklists import BLOCKLIST_KINDS, blocklist_key
from pulse.cli.arguments import identifiers
from pulse.cli.target import sync_redis

__all__ = ["fraud"]


@click.group(short_help="Block and unblock accounts and merchants.")
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


_ACCOUNT_OPTION = click.option(
    "--account", "accounts", multiple=True, callback=identifiers, help="Account id (repeatable)."
)
_MERCHANT_OPTION = click.option(
    "--merchant",
    "merchants",
    multiple=True,
    callback=identifiers,
    help="Merchant id (repeatable).",
)


@fraud.command()
@_ACCOUNT_OPTION
@_MERCHANT_OPTION
def block(accounts: tuple[str, ...], merchants: tuple[str, ...]) -> None:
    """Decline every further payment of these accounts or to these merchants."""
    ids = _blocklist_ids(accounts, merchants)
    client, prefix = sync_redis()
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
    client, prefix = sync_redis()
    with client:
        for kind, values in ids.items():
            if values:
                removed = client.srem(blocklist_key(prefix, kind), *values)
                click.echo(f"unblocked {removed} of {len(values)} {kind}")


@fraud.command(name="list")
def list_blocked() -> None:
    """Print the blocked accounts and merchants, one `kind id` line each."""
    client, prefix = sync_redis()
    with client:
        for kind in BLOCKLIST_KINDS:
            for member in sorted(client.smembers(blocklist_key(prefix, kind))):
                click.echo(f"{kind[:-1]} {member.decode()}")
