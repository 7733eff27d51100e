"""``pulse review``: list and decide payments held in REVIEW, as the API's review does.

The same moves as ``POST /v1/payments/{id}/review`` (:mod:`pulse.payment_states`): a
decision is made once, a payment no longer in REVIEW keeps the decision it has, and the
update flows to every subscriber as ``pulse.payment.updated``. The decision is recorded as
``reviewed_by`` ``cli:<user>`` (the login name running the command).
"""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import Any

import click

from pulse.cli.target import aws, settings
from pulse.dead_letters import format_age
from pulse.errors import PulseError
from pulse.events import utc_now
from pulse.payment_states import REVIEW_SINCE, PaymentTransitions, Reviewer, why_not_reviewed
from pulse.payments import APPROVED, DECLINED

__all__ = ["review"]

_COLUMNS = ("PAYMENT", "ACCOUNT", "AMOUNT", "WAITING", "REASONS")


@click.group(short_help="List, approve and decline payments held in REVIEW.")
def review() -> None:
    """Payments the fraud worker held for an operator's decision.

    `list` shows them, the longest waiting first; `approve ID` and `decline ID` decide one,
    once. A payment still in REVIEW after PULSE_REVIEW_TIMEOUT_SECONDS (24 h by default) is
    declined by the fraud worker.
    """


def _transitions() -> PaymentTransitions:
    return PaymentTransitions(aws("dynamodb"), settings().names.payments_table)


def _row(payment: dict[str, Any], now: datetime) -> tuple[str, ...]:
    since = payment.get(REVIEW_SINCE)
    waited = (now - datetime.fromisoformat(since)).total_seconds() if since else 0
    reasons = payment.get("fraud_reasons") or []
    return (
        str(payment["payment_id"]),
        str(payment.get("account_id", "")),
        f"{payment.get('amount', '')} {payment.get('currency', '')}",
        format_age(waited),
        ", ".join(str(r) for r in reasons) or "-",
    )


@review.command(name="list")
@click.option("--limit", default=50, type=click.IntRange(1, 1000), help="Most payments shown.")
def review_list(limit: int) -> None:
    """Print the payments in REVIEW, the longest waiting first."""
    try:
        page = _transitions().review_queue(limit=limit)
    except PulseError as exc:
        raise click.ClickException(str(exc)) from exc
    if not page.payments:
        click.echo("no payment is waiting for review")
        return
    now = utc_now()
    rows = [_COLUMNS, *(_row(p, now) for p in page.payments)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if page.next_cursor is not None:
        click.echo(f"(more are waiting: --limit {min(limit * 2, 1000)} shows more)", err=True)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a name
        return "unknown"


def _decide(payment_id: str, decision: str, note: str | None) -> None:
    reviewer = Reviewer.cli(_user())
    try:
        result = _transitions().review(payment_id, decision, reviewer, note)
    except PulseError as exc:
        raise click.ClickException(str(exc)) from exc
    if result.payment is None:
        raise click.ClickException(f"no payment {payment_id}")
    if not result.applied:
        raise click.ClickException(why_not_reviewed(payment_id, result.payment))
    click.echo(f"{payment_id} {decision} by {reviewer.name}")


_NOTE = click.option("--note", default=None, help="Why (kept on the payment as review_note).")


@review.command(name="approve")
@click.argument("payment_id")
@_NOTE
def review_approve(payment_id: str, note: str | None) -> None:
    """Approve a payment in REVIEW."""
    _decide(payment_id, APPROVED, note)


@review.command(name="decline")
@click.argument("payment_id")
@_NOTE
def review_decline(payment_id: str, note: str | None) -> None:
    """Decline a payment in REVIEW."""
    _decide(payment_id, DECLINED, note)
