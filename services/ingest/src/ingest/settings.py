"""Settings of the ingest service (environment variables prefixed ``PULSE_``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from pulse.settings import CredentialSettings, comma_separated, load_settings
from pulse.webhook_endpoints import WebhookEndpointSettings

__all__ = ["IngestSettings", "load_ingest_settings"]


class IngestSettings(CredentialSettings, WebhookEndpointSettings):
    """Typed, frozen settings of the ingest HTTP API (the webhook endpoints' too:
    ``PULSE_WEBHOOK_ALLOW_HTTP``, ``PULSE_WEBHOOK_ALLOWED_NETWORKS``,
    ``PULSE_WEBHOOK_SECRET_OVERLAP_SECONDS``, ``PULSE_WEBHOOK_REPLAY_MAX_EVENTS``)."""

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

    # Requests per principal (a JWT's subject, an API key), shared by every replica through
    # Redis: a sustained rate and the burst that may be spent at once. 0 turns it off.
    rate_limit_per_second: float = Field(default=50.0, ge=0, le=1_000_000)
    rate_limit_burst: int = Field(default=100, ge=1, le=10_000_000)
    # Refused credentials per client address and minute before that address gets 429 for
    # the rest of the minute, so guessing keys is slow. 0 turns it off.
    auth_failures_per_minute: int = Field(default=20, ge=0, le=1_000_000)
    # Proxies of our own in front of ingest (an Ingress controller, a load balancer), each
    # appending to X-Forwarded-For: the client is that many entries from its right. 0: the
    # socket's peer is the client (the header is ignored: anyone can write it).
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    # How long an API key read from the table is trusted: a revoked key is refused by every
    # replica within this time.
    api_key_cache_seconds: float = Field(default=5.0, ge=0, le=10)
    # Browser origins (scheme://host[:port]) whose pages may call the API (CORS), comma-
    # separated: the console on the gateway's origin. Empty: no cross-origin call.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    _cors_list = field_validator("cors_origins", mode="before")(comma_separated)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            parts = urlsplit(origin)
            if (
                parts.scheme not in {"http", "https"}
                or not parts.hostname
                or origin != f"{parts.scheme}://{parts.netloc}"
            ):
                raise ValueError(
                    "each origin is scheme://host[:port] with no path, "
                    f"such as http://127.0.0.1:8090 (got {origin!r})"
                )
        return origins


def load_ingest_settings() -> IngestSettings:
    return load_settings(IngestSettings)
