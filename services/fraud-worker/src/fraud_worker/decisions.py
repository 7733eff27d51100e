"""Writing a fraud decision back to the payments table, once.

The write is the payment's move out of PENDING (:mod:`pulse.payment_states`): conditional
on the payment still being PENDING, so a replayed message finds the condition false and
changes nothing. A REVIEW decision also puts the payment in the review queue. The
traceparent written by ingest is left in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fraud_worker.rules import FraudDecision
from pulse.payment_states import PaymentTransitions, Trigger, transition
from pulse.payments import PENDING, REVIEW

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DecisionStore", "WriteResult"]


@dataclass(frozen=True)
class WriteResult:
    """``written`` False: the payment was not PENDING; ``stored`` is the fraud decision it
    held then (None: none, or no such payment) and ``stored_status`` its status."""

    written: bool
    stored: FraudDecision | None = None
    stored_status: str | None = None


class DecisionStore:
    """The fraud decision's conditional UpdateItem (blocking calls)."""

    def __init__(self, ddb: Any, table: str) -> None:
        self._ddb = ddb
        self.transitions = PaymentTransitions(ddb, table)
        self.table = table

    def write(self, payment_id: str, decision: FraudDecision, decided_at: str) -> WriteResult:
        """Set the decision if the payment is PENDING.

        Raises :class:`~pulse.errors.RetryableError` when DynamoDB is throttling or
        unreachable or the table does not exist yet, and
        :class:`~pulse.errors.PermanentError` for a request it refuses.
        """
        move = transition(PENDING, decision.decision, Trigger.FRAUD_DECISION)
        result = self.transitions.apply(
            payment_id,
            move,
            at=decided_at,
            record={"fraud_score": decision.score, "fraud_reasons": list(decision.reasons)},
        )
        if result.applied:
            return WriteResult(written=True)
        return _already_decided(result.payment or {})

    def check(self) -> None:
        self._ddb.describe_table(TableName=self.table)


def _already_decided(item: Mapping[str, Any]) -> WriteResult:
    """What the fraud worker decided before, from the stored payment: its status, unless a
    review moved it on since (then the decision was REVIEW)."""
    status = item.get("status")
    score = item.get("fraud_score")
    if status is None or not isinstance(score, Decimal | int):
        return WriteResult(written=False, stored_status=status)
    stored = FraudDecision(
        decision=REVIEW if "reviewed_at" in item else str(status),
        score=int(score),
        reasons=tuple(str(r) for r in item.get("fraud_reasons") or ()),
    )
    return WriteResult(written=False, stored=stored, stored_status=status)
