"""A token bucket per connection for client operations. Pure: the caller passes the time."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allows ``rate`` operations per second on average and bursts of up to ``burst``."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated", "refused_in_a_row")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now
        self.refused_in_a_row = 0

    def allow(self, now: float) -> bool:
        """Take one token if there is one; counts refusals since the last allowed operation."""
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False
