"""Fraud rules as pure code: payment facts and account activity in, a decision out.

Each rule that fires adds a reason and a weight; the score is the weights plus a small
amount-based component (0..19), capped at 100. One review-level hit means REVIEW, a
decline-level hit (or two review-level hits) means DECLINED:

=========================  ======  ===================================================
reason                     weight  fires when
=========================  ======  ===================================================
blocked_account            80      the account is on the blocklist (Redis)
blocked_merchant           80      the merchant is on a blocklist (Redis or settings)
blocked_country            80      the payment's country is on the blocklist
amount_above_decline_limit 80      amount > the currency's decline limit
amount_above_review_limit  40      amount > the currency's review limit (not decline)
velocity_count_decline     80      payments of the account in the window > decline count
velocity_count_review      40      ... > review count (not decline)
velocity_amount_review     40      same-currency sum in the window > the decline limit,
                                   over more than one payment, none above it alone
country_mismatch           40      the country differs from the account's recent one
=========================  ======  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Final

from pulse.errors import PermanentError
from pulse.payments import APPROVED, DECLINED, REVIEW

if TYPE_CHECKING:
    from pulse.events import CloudEvent

__all__ = [
    "DECLINE_SCORE",
    "REVIEW_SCORE",
    "AccountActivity",
    "FraudDecision",
    "PaymentFacts",
    "RiskLimits",
    "evaluate",
]

REVIEW_SCORE: Final = 40
DECLINE_SCORE: Final = 80
_AMOUNT_COMPONENT_MAX: Final = 19  # below REVIEW_SCORE: the amount alone never decides


@dataclass(frozen=True)
class PaymentFacts:
    """What the rules need to know about one payment."""

    payment_id: str
    account_id: str
    amount: Decimal
    currency: str
    merchant_id: str
    country: str | None
    occurred_at: datetime

    @classmethod
    def from_event(cls, event: CloudEvent) -> PaymentFacts:
        """From a ``pulse.payment.created`` event; :class:`PermanentError` if malformed."""
        data = event.data
        try:
            amount = Decimal(str(data["amount"]))
            facts = cls(
                payment_id=_text(data, "payment_id"),
                account_id=_text(data, "account_id"),
                amount=amount,
                currency=_text(data, "currency").upper(),
                merchant_id=_text(data, "merchant_id"),
                country=(str(data["country"]).upper() if data.get("country") else None),
                occurred_at=datetime.fromisoformat(event.time),
            )
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise PermanentError(f"malformed payment event: {type(exc).__name__}: {exc}") from exc
        if not amount.is_finite() or amount <= 0:
            raise PermanentError(f"malformed payment event: amount {data['amount']!r}")
        if facts.occurred_at.tzinfo is None:
            raise PermanentError("malformed payment event: time without a timezone")
        return facts


def _text(data: dict[str, object], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    return value


@dataclass(frozen=True)
class AccountActivity:
    """The account's recent payments, this one included."""

    count: int = 1
    # Sum of the window's payments in this payment's currency.
    amount_sum: Decimal = Decimal(0)
    # The country of the account's previous payment, if recent enough and known.
    previous_country: str | None = None
    # On the blocklists kept in Redis (``pulse fraud block``).
    blocked_account: bool = False
    blocked_merchant: bool = False


@dataclass(frozen=True)
class RiskLimits:
    """Thresholds of the rules (from settings)."""

    review_amounts: dict[str, Decimal] = field(default_factory=dict)
    decline_amounts: dict[str, Decimal] = field(default_factory=dict)
    default_review_amount: Decimal = Decimal(5000)
    default_decline_amount: Decimal = Decimal(20000)
    velocity_review_count: int = 5
    velocity_decline_count: int = 10
    blocked_merchants: frozenset[str] = frozenset()
    blocked_countries: frozenset[str] = frozenset()

    def review_amount(self, currency: str) -> Decimal:
        return self.review_amounts.get(currency.upper(), self.default_review_amount)

    def decline_amount(self, currency: str) -> Decimal:
        return self.decline_amounts.get(currency.upper(), self.default_decline_amount)


@dataclass(frozen=True)
class FraudDecision:
    """APPROVED, REVIEW or DECLINED, with a 0..100 score and the reasons that fired."""

    decision: str
    score: int
    reasons: tuple[str, ...] = ()


def _blocklist_hits(
    payment: PaymentFacts, activity: AccountActivity, limits: RiskLimits
) -> list[tuple[str, int]]:
    hits = []
    if activity.blocked_account:
        hits.append(("blocked_account", DECLINE_SCORE))
    if activity.blocked_merchant or payment.merchant_id in limits.blocked_merchants:
        hits.append(("blocked_merchant", DECLINE_SCORE))
    if payment.country and payment.country in limits.blocked_countries:
        hits.append(("blocked_country", DECLINE_SCORE))
    return hits


def _amount_hits(payment: PaymentFacts, limits: RiskLimits) -> list[tuple[str, int]]:
    if payment.amount > limits.decline_amount(payment.currency):
        return [("amount_above_decline_limit", DECLINE_SCORE)]
    if payment.amount > limits.review_amount(payment.currency):
        return [("amount_above_review_limit", REVIEW_SCORE)]
    return []


def _velocity_hits(
    payment: PaymentFacts, activity: AccountActivity, limits: RiskLimits
) -> list[tuple[str, int]]:
    hits = []
    if activity.count > limits.velocity_decline_count:
        hits.append(("velocity_count_decline", DECLINE_SCORE))
    elif activity.count > limits.velocity_review_count:
        hits.append(("velocity_count_review", REVIEW_SCORE))
    limit = limits.decline_amount(payment.currency)
    # A payment above the limit by itself is the amount rule's; this one is for many that
    # add up to it.
    if activity.count > 1 and activity.amount_sum > limit and payment.amount <= limit:
        hits.append(("velocity_amount_review", REVIEW_SCORE))
    return hits


def _country_hits(payment: PaymentFacts, activity: AccountActivity) -> list[tuple[str, int]]:
    if (
        payment.country
        and activity.previous_country
        and (payment.country != activity.previous_country)
    ):
        return [("country_mismatch", REVIEW_SCORE)]
    return []


def _amount_component(payment: PaymentFacts, limits: RiskLimits) -> int:
    ratio = min(payment.amount / limits.review_amount(payment.currency), Decimal(1))
    return int(ratio * _AMOUNT_COMPONENT_MAX)


def evaluate(payment: PaymentFacts, activity: AccountActivity, limits: RiskLimits) -> FraudDecision:
    """Apply every rule; the decision follows from the score (see the module doc)."""
    hits = [
        *_blocklist_hits(payment, activity, limits),
        *_amount_hits(payment, limits),
        *_velocity_hits(payment, activity, limits),
        *_country_hits(payment, activity),
    ]
    score = min(100, _amount_component(payment, limits) + sum(weight for _, weight in hits))
    if score >= DECLINE_SCORE:
        decision = DECLINED
    elif score >= REVIEW_SCORE:
        decision = REVIEW
    else:
        decision = APPROVED
    return FraudDecision(decision, score, tuple(reason for reason, _ in hits))
