"""What the shard reader does after a failure. Pure: no I/O; ages and dice are passed in.

::

    a batch's effects failed (attempt n = retries so far + 1)
    ├── retries < max_retries and every record younger than max_record_age_seconds
    │       → RetryBatch: back off, read the batch again from its checkpoint, apply it whole
    └── otherwise → IsolateRecords: apply its records one at a time, each checkpointed,
            reason ``retries_exhausted`` (checked first) or ``record_too_old``
            └── a record that still fails on its own → SetAside(reason, n + 1 attempts):
                    sent whole to the failure queue, and the shard moves on
    a record that can never become an event → SetAside("malformed", 1 attempt), at once

The wait before a retry — of a batch, or of a failed read — is Pulse's one backoff
(:class:`pulse.backoff.FullJitter`): drawn from ``[0, min(max_retry_delay_seconds,
0.2 s * 2**(failures - 1)))``, ``failures`` counting the shard's consecutive failed reads
and batches. Full jitter, so that replicas whose shards failed together (a dependency down)
do not retry together. A :class:`~pulse.errors.RetryableError` that names its own ``delay``
waits that long instead, capped the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from pulse.backoff import FullJitter

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stream_processor.settings import StreamProcessorSettings

__all__ = [
    "FIRST_RETRY_DELAY_SECONDS",
    "MALFORMED",
    "FailureReason",
    "IsolateRecords",
    "RetryBatch",
    "RetryPolicy",
    "SetAside",
]

FailureReason = Literal["malformed", "retries_exhausted", "record_too_old"]
FIRST_RETRY_DELAY_SECONDS: Final = 0.2


@dataclass(frozen=True)
class SetAside:
    """Send the record, whole, to the failure queue with ``reason``, after ``attempts``."""

    reason: FailureReason
    attempts: int


MALFORMED: Final = SetAside("malformed", attempts=1)
"""A record that can never become an event: retrying cannot fix its content."""


@dataclass(frozen=True)
class RetryBatch:
    """Apply the whole batch again from its checkpoint; ``attempts`` were made so far."""

    attempts: int


@dataclass(frozen=True)
class IsolateRecords:
    """Apply the batch's records one at a time; ``attempts`` of the whole batch were made."""

    reason: FailureReason
    attempts: int

    def set_aside(self) -> SetAside:
        """What becomes of a record that failed once more, on its own."""
        return SetAside(self.reason, self.attempts + 1)


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` and ``max_record_age_seconds`` as in the settings; ``backoff`` the waits."""

    max_retries: int
    max_record_age_seconds: float
    backoff: FullJitter

    @classmethod
    def from_settings(cls, settings: StreamProcessorSettings) -> RetryPolicy:
        return cls(
            max_retries=settings.max_retries,
            max_record_age_seconds=settings.max_record_age_seconds,
            backoff=FullJitter(FIRST_RETRY_DELAY_SECONDS, settings.max_retry_delay_seconds),
        )

    def after_failure(
        self, retries: int, record_ages: Iterable[float]
    ) -> RetryBatch | IsolateRecords:
        """What to do with a batch that failed after ``retries`` retries.

        ``record_ages``: seconds since each record's creation (records without a time left
        out).
        """
        attempts = retries + 1
        if retries >= self.max_retries:
            return IsolateRecords("retries_exhausted", attempts)
        if max(record_ages, default=0.0) > self.max_record_age_seconds:
            return IsolateRecords("record_too_old", attempts)
        return RetryBatch(attempts)

    def pause(self, failures: int, delay: float | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 after the first);
        ``delay``, the failure's own (:attr:`RetryableError.delay`), wins when given."""
        wait = self.backoff.delay(failures - 1) if delay is None else delay
        return min(wait, self.backoff.cap)
