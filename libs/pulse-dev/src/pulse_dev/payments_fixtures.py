"""Payments for tests of the stages after ingest: records in the table, events on the queues.

A test of the stream processor writes a PENDING payment into the payments table as ingest
would (:func:`pending_payment`, :func:`put_payment`); a test of the fraud worker also sends
the ``pulse.payment.created`` event the stream processor would make of it
(:func:`payment_created`); a test of the notify worker sends ``pulse.payment.updated``
events (:func:`payment_updated` of :func:`updated_payment`); a test of the review of payments
puts some in REVIEW as the fraud worker would (:func:`put_in_review`). Re-exported by
:mod:`pulse_dev.testing`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Final

from pulse.events import (
    PAYMENT_CREATED,
    PAYMENT_UPDATED,
    CloudEvent,
    iso_timestamp,
    new_event,
    stable_event_id,
    utc_now,
)
from pulse.payment_states import PaymentTransitions, Trigger, transition
from pulse.payments import PENDING, REVIEW, payment_from_item

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

__all__ = [
    "CREATED_AT",
    "payment_created",
    "payment_updated",
    "pending_payment",
    "put_in_review",
    "put_payment",
    "updated_payment",
]

CREATED_AT: Final = "2025-01-01T00:00:00.000Z"
# Both events come from the stream processor, which is where a worker's events come from.
_STREAM_PROCESSOR: Final = "/pulse/stream-processor"


def pending_payment(
    *,
    payment_id: str | None = None,
    account_id: str = "acct-1",
    amount: str = "12.50",
    currency: str = "EUR",
    merchant_id: str = "m-1",
    traceparent: str | None = None,
) -> dict[str, str]:
    """A PENDING payment's record as ingest stores it, each attribute a string.

    ``payment_id`` is a fresh UUID unless given; created and updated at :data:`CREATED_AT`;
    the ``traceparent`` attribute only when given (ingest always writes one: tests that
    follow a trace pass it).
    """
    payment = {
        "payment_id": payment_id or str(uuid.uuid4()),
        "account_id": account_id,
        "amount": amount,
        "currency": currency,
        "merchant_id": merchant_id,
        "status": PENDING,
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT,
        "request_hash": "h",
    }
    if traceparent is not None:
        payment["traceparent"] = traceparent
    return payment


def put_payment(ddb: Any, table: str, payment: Mapping[str, str]) -> dict[str, str]:
    """Writes ``payment`` into the payments ``table`` as ingest does (a new item, never over
    an existing one) and returns it: ``put_payment(ddb, table, pending_payment(...))``."""
    ddb.put_item(
        TableName=table,
        Item={name: {"S": value} for name, value in payment.items()},
        ConditionExpression="attribute_not_exists(payment_id)",
    )
    return dict(payment)


def put_in_review(
    ddb: Any,
    table: str,
    *,
    entered: datetime | None = None,
    reasons: tuple[str, ...] = ("amount_above_review_limit",),
    **payment: Any,
) -> str:
    """A new payment (:func:`pending_payment` of ``payment``) that the fraud worker put in
    REVIEW at ``entered`` (now unless given), through the same move; its id."""
    new = put_payment(ddb, table, pending_payment(**payment))
    moved = PaymentTransitions(ddb, table).apply(
        new["payment_id"],
        transition(PENDING, REVIEW, Trigger.FRAUD_DECISION),
        at=iso_timestamp(entered or utc_now()),
        record={"fraud_score": 55, "fraud_reasons": list(reasons)},
    )
    assert moved.applied
    return new["payment_id"]


def payment_created(payment: Mapping[str, str]) -> CloudEvent:
    """The ``pulse.payment.created`` event of ``payment``'s new record, as the stream
    processor sends it to the fraud queue: its id is the same for every call with the same
    payment, so sending it twice is a redelivery."""
    payment_id = payment["payment_id"]
    return new_event(
        id=stable_event_id("record", payment_id),
        type=PAYMENT_CREATED,
        source=_STREAM_PROCESSOR,
        subject=payment_id,
        traceparent=payment.get("traceparent"),
        data=payment_from_item(dict(payment)),
    )


def updated_payment(
    *,
    account_id: str,
    status: str = "APPROVED",
    old_status: str = "PENDING",
    payment_id: str = "p-1",
) -> dict[str, str]:
    """The data of a ``pulse.payment.updated`` event: a payment of 12.50 EUR to merchant
    ``m-1`` that moved from ``old_status`` to ``status``."""
    return {
        "payment_id": payment_id,
        "account_id": account_id,
        "amount": "12.50",
        "currency": "EUR",
        "merchant_id": "m-1",
        "status": status,
        "old_status": old_status,
    }


def payment_updated(
    data: Mapping[str, str], *, event_id: str | None = None, traceparent: str | None = None
) -> CloudEvent:
    """The ``pulse.payment.updated`` event of ``data`` (:func:`updated_payment`), as the
    stream processor sends it to the notify queue; a fresh id unless ``event_id`` is given."""
    return new_event(
        id=event_id,
        type=PAYMENT_UPDATED,
        source=_STREAM_PROCESSOR,
        subject=data["payment_id"],
        traceparent=traceparent,
        data=dict(data),
    )
