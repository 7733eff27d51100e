"""The review timeout: a payment left in REVIEW too long is declined, once, by one replica.

Every ``interval`` each fraud-worker replica starts a round:

1. it measures the review queue's oldest payment (``pulse_review_queue_oldest_age_seconds``);
2. it tries to take the sweep's lease, an :class:`~pulse.idempotency.IdempotencyGuard` key in
   Redis (one owner at a time; the lease runs out if its owner dies, and is renewed while
   it sweeps). A replica that finds another one sweeping, or a sweep completed less than
   half an interval ago, skips its round;
3. the owner reads the review queue (the payments table's sparse index, oldest first) for
   payments that entered REVIEW more than ``timeout`` ago and declines each with the
   review move of the system reviewer ``system:review-timeout``.

Nothing is kept in memory: the state is the index, so a restarted worker (or another
replica) carries on where a dead one stopped. Each decline is the conditional move out of
REVIEW (:mod:`pulse.payment_states`): an operator's decision made a moment earlier wins,
and two sweepers racing (a lease that ran out mid-sweep) decline a payment once.

Decline, not escalate: a payment nobody reviewed in time is one the business did not
accept, and the account holder is told at once (the notify worker's notification of the
update) rather than left waiting; an operator who wanted it can ask for the payment again.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from prometheus_client import Counter, Gauge

from pulse.events import iso_timestamp, utc_now
from pulse.idempotency import Claim, InProgressError
from pulse.logging import get_logger
from pulse.payment_states import REVIEW_SINCE, REVIEW_TIMEOUT_REVIEWER
from pulse.payments import DECLINED

if TYPE_CHECKING:
    from collections.abc import Callable

    from pulse.idempotency import IdempotencyGuard
    from pulse.payment_states import PaymentTransitions

__all__ = ["SWEEP_KEY", "ReviewTimeoutSweep"]

log = get_logger("fraud_worker.review_timeout")

SWEEP_KEY: Final = "review-timeout"
_PAGE: Final = 100
SWEEPS: Final = Counter(
    "pulse_review_sweeps_total",
    "Review-timeout rounds, by outcome (swept: this replica swept; skipped: another replica "
    "was sweeping or had just swept; failed)",
    ["outcome"],
)
for _outcome in ("swept", "skipped", "failed"):
    SWEEPS.labels(_outcome)
OLDEST_IN_REVIEW: Final = Gauge(
    "pulse_review_queue_oldest_age_seconds",
    "How long the oldest payment in REVIEW has waited for a decision (0: none waits)",
)


class ReviewTimeoutSweep:
    """Declines payments in REVIEW for longer than ``timeout_seconds`` (module docstring)."""

    def __init__(
        self,
        transitions: PaymentTransitions,
        lease: IdempotencyGuard,
        *,
        timeout_seconds: float,
        interval_seconds: float,
        lease_seconds: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._transitions = transitions
        self._lease = lease
        self._timeout = timeout_seconds
        self._interval = interval_seconds
        self._renew_every = lease_seconds / 3
        self._clock = clock
        self.note = (
            f"declined automatically: in REVIEW for more than {timeout_seconds:g} s "
            "without a decision (PULSE_REVIEW_TIMEOUT_SECONDS)"
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """A round every interval until ``stopping`` is set."""
        while not stopping.is_set():
            await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._interval)

    async def round(self) -> int | None:
        """One round: the payments this replica declined, or None when it did not sweep."""
        try:
            await self.measure()
            got = await self._lease.acquire(SWEEP_KEY, b"")
        except InProgressError:
            got = None
        except Exception as exc:  # Redis or DynamoDB out of reach: the next round tries again
            SWEEPS.labels("failed").inc()
            log.warning("review timeout round failed", error=str(exc))
            return None
        if not isinstance(got, Claim):
            SWEEPS.labels("skipped").inc()
            return None
        renewing = asyncio.create_task(self._keep(got))
        try:
            declined = await self.sweep()
            await self._lease.complete(got, str(declined).encode())
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self._lease.release(got)
            if not isinstance(exc, Exception):
                raise
            SWEEPS.labels("failed").inc()
            log.warning("review timeout sweep failed", error=str(exc))
            return None
        finally:
            renewing.cancel()
        SWEEPS.labels("swept").inc()
        return declined

    async def sweep(self) -> int:
        """Decline every payment that entered REVIEW more than the timeout ago; how many
        this call declined (those another writer decided first are not counted)."""
        now = self._clock()
        cutoff = iso_timestamp(now - timedelta(seconds=self._timeout))
        declined = 0
        cursor: str | None = None
        while True:
            page = await asyncio.to_thread(
                self._transitions.review_queue, limit=_PAGE, cursor=cursor, entered_before=cutoff
            )
            for payment in page.payments:
                payment_id = str(payment["payment_id"])
                result = await asyncio.to_thread(
                    self._transitions.review,
                    payment_id,
                    DECLINED,
                    REVIEW_TIMEOUT_REVIEWER,
                    self.note,
                    at=iso_timestamp(now),
                )
                if result.applied:
                    declined += 1
                    log.info(
                        "payment declined: review timed out",
                        payment_id=payment_id,
                        review_since=payment.get(REVIEW_SINCE),
                    )
            cursor = page.next_cursor
            if cursor is None:
                break
        if declined:
            log.info("review timeout sweep", declined=declined)
        return declined

    async def measure(self) -> None:
        """Set the oldest-waiting gauge from the head of the review queue."""
        page = await asyncio.to_thread(self._transitions.review_queue, limit=1)
        since = page.payments[0].get(REVIEW_SINCE) if page.payments else None
        age = 0.0
        if isinstance(since, str):
            entered = datetime.fromisoformat(since)
            age = max(0.0, (self._clock() - entered).total_seconds())
        OLDEST_IN_REVIEW.set(age)

    async def _keep(self, claim: Claim) -> None:
        """Renew the lease while the sweep runs; stop once it was lost."""
        while True:
            await asyncio.sleep(self._renew_every)
            if not await self._lease.renew(claim):
                log.warning("review timeout lease lost while sweeping")
                return
