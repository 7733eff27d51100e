"""Unit tests of notification texts and events."""

from __future__ import annotations

from typing import Any

import pytest

from pulse.errors import PermanentError
from pulse.events import NOTIFICATION, PAYMENT_UPDATED, new_event, stable_event_id
from pulse.notifications import notification_event, notification_text

PAYMENT = {
    "payment_id": "p-1",
    "account_id": "a-1",
    "amount": "12.5",
    "currency": "EUR",
    "merchant_id": "m-1",
}


@pytest.mark.parametrize(
    ("status", "title", "message"),
    [
        ("APPROVED", "Payment approved", "Your payment of 12.50 EUR to merchant m-1 was approved."),
        ("DECLINED", "Payment declined", "Your payment of 12.50 EUR to merchant m-1 was declined."),
        (
            "REVIEW",
            "Payment under review",
            "Your payment of 12.50 EUR to merchant m-1 is being reviewed.",
        ),
        (
            "REFUNDED",
            "Payment updated",
            "Your payment of 12.50 EUR to merchant m-1 is now refunded.",
        ),
    ],
)
def test_texts_per_status(status: str, title: str, message: str) -> None:
    text = notification_text({**PAYMENT, "status": status})
    assert (text.title, text.message) == (title, message)


def test_text_without_a_merchant() -> None:
    text = notification_text({**PAYMENT, "merchant_id": None, "status": "APPROVED"})
    assert text.message == "Your payment of 12.50 EUR was approved."


def updated(**data: Any) -> Any:
    return new_event(
        type=PAYMENT_UPDATED,
        source="/pulse/stream-processor",
        id="ev-1",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        data={**PAYMENT, **data},
    )


def test_a_status_change_becomes_a_notification_with_a_stable_id() -> None:
    source = updated(old_status="PENDING", status="APPROVED")
    event = notification_event(source)
    assert event is not None
    assert event.type == NOTIFICATION
    assert event.id == stable_event_id("ev-1", "notification")
    assert event.id == notification_event(source).id  # type: ignore[union-attr]
    assert event.traceparent == source.traceparent
    assert event.data == {
        "payment_id": "p-1",
        "account_id": "a-1",
        "status": "APPROVED",
        "old_status": "PENDING",
        "title": "Payment approved",
        "message": "Your payment of 12.50 EUR to merchant m-1 was approved.",
    }


def test_an_unchanged_status_is_not_notified() -> None:
    assert notification_event(updated(old_status="APPROVED", status="APPROVED")) is None


@pytest.mark.parametrize(
    "data",
    [
        {"status": "APPROVED", "old_status": "PENDING", "amount": "abc"},
        {"status": "APPROVED", "old_status": "PENDING", "currency": None, "account_id": None}
        | {"payment_id": None},
    ],
)
def test_malformed_data_is_permanent(data: dict[str, Any]) -> None:
    event = updated(**data)
    with pytest.raises(PermanentError):
        notification_event(event)


def test_missing_status_is_permanent() -> None:
    event = new_event(type=PAYMENT_UPDATED, source="/t", data={"payment_id": "p"})
    with pytest.raises(PermanentError):
        notification_event(event)
