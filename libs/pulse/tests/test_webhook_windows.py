"""Delivery windows (pure): when a schedule is open, when it opens next, how long a delivery
is held, and which schedules registration refuses. Every time is UTC, given by the test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pulse.webhook_windows import (
    MAX_WINDOW_GAP,
    hold_seconds,
    is_open,
    longest_gap,
    next_opening,
    window_gap_refusal,
)

BUSINESS_HOURS = "* 9-17 * * 1-5"
# Friday 4 December 2026; the 5th and 6th are the weekend.
FRIDAY = datetime(2026, 12, 4, tzinfo=UTC)


def at(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at(4, 10, 0), True),
        (at(4, 10, 0, 59), True),  # the whole matching minute
        (at(4, 10, 1), False),
        (at(4, 10, 4, 59), False),
        (at(4, 10, 5), True),
        (at(4, 23, 55, 30), True),
    ],
)
def test_every_five_minutes_opens_the_minutes_it_matches(now: datetime, expected: bool) -> None:
    assert is_open("*/5 * * * *", now) is expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at(4, 9, 0), True),
        (at(4, 17, 59, 59), True),
        (at(4, 18, 0), False),
        (at(4, 8, 59, 59), False),
        (at(5, 12, 0), False),  # Saturday
        (at(7, 9, 0), True),  # Monday
    ],
)
def test_business_hours_are_weekdays_nine_to_six(now: datetime, expected: bool) -> None:
    assert is_open(BUSINESS_HOURS, now) is expected


def test_no_schedule_is_always_open() -> None:
    assert is_open(None, at(5, 3, 17))
    assert hold_seconds(None, at(5, 3, 17), cap=3600) is None


def test_next_opening_is_now_inside_a_window_else_the_next_matching_minute() -> None:
    assert next_opening("*/5 * * * *", at(4, 10, 5, 30)) == at(4, 10, 5, 30)
    assert next_opening("*/5 * * * *", at(4, 10, 6, 1)) == at(4, 10, 10)
    # Friday evening: Monday morning, 63 hours on.
    assert next_opening(BUSINESS_HOURS, at(4, 18, 0)) == at(7, 9, 0)


def test_times_in_another_zone_are_read_in_utc() -> None:
    """10:00 in New York in winter (UTC-5) is 15:00 UTC: open for a schedule of the 15th
    hour, whatever the zone of the clock; and UTC has no daylight saving, so a window
    stays put in summer."""
    new_york = at(4, 15, 0).astimezone(timezone(timedelta(hours=-5)))
    assert new_york.hour == 10
    assert is_open("* 15 * * *", new_york)
    assert not is_open("* 10 * * *", new_york)
    assert is_open("* 9 * * *", datetime(2026, 7, 1, 9, 30, tzinfo=UTC))


@pytest.mark.parametrize(
    ("schedule", "now", "cap", "expected"),
    [
        ("*/5 * * * *", at(4, 10, 5, 10), 3600, None),  # open: goes now
        ("*/5 * * * *", at(4, 10, 6, 0), 3600, 240),  # until 10:10
        (
            "*/5 * * * *",
            at(
                4,
                10,
                9,
                59,
            ),
            3600,
            1,
        ),
        (
            "*/5 * * * *",
            at(
                4,
                10,
                9,
                59,
            )
            + timedelta(microseconds=500_000),
            3600,
            1,
        ),
        (BUSINESS_HOURS, at(4, 18, 0), 3600, 3600),  # the weekend: looked at again hourly
        (BUSINESS_HOURS, at(7, 8, 30), 3600, 1800),
    ],
)
def test_a_delivery_is_held_until_the_opening_at_most_the_cap(
    schedule: str, now: datetime, cap: int, expected: int | None
) -> None:
    assert hold_seconds(schedule, now, cap) == expected


@pytest.mark.parametrize(
    ("schedule", "gap"),
    [
        ("* * * * *", timedelta(minutes=1)),
        ("*/5 * * * *", timedelta(minutes=5)),
        ("0 9 * * *", timedelta(days=1)),
        (BUSINESS_HOURS, timedelta(days=2, hours=15, minutes=1)),  # Friday 17:59 to Monday 9:00
        ("0 12 * * sun", timedelta(days=7)),  # weekly: the longest allowed
    ],
)
def test_the_longest_gap_between_windows(schedule: str, gap: timedelta) -> None:
    assert longest_gap(schedule, FRIDAY) == gap
    assert window_gap_refusal(schedule, FRIDAY) is None


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ("0 0 1 * *", "up to 31.0 days apart"),  # monthly
        ("* * 1 * *", "up to 30.0 days apart"),  # a whole day a month: minute by minute open
        ("0 9 * 1 *", "days apart"),  # January only
        ("0 0 29 2 *", "days apart"),  # leap days
        ("0 0 30 2 *", "never opens"),
    ],
)
def test_windows_more_than_a_week_apart_are_refused_saying_why(schedule: str, words: str) -> None:
    refusal = window_gap_refusal(schedule, FRIDAY)
    assert refusal is not None
    assert words in refusal
    if "apart" in refusal:
        assert f"at most {MAX_WINDOW_GAP.days} days" in refusal
