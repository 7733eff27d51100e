"""The consumer's outcome policy: how a handler ended -> what becomes of its message."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pulse.backoff import FullJitter
from pulse.consumer.outcome import (
    ACK,
    BACKOFF_BASE_SECONDS,
    RELEASE,
    Action,
    Outcome,
    OutcomePolicy,
)
from pulse.errors import (
    ConditionFailedError,
    Hold,
    PermanentError,
    ResourceNotFoundError,
    RetryableError,
)


def _top(low: float, high: float) -> float:
    return high


def _bottom(low: float, high: float) -> float:
    return low


def policy(cap: float = 300.0, uniform: Callable[[float, float], float] = _top) -> OutcomePolicy:
    return OutcomePolicy(FullJitter(BACKOFF_BASE_SECONDS, cap, uniform=uniform))


@pytest.mark.parametrize(
    ("receive_count", "error", "stopped", "expected"),
    [
        (1, None, None, ACK),
        (1, None, "lease lost", Outcome(Action.LEAVE, reason="lease lost")),
        (
            2,
            None,
            "visibility extension refused: ReceiptHandleIsInvalid",
            Outcome(Action.LEAVE, reason="visibility extension refused: ReceiptHandleIsInvalid"),
        ),
        (
            1,
            PermanentError("amount is not a number"),
            None,
            Outcome(Action.DEAD_LETTER, 0, "amount is not a number"),
        ),
        (1, PermanentError(""), None, Outcome(Action.DEAD_LETTER, 0, "PermanentError")),
        (3, ConditionFailedError(""), None, Outcome(Action.DEAD_LETTER, 0, "ConditionFailedError")),
        # a handler's own delay wins over the backoff, in whole seconds within SQS's limits
        (1, RetryableError("down", delay=5), None, Outcome(Action.RETRY, 5)),
        (4, RetryableError("down", delay=0), None, Outcome(Action.RETRY, 0)),
        (1, RetryableError("down", delay=0.2), None, Outcome(Action.RETRY, 1)),
        (1, RetryableError("down", delay=-3), None, Outcome(Action.RETRY, 0)),
        (1, RetryableError("down", delay=1e9), None, Outcome(Action.RETRY, 43_200)),
        # no delay named: the backoff (here the top of its window, 2**receive_count)
        (1, RetryableError("down"), None, Outcome(Action.RETRY, 2)),
        (3, RetryableError("down"), None, Outcome(Action.RETRY, 8)),
        (2, ResourceNotFoundError("table not there yet"), None, Outcome(Action.RETRY, 4)),
        (1, KeyError("bug"), None, Outcome(Action.RETRY, 2, "KeyError")),
        (5, ValueError("bug"), None, Outcome(Action.RETRY, 32, "ValueError")),
    ],
)
def test_how_a_handler_ended_decides_the_outcome(
    receive_count: int, error: Exception | None, stopped: str | None, expected: Outcome
) -> None:
    assert policy().after(receive_count, error, stopped=stopped) == expected


@pytest.mark.parametrize(
    ("receive_count", "error", "expected"),
    [
        # before the last receive: retried as usual
        (4, RetryableError("redis down"), Outcome(Action.RETRY, 16)),
        # on the last: dead-lettered now, with the error that SQS's move would not record
        (
            5,
            RetryableError("redis down"),
            Outcome(Action.DEAD_LETTER, reason="redis down (receive 5, the last the queue allows)"),
        ),
        (
            6,
            KeyError("amount"),
            Outcome(
                Action.DEAD_LETTER,
                reason="KeyError: 'amount' (receive 6, the last the queue allows)",
            ),
        ),
        (
            5,
            RuntimeError(),
            Outcome(
                Action.DEAD_LETTER, reason="RuntimeError (receive 5, the last the queue allows)"
            ),
        ),
        (5, PermanentError("bad"), Outcome(Action.DEAD_LETTER, reason="bad")),
        (5, None, ACK),
    ],
)
def test_the_last_allowed_receive_dead_letters_with_the_error(
    receive_count: int, error: Exception | None, expected: Outcome
) -> None:
    assert policy().after(receive_count, error, max_receives=5) == expected
    # without a known redrive policy nothing changes
    if expected.action is Action.DEAD_LETTER and not isinstance(error, PermanentError):
        assert policy().after(receive_count, error).action is Action.RETRY


@pytest.mark.parametrize("receive_count", [4, 5, 1000])
def test_a_hold_is_never_the_last_receive(receive_count: int) -> None:
    """A held message waits its delay whatever its receive count: holds are not failures."""
    held = Hold("endpoint outside its delivery window", delay=3600)
    assert policy().after(receive_count, held, max_receives=5) == Outcome(Action.RETRY, 3600)


@pytest.mark.parametrize(
    ("predecessor", "expected"),
    [
        (ACK, None),  # deleted: the next of its group may run
        (Outcome(Action.DEAD_LETTER, reason="bad"), None),  # parked for good: likewise
        (Outcome(Action.RETRY, 2), RELEASE),  # the group waits behind the failed message
        (RELEASE, RELEASE),
        (Outcome(Action.LEAVE, reason="lease lost"), RELEASE),
        (None, RELEASE),  # ended without an outcome: cancelled while stopping
    ],
)
def test_a_fifo_message_runs_only_behind_a_settled_predecessor(
    predecessor: Outcome | None, expected: Outcome | None
) -> None:
    assert policy().in_turn(predecessor) == expected


@pytest.mark.parametrize(
    ("outcome", "label"),
    [
        (ACK, "success"),
        (Outcome(Action.DEAD_LETTER, reason="bad"), "dlq"),
        (Outcome(Action.RETRY, 4), "retry"),
        (RELEASE, "retry"),
        (Outcome(Action.LEAVE, reason="lease lost"), "retry"),
    ],
)
def test_each_outcome_has_its_stage_metrics_label(outcome: Outcome, label: str) -> None:
    assert outcome.label == label


def test_backoff_grows_and_is_capped() -> None:
    # The window doubles per receive from 2 s, up to the cap; the delay is drawn inside it.
    top = policy()
    assert [top.retry(n).delay for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert top.retry(9).delay == 300
    assert top.retry(1000).delay == 300
    assert policy(cap=10).retry(5).delay == 10
    assert policy(uniform=_bottom).retry(5).delay == 0
    drawn = OutcomePolicy.capped(300.0)
    for count, window in ((1, 2), (3, 8), (9, 300), (1000, 300)):
        delays = {drawn.retry(count).delay for _ in range(200)}
        assert all(0 <= d <= window for d in delays)
        assert len(delays) > 1  # full jitter: not one fixed delay per receive count


def test_a_retry_may_name_its_own_delay_and_reason() -> None:
    assert policy().retry(7, 3.5, reason="dead-letter failed") == Outcome(
        Action.RETRY, 4, "dead-letter failed"
    )
