"""The retry schedule and its settings: pure code."""

from __future__ import annotations

import pytest

from notify_worker.retry_schedule import (
    DEFAULT_SCHEDULE,
    RetrySchedule,
    format_delays,
    hop_delay,
    parse_delays,
)
from notify_worker.settings import NotifySettings
from pulse.errors import ConfigurationError
from pulse.settings import load_settings


def test_the_default_is_svix_s_schedule_eight_attempts_over_27_and_a_half_hours() -> None:
    schedule = RetrySchedule(parse_delays(DEFAULT_SCHEDULE))
    assert schedule.delays == (0, 5, 300, 1800, 7200, 18_000, 36_000, 36_000)
    assert schedule.attempts == 8
    assert schedule.total_seconds == 99_305  # 27 h 35 min 5 s
    assert format_delays(schedule.delays) == DEFAULT_SCHEDULE
    assert NotifySettings().retry_schedule == schedule


def test_each_failure_waits_its_own_delay_and_the_last_has_none() -> None:
    schedule = RetrySchedule((0, 5, 300))
    assert [schedule.after_failure(n) for n in (1, 2, 3, 4)] == [5, 300, None, None]


@pytest.mark.parametrize(
    ("text", "delays"),
    [
        ("0", (0,)),
        ("0, 1.5s ,2m,1h,1d", (0, 1.5, 120, 3600, 86_400)),
        ("0,10", (0, 10)),
        ("0,5S,5M", (0, 5, 300)),
    ],
)
def test_delays_are_numbers_with_optional_units(text: str, delays: tuple[float, ...]) -> None:
    assert parse_delays(text) == delays


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,5x", "not a delay"),
        ("0,,5s", "not a delay"),
        ("5s,5m", "starts with 0"),
        ("0,8d", "0 to 7 days"),
        (",".join(["0"] * 51), "1 to 50 attempts"),
    ],
)
def test_a_schedule_that_cannot_run_is_refused_naming_the_setting(
    text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULSE_WEBHOOK_RETRY_SCHEDULE", text)
    with pytest.raises(ConfigurationError, match="PULSE_WEBHOOK_RETRY_SCHEDULE") as caught:
        load_settings(NotifySettings)
    assert message in str(caught.value)


def test_the_attempt_log_must_outlive_the_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_WEBHOOK_RETRY_SCHEDULE", "0,1d,1d")
    monkeypatch.setenv("PULSE_WEBHOOK_ATTEMPT_TTL_SECONDS", str(2 * 86_400))
    with pytest.raises(ConfigurationError, match="PULSE_WEBHOOK_ATTEMPT_TTL_SECONDS"):
        load_settings(NotifySettings)
    monkeypatch.setenv("PULSE_WEBHOOK_ATTEMPT_TTL_SECONDS", str(3 * 86_400))
    assert load_settings(NotifySettings).retry_schedule.attempts == 3


@pytest.mark.parametrize(
    ("left", "hop"),
    [
        (-5.0, None),  # late: now
        (0.0, None),
        (0.4, None),  # less than a second: waited out, then made
        (1.0, 1),
        (1.2, 2),  # rounded up: never early
        (899.5, 900),
        (3600.0, 900),  # SQS's most; chained
    ],
)
def test_a_retry_is_delayed_again_while_its_due_time_is_a_second_or_more_away(
    left: float, hop: int | None
) -> None:
    assert hop_delay(1000.0 + left, 1000.0) == hop


def test_the_hop_can_be_shorter_than_sqs_allows() -> None:
    assert hop_delay(100.0, 0.0, max_hop=5) == 5
