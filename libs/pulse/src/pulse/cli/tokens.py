"""``pulse token``: a development connection token."""

from __future__ import annotations

import click

from pulse.auth import issue_token
from pulse.settings import PulseSettings

__all__ = ["token"]


@click.command(short_help="Print a development connection token.")
@click.option("--sub", required=True, help="Subject: the account id or user name.")
@click.option("--roles", default="", help="Comma-separated roles, e.g. ops.")
@click.option(
    "--ttl", type=click.IntRange(1, 30 * 24 * 3600), default=3600, help="Lifetime in seconds."
)
def token(sub: str, roles: str, ttl: int) -> None:
    """Print an HS256 connection token signed with PULSE_JWT_SECRET (dev default if unset)."""

    secret = PulseSettings().jwt_secret.get_secret_value()
    role_list = [r.strip() for r in roles.split(",") if r.strip()]
    click.echo(issue_token(secret, sub=sub, roles=role_list, ttl_seconds=ttl))
