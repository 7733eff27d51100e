"""The stream processor's Prometheus metrics (bounded labels only).

The one id used as a label is the shard id of the per-shard iterator age: a process reads
a handful of shards at a time and removes a shard's series when it stops reading it.
"""

from __future__ import annotations

import time
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from pulse.metrics import StageMetrics
from stream_processor.failures import FAILURE_REASONS as DEAD_LETTER_REASONS
from stream_processor.records import EVENT_NAMES

__all__ = [
    "BATCH_DURATION",
    "CHECKPOINTS",
    "DEAD_LETTERS",
    "FAILURES",
    "FAILURE_REASONS",
    "ITERATOR_AGE",
    "LEASES_DELETED",
    "LEASES_HELD",
    "LEASES_TAKEN",
    "LIVE_PUBLISH_DURATION",
    "RECORDS_PROCESSED",
    "SHARDS_OWNED",
    "SHARD_ITERATOR_AGE",
    "STAGE",
    "IteratorAges",
]

STAGE: Final = StageMetrics("stream")

RECORDS_PROCESSED: Final = Counter(
    "pulse_stream_records_processed_total",
    "Stream records whose effects all succeeded, by eventName",
    ["event_name"],
)
for _name in EVENT_NAMES:
    RECORDS_PROCESSED.labels(_name)

BATCH_DURATION: Final = Histogram(
    "pulse_stream_batch_duration_seconds",
    "Time to apply one GetRecords batch: SNS, Redis, audit rows and the checkpoint",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Observed once per batch (never per record): with the events' own times (the record's
# ``time``, the channel offset's milliseconds) it splits the stream's share of the end-to-end
# latency into waiting to be read and the processor's own work.
LIVE_PUBLISH_DURATION: Final = Histogram(
    "pulse_stream_live_publish_duration_seconds",
    "Time from a GetRecords answer until its batch's events are appended to their Redis "
    "channels (the hot path; SNS and the audit rows follow)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ITERATOR_AGE: Final = Gauge(
    "pulse_stream_iterator_age_seconds",
    "Largest lag across shards, in seconds: now minus the newest record read, 0 when caught up",
)
SHARD_ITERATOR_AGE: Final = Gauge(
    "pulse_stream_shard_iterator_age_seconds",
    "Per shard read by this process, in seconds: now minus the newest record read, 0 when "
    "caught up (a shard's series is removed when the process stops reading it)",
    ["shard"],
)
CHECKPOINTS: Final = Counter("pulse_stream_checkpoints_total", "Checkpoints written")
SHARDS_OWNED: Final = Gauge("pulse_stream_shards_owned", "Shards this process is reading")
LEASES_HELD: Final = Gauge("pulse_stream_leases_held", "Shard leases this process holds")
LEASES_TAKEN: Final = Counter(
    "pulse_stream_leases_taken_total",
    "Leases this process took: free or expired (taken), or from a busier worker (stolen)",
    ["how"],
)
for _how in ("taken", "stolen"):
    LEASES_TAKEN.labels(_how)
LEASES_DELETED: Final = Counter(
    "pulse_stream_leases_deleted_total",
    "Leases deleted: their shard was read to its end, every child has a lease, and the "
    "stream no longer lists it (past its retention)",
)

FAILURE_REASONS: Final = (
    "batch",  # an effect of a batch failed; the batch is retried from the checkpoint
    "read",  # GetRecords or GetShardIterator failed
    "iterator_expired",  # re-opened from the checkpoint
    "trimmed",  # the checkpoint fell behind the stream's retention: records lost
    "shard_not_found",  # a read found no such shard (gone, or the listing is behind)
    "shard_trimmed",  # a shard gone from the stream before its end was read: ended
    "malformed",  # a record that can never become an event (sent to the failure queue)
    "lease_lost",  # another worker took the shard over
    "lease_expired",  # no renewal succeeded within the failover time: the shard stopped
    "renewal",  # a renewal failed (not refused); tried again
    "refresh",  # listing shards or leases failed
)
FAILURES: Final = Counter(
    "pulse_stream_failures_total", "Failures of the stream processor, by reason", ["reason"]
)
for _reason in FAILURE_REASONS:
    FAILURES.labels(_reason)

DEAD_LETTERS: Final = Counter(
    "pulse_stream_dead_letters_total",
    "Stream records sent, whole, to the failure queue, by reason",
    ["reason"],
)
for _reason in DEAD_LETTER_REASONS:
    DEAD_LETTERS.labels(_reason)


class IteratorAges:
    """Per-shard iterator age in seconds (Prometheus base units), kept in memory and exported
    per shard; :meth:`max` feeds the process-wide gauge."""

    def __init__(self) -> None:
        self._ages: dict[str, float] = {}

    def caught_up(self, shard_id: str) -> None:
        self._set(shard_id, 0.0)

    def newest_read(self, shard_id: str, created_epoch: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._set(shard_id, max(now - created_epoch, 0.0))

    def forget(self, shard_id: str) -> None:
        if self._ages.pop(shard_id, None) is not None:
            SHARD_ITERATOR_AGE.remove(shard_id)

    def _set(self, shard_id: str, age_seconds: float) -> None:
        self._ages[shard_id] = age_seconds
        SHARD_ITERATOR_AGE.labels(shard_id).set(age_seconds)

    def max(self) -> float:
        return max(self._ages.values(), default=0.0)

    def by_shard(self) -> dict[str, float]:
        """Each shard's age, in seconds (a copy)."""
        return dict(self._ages)
