"""Ingest's health reading: payments accepted and requests refused per second."""

from __future__ import annotations

from ingest.health import IngestThroughput
from ingest.metrics import PAYMENTS_CREATED, PAYMENTS_REJECTED


async def test_rates_count_what_happened_since_the_previous_read() -> None:
    throughput = IngestThroughput()
    PAYMENTS_CREATED.labels("created").inc(8)
    PAYMENTS_CREATED.labels("replayed").inc(2)
    PAYMENTS_REJECTED.labels("validation").inc(3)
    first = await throughput.read(2.0)
    assert first == {"throughput": {"messages_per_s": 5.0, "failures_per_s": 1.5}}
    # Nothing since: the next read says so, however much came before.
    assert await throughput.read(5.0) == {
        "throughput": {"messages_per_s": 0.0, "failures_per_s": 0.0}
    }
