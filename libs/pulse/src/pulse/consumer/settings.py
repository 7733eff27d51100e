"""The settings of a worker that consumes one SQS queue."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from pulse.consumer.limits import MAX_VISIBILITY_SECONDS
from pulse.settings import PulseSettings

__all__ = ["SqsConsumerSettings"]


class SqsConsumerSettings(PulseSettings):
    """Settings of a worker that consumes one SQS queue (``PULSE_SQS_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    # Messages handled at once by one process.
    sqs_max_in_flight: int = Field(default=10, ge=1, le=1000)
    # Long-poll length; 20 is SQS's maximum and the cheapest.
    sqs_wait_time_seconds: int = Field(default=20, ge=0, le=20)
    # How long a received message stays hidden from other consumers while handled.
    sqs_visibility_timeout: int = Field(default=30, ge=1, le=MAX_VISIBILITY_SECONDS)
    # Wait before the next receive when the last one returned less than a full batch.
    sqs_batch_window_seconds: float = Field(default=0.1, ge=0, le=300)
    # Cap of a failing message's retry delay: the delay is drawn at random (full jitter) from
    # a window of 2**receive_count seconds, which doubles per receive up to this.
    sqs_max_backoff_seconds: float = Field(default=300.0, ge=0, le=MAX_VISIBILITY_SECONDS)
    # How often a running handler's message has its visibility extended (and its leases
    # renewed); unset: a third of the visibility timeout or of the idempotency lease.
    sqs_heartbeat_seconds: float | None = Field(default=None, gt=0, le=MAX_VISIBILITY_SECONDS)
    # How often the queue's and its DLQ's depths are read into gauges; 0 turns it off.
    sqs_depth_poll_seconds: float = Field(default=30.0, ge=0, le=3600)

    # Idempotency guard (pulse.idempotency): the lease a handler holds on its event id,
    # renewed on each heartbeat, and how long a completed event id is remembered.
    idempotency_lease_seconds: float = Field(default=60.0, gt=0, le=MAX_VISIBILITY_SECONDS)
    idempotency_ttl_seconds: float = Field(default=7 * 24 * 3600.0, gt=0, le=90 * 24 * 3600)

    @property
    def heartbeat_seconds(self) -> float:
        """The effective heartbeat: as set, else a third of the visibility timeout or of the
        idempotency lease, whichever is shorter."""
        if self.sqs_heartbeat_seconds is not None:
            return self.sqs_heartbeat_seconds
        return min(self.sqs_visibility_timeout, self.idempotency_lease_seconds) / 3

    @model_validator(mode="after")
    def _heartbeat_within_visibility(self) -> SqsConsumerSettings:
        beat = self.sqs_heartbeat_seconds
        if beat is not None and beat >= self.sqs_visibility_timeout:
            raise ValueError("sqs_heartbeat_seconds must be below sqs_visibility_timeout")
        if self.idempotency_lease_seconds <= self.heartbeat_seconds:
            raise ValueError("idempotency_lease_seconds must be above the heartbeat interval")
        return self
