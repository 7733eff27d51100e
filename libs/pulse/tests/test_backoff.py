"""The one backoff: full jitter inside a window that doubles up to its cap."""

from __future__ import annotations

import pytest
from tenacity import Retrying, stop_after_attempt

from pulse.backoff import FullJitter


def _top(low: float, high: float) -> float:
    return high


@pytest.mark.parametrize(
    ("base", "cap", "attempt", "window"),
    [
        (0.2, 10.0, 0, 0.2),  # after the first failure: at most base
        (0.2, 10.0, 1, 0.4),
        (0.2, 10.0, 3, 1.6),
        (0.2, 10.0, 6, 10.0),  # 12.8 capped
        (1.0, 300.0, 1_000, 300.0),  # any attempt stays finite and capped
        (0.5, 2.0, -3, 0.5),  # a negative count is the first window
        (0.0, 5.0, 4, 0.0),  # base 0: never waits
    ],
)
def test_window_doubles_per_failure_up_to_the_cap(
    base: float, cap: float, attempt: int, window: float
) -> None:
    backoff = FullJitter(base, cap, uniform=_top)
    assert backoff.window(attempt) == pytest.approx(window)
    assert backoff.delay(attempt) == pytest.approx(window)


def test_waits_are_drawn_across_the_whole_window() -> None:
    backoff = FullJitter(1.0, 60.0)
    waits = [backoff.delay(3) for _ in range(2_000)]
    assert all(0.0 <= w <= 8.0 for w in waits)
    # full jitter, not "half fixed, half random": short waits happen
    assert min(waits) < 1.0
    assert max(waits) > 7.0


def test_is_a_tenacity_wait_strategy() -> None:
    seen: list[float] = []
    retrying = Retrying(
        wait=FullJitter(0.5, 4.0, uniform=_top),
        stop=stop_after_attempt(5),
        sleep=seen.append,
        reraise=True,
    )
    with pytest.raises(ValueError, match="boom"):
        retrying(_always_fails)
    assert seen == [0.5, 1.0, 2.0, 4.0]


def _always_fails() -> None:
    raise ValueError("boom")


def test_refuses_negative_settings() -> None:
    with pytest.raises(ValueError, match="negative"):
        FullJitter(-1.0, 5.0)
