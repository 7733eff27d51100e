"""Settings of the stream processor (environment variables prefixed ``PULSE_``)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.consumer.settings import SqsConsumerSettings
from pulse.settings import load_settings

__all__ = ["StreamProcessorSettings", "default_worker_id", "load_stream_processor_settings"]


def default_worker_id() -> str:
    """``hostname-pid``: unique per process, readable in the leases table."""
    return f"{socket.gethostname()}-{os.getpid()}"


class StreamProcessorSettings(SqsConsumerSettings):
    """Typed, frozen settings of the stream processor; the ``PULSE_SQS_*`` settings are its
    replay queue's consumer's (``{resource prefix}stream-replays``)."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    service_name: str = "stream-processor"
    http_port: int = Field(default=9101, ge=0, le=65535)
    # Records asked for per GetRecords call (DynamoDB Streams allows at most 1000).
    batch_size: int = Field(default=100, ge=1, le=1000)
    # Batches published live whose SNS and audit writes may still be running while the next
    # batch is read (1: each batch is finished and checkpointed before the next read).
    max_batches_in_flight: int = Field(default=4, ge=1, le=32)
    # Threads (and pooled connections per AWS client) for AWS calls: a batch of 100 in
    # flight makes ten PublishBatch and four BatchWriteItem calls at once.
    aws_concurrency: int = Field(default=64, ge=4, le=512)
    # Wait between GetRecords calls of a shard that returned less than a full batch.
    poll_interval_seconds: float = Field(default=0.25, gt=0, le=60)
    # How often the stream's shards are listed again (new shards appear as old ones close).
    shard_refresh_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Lifetime of an audit row (the events table's TTL attribute ``expires_at``).
    audit_ttl_days: int = Field(default=30, ge=1, le=3650)
    # A lease whose counter did not move for this long is taken by another worker; held
    # leases are renewed (and the lease table scanned) three times per failover time.
    failover_seconds: float = Field(default=10.0, ge=0.3, le=600)
    # A batch that failed this many times is applied record by record, and a record that
    # still fails goes to the failure queue (``{resource prefix}stream-failures``).
    max_retries: int = Field(default=10, ge=0, le=10_000)
    # ... and so does a failing batch whose oldest record is older than this.
    max_record_age_seconds: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
    # Least time between two ``pulse.stats`` events on the ``stats`` channel.
    stats_interval_seconds: float = Field(default=0.5, ge=0.05, le=60)
    # Owner written to the leases this process holds.
    worker_id: str = Field(default_factory=default_worker_id, min_length=1, max_length=256)
    # PublishBatch attempts for entries SNS reports as failed before the batch is retried.
    sns_max_attempts: int = Field(default=5, ge=1, le=20)
    # Longest pause between retries of a failing batch.
    max_retry_delay_seconds: float = Field(default=10.0, gt=0, le=300)


def load_stream_processor_settings() -> StreamProcessorSettings:
    return load_settings(StreamProcessorSettings)
