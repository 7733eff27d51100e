"""The payment: its model, and its record as stored in DynamoDB and shown in events and the API.

:class:`Payment` is the one definition of a payment's public fields: the API's OpenAPI
schema is built from it, events carry the same fields, and which fields a payment keeps
from its creation for ever is its ``frozen`` fields. Amounts are decimal strings with two
places (``"12.50"``), never floats.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final, Literal

from boto3.dynamodb.types import TypeDeserializer
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "APPROVED",
    "DECLINED",
    "FINAL_STATUSES",
    "IMMUTABLE_FIELDS",
    "PENDING",
    "PUBLIC_FIELDS",
    "REVIEW",
    "Payment",
    "PaymentStatus",
    "format_amount",
    "item_from_image",
    "payment_from_item",
]

PENDING: Final = "PENDING"
APPROVED: Final = "APPROVED"
REVIEW: Final = "REVIEW"
DECLINED: Final = "DECLINED"
FINAL_STATUSES: Final = frozenset({APPROVED, REVIEW, DECLINED})
PaymentStatus = Literal["PENDING", "APPROVED", "REVIEW", "DECLINED"]

_DESERIALIZER = TypeDeserializer()


class Payment(BaseModel):
    """A payment as the API shows it."""

    # The docstring is the schema's description in the OpenAPI document. ``frozen`` fields
    # are set at creation and never change; the others (status and the fraud decision)
    # change as the payment moves on (pulse.payment_states: the fraud decision, then a
    # review of a payment held in REVIEW). Bookkeeping stored beside them in the table (the
    # request hash, the traceparent, the idempotency key) is not part of a payment.

    model_config = ConfigDict(title="Payment")

    payment_id: str = Field(frozen=True, json_schema_extra={"format": "uuid"})
    account_id: str = Field(frozen=True)
    amount: str = Field(
        frozen=True,
        description="Two-place decimal string.",
        json_schema_extra={"examples": ["12.50"]},
    )
    currency: str = Field(frozen=True)
    merchant_id: str = Field(frozen=True)
    country: str | None = Field(default=None, frozen=True)
    metadata: dict[str, str] | None = Field(default=None, frozen=True)
    status: PaymentStatus
    created_at: str = Field(frozen=True, description="ISO-8601 UTC with milliseconds.")
    updated_at: str
    fraud_score: float | None = None
    fraud_reasons: list[str] | None = None
    decided_at: str | None = None
    reviewed_by: str | None = Field(
        default=None,
        description="Who decided the payment held in REVIEW: an operator's token subject, "
        "`cli:<user>` for `pulse review`, `system:review-timeout` for the timeout sweep.",
    )
    review_note: str | None = Field(default=None, description="Why, in the reviewer's words.")
    reviewed_at: str | None = Field(default=None, description="ISO-8601 UTC with milliseconds.")


# The model's fields, in order, as the item and event conversions below walk them.
PUBLIC_FIELDS: Final = tuple(Payment.model_fields)
IMMUTABLE_FIELDS: Final = tuple(n for n, f in Payment.model_fields.items() if f.frozen)


def format_amount(amount: Decimal | str | int) -> str:
    """Canonical two-place decimal string: ``Decimal("12.5")`` → ``"12.50"``."""
    return str(Decimal(amount).quantize(Decimal("0.01")))


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_plain(v) for v in value]
    return value


def payment_from_item(item: dict[str, Any]) -> dict[str, Any]:
    """The public JSON form of a payment from a (deserialised) DynamoDB item."""
    out: dict[str, Any] = {}
    for field in PUBLIC_FIELDS:
        if field not in item:
            continue
        value = item[field]
        out[field] = value if field == "amount" else _plain(value)
    if "amount" in out:
        out["amount"] = format_amount(out["amount"])
    return out


def item_from_image(image: dict[str, Any]) -> dict[str, Any]:
    """Deserialise a stream image (``{"attr": {"S": …}}``) into plain Python values."""
    return {k: _DESERIALIZER.deserialize(v) for k, v in image.items()}
