"""Delivery windows of a webhook endpoint: when its ``schedule`` lets deliveries go. Pure.

An endpoint's ``schedule`` is a five-field cron expression (minute hour day-of-month month
day-of-week), read by ``croniter``. The endpoint is *open* during every minute, in UTC,
that the expression matches (``croniter.match``): ``*/5 * * * *`` opens the minutes :00,
:05, :10, …; ``* 9-17 * * 1-5`` is business hours, Monday to Friday, 09:00 to 17:59. No
schedule: always open. UTC has no daylight saving: a window never moves by an hour, nor
is skipped or doubled, twice a year.

Outside a window the notify worker holds the endpoint's deliveries until the next
opening (:func:`hold_seconds`), at most ``cap`` seconds at a time so that a changed
schedule reaches events already waiting. The waits must end: registration refuses a
schedule whose windows lie more than :data:`MAX_WINDOW_GAP` apart
(:func:`window_gap_refusal`), so no event waits longer than that for its window.

Every function takes the time it reasons about (``now``, an aware UTC ``datetime``): the
clock is the caller's.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Final

from croniter import CroniterBadDateError, croniter

__all__ = [
    "GAP_HORIZON",
    "MAX_WINDOW_GAP",
    "hold_seconds",
    "is_open",
    "longest_gap",
    "next_opening",
    "window_gap_refusal",
]

# The longest a schedule may keep an endpoint closed between two windows.
MAX_WINDOW_GAP: Final = timedelta(days=7)
# How far ahead the gaps are measured: a year, and a week more, covers every month's and
# weekday's turn.
GAP_HORIZON: Final = timedelta(days=366 + 7)
_MINUTE: Final = timedelta(minutes=1)
_DAY: Final = timedelta(days=1)
_DAY_FIELDS: Final = slice(2, 5)


def _utc(now: datetime) -> datetime:
    return now.astimezone(UTC) if now.tzinfo is not None else now.replace(tzinfo=UTC)


def is_open(schedule: str | None, now: datetime) -> bool:
    """Whether an endpoint with ``schedule`` takes deliveries at ``now`` (its minute, in
    UTC, matches; always without a schedule)."""
    return schedule is None or bool(croniter.match(schedule, _utc(now)))


def next_opening(schedule: str, now: datetime) -> datetime:
    """When the window of ``schedule`` is open next: ``now`` if it is open now, else the
    start of its next matching minute (UTC). ``CroniterBadDateError`` if it never opens."""
    now = _utc(now)
    if is_open(schedule, now):
        return now
    opening: datetime = croniter(schedule, now).get_next(datetime)
    return opening


def hold_seconds(schedule: str | None, now: datetime, cap: int) -> int | None:
    """None if a delivery may go at ``now``; else the whole seconds (1 to ``cap``) to hold
    it: until the next opening, or ``cap`` if that is later (or never comes)."""
    if schedule is None or is_open(schedule, now):
        return None
    try:
        wait = (next_opening(schedule, now) - _utc(now)).total_seconds()
    except CroniterBadDateError:
        return cap
    return max(1, min(cap, math.ceil(wait)))


def _minute_of_day(expression: str, start: datetime) -> timedelta:
    """The first matching time of ``expression`` (whose day fields are ``* * *``) from
    ``start``, as the time since ``start``."""
    found: datetime = croniter(expression, start - _MINUTE).get_next(datetime)
    return found - start


def longest_gap(schedule: str, now: datetime, horizon: timedelta = GAP_HORIZON) -> timedelta:
    """The longest time from one window's last minute to the next window's first (or
    from ``now`` to the first), among the windows that open within ``horizon`` of ``now``.

    Within a day the windows come at the times of the minute and hour fields; the days
    they come on are those the other three fields match. So the longest gap is between
    the last window of a matching day and the first of the next matching day, which
    croniter finds day by day (about 370 steps, not a step per minute).
    ``CroniterBadDateError`` if the schedule never opens in that span.
    """
    fields = schedule.split()
    times = f"{fields[0]} {fields[1]} * * *"
    days = " ".join(["0", "0", *fields[_DAY_FIELDS]])
    midnight = datetime(2000, 1, 1, tzinfo=UTC)
    first = _minute_of_day(times, midnight)
    last = croniter(times, midnight + _DAY).get_prev(datetime) - midnight
    start = _utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    matching_days = croniter(days, start - _MINUTE)
    day: datetime = matching_days.get_next(datetime)
    # The wait from now to the first window lies within a gap; gaps within one day are
    # shorter than a day: only those between days can be long.
    longest = max(timedelta(0), day + first - _utc(now))
    while day - start <= horizon:
        following: datetime = matching_days.get_next(datetime)
        longest = max(longest, (following + first) - (day + last))
        day = following
    return longest


def window_gap_refusal(schedule: str, now: datetime | None = None) -> str | None:
    """Why ``schedule`` cannot be an endpoint's (its windows more than :data:`MAX_WINDOW_GAP`
    apart, or none at all), in words; None if it can."""
    now = datetime.now(UTC) if now is None else now
    try:
        gap = longest_gap(schedule, now)
    except CroniterBadDateError:
        return "never opens: the endpoint would never be sent anything"
    if gap > MAX_WINDOW_GAP:
        days = gap / _DAY
        return (
            f"its windows are up to {days:.1f} days apart; events may wait at most "
            f"{MAX_WINDOW_GAP.days} days for a window"
        )
    return None
