"""The shards in the stream processor's health report: iterator age and records per second."""

from __future__ import annotations

from stream_processor.metrics import IteratorAges
from stream_processor.shard_health import ShardHealth


async def test_each_shard_read_reports_its_age_and_rate_since_the_previous_report() -> None:
    ages = IteratorAges()
    health = ShardHealth(ages)
    assert await health.read(5.0) == {"shards": []}

    ages.newest_read("shard-b", created_epoch=100.0, now=100.1204)
    ages.caught_up("shard-a")  # its last read returned nothing: at the tip
    health.applied("shard-b", 30)
    health.applied("shard-b", 20)
    assert await health.read(5.0) == {
        "shards": [
            {"shard_id": "shard-a", "iterator_age_ms": 0, "records_per_s": 0.0},
            {"shard_id": "shard-b", "iterator_age_ms": 120, "records_per_s": 10.0},
        ]
    }
    # Counted again from the report on; a shard no longer read is no longer reported.
    health.applied("shard-a", 3)
    ages.forget("shard-b")
    health.applied("shard-b", 9)
    assert await health.read(2.0) == {
        "shards": [{"shard_id": "shard-a", "iterator_age_ms": 0, "records_per_s": 1.5}]
    }
