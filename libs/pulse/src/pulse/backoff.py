"""Pulse's one backoff: exponential with full jitter.

Every retry in Pulse waits ``uniform(0, min(cap, base * 2**attempt))`` seconds before
attempt ``attempt + 1`` (``attempt`` counts the failures so far, from 0) — the "full jitter"
of AWS's *Exponential Backoff and Jitter*: the window doubles per failure up to ``cap``, and
the wait is drawn at random inside it, so many clients that failed together do not retry
together. A :class:`~pulse.errors.RetryableError` that names its own ``delay`` (SQS's
``Retry-After``-like hints, a resource still being created) takes precedence where the
caller honours it.

:class:`FullJitter` is also a tenacity wait strategy (``wait=FullJitter(...)``), so loops
written with tenacity and loops that keep their own attempt count wait alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from tenacity import RetryCallState

__all__ = ["FullJitter"]

# 2**30 windows are far past any cap; the bound keeps the float finite for any attempt.
_MAX_EXPONENT = 30


@dataclass(frozen=True)
class FullJitter:
    """Waits of ``uniform(0, min(cap, base * 2**attempt))`` seconds.

    ``base`` is the first window (the wait after the first failure is at most ``base``),
    ``cap`` the largest. ``uniform`` draws from ``[0, high)``; tests pass a fixed one.
    """

    base: float
    cap: float
    uniform: Callable[[float, float], float] = random.uniform

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("backoff base and cap must not be negative")

    def window(self, attempt: int) -> float:
        """The upper bound of the wait after ``attempt + 1`` failures."""
        exponent = min(max(attempt, 0), _MAX_EXPONENT)
        return min(self.cap, self.base * 2.0**exponent)

    def delay(self, attempt: int) -> float:
        """A wait drawn from the window of ``attempt`` (0 after the first failure)."""
        return self.uniform(0.0, self.window(attempt))

    def __call__(self, retry_state: RetryCallState) -> float:
        """tenacity's wait protocol: ``attempt_number`` is 1 after the first failure."""
        return self.delay(retry_state.attempt_number - 1)
