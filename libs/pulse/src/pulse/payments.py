"""The payment record as stored in DynamoDB and as represented in events and the API.

Amounts are decimal strings with at most two places (``"12.50"``), never floats.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from boto3.dynamodb.types import TypeDeserializer

__all__ = [
    "APPROVED",
    "DECLINED",
    "FINAL_STATUSES",
    "PENDING",
    "REVIEW",
    "format_amount",
    "item_from_image",
    "payment_from_item",
]

PENDING: Final = "PENDING"
APPROVED: Final = "APPROVED"
REVIEW: Final = "REVIEW"
DECLINED: Final = "DECLINED"
FINAL_STATUSES: Final = frozenset({APPROVED, REVIEW, DECLINED})

_DESERIALIZER = TypeDeserializer()

# Attributes the API shows; internal bookkeeping (request hash) stays out.
_PUBLIC_FIELDS: Final = (
    "payment_id",
    "account_id",
    "amount",
    "currency",
    "merchant_id",
    "country",
    "metadata",
    "status",
    "created_at",
    "updated_at",
    "fraud_score",
    "fraud_reasons",
    "decided_at",
)


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
    for field in _PUBLIC_FIELDS:
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
