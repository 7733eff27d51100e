"""User-facing notifications as pure code: a payment.updated event in, a notification out.

The notify worker sends them to account channels and webhooks; a webhook replay (ingest)
builds them again from the audit trail, with the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pulse.errors import PermanentError
from pulse.events import NOTIFICATION, new_event, stable_event_id
from pulse.payments import APPROVED, DECLINED, PENDING, REVIEW, format_amount

if TYPE_CHECKING:
    from pulse.events import CloudEvent

__all__ = ["SOURCE", "Notification", "notification_event", "notification_text"]

SOURCE: Final = "/pulse/notify-worker"

# status -> (title, how the sentence ends)
_WORDING: Final = {
    APPROVED: ("Payment approved", "was approved"),
    DECLINED: ("Payment declined", "was declined"),
    REVIEW: ("Payment under review", "is being reviewed"),
    PENDING: ("Payment pending", "is pending"),
}


@dataclass(frozen=True)
class Notification:
    title: str
    message: str


def notification_text(payment: dict[str, Any]) -> Notification:
    """Title and sentence for a payment in its new status (``payment["status"]``)."""
    status = str(payment["status"])
    title, ending = _WORDING.get(status, ("Payment updated", f"is now {status.lower()}"))
    amount = f"{format_amount(payment['amount'])} {payment['currency']}"
    merchant = payment.get("merchant_id")
    to = f" to merchant {merchant}" if merchant else ""
    return Notification(title, f"Your payment of {amount}{to} {ending}.")


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def notification_event(source: CloudEvent) -> CloudEvent | None:
    """The ``pulse.notification`` for a ``pulse.payment.updated`` event; None if the status
    did not change. :class:`PermanentError` if the event lacks what a notification needs."""
    data = source.data
    try:
        status, old_status = _text(data, "status"), data.get("old_status")
        if status == old_status:
            return None
        payment_id, account_id = _text(data, "payment_id"), _text(data, "account_id")
        _text(data, "currency")
        text = notification_text(data)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise PermanentError(f"malformed payment event: {type(exc).__name__}: {exc}") from exc
    return new_event(
        id=stable_event_id(source.id, "notification"),
        type=NOTIFICATION,
        source=SOURCE,
        subject=payment_id,
        traceparent=source.traceparent,
        data={
            "payment_id": payment_id,
            "account_id": account_id,
            "status": status,
            "old_status": old_status,
            "title": text.title,
            "message": text.message,
        },
    )
