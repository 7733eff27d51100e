"""Settings of the ingest service (environment variables prefixed ``PULSE_``)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.settings import PulseSettings, load_settings

__all__ = ["IngestSettings", "load_ingest_settings"]


class IngestSettings(PulseSettings):
    """Typed, frozen settings of the ingest HTTP API."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    service_name: str = "ingest"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # Largest request body accepted; larger ones get 413 before they are read.
    max_body_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    # Largest amount of one payment, in the payment's currency.
    max_amount: Decimal = Field(
        default=Decimal("1000000.00"), gt=0, le=Decimal(1000000000000), decimal_places=2
    )
    # Threads (and pooled connections) for DynamoDB calls: the number of requests that can
    # wait on DynamoDB at once; the rest queue in the event loop.
    aws_concurrency: int = Field(default=32, ge=1, le=512)
    # Most audit rows returned by GET /v1/payments/{id}/events.
    max_audit_events: int = Field(default=1000, ge=1, le=100_000)


def load_ingest_settings() -> IngestSettings:
    return load_settings(IngestSettings)
