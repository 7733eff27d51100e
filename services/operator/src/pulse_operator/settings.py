"""The operator's settings (``PULSE_`` environment variables, parsed once at start-up)."""

from __future__ import annotations

from pydantic import Field

from pulse.settings import PulseSettings

__all__ = ["OperatorSettings"]


class OperatorSettings(PulseSettings):
    """``PulseSettings`` plus where to watch and how often to refresh status."""

    service_name: str = "operator"
    # kopf's liveness endpoint listens here (/healthz); the chart's liveness probe hits it.
    http_port: int = Field(default=9104, ge=1, le=65535)
    # Namespace to watch (least privilege: a Role, not a ClusterRole). Empty: every namespace.
    watch_namespace: str = ""
    # How often the timer reports queue depths, DLQ depths and oldest message age.
    status_interval_seconds: float = Field(default=30.0, ge=1, le=3600)
    # How often the timer re-applies the topology to repair drift made outside the operator.
    repair_interval_seconds: float = Field(default=300.0, ge=10, le=86400)
