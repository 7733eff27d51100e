"""Counters: what each payment event adds, and the stats snapshot (pure code)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest

from pulse.events import (
    PAYMENT_CREATED,
    PAYMENT_DELETED,
    PAYMENT_UPDATED,
    STATS,
    CloudEvent,
    new_event,
)
from stream_processor.stats import (
    SERIES_MINUTES,
    StatsKeys,
    counter_increments,
    minor_units,
    stats_snapshot,
)

KEYS = StatsKeys("t:")
WHEN = datetime(2026, 1, 1, 12, 30, 15, tzinfo=UTC)
MINUTE = int(WHEN.timestamp()) // 60


def _event(kind: str, amount: str = "12.50", currency: str = "EUR", **data: str) -> CloudEvent:
    return new_event(
        type=kind,
        source="/test",
        subject="pay_1",
        time=WHEN,
        data={"payment_id": "pay_1", "amount": amount, "currency": currency, **data},
    )


def _apply(*events: CloudEvent) -> tuple[dict[str, int], dict[int, dict[str, int]]]:
    hashes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for event in events:
        for inc in counter_increments(event, KEYS):
            hashes[inc.key][inc.field] += inc.amount
    totals = dict(hashes.pop(KEYS.totals, {}))
    minutes = {int(key.rsplit(":", 1)[1]): dict(fields) for key, fields in hashes.items()}
    return totals, minutes


@pytest.mark.parametrize(
    ("amount", "minor"), [("12.50", 1250), ("0.01", 1), ("1000000.00", 100000000), ("7", 700)]
)
def test_amounts_are_exact_minor_units(amount: str, minor: int) -> None:
    assert minor_units(amount) == minor


@pytest.mark.parametrize("bad", ["1.005", "abc", "NaN", "Infinity"])
def test_amounts_that_are_not_whole_cents_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="amount"):
        minor_units(bad)


def test_a_created_payment_counts_in_its_status_and_in_created() -> None:
    totals, minutes = _apply(_event(PAYMENT_CREATED, status="PENDING"))
    assert totals == {
        "events:created": 1,
        "created:EUR": 1,
        "created_amount:EUR": 1250,
        "count:PENDING:EUR": 1,
        "amount:PENDING:EUR": 1250,
    }
    assert minutes == {
        MINUTE: {
            "events": 1,
            "created:EUR": 1,
            "created_amount:EUR": 1250,
            "status:PENDING": 1,
        }
    }


def test_a_status_change_moves_the_payment_between_statuses() -> None:
    totals, minutes = _apply(
        _event(PAYMENT_CREATED, status="PENDING"),
        _event(PAYMENT_UPDATED, status="APPROVED", old_status="PENDING"),
    )
    assert totals["count:PENDING:EUR"] == 0
    assert totals["amount:PENDING:EUR"] == 0
    assert (totals["count:APPROVED:EUR"], totals["amount:APPROVED:EUR"]) == (1, 1250)
    assert minutes[MINUTE]["status:APPROVED"] == 1


def test_an_update_without_status_change_moves_nothing() -> None:
    totals, _ = _apply(_event(PAYMENT_UPDATED, status="PENDING", old_status="PENDING"))
    assert totals == {"events:updated": 1}


def test_a_deleted_payment_leaves_its_status() -> None:
    totals, _ = _apply(
        _event(PAYMENT_CREATED, status="REVIEW"), _event(PAYMENT_DELETED, status="REVIEW")
    )
    assert (totals["count:REVIEW:EUR"], totals["amount:REVIEW:EUR"]) == (0, 0)
    assert totals["created:EUR"] == 1


def test_series_keys_expire_after_the_hour_and_totals_never() -> None:
    incs = counter_increments(_event(PAYMENT_CREATED, status="PENDING"), KEYS)
    assert {i.ttl_seconds for i in incs if i.key == KEYS.totals} == {0}
    assert {i.ttl_seconds for i in incs if i.key == KEYS.minute(MINUTE)} == {3900}


def test_non_payment_events_count_nothing() -> None:
    assert counter_increments(new_event(type=STATS, source="/t", data={}), KEYS) == []


def test_snapshot_shapes_money_by_status_and_currency_and_an_hour_of_minutes() -> None:
    totals, minutes = _apply(
        _event(PAYMENT_CREATED, "10.05", "EUR", status="PENDING"),
        _event(PAYMENT_CREATED, "0.99", "USD", status="PENDING"),
        _event(PAYMENT_UPDATED, "0.99", "USD", status="DECLINED", old_status="PENDING"),
    )
    snapshot = stats_snapshot(totals, minutes, MINUTE + 1)
    assert snapshot["by_status"] == {
        "PENDING": {"EUR": {"count": 1, "amount": "10.05", "amount_minor": 1005}},
        "DECLINED": {"USD": {"count": 1, "amount": "0.99", "amount_minor": 99}},
    }
    assert snapshot["created"]["USD"] == {"count": 1, "amount": "0.99", "amount_minor": 99}
    assert snapshot["events"] == {"created": 2, "updated": 1, "deleted": 0}
    series = snapshot["series"]
    assert len(series) == SERIES_MINUTES
    assert series[-1] == {"minute": "2026-01-01T12:31Z", "events": 0, "created": {}, "statuses": {}}
    assert series[-2]["minute"] == "2026-01-01T12:30Z"
    assert series[-2]["events"] == 3
    assert series[-2]["statuses"] == {"DECLINED": 1, "PENDING": 2}
