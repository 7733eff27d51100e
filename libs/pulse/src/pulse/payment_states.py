"""The payment's states, the only moves between them, and the one write that makes a move.

A payment is created PENDING (by ingest's PutItem). After that it changes only by a
:class:`Transition` of :data:`TRANSITIONS` (drawn in docs/design.md, "Payment states"; a
test holds the drawing to this table)::

    PENDING ──fraud_decision──▶ APPROVED | REVIEW | DECLINED
    REVIEW  ──review──────────▶ APPROVED | DECLINED
    REVIEW  ──review_timeout──▶ DECLINED

Nothing else: APPROVED and DECLINED are final, and nothing returns to PENDING.

Every move is one conditional UpdateItem built by :func:`update_request`: it sets the new
status only if the stored status is still the move's source, so of two writers racing for
the same payment (a redelivered fraud message, two operators, an operator and the timeout
sweep) exactly one wins and the other learns what the payment holds now — a second decision
never overwrites the first. Each trigger records its own fields in the same write: the
fraud decision its score, reasons and ``decided_at``; a review its ``reviewed_by``,
``review_note`` and ``reviewed_at``.

A payment in REVIEW also carries ``review_queue`` (always ``"REVIEW"``) and
``review_since`` (when it entered REVIEW): the keys of the payments table's sparse global
secondary index :data:`REVIEW_INDEX`, set by the move into REVIEW and removed by the move
out of it. The index holds exactly the payments waiting for a decision, oldest first: the
review desk's list (:meth:`PaymentTransitions.review_queue`) and the timeout sweep's work.

:class:`PaymentTransitions` sends the writes and queries (blocking boto3 calls); the
fraud worker, ingest's review endpoint, ``pulse review`` and the timeout sweep all use it.
The table, :func:`transition` and the request builders are pure.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from boto3.dynamodb.types import TypeSerializer
from prometheus_client import Counter

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.errors import PermanentError
from pulse.events import iso_timestamp, utc_now
from pulse.payments import APPROVED, DECLINED, PENDING, REVIEW, item_from_image

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pulse.payments import PaymentStatus

__all__ = [
    "REVIEW_DECISIONS",
    "REVIEW_INDEX",
    "REVIEW_QUEUE",
    "REVIEW_SINCE",
    "REVIEW_TIMEOUT_REVIEWER",
    "TRANSITIONS",
    "IllegalTransitionError",
    "InvalidCursorError",
    "PaymentTransitions",
    "ReviewPage",
    "Reviewer",
    "Transition",
    "TransitionResult",
    "Trigger",
    "decode_cursor",
    "encode_cursor",
    "transition",
    "update_request",
    "why_not_reviewed",
]


class Trigger(enum.StrEnum):
    """What moves a payment."""

    FRAUD_DECISION = "fraud_decision"  # the fraud worker scored it
    REVIEW = "review"  # an operator decided it (the API, `pulse review`)
    REVIEW_TIMEOUT = "review_timeout"  # it waited in REVIEW too long (the sweep)


@dataclass(frozen=True)
class Transition:
    source: PaymentStatus
    target: PaymentStatus
    trigger: Trigger


TRANSITIONS: Final = frozenset(
    {
        Transition(PENDING, APPROVED, Trigger.FRAUD_DECISION),
        Transition(PENDING, REVIEW, Trigger.FRAUD_DECISION),
        Transition(PENDING, DECLINED, Trigger.FRAUD_DECISION),
        Transition(REVIEW, APPROVED, Trigger.REVIEW),
        Transition(REVIEW, DECLINED, Trigger.REVIEW),
        Transition(REVIEW, DECLINED, Trigger.REVIEW_TIMEOUT),
    }
)
# The fields each trigger records beside the status, and the one stamped with its time.
RECORDED: Final[Mapping[Trigger, frozenset[str]]] = {
    Trigger.FRAUD_DECISION: frozenset({"fraud_score", "fraud_reasons"}),
    Trigger.REVIEW: frozenset({"reviewed_by", "review_note"}),
    Trigger.REVIEW_TIMEOUT: frozenset({"reviewed_by", "review_note"}),
}
STAMPED: Final[Mapping[Trigger, str]] = {
    Trigger.FRAUD_DECISION: "decided_at",
    Trigger.REVIEW: "reviewed_at",
    Trigger.REVIEW_TIMEOUT: "reviewed_at",
}

# The sparse index of payments in REVIEW: hash REVIEW_QUEUE (always "REVIEW"), range
# REVIEW_SINCE (when the payment entered REVIEW, ISO-8601 UTC: sorts as time).
REVIEW_INDEX: Final = "review-queue"
REVIEW_QUEUE: Final = "review_queue"
REVIEW_SINCE: Final = "review_since"
_MAX_PAGE: Final = 1000
_MAX_CURSOR_PART: Final = 256

REVIEW_DECISIONS: Final = Counter(
    "pulse_review_decisions_total",
    "Payments moved out of REVIEW, by decision and by who decided (operator: the API, "
    "cli: pulse review, system: the review timeout)",
    ["decision", "actor_kind"],
)
ActorKind = Literal["operator", "cli", "system"]
for _decision, _kind in (
    (APPROVED, "operator"),
    (DECLINED, "operator"),
    (APPROVED, "cli"),
    (DECLINED, "cli"),
    (DECLINED, "system"),  # the timeout only declines
):
    REVIEW_DECISIONS.labels(_decision, _kind)


class IllegalTransitionError(PermanentError):
    """A move that :data:`TRANSITIONS` does not allow: a bug in the caller, never retried."""


class InvalidCursorError(ValueError):
    """A review-queue cursor that this module did not make."""


def transition(source: str, target: str, trigger: Trigger) -> Transition:
    """The allowed move from ``source`` to ``target`` by ``trigger``; raises
    :class:`IllegalTransitionError` for any other."""
    for move in TRANSITIONS:
        if (move.source, move.target, move.trigger) == (source, target, trigger):
            return move
    raise IllegalTransitionError(f"a payment cannot move from {source} to {target} by {trigger}")


_SERIALIZER: Final = TypeSerializer()


def update_request(
    table: str,
    payment_id: str,
    move: Transition,
    *,
    at: str,
    record: Mapping[str, Any],
) -> dict[str, Any]:
    """The UpdateItem request (boto3 client keyword arguments) that makes ``move``.

    Conditional on the stored status being ``move.source``; sets the target status,
    ``updated_at`` and the trigger's time field to ``at``, and ``record``'s fields (those
    the trigger records; a None value is left unset); sets or removes the review index's
    keys as the move enters or leaves REVIEW. Answers with the item after the write, or
    with the stored item when the condition fails (none: there is no such payment).
    """
    if move not in TRANSITIONS:
        raise IllegalTransitionError(f"{move} is not an allowed move")
    unknown = set(record) - RECORDED[move.trigger]
    if unknown:
        raise IllegalTransitionError(f"{move.trigger} does not record {sorted(unknown)}")
    values: dict[str, Any] = {
        ":target": {"S": move.target},
        ":source": {"S": move.source},
        ":at": {"S": at},
    }
    names = {"#status": "status", "#stamp": STAMPED[move.trigger]}
    sets = ["#status = :target", "updated_at = :at", "#stamp = :at"]
    removes = []
    for i, (name, value) in enumerate(sorted(record.items())):
        if value is not None:
            names[f"#f{i}"] = name
            values[f":f{i}"] = _SERIALIZER.serialize(value)
            sets.append(f"#f{i} = :f{i}")
    if move.target == REVIEW:
        values[":queue"] = {"S": REVIEW}
        sets += [f"{REVIEW_QUEUE} = :queue", f"{REVIEW_SINCE} = :at"]
    if move.source == REVIEW:
        removes += [REVIEW_QUEUE, REVIEW_SINCE]
    expression = "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    return {
        "TableName": table,
        "Key": {"payment_id": {"S": payment_id}},
        "UpdateExpression": expression,
        "ConditionExpression": "#status = :source",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        "ReturnValues": "ALL_NEW",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


@dataclass(frozen=True)
class Reviewer:
    """Who decides a payment in REVIEW: ``name`` is recorded as ``reviewed_by``."""

    kind: ActorKind
    name: str

    @classmethod
    def operator(cls, subject: str) -> Reviewer:
        """An operator through the API: their token's subject."""
        return cls("operator", subject)

    @classmethod
    def cli(cls, user: str) -> Reviewer:
        """An operator running ``pulse review``: ``cli:<user>``."""
        return cls("cli", f"cli:{user}")

    @property
    def trigger(self) -> Trigger:
        return Trigger.REVIEW_TIMEOUT if self.kind == "system" else Trigger.REVIEW


