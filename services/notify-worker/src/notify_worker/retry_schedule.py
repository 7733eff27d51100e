"""When a webhook delivery's attempts are due, and how a long wait is chained: pure code.

``PULSE_WEBHOOK_RETRY_SCHEDULE`` lists the wait before each attempt, the first after the
event was queued (it must be 0: first attempts go out at once, in their endpoint's order),
each later one after the previous attempt failed: ``0,5s,5m,30m,2h,5h,10h,10h`` (Svix's
schedule, the default) is eight attempts over about 27 and a half hours. A wait is a number with an
optional unit ``s``, ``m``, ``h`` or ``d`` (seconds without one).

SQS delays a message by at most 15 minutes, so a longer wait is a chain of delayed
messages: a retry whose due time is still at least a second away when it is received is
sent again, delayed by what is left (at most ``max_hop`` seconds), and the copy received is
deleted (:func:`hop_delay`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_SCHEDULE",
    "MAX_ATTEMPTS",
    "MAX_DELAY_SECONDS",
    "SQS_MAX_DELAY_SECONDS",
    "RetrySchedule",
    "format_delays",
    "hop_delay",
    "parse_delays",
]

DEFAULT_SCHEDULE: Final = "0,5s,5m,30m,2h,5h,10h,10h"
SQS_MAX_DELAY_SECONDS: Final = 900
MAX_ATTEMPTS: Final = 50
MAX_DELAY_SECONDS: Final = 7 * 86_400
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
_DELAY: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
# A retry received less than this before its due time is made then, not sent again.
_EARLY_SECONDS: Final = 1.0


def parse_delays(text: str) -> tuple[float, ...]:
    """``"0,5s,5m"`` → ``(0.0, 5.0, 300.0)``; ``ValueError`` naming a part it cannot read."""
    delays = []
    for part in text.split(","):
        match = _DELAY.fullmatch(part.strip().lower())
        if match is None:
            raise ValueError(f"{part.strip()!r} is not a delay (a number with s, m, h or d)")
        delays.append(float(match.group(1)) * _UNITS[match.group(2)])
    return tuple(delays)


def format_delays(delays: tuple[float, ...]) -> str:
    """The schedule written back in its largest whole units: ``0,5s,5m,30m,2h``."""
    parts = []
    for seconds in delays:
        unit = next((u for u in "dhm" if seconds and seconds % _UNITS[u] == 0), "s")
        amount = seconds / _UNITS[unit]
        parts.append("0" if seconds == 0 else f"{amount:g}{unit}")
    return ",".join(parts)


@dataclass(frozen=True)
class RetrySchedule:
    """The waits before each attempt (``delays[0]`` is 0)."""

    delays: tuple[float, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.delays) <= MAX_ATTEMPTS:
            raise ValueError(f"a schedule has 1 to {MAX_ATTEMPTS} attempts")
        if self.delays[0] != 0:
            raise ValueError("the first attempt is made at once: the schedule starts with 0")
        if any(not 0 <= d <= MAX_DELAY_SECONDS for d in self.delays):
            raise ValueError("each wait is 0 to 7 days")

    @property
    def attempts(self) -> int:
        return len(self.delays)

    @property
    def total_seconds(self) -> float:
        """From the first attempt to the last, failures taking no time."""
        return sum(self.delays)

    def after_failure(self, attempt: int) -> float | None:
        """Seconds from attempt ``attempt``'s failure to the next; None if it was the last."""
        return self.delays[attempt] if attempt < len(self.delays) else None


def hop_delay(due_at: float, now: float, max_hop: int = SQS_MAX_DELAY_SECONDS) -> int | None:
    """A retry due at ``due_at`` (Unix seconds) received at ``now``: None to make the
    attempt now (it is due, or less than a second away); else the whole seconds, at most
    ``max_hop``, to delay it by again."""
    left = due_at - now
    if left < _EARLY_SECONDS:
        return None
    return min(max_hop, math.ceil(left))
