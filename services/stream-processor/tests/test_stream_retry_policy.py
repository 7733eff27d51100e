"""The retry policy: retry a failed batch whole, isolate its records, set a record aside, and
how long to wait. Pure, so every case is a table row."""

from __future__ import annotations

from typing import get_args

import pytest

from pulse.backoff import FullJitter
from stream_processor.failures import FAILURE_REASONS
from stream_processor.retry_policy import (
    FIRST_RETRY_DELAY_SECONDS,
    MALFORMED,
    FailureReason,
    IsolateRecords,
    RetryBatch,
    RetryPolicy,
    SetAside,
)
from stream_processor.settings import StreamProcessorSettings


def _top(low: float, high: float) -> float:
    return high  # the longest wait the window allows


POLICY = RetryPolicy(
    max_retries=3, max_record_age_seconds=3600.0, backoff=FullJitter(0.2, 10.0, uniform=_top)
)


@pytest.mark.parametrize(
    ("retries", "ages", "decision"),
    [
        (0, [], RetryBatch(attempts=1)),  # first failure: retry the whole batch
        (0, [10.0, 5.0], RetryBatch(attempts=1)),
        (2, [3599.0], RetryBatch(attempts=3)),
        (3, [], IsolateRecords("retries_exhausted", attempts=4)),  # 1 + max_retries attempts
        (7, [1.0], IsolateRecords("retries_exhausted", attempts=8)),
        (0, [1.0, 3601.0], IsolateRecords("record_too_old", attempts=1)),  # the oldest counts
        (1, [3600.0], RetryBatch(attempts=2)),  # exactly the maximum age is not too old
        (3, [9999.0], IsolateRecords("retries_exhausted", attempts=4)),  # retries checked first
        (0, [-5.0], RetryBatch(attempts=1)),  # a record from the future (clock skew)
    ],
)
def test_a_failed_batch_is_retried_whole_until_retries_or_age_run_out(
    retries: int, ages: list[float], decision: RetryBatch | IsolateRecords
) -> None:
    assert POLICY.after_failure(retries, ages) == decision


@pytest.mark.parametrize(
    ("max_retries", "retries", "decision"),
    [
        (0, 0, IsolateRecords("retries_exhausted", attempts=1)),  # never retried whole
        (1, 0, RetryBatch(attempts=1)),
        (1, 1, IsolateRecords("retries_exhausted", attempts=2)),
    ],
)
def test_max_retries_counts_retries_after_the_first_attempt(
    max_retries: int, retries: int, decision: RetryBatch | IsolateRecords
) -> None:
    policy = RetryPolicy(max_retries, 3600.0, FullJitter(0.2, 10.0))
    assert policy.after_failure(retries, []) == decision


@pytest.mark.parametrize(
    ("isolation", "set_aside"),
    [
        # the whole batch's attempts, and the record's own
        (IsolateRecords("retries_exhausted", attempts=4), SetAside("retries_exhausted", 5)),
        (IsolateRecords("record_too_old", attempts=1), SetAside("record_too_old", 2)),
    ],
)
def test_a_record_that_fails_on_its_own_is_set_aside_with_every_attempt_counted(
    isolation: IsolateRecords, set_aside: SetAside
) -> None:
    assert isolation.set_aside() == set_aside


def test_a_malformed_record_is_set_aside_after_one_attempt() -> None:
    assert SetAside("malformed", attempts=1) == MALFORMED
    # the reasons the policy gives are the failure queue's (and the dead-letter metric's)
    assert get_args(FailureReason) == FAILURE_REASONS


@pytest.mark.parametrize(
    ("failures", "delay", "wait"),
    [
        (1, None, 0.2),  # the first window: 0.2 s
        (2, None, 0.4),
        (4, None, 1.6),
        (6, None, 6.4),
        (7, None, 10.0),  # 12.8 capped at max_retry_delay_seconds
        (50, None, 10.0),
        (3, 0.01, 0.01),  # a RetryableError's own delay wins
        (1, 0.0, 0.0),  # ... even "now"
        (1, 60.0, 10.0),  # ... capped the same
    ],
)
def test_the_pause_is_full_jitter_up_to_the_cap_unless_the_error_names_one(
    failures: int, delay: float | None, wait: float
) -> None:
    assert POLICY.pause(failures, delay) == pytest.approx(wait)


def _bottom(low: float, high: float) -> float:
    return low  # the shortest wait the window allows


def test_pauses_are_drawn_from_zero_up_to_the_window() -> None:
    policy = RetryPolicy(10, 3600.0, FullJitter(0.2, 10.0, uniform=_bottom))
    assert policy.pause(5) == 0.0  # full jitter: no floor


def test_the_policy_follows_the_settings() -> None:
    settings = StreamProcessorSettings(
        max_retries=7, max_record_age_seconds=60.0, max_retry_delay_seconds=2.5
    )
    policy = RetryPolicy.from_settings(settings)
    assert (policy.max_retries, policy.max_record_age_seconds) == (7, 60.0)
    assert (policy.backoff.base, policy.backoff.cap) == (FIRST_RETRY_DELAY_SECONDS, 2.5)