REVIEW_TIMEOUT_REVIEWER: Final = Reviewer("system", "system:review-timeout")


@dataclass(frozen=True)
class TransitionResult:
    """``applied``: the move was written. ``payment`` is the item (deserialised): as written
    when applied, as stored when not; None when there is no such payment."""

    applied: bool
    payment: dict[str, Any] | None


def why_not_reviewed(payment_id: str, payment: Mapping[str, Any]) -> str:
    """Why a review of ``payment`` (as stored) was refused: the status it has, and who
    decided it when that was a review."""
    by = payment.get("reviewed_by")
    decided = f" (decided by {by} at {payment.get('reviewed_at')})" if by else ""
    return (
        f"payment {payment_id} is {payment.get('status')}{decided}; "
        "only a payment in REVIEW can be reviewed"
    )


@dataclass(frozen=True)
class ReviewPage:
    """Payments in REVIEW, oldest first, and the cursor of the next page (None: the last)."""

    payments: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(last_key: Mapping[str, Any]) -> str:
    """An opaque cursor for a review-queue query's ``LastEvaluatedKey``."""
    parts = [last_key["payment_id"]["S"], last_key[REVIEW_SINCE]["S"]]
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The ``ExclusiveStartKey`` of a cursor :func:`encode_cursor` made; raises
    :class:`InvalidCursorError` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursorError("the cursor is not one this API returned") from None
    if not (
        isinstance(parts, list)
        and len(parts) == 2  # noqa: PLR2004 - payment id and review time
        and all(isinstance(p, str) and 0 < len(p) <= _MAX_CURSOR_PART for p in parts)
    ):
        raise InvalidCursorError("the cursor is not one this API returned")
    payment_id, since = parts
    return {
        "payment_id": {"S": payment_id},
        REVIEW_QUEUE: {"S": REVIEW},
        REVIEW_SINCE: {"S": since},
    }


