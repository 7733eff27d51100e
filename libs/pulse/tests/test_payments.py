"""The payment model: one definition of its fields, its item and JSON forms."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from pulse.payments import (
    IMMUTABLE_FIELDS,
    PUBLIC_FIELDS,
    Payment,
    format_amount,
    payment_from_item,
)

ITEM = {
    "payment_id": "6f1c1e0a-2b9e-4c1f-9d8e-0a1b2c3d4e5f",
    "account_id": "acct-1",
    "amount": Decimal("12.5"),
    "currency": "EUR",
    "merchant_id": "m-1",
    "country": "DE",
    "metadata": {"order": "o-1"},
    "status": "REVIEW",
    "created_at": "2026-01-01T12:00:00.000Z",
    "updated_at": "2026-01-01T12:00:01.000Z",
    "fraud_score": Decimal(55),
    "fraud_reasons": ["velocity"],
    "decided_at": "2026-01-01T12:00:01.000Z",
    "reviewed_by": "ops-1",
    "review_note": "known customer",
    "reviewed_at": "2026-01-01T12:05:00.000Z",
    # bookkeeping that is never shown
    "request_hash": "abc",
    "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    "idempotency_key": "k-1",
    "review_queue": "REVIEW",
    "review_since": "2026-01-01T12:00:01.000Z",
}


def test_what_a_payment_keeps_for_ever_is_its_creation() -> None:
    assert IMMUTABLE_FIELDS == (
        "payment_id",
        "account_id",
        "amount",
        "currency",
        "merchant_id",
        "country",
        "metadata",
        "created_at",
    )
    assert set(PUBLIC_FIELDS) - set(IMMUTABLE_FIELDS) == {
        "status",
        "updated_at",
        "fraud_score",
        "fraud_reasons",
        "decided_at",
        "reviewed_by",
        "review_note",
        "reviewed_at",
    }


def test_the_public_form_shows_the_model_fields_only() -> None:
    shown = payment_from_item(ITEM)
    assert list(shown) == list(PUBLIC_FIELDS)
    assert shown["amount"] == "12.50"
    assert shown["fraud_score"] == 55
    assert Payment.model_validate(shown).model_dump(exclude_none=True) == shown


def test_frozen_fields_cannot_change_on_a_model() -> None:
    payment = Payment.model_validate(payment_from_item(ITEM))
    payment.status = "DECLINED"
    with pytest.raises(ValidationError):
        payment.amount = "99.00"  # type: ignore[misc]  # mypy refuses it too


@pytest.mark.parametrize(
    ("amount", "text"),
    [(Decimal("12.5"), "12.50"), ("7", "7.00"), (3, "3.00"), (Decimal("0.10"), "0.10")],
)
def test_amounts_have_two_places(amount: Decimal | str | int, text: str) -> None:
    assert format_amount(amount) == text
