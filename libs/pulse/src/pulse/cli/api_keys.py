"""``pulse keys``: API keys for merchant backends (the API-keys table; secrets hashed)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import NoReturn

import click

from pulse.api_keys import DEFAULT_SCOPES, SCOPES, ApiKey, ApiKeyTable, new_api_key
from pulse.cli.arguments import identifiers
from pulse.cli.target import aws, explain, settings
from pulse.errors import PulseError

__all__ = ["keys"]

# How long a revoked key may still be accepted: ingest's key cache (pulse.credentials).
_REVOKE_WITHIN = "PULSE_API_KEY_CACHE_SECONDS (5 s unless set otherwise)"


@click.group(short_help="Create, list and revoke API keys for merchant backends.")
def keys() -> None:
    """API keys: how a merchant's backend calls the ingest API without a JWT.

    A key is "psk_<key id>_<secret>", shown once when created; the table
    {PULSE_RESOURCE_PREFIX}api-keys keeps only a hash of the secret. A key acts for one
    account, limited to its scopes: payments:write (create payments), payments:read (read
    payments and their audit trails), webhooks:manage (the account's webhook endpoints).
    """


def _table() -> ApiKeyTable:
    return ApiKeyTable(aws("dynamodb"), settings().names.api_keys_table)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fail(exc: PulseError) -> NoReturn:
    raise click.ClickException(explain(exc) or str(exc)) from None


@keys.command(name="create")
@click.option(
    "--account", required=True, callback=identifiers, help="The account the key acts for."
)
@click.option("--name", default="", help="What the key is for (shown by `pulse keys list`).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(sorted(SCOPES)),
    help="What the key may do (repeatable). Default: payments:write and payments:read.",
)
def keys_create(account: str, name: str, scopes: tuple[str, ...]) -> None:
    """Make a key and print it, once: it cannot be shown again."""
    made = new_api_key(account, name=name, scopes=frozenset(scopes) or DEFAULT_SCOPES, now=_now())
    try:
        _table().put(made.key)
    except PulseError as exc:
        _fail(exc)
    click.echo(f"key id: {made.key.key_id}")
    click.echo(f"scopes: {' '.join(sorted(made.key.scopes))}")
    click.echo(f"api key: {made.token}")
    click.echo("Store the key now: Pulse keeps only its hash and cannot show it again.", err=True)


def _row(key: ApiKey) -> str:
    return "  ".join(
        [
            key.key_id,
            key.account_id,
            ",".join(sorted(key.scopes)),
            key.created_at,
            key.last_used_at or "never",
            f"revoked {key.revoked_at}" if key.revoked_at else "active",
            key.name or "-",
        ]
    )


@keys.command(name="list")
@click.option("--account", default=None, callback=identifiers, help="Only this account's keys.")
def keys_list(account: str | None) -> None:
    """Print the keys, oldest first: id, account, scopes, created, last used, state, name.

    Never the secret: it is not stored.
    """
    try:
        found = _table().list(account)
    except PulseError as exc:
        _fail(exc)
    for key in found:
        click.echo(_row(key))


@keys.command(name="revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key: every ingest replica refuses it within its key cache's lifetime
    (PULSE_API_KEY_CACHE_SECONDS, 5 s by default)."""
    try:
        key = _table().revoke(key_id, now=_now())
    except PulseError as exc:
        _fail(exc)
    if key is None:
        click.echo(f"no API key {key_id}", err=True)
        sys.exit(1)
    click.echo(
        f"revoked {key.key_id} (account {key.account_id}) at {key.revoked_at}; "
        f"every ingest replica refuses it within {_REVOKE_WITHIN}"
    )
