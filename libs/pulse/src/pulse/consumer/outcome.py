"""What becomes of a message once its handler has run: the consumer's outcome policy.

Pure — no I/O, no event loop: the runtime (:mod:`pulse.consumer.runtime`) says how a handler
ended, :class:`OutcomePolicy` answers with an :class:`Outcome`, and the runtime applies it::

    how the handler ended                        outcome      what the runtime does
    -------------------------------------------  -----------  ------------------------------
    FIFO: not run, the previous message of its   RELEASE      makes it visible again now,
      group ended in anything but ACK or                      unhandled: the group stays
      DEAD_LETTER                                             blocked behind that message
    returned                                     ACK          deletes it (batched)
    stopped by the heartbeat (its visibility     LEAVE        nothing: another consumer may
      or a lease was lost)                                    own the message now
    raised PermanentError                        DEAD_LETTER  sends it to the dead-letter
                                                              queue with the reason, then
                                                              deletes it
    raised RetryableError(delay=d)               RETRY        hides it for d seconds
    raised RetryableError() or anything else     RETRY        hides it for the backoff
    raised anything but Hold, on the last        DEAD_LETTER  as a PermanentError, the last
      receive the queue's redrive policy allows               error as the reason (SQS would
      (receive count >= maxReceiveCount)                      move it at the next receive,
                                                              without saying why)
    (dead-lettering it failed)                   RETRY        hides it for the backoff: the
                                                              redrive policy dead-letters it
                                                              in the end

A :class:`~pulse.errors.Hold` is a wait, not a failure: it is never the "last receive"
that dead-letters a message (a queue whose messages are held sets a high
``maxReceiveCount``; SQS's own redrive still applies past it).

The backoff is Pulse's one backoff, :class:`pulse.backoff.FullJitter`, with the message's
receive count as the attempt: a delay drawn at random from ``[0, min(cap, 2**receive_count)]``
seconds (the window of a first failure is 2 s) — so messages that failed together do not
all come back together. SQS's visibility takes whole seconds: a delay is rounded up and
kept within SQS's 0..43,200. A handler's own ``RetryableError(delay=…)`` takes precedence.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

from pulse.backoff import FullJitter
from pulse.consumer.limits import MAX_VISIBILITY_SECONDS
from pulse.errors import Hold, PermanentError, RetryableError

__all__ = [
    "ACK",
    "BACKOFF_BASE_SECONDS",
    "RELEASE",
    "Action",
    "Outcome",
    "OutcomePolicy",
    "last_error",
]

# The backoff's window is BACKOFF_BASE_SECONDS * 2**receive_count: 2 s after a first receive.
BACKOFF_BASE_SECONDS: Final = 1.0


class Action(enum.Enum):
    """What the runtime does with the message."""

    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    RELEASE = "release"
    LEAVE = "leave"


# The ``outcome`` label of the stage's metrics (pulse.metrics.StageMetrics.OUTCOMES).
_LABELS: Final = {
    Action.ACK: "success",
    Action.DEAD_LETTER: "dlq",
    Action.RETRY: "retry",
    Action.RELEASE: "retry",
    Action.LEAVE: "retry",
}
_SETTLED: Final = frozenset({Action.ACK, Action.DEAD_LETTER})


@dataclass(frozen=True, slots=True)
class Outcome:
    """One message's fate: an action, with its delay (RETRY) or its reason."""

    action: Action
    delay: int = 0  # RETRY: whole seconds the message stays invisible
    # DEAD_LETTER: the ``error`` attribute; LEAVE: why the handler was stopped; RETRY: the
    # exception's type when the handler crashed.
    reason: str | None = None

    @property
    def label(self) -> str:
        """The ``outcome`` label of the stage's metrics: success, retry or dlq."""
        return _LABELS[self.action]

    @property
    def settled(self) -> bool:
        """Done with for good (deleted or dead-lettered): its FIFO group may move on."""
        return self.action in _SETTLED


ACK: Final = Outcome(Action.ACK)
RELEASE: Final = Outcome(Action.RELEASE)


def last_error(error: Exception, receive_count: int) -> str:
    """The reason of a message dead-lettered after its last allowed receive failed."""
    text = str(error)
    kind = type(error).__name__
    described = text if isinstance(error, RetryableError) and text else f"{kind}: {text}"
    return f"{described.removesuffix(': ')} (receive {receive_count}, the last the queue allows)"


@dataclass(frozen=True)
class OutcomePolicy:
    """Turns how a handler ended into an :class:`Outcome` (see the module's table)."""

    backoff: FullJitter

    @classmethod
    def capped(cls, max_backoff_seconds: float) -> OutcomePolicy:
        """The policy whose backoff window doubles per receive up to ``max_backoff_seconds``."""
        return cls(FullJitter(BACKOFF_BASE_SECONDS, max_backoff_seconds))

    def in_turn(self, predecessor: Outcome | None) -> Outcome | None:
        """FIFO: None if a message may run after its group's previous one, else RELEASE.

        ``predecessor`` is how that previous message ended; None if it ended without an
        outcome (cancelled while the consumer was stopping).
        """
        if predecessor is not None and predecessor.settled:
            return None
        return RELEASE

    def after(
        self,
        receive_count: int,
        error: Exception | None = None,
        *,
        stopped: str | None = None,
        max_receives: int | None = None,
    ) -> Outcome:
        """The outcome of a handler that raised ``error`` (None: it returned).

        ``stopped`` is why the heartbeat cancelled the handler, if it did. ``max_receives``
        is the queue's ``maxReceiveCount`` (None: no redrive policy, or not known): a failure
        on that receive is the last, and the message is dead-lettered with its error.
        """
        if stopped is not None:
            return Outcome(Action.LEAVE, reason=stopped)
        if error is None:
            return ACK
        if isinstance(error, PermanentError):
            return Outcome(Action.DEAD_LETTER, reason=str(error) or type(error).__name__)
        last = max_receives is not None and receive_count >= max_receives
        if last and not isinstance(error, Hold):
            return Outcome(Action.DEAD_LETTER, reason=last_error(error, receive_count))
        if isinstance(error, RetryableError):
            return self.retry(receive_count, error.delay)
        return self.retry(receive_count, reason=type(error).__name__)

    def retry(
        self, receive_count: int, delay: float | None = None, *, reason: str | None = None
    ) -> Outcome:
        """RETRY after ``delay`` seconds, else after the backoff of ``receive_count``."""
        if delay is None:
            delay = self.backoff.delay(receive_count)
        seconds = max(0, min(math.ceil(delay), MAX_VISIBILITY_SECONDS))
        return Outcome(Action.RETRY, seconds, reason)
