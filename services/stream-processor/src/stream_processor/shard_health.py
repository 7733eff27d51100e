"""The shards this process reads, in its health report (:mod:`pulse.health`).

Per shard with a running reader: ``iterator_age_ms``, now minus the stream's
``ApproximateCreationDateTime`` of the newest record its last ``GetRecords`` returned,
measured when that read returned (0 when it returned nothing: the reader is at the tip;
:class:`~stream_processor.metrics.IteratorAges`, as ``pulse_stream_shard_iterator_age_seconds``
in seconds), and ``records_per_s``, the records whose effects were applied and checkpointed
since the previous report, per second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulse.health import per_second

if TYPE_CHECKING:
    from pulse.health import Reading
    from stream_processor.metrics import IteratorAges

__all__ = ["ShardHealth"]


class ShardHealth:
    """The health probe of the shards read here; readers count what they applied."""

    def __init__(self, ages: IteratorAges) -> None:
        self.ages = ages
        self._applied: dict[str, int] = {}  # since the previous report

    def applied(self, shard_id: str, count: int) -> None:
        """``count`` records of ``shard_id`` were applied and checkpointed."""
        self._applied[shard_id] = self._applied.get(shard_id, 0) + count

    async def read(self, elapsed: float) -> Reading:
        applied, self._applied = self._applied, {}
        return {
            "shards": [
                {
                    "shard_id": shard_id,
                    "iterator_age_ms": round(age * 1000),
                    "records_per_s": round(per_second(applied.get(shard_id, 0), elapsed), 3),
                }
                for shard_id, age in sorted(self.ages.by_shard().items())
            ]
        }
