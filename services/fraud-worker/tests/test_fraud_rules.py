"""Unit tests of the fraud rules: each rule, its boundaries, combinations, per-currency limits."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fraud_worker.rules import AccountActivity, FraudDecision, PaymentFacts, RiskLimits, evaluate
from fraud_worker.settings import FraudSettings
from pulse.errors import PermanentError
from pulse.events import PAYMENT_CREATED, new_event
from pulse.payments import APPROVED, DECLINED, REVIEW

LIMITS = RiskLimits(
    review_amounts={"EUR": Decimal(1000), "JPY": Decimal(150000)},
    decline_amounts={"EUR": Decimal(5000), "JPY": Decimal(750000)},
    default_review_amount=Decimal(500),
    default_decline_amount=Decimal(2000),
    velocity_review_count=3,
    velocity_decline_count=6,
    blocked_merchants=frozenset({"m-bad"}),
    blocked_countries=frozenset({"KP"}),
)
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def payment(
    amount: str = "10.00", currency: str = "EUR", country: str | None = None, merchant: str = "m-1"
) -> PaymentFacts:
    return PaymentFacts("p-1", "a-1", Decimal(amount), currency, merchant, country, NOW)


def decide(p: PaymentFacts, activity: AccountActivity | None = None) -> FraudDecision:
    return evaluate(p, activity or AccountActivity(count=1, amount_sum=p.amount), LIMITS)


def test_a_small_payment_is_approved_without_reasons() -> None:
    result = decide(payment("12.50"))
    assert result.decision == APPROVED
    assert result.reasons == ()
    assert 0 <= result.score < 40


@pytest.mark.parametrize(
    ("amount", "decision", "reasons"),
    [
        ("1000.00", APPROVED, ()),  # at the review limit: not above it
        ("1000.01", REVIEW, ("amount_above_review_limit",)),
        ("5000.00", REVIEW, ("amount_above_review_limit",)),  # at the decline limit
        ("5000.01", DECLINED, ("amount_above_decline_limit",)),
    ],
)
def test_amount_limits_are_exclusive_boundaries(
    amount: str, decision: str, reasons: tuple[str, ...]
) -> None:
    result = decide(payment(amount))
    assert (result.decision, result.reasons) == (decision, reasons)


@pytest.mark.parametrize(
    ("amount", "currency", "decision"),
    [
        ("1200.00", "EUR", REVIEW),
        ("1200.00", "JPY", APPROVED),  # the JPY limits are in yen
        ("200000", "JPY", REVIEW),
        ("800000", "JPY", DECLINED),
        ("600.00", "CHF", REVIEW),  # unnamed currency: the defaults
        ("2500.00", "CHF", DECLINED),
        ("400.00", "chf", APPROVED),
    ],
)
def test_limits_are_per_currency_with_a_default(amount: str, currency: str, decision: str) -> None:
    assert decide(payment(amount, currency.upper())).decision == decision


@pytest.mark.parametrize(
    ("count", "decision", "reasons"),
    [
        (3, APPROVED, ()),
        (4, REVIEW, ("velocity_count_review",)),
        (6, REVIEW, ("velocity_count_review",)),
        (7, DECLINED, ("velocity_count_decline",)),
    ],
)
def test_velocity_count_counts_payments_above_the_limits(
    count: int, decision: str, reasons: tuple[str, ...]
) -> None:
    result = decide(payment(), AccountActivity(count=count, amount_sum=Decimal(10)))
    assert (result.decision, result.reasons) == (decision, reasons)


def test_velocity_amount_reviews_many_payments_adding_up_to_the_decline_limit() -> None:
    small = payment("900.00")
    assert decide(small, AccountActivity(2, Decimal("5000.00"))).decision == APPROVED
    result = decide(small, AccountActivity(2, Decimal("5000.01")))
    assert (result.decision, result.reasons) == (REVIEW, ("velocity_amount_review",))
    # One payment alone is the amount rule's business, not velocity's.
    alone = decide(payment("5000.01"), AccountActivity(1, Decimal("5000.01")))
    assert alone.reasons == ("amount_above_decline_limit",)
    huge_after_small = decide(payment("9000.00"), AccountActivity(2, Decimal("9010.00")))
    assert huge_after_small.reasons == ("amount_above_decline_limit",)


def test_country_mismatch_with_the_accounts_recent_country() -> None:
    same = decide(payment(country="DE"), AccountActivity(1, Decimal(10), previous_country="DE"))
    assert same.decision == APPROVED
    other = decide(payment(country="FR"), AccountActivity(1, Decimal(10), previous_country="DE"))
    assert (other.decision, other.reasons) == (REVIEW, ("country_mismatch",))
    unknown = decide(payment(country=None), AccountActivity(1, Decimal(10), previous_country="DE"))
    assert unknown.decision == APPROVED
    first = decide(payment(country="FR"), AccountActivity(1, Decimal(10), previous_country=None))
    assert first.decision == APPROVED


def test_blocklists_decline() -> None:
    assert decide(payment(merchant="m-bad")).reasons == ("blocked_merchant",)
    assert decide(payment(merchant="m-bad")).decision == DECLINED
    assert decide(payment(country="KP")).decision == DECLINED
    blocked = AccountActivity(1, Decimal(10), blocked_account=True, blocked_merchant=True)
    result = decide(payment(), blocked)
    assert (result.decision, result.reasons) == (DECLINED, ("blocked_account", "blocked_merchant"))


def test_two_review_reasons_together_decline() -> None:
    result = decide(
        payment("1500.00", country="FR"),
        AccountActivity(1, Decimal("1500.00"), previous_country="DE"),
    )
    assert result.decision == DECLINED
    assert result.reasons == ("amount_above_review_limit", "country_mismatch")
    assert result.score >= 80


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10_000_000), places=2)
activities = st.builds(
    AccountActivity,
    count=st.integers(min_value=1, max_value=50),
    amount_sum=amounts,
    previous_country=st.sampled_from([None, "DE", "FR"]),
)


@given(amount=amounts, activity=activities, country=st.sampled_from([None, "DE", "FR", "KP"]))
def test_score_bounds_and_decision_follow_each_other(
    amount: Decimal, activity: AccountActivity, country: str | None
) -> None:
    result = evaluate(PaymentFacts("p", "a", amount, "EUR", "m", country, NOW), activity, LIMITS)
    assert 0 <= result.score <= 100
    assert (result.decision == APPROVED) == (not result.reasons)
    assert (result.decision == DECLINED) == (result.score >= 80)


@given(low=amounts, high=amounts, activity=activities)
def test_a_larger_amount_is_never_judged_less_risky(
    low: Decimal, high: Decimal, activity: AccountActivity
) -> None:
    low, high = min(low, high), max(low, high)
    order = [APPROVED, REVIEW, DECLINED]
    first = evaluate(PaymentFacts("p", "a", low, "EUR", "m", None, NOW), activity, LIMITS)
    second = evaluate(PaymentFacts("p", "a", high, "EUR", "m", None, NOW), activity, LIMITS)
    assert second.score >= first.score
    assert order.index(second.decision) >= order.index(first.decision)


def test_facts_from_a_created_event() -> None:
    event = new_event(
        type=PAYMENT_CREATED,
        source="/t",
        data={
            "payment_id": "p-1",
            "account_id": "a-1",
            "amount": "12.50",
            "currency": "eur",
            "merchant_id": "m-1",
            "country": "de",
        },
    )
    facts = PaymentFacts.from_event(event)
    assert (facts.amount, facts.currency, facts.country) == (Decimal("12.50"), "EUR", "DE")


@pytest.mark.parametrize(
    "data",
    [
        {},
        {
            "payment_id": "p",
            "account_id": "a",
            "amount": "x",
            "currency": "EUR",
            "merchant_id": "m",
        },
        {
            "payment_id": "p",
            "account_id": "a",
            "amount": "-1",
            "currency": "EUR",
            "merchant_id": "m",
        },
        {
            "payment_id": "p",
            "account_id": "a",
            "amount": "NaN",
            "currency": "EUR",
            "merchant_id": "m",
        },
        {"payment_id": 5, "account_id": "a", "amount": "1", "currency": "EUR", "merchant_id": "m"},
    ],
)
def test_malformed_payment_data_is_permanent(data: dict[str, object]) -> None:
    event = new_event(type=PAYMENT_CREATED, source="/t", data=data)
    with pytest.raises(PermanentError):
        PaymentFacts.from_event(event)


def test_settings_read_json_maps_and_refuse_inverted_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_REVIEW_AMOUNTS", '{"eur": "100"}')
    monkeypatch.setenv("PULSE_DECLINE_AMOUNTS", '{"EUR": "300"}')
    monkeypatch.setenv("PULSE_BLOCKED_COUNTRIES", '["kp"]')
    limits = FraudSettings().risk_limits()
    assert limits.review_amount("EUR") == 100
    assert limits.decline_amount("eur") == 300
    assert limits.blocked_countries == frozenset({"KP"})
    monkeypatch.setenv("PULSE_DECLINE_AMOUNTS", '{"EUR": "50"}')
    with pytest.raises(ValueError, match="decline amount of EUR"):
        FraudSettings()
