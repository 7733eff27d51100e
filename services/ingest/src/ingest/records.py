"""The payment ingest writes (as plain values, and as the DynamoDB item), and the creation
response rebuilt from it. Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ingest.validation import canonical_request
from pulse.events import iso_timestamp
from pulse.payments import IMMUTABLE_FIELDS, PENDING, payment_from_item

if TYPE_CHECKING:
    from datetime import datetime

    from ingest.validation import PaymentRequest

__all__ = ["created_payment", "iso_timestamp", "new_payment", "payment_item"]


def new_payment(
    request: PaymentRequest,
    *,
    payment_id: str,
    request_hash: str,
    traceparent: str,
    idempotency_key: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A new PENDING payment as stored, in plain values: strings, and the metadata's map of
    strings (what :func:`pulse.payments.item_from_image` reads back from its item)."""
    created = iso_timestamp(now)
    payment: dict[str, Any] = {"payment_id": payment_id, **canonical_request(request)}
    payment.update(
        {
            "status": PENDING,
            "created_at": created,
            "updated_at": created,
            "request_hash": request_hash,
            "traceparent": traceparent,
        }
    )
    if idempotency_key is not None:
        payment["idempotency_key"] = idempotency_key
    return payment


def payment_item(payment: dict[str, Any]) -> dict[str, Any]:
    """The DynamoDB item (attribute-value form) of a payment from :func:`new_payment`."""
    return {
        name: {"M": {k: {"S": v} for k, v in value.items()}}
        if isinstance(value, dict)
        else {"S": value}
        for name, value in payment.items()
    }


def created_payment(item: dict[str, Any]) -> dict[str, Any]:
    """The payment as first created, from a deserialised item (or :func:`new_payment`).

    Replays answer with this too: the immutable fields, status PENDING and the stored
    ``created_at`` as ``updated_at`` — the first response again, whatever happened since.
    """
    first: dict[str, Any] = {name: item[name] for name in IMMUTABLE_FIELDS if name in item}
    first["status"] = PENDING
    first["updated_at"] = item["created_at"]
    return payment_from_item(first)
