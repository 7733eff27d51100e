"""The payment item ingest writes, and the creation response rebuilt from it. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ingest.validation import canonical_request
from pulse.payments import IMMUTABLE_FIELDS, PENDING, payment_from_item

if TYPE_CHECKING:
    from ingest.validation import PaymentRequest

__all__ = ["created_payment", "iso_timestamp", "new_item"]


def iso_timestamp(ts: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``: ``2026-01-01T12:00:00.000Z``."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_item(
    request: PaymentRequest,
    *,
    payment_id: str,
    request_hash: str,
    traceparent: str,
    idempotency_key: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The DynamoDB item (attribute-value form) of a new PENDING payment."""
    created = iso_timestamp(now)
    item: dict[str, Any] = {"payment_id": {"S": payment_id}}
    for name, value in canonical_request(request).items():
        if name == "metadata":
            item[name] = {"M": {k: {"S": v} for k, v in value.items()}}
        else:
            item[name] = {"S": value}
    item.update(
        {
            "status": {"S": PENDING},
            "created_at": {"S": created},
            "updated_at": {"S": created},
            "request_hash": {"S": request_hash},
            "traceparent": {"S": traceparent},
        }
    )
    if idempotency_key is not None:
        item["idempotency_key"] = {"S": idempotency_key}
    return item


def created_payment(item: dict[str, Any]) -> dict[str, Any]:
    """The payment as first created, from a deserialised item.

    Replays answer with this too: the immutable fields, status PENDING and the stored
    ``created_at`` as ``updated_at`` — the first response again, whatever happened since.
    """
    first: dict[str, Any] = {name: item[name] for name in IMMUTABLE_FIELDS if name in item}
    first["status"] = PENDING
    first["updated_at"] = item["created_at"]
    return payment_from_item(first)
