"""Settings of the notify worker (environment variables prefixed ``PULSE_``)."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from notify_worker.retry_schedule import (
    DEFAULT_SCHEDULE,
    SQS_MAX_DELAY_SECONDS,
    RetrySchedule,
    parse_delays,
)
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

    # Webhooks: requests per second to one endpoint, in any one-second window (GCRA: they go
    # out at least 1/rate apart; a delivery waits for its turn without spending an attempt).
    webhook_rate_per_second: int = Field(default=10, ge=1, le=10_000)
    # One POST's time limit; a timeout is retried like a 5xx.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # The wait before each attempt of one delivery (retried on 5xx, 408, 429, timeouts and
    # connection errors), comma-separated with units s/m/h/d; then the DLQ
    # (notify_worker.retry_schedule).
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = parse_delays(DEFAULT_SCHEDULE)
    # Longest delay of one message of the retry chain (SQS allows 900 s at most).
    webhook_retry_hop_seconds: int = Field(default=SQS_MAX_DELAY_SECONDS, ge=1, le=900)
    # How long the attempt log keeps an attempt (DynamoDB TTL); longer than the schedule.
    webhook_attempt_ttl_seconds: int = Field(default=30 * 86_400, ge=3600)
    # Longest hold of a delivery outside its endpoint's delivery window before the window is
    # looked at again (a changed schedule reaches waiting events within it); at most SQS's
    # 12-hour visibility.
    webhook_window_recheck_seconds: int = Field(default=3600, ge=1, le=43_200)
    # How long signing secrets (SSM) and an account's endpoints (DynamoDB) are cached.
    webhook_secret_cache_seconds: float = Field(default=300.0, ge=0, le=86_400)
    webhook_endpoint_cache_seconds: float = Field(default=10.0, ge=0, le=3600)
    # An endpoint whose every attempt failed for this long is disabled and its account told
    # (pulse.webhook.endpoint_disabled); 0: never (notify_worker.endpoint_health).
    webhook_disable_after_seconds: int = Field(default=5 * 86_400, ge=0)
    # Lifetime of the events-table rows of what only account channels carry (notifications,
    # endpoint_disabled): the audit rows' (the stream processor's setting of the same name).
    audit_ttl_days: int = Field(default=30, ge=1, le=3650)

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        delays = parse_delays(value) if isinstance(value, str) else value
        RetrySchedule(tuple(delays))  # refuses a schedule that cannot run
        return delays

    @model_validator(mode="after")
    def _attempts_outlive_the_schedule(self) -> Self:
        # An attempt's record is also its claim: it must be there until the last attempt.
        if self.webhook_attempt_ttl_seconds <= self.retry_schedule.total_seconds + 3600:
            raise ValueError(
                "PULSE_WEBHOOK_ATTEMPT_TTL_SECONDS must exceed the retry schedule by an hour"
            )
        return self

    @property
    def retry_schedule(self) -> RetrySchedule:
        return RetrySchedule(self.webhook_retry_schedule)


def load_notify_settings() -> NotifySettings:
    return load_settings(NotifySettings)
