"""Writing a fraud decision back to the payments table, once.

The write is conditional on the payment still being PENDING: a replayed message finds the
condition false and changes nothing. The traceparent written by ingest is left in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fraud_worker.rules import FraudDecision
from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.payments import PENDING

__all__ = ["DecisionStore", "WriteResult"]


@dataclass(frozen=True)
class WriteResult:
    """``written`` False: the payment was not PENDING; ``stored`` is what it held then."""

    written: bool
    stored: FraudDecision | None = None
    stored_status: str | None = None


class DecisionStore:
    """Conditional UpdateItem of a payment's status and fraud attributes (blocking calls)."""

    def __init__(self, ddb: Any, table: str) -> None:
        self._ddb = ddb
        self.table = table

    def write(self, payment_id: str, decision: FraudDecision, decided_at: str) -> WriteResult:
        """Set the decision if the payment is PENDING.

        Raises :class:`~pulse.errors.RetryableError` when DynamoDB is throttling or
        unreachable or the table does not exist yet, and
        :class:`~pulse.errors.PermanentError` for a request it refuses.
        """
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key={"payment_id": {"S": payment_id}},
                UpdateExpression=(
                    "SET #s = :status, fraud_score = :score, fraud_reasons = :reasons, "
                    "decided_at = :now, updated_at = :now"
                ),
                ConditionExpression="#s = :pending",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":status": {"S": decision.decision},
                    ":score": {"N": str(decision.score)},
                    ":reasons": {"L": [{"S": r} for r in decision.reasons]},
                    ":now": {"S": decided_at},
                    ":pending": {"S": PENDING},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                item: Any = getattr(exc, "response", {}).get("Item") or {}
                return _already_decided(item)
            raise as_pulse_error(exc, f"UpdateItem {self.table}", delay=2.0) from exc
        return WriteResult(written=True)

    def check(self) -> None:
        self._ddb.describe_table(TableName=self.table)


def _already_decided(item: dict[str, Any]) -> WriteResult:
    status = item.get("status", {}).get("S")
    if "fraud_score" not in item or status is None:
        return WriteResult(written=False, stored_status=status)
    stored = FraudDecision(
        decision=status,
        score=int(item["fraud_score"]["N"]),
        reasons=tuple(r.get("S", "") for r in item.get("fraud_reasons", {}).get("L", [])),
    )
    return WriteResult(written=False, stored=stored, stored_status=status)
