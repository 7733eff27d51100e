"""Settings of the notify worker (environment variables prefixed ``PULSE_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.consumer import SqsConsumerSettings
from pulse.settings import load_settings
from pulse.webhook_targets import WebhookTargetSettings

__all__ = ["NotifySettings", "load_notify_settings"]


class NotifySettings(SqsConsumerSettings, WebhookTargetSettings):
    """Typed, frozen settings of the notify worker (the webhook targets' guard's too:
    ``PULSE_WEBHOOK_ALLOW_HTTP``, ``PULSE_WEBHOOK_ALLOWED_NETWORKS``)."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    service_name: str = "notify-worker"
    http_port: int = Field(default=9103, ge=0, le=65535)

    # Webhooks: requests per second to one endpoint (over it, the delivery waits a second).
    webhook_rate_per_second: int = Field(default=10, ge=1, le=10_000)
    # One POST's time limit; a timeout is retried like a 5xx.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Attempts of one delivery (retried on 5xx, 408, 429, timeouts) before the DLQ.
    webhook_max_attempts: int = Field(default=5, ge=1, le=100)
    # How long signing secrets (SSM) and an account's endpoints (DynamoDB) are cached.
    webhook_secret_cache_seconds: float = Field(default=300.0, ge=0, le=86_400)
    webhook_endpoint_cache_seconds: float = Field(default=10.0, ge=0, le=3600)


def load_notify_settings() -> NotifySettings:
    return load_settings(NotifySettings)
