"""Settings of the notify worker (environment variables prefixed ``PULSE_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.consumer import SqsConsumerSettings
from pulse.settings import load_settings

__all__ = ["NotifySettings", "load_notify_settings"]


class NotifySettings(SqsConsumerSettings):
    """Typed, frozen settings of the notify worker."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    service_name: str = "notify-worker"
    http_port: int = Field(default=9103, ge=0, le=65535)


def load_notify_settings() -> NotifySettings:
    return load_settings(NotifySettings)