class PaymentTransitions:
    """The moves of payments in one payments table, and its review queue (blocking calls).

    DynamoDB throttling or unreachable, or the table missing, raises
    :class:`~pulse.errors.RetryableError`; a request it refuses
    :class:`~pulse.errors.PermanentError`.
    """

    def __init__(self, ddb: Any, table: str) -> None:
        self._ddb = ddb
        self.table = table

    def apply(
        self, payment_id: str, move: Transition, *, at: str, record: Mapping[str, Any]
    ) -> TransitionResult:
        """Make ``move`` if the payment is in its source state (:func:`update_request`)."""
        request = update_request(self.table, payment_id, move, at=at, record=record)
        try:
            response = self._ddb.update_item(**request)
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                stored = getattr(exc, "response", {}).get("Item")
                return TransitionResult(
                    applied=False, payment=item_from_image(stored) if stored else None
                )
            raise as_pulse_error(exc, f"UpdateItem {self.table}", delay=2.0) from exc
        return TransitionResult(
            applied=True, payment=item_from_image(response.get("Attributes") or {})
        )

    def review(
        self,
        payment_id: str,
        decision: str,
        reviewer: Reviewer,
        note: str | None = None,
        *,
        at: str | None = None,
    ) -> TransitionResult:
        """Decide a payment in REVIEW (``decision`` APPROVED or DECLINED) as ``reviewer``.

        Not applied when the payment is not in REVIEW (already decided, by anyone) or
        does not exist; :class:`IllegalTransitionError` for a decision the reviewer may
        not make (the timeout only declines).
        """
        move = transition(REVIEW, decision, reviewer.trigger)
        result = self.apply(
            payment_id,
            move,
            at=at or iso_timestamp(utc_now()),
            record={"reviewed_by": reviewer.name, "review_note": note or None},
        )
        if result.applied:
            REVIEW_DECISIONS.labels(move.target, reviewer.kind).inc()
        return result

    def review_queue(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        entered_before: str | None = None,
    ) -> ReviewPage:
        """Payments in REVIEW, oldest first, at most ``limit`` after ``cursor``; with
        ``entered_before`` (ISO-8601 UTC) only those that entered REVIEW before it.

        Read from the index, so eventually consistent: a payment decided a moment ago may
        still be listed (its decision is refused with the status it has now).
        """
        values: dict[str, Any] = {":queue": {"S": REVIEW}}
        condition = f"{REVIEW_QUEUE} = :queue"
        if entered_before is not None:
            values[":before"] = {"S": entered_before}
            condition += f" AND {REVIEW_SINCE} < :before"
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": REVIEW_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": True,
            "Limit": max(1, min(limit, _MAX_PAGE)),
        }
        if cursor is not None:
            request["ExclusiveStartKey"] = decode_cursor(cursor)
        try:
            page = self._ddb.query(**request)
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"Query {self.table}/{REVIEW_INDEX}", delay=2.0) from exc
        last = page.get("LastEvaluatedKey")
        return ReviewPage(
            [item_from_image(item) for item in page.get("Items", [])],
            encode_cursor(last) if last else None,
        )
