"""Settings of the fraud worker (environment variables prefixed ``PULSE_``)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from fraud_worker.rules import RiskLimits
from pulse.consumer import SqsConsumerSettings
from pulse.settings import load_settings

__all__ = ["FraudSettings", "load_fraud_settings"]


def _upper_keys(value: object) -> object:
    if isinstance(value, dict):
        return {str(k).upper(): v for k, v in value.items()}
    return value


class FraudSettings(SqsConsumerSettings):
    """Typed, frozen settings of the fraud worker; thresholds are in each payment's currency."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    service_name: str = "fraud-worker"
    http_port: int = Field(default=9102, ge=0, le=65535)

    # Amounts above these (per ISO 4217 currency, JSON maps) are reviewed / declined.
    review_amounts: dict[str, Decimal] = Field(
        default_factory=lambda: {
            "EUR": Decimal(5000),
            "USD": Decimal(5000),
            "GBP": Decimal(4000),
            "JPY": Decimal(750000),
        }
    )
    decline_amounts: dict[str, Decimal] = Field(
        default_factory=lambda: {
            "EUR": Decimal(20000),
            "USD": Decimal(20000),
            "GBP": Decimal(16000),
            "JPY": Decimal(3000000),
        }
    )
    # Thresholds of currencies the maps do not name.
    default_review_amount: Decimal = Field(default=Decimal(5000), gt=0)
    default_decline_amount: Decimal = Field(default=Decimal(20000), gt=0)

    # Velocity: payments of one account within the sliding window (this one included).
    velocity_window_seconds: int = Field(default=600, ge=1, le=7 * 24 * 3600)
    velocity_review_count: int = Field(default=5, ge=1)
    velocity_decline_count: int = Field(default=10, ge=1)
    # How long an account's last payment country is remembered for the mismatch rule.
    country_memory_seconds: int = Field(default=3600, ge=1, le=30 * 24 * 3600)

    # Blocklists (JSON lists): merchant ids and ISO 3166 alpha-2 countries always declined.
    blocked_merchants: frozenset[str] = frozenset()
    blocked_countries: frozenset[str] = frozenset()

    # A payment in REVIEW longer than this is declined by the review-timeout sweep, which
    # runs every sweep interval on one replica at a time (fraud_worker.review_timeout).
    review_timeout_seconds: float = Field(default=86400.0, gt=0, le=90 * 24 * 3600)
    review_sweep_interval_seconds: float = Field(default=60.0, gt=0, le=24 * 3600)

    # Test hook: seconds to wait between scoring and writing the decision (0 in production).
    decision_delay_seconds: float = Field(default=0.0, ge=0, le=60)

    _upper_review = field_validator("review_amounts", mode="before")(_upper_keys)
    _upper_decline = field_validator("decline_amounts", mode="before")(_upper_keys)

    @model_validator(mode="after")
    def _declines_above_reviews(self) -> FraudSettings:
        limits = self.risk_limits()
        for currency in {*self.review_amounts, *self.decline_amounts, "XXX"}:
            if limits.decline_amount(currency) <= limits.review_amount(currency):
                raise ValueError(f"decline amount of {currency} must be above its review amount")
        if self.velocity_decline_count <= self.velocity_review_count:
            raise ValueError("velocity_decline_count must be above velocity_review_count")
        for amount in (*self.review_amounts.values(), *self.decline_amounts.values()):
            if amount <= 0:
                raise ValueError("amount thresholds must be positive")
        return self

    def risk_limits(self) -> RiskLimits:
        return RiskLimits(
            review_amounts=dict(self.review_amounts),
            decline_amounts=dict(self.decline_amounts),
            default_review_amount=self.default_review_amount,
            default_decline_amount=self.default_decline_amount,
            velocity_review_count=self.velocity_review_count,
            velocity_decline_count=self.velocity_decline_count,
            blocked_merchants=self.blocked_merchants,
            blocked_countries=frozenset(c.upper() for c in self.blocked_countries),
        )


def load_fraud_settings() -> FraudSettings:
    return load_settings(FraudSettings)
