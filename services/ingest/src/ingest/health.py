"""Ingest's part of the pipeline's health report: payments accepted per second.

Ingest moves no queue and reads no shard; what it owns is the front door. Its
``pulse.health`` reports (and so its one-line ``health`` summary at info) carry
``throughput.messages_per_s``: payments created or replayed per second since the previous
report, read from its own counters (:data:`ingest.metrics.PAYMENTS_CREATED`), and
``throughput.failures_per_s``: create requests refused before any write
(:data:`ingest.metrics.PAYMENTS_REJECTED`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest.metrics import PAYMENTS_CREATED, PAYMENTS_REJECTED
from pulse.health import per_second

if TYPE_CHECKING:
    from prometheus_client import Counter

    from pulse.health import Reading

__all__ = ["IngestThroughput"]


def _total(counter: Counter) -> float:
    # The counter's samples through its public collect(): a few label sets, every few seconds.
    return sum(
        sample.value
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


class IngestThroughput:
    """Payments accepted, and create requests refused, per second since the previous read."""

    def __init__(self) -> None:
        self._accepted = _total(PAYMENTS_CREATED)
        self._refused = _total(PAYMENTS_REJECTED)

    async def read(self, elapsed: float) -> Reading:
        accepted, refused = _total(PAYMENTS_CREATED), _total(PAYMENTS_REJECTED)
        rates = {
            "messages_per_s": per_second(accepted - self._accepted, elapsed),
            "failures_per_s": per_second(refused - self._refused, elapsed),
        }
        self._accepted, self._refused = accepted, refused
        return {"throughput": rates}
