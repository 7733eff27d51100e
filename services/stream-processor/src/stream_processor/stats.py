"""Live counters of payments: what each event adds, and the ``pulse.stats`` snapshot. Pure.

Counters live in Redis hashes and are changed only by
:class:`~pulse.channels.CounterIncrement` s applied with the channel append, under the
counters' own once-per-event-id guard: an event replayed after a crash changes nothing,
so the counters are exact. Amounts are integers in minor units (cents). Every counter
hash carries the hash tag ``{stats}`` (:meth:`pulse.channels.ChannelKeys.counter`), so
one script updates them all on one Redis node.

``{prefix}{stats}:totals`` — since the beginning:

- ``count:{status}:{currency}`` / ``amount:{status}:{currency}`` — payments *currently* in
  each status: a created payment adds to its status, a status change moves it from the
  old status to the new one, a deletion removes it;
- ``created:{currency}`` / ``created_amount:{currency}`` — every payment ever created;
- ``events:{created|updated|deleted}`` — events applied.

``{prefix}{stats}:minute:{epoch minute}`` — per minute of the event's time, kept for
:data:`SERIES_TTL_SECONDS` (a little over the hour the snapshot shows): ``events``,
``created:{currency}``, ``created_amount:{currency}``, and ``status:{status}`` (payments
that entered that status in the minute: creations and status changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

from pulse.channels import ChannelKeys, CounterIncrement
from pulse.events import PAYMENT_CREATED, PAYMENT_DELETED, PAYMENT_UPDATED

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pulse.events import CloudEvent

__all__ = [
    "SERIES_MINUTES",
    "SERIES_TTL_SECONDS",
    "StatsKeys",
    "counter_increments",
    "minor_units",
    "stats_snapshot",
]

SERIES_MINUTES: Final = 60
SERIES_TTL_SECONDS: Final = (SERIES_MINUTES + 5) * 60
_EVENT_KINDS: Final = {
    PAYMENT_CREATED: "created",
    PAYMENT_UPDATED: "updated",
    PAYMENT_DELETED: "deleted",
}


@dataclass(frozen=True)
class StatsKeys:
    """Redis keys of the counters under one prefix."""

    prefix: str

    @property
    def totals(self) -> str:
        return ChannelKeys(self.prefix).counter("totals")

    def minute(self, epoch_minute: int) -> str:
        return ChannelKeys(self.prefix).counter(f"minute:{epoch_minute}")


def minor_units(amount: object) -> int:
    """``"12.50"`` → ``1250``; raises ``ValueError`` for anything not exact in cents."""
    try:
        cents = Decimal(str(amount)) * 100
    except InvalidOperation as exc:
        raise ValueError(f"invalid amount {amount!r}") from exc
    if not cents.is_finite() or cents != cents.to_integral_value():
        raise ValueError(f"amount {amount!r} is not a whole number of cents")
    return int(cents)


def _epoch_minute(time: str) -> int:
    moment = datetime.fromisoformat(time)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) // 60


def counter_increments(event: CloudEvent, keys: StatsKeys) -> list[CounterIncrement]:
    """What ``event`` adds to the counters (empty for events that are not payment events).

    Raises ``ValueError`` if the payment's amount is not a valid two-place decimal.
    """
    kind = _EVENT_KINDS.get(event.type)
    if kind is None:
        return []
    data = event.data
    currency = str(data.get("currency") or "XXX")
    amount = minor_units(data.get("amount", "0"))
    status = data.get("status")
    totals = keys.totals
    minute = keys.minute(_epoch_minute(event.time))

    def total(field: str, value: int) -> CounterIncrement:
        return CounterIncrement(totals, field, value)

    def series(field: str, value: int) -> CounterIncrement:
        return CounterIncrement(minute, field, value, SERIES_TTL_SECONDS)

    changes = [total(f"events:{kind}", 1), series("events", 1)]
    entered: object = None
    left: object = None
    if kind == "created":
        entered = status
        changes += [
            total(f"created:{currency}", 1),
            total(f"created_amount:{currency}", amount),
            series(f"created:{currency}", 1),
            series(f"created_amount:{currency}", amount),
        ]
    elif kind == "updated":
        old = data.get("old_status")
        if old != status:
            entered, left = status, old
    else:
        left = status
    if isinstance(left, str) and left:
        changes += [
            total(f"count:{left}:{currency}", -1),
            total(f"amount:{left}:{currency}", -amount),
        ]
    if isinstance(entered, str) and entered:
        changes += [
            total(f"count:{entered}:{currency}", 1),
            total(f"amount:{entered}:{currency}", amount),
            series(f"status:{entered}", 1),
        ]
    return changes


def _amount(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{sign}{whole}.{cents:02d}"


def _money(count: int, minor: int) -> dict[str, Any]:
    return {"count": count, "amount": _amount(minor), "amount_minor": minor}


def _pairs(fields: Mapping[str, int], count_prefix: str, amount_prefix: str) -> dict[str, Any]:
    """``{rest: {"count", "amount", "amount_minor"}}`` from ``{prefix}{rest}`` fields."""
    rests = {f[len(count_prefix) :] for f in fields if f.startswith(count_prefix)}
    rests |= {f[len(amount_prefix) :] for f in fields if f.startswith(amount_prefix)}
    return {
        rest: _money(fields.get(count_prefix + rest, 0), fields.get(amount_prefix + rest, 0))
        for rest in sorted(rests)
    }


def stats_snapshot(
    totals: Mapping[str, int], minutes: Mapping[int, Mapping[str, int]], now_minute: int
) -> dict[str, Any]:
    """The data of a ``pulse.stats`` event from the counter hashes (decoded to ``str: int``).

    ``minutes`` maps epoch minutes to their hash; the series lists the last
    :data:`SERIES_MINUTES` minutes up to ``now_minute``, oldest first, zeros included.
    """
    by_status: dict[str, dict[str, Any]] = {}
    for key, money in _pairs(totals, "count:", "amount:").items():
        status, _, currency = key.partition(":")
        if money["count"] or money["amount_minor"]:
            by_status.setdefault(status, {})[currency] = money
    series = []
    for minute in range(now_minute - SERIES_MINUTES + 1, now_minute + 1):
        fields = minutes.get(minute, {})
        series.append(
            {
                "minute": datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%MZ"),
                "events": fields.get("events", 0),
                "created": _pairs(fields, "created:", "created_amount:"),
                "statuses": {
                    f.removeprefix("status:"): v
                    for f, v in sorted(fields.items())
                    if f.startswith("status:")
                },
            }
        )
    return {
        "by_status": by_status,
        "created": _pairs(totals, "created:", "created_amount:"),
        "events": {kind: totals.get(f"events:{kind}", 0) for kind in _EVENT_KINDS.values()},
        "series": series,
    }
