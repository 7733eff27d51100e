"""Integration: the stream's retention against the leases table.

Real stream-processor processes against an emulator whose stream keeps records (and closed
shards) for a few seconds instead of 24 hours, and Redis. Leases of shards read to their
end go once the stream stops listing those shards, so the lease table does not grow with
every split; a shard trimmed away before its end was read is ended so its children start,
and an open shard's checkpoint that fell behind the retention resumes at the trim horizon —
both logged and counted as the data loss they are, never silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.stream_emulation import emulator_fixture
from pulse_dev.stream_scaling import (
    DeliveryReport,
    StackStream,
    StreamReplicas,
    delivery_report,
    lease_counts,
)
from pulse_dev.stream_store import StreamShape
from pulse_dev.testing import until

pytestmark = pytest.mark.timeout(180)

RETENTION = 8.0  # seconds a record, and a closed shard, stays in the stream

# This module's own emulator: two shards, kept for RETENTION seconds.
aws_endpoint = emulator_fixture(StreamShape(shards=2, retention_seconds=RETENTION))


class Stream(StackStream):
    """The payments stream of this test's stack: writes, splits, shards, leases, history."""

    def listed(self) -> set[str]:
        return {shard["ShardId"] for shard in self.shards()}

    def report(self, payment_ids: list[str] | None = None) -> DeliveryReport:
        """The ``payments`` channel against the payments written (or those given)."""
        marks = self.script.marks
        expected = marks if payment_ids is None else {p: marks[p] for p in payment_ids}
        history = self.history("payments")
        return delivery_report(history, expected)

    def wait_delivered(self, payment_ids: list[str]) -> None:
        until(lambda: self.report(payment_ids).delivered == len(payment_ids), timeout=40.0)

    def wait_held(self, worker: str) -> None:
        """Until ``worker`` holds a lease of every open shard."""
        opened = [
            s for s in self.shards() if "EndingSequenceNumber" not in s["SequenceNumberRange"]
        ]
        until(lambda: lease_counts(self.leases(), [worker])[worker] == len(opened), timeout=30.0)


@pytest.fixture
def stream(
    stack_settings: PulseSettings, topology: TopologyOutputs, redis_url: str
) -> Iterator[Stream]:
    made = Stream(stack_settings, topology, redis_url)
    yield made
    made.redis.close()


def test_leases_of_finished_shards_go_once_the_stream_trims_the_shards(
    stack_env: dict[str, str], stream: Stream, tmp_path: Path
) -> None:
    replicas = StreamReplicas(stack_env, tmp_path)
    try:
        replicas.start("r1")
        stream.wait_held("r1")
        for _ in range(3):
            stream.script.create(4)
            stream.split()
        stream.script.create(4)
        stream.wait_delivered(list(stream.script.marks))
        # Two shards, three splits: eight listed, then the three parents trimmed away.
        until(lambda: len(stream.listed()) == 5, timeout=RETENTION + 20)
        until(lambda: {i["leaseKey"]["S"] for i in stream.leases()} == stream.listed())
        assert replicas.metric("r1", "pulse_stream_leases_deleted_total") == 3
        assert stream.report().exact
        assert replicas.stop() == {"r1": 0}
    finally:
        replicas.close()


def test_a_shard_trimmed_before_its_end_was_read_is_ended_and_its_children_start(
    stack_env: dict[str, str], stream: Stream, tmp_path: Path
) -> None:
    replicas = StreamReplicas(stack_env, tmp_path)
    try:
        replicas.start("r1")
        stream.wait_held("r1")
        read = stream.script.create(4)
        stream.wait_delivered(read)
        assert replicas.stop() == {"r1": 0}  # checkpoints stored, leases released

        lost = stream.script.create(6)  # never read: trimmed with their shards
        parents = stream.listed()
        stream.split()
        stream.split()
        until(lambda: not parents & stream.listed(), timeout=RETENTION + 20)

        replicas.start("r2")
        later = stream.script.create(6)  # in the children
        stream.wait_delivered(later)
        # Ended once a listing made after r2 first saw their leases still misses them: a
        # round after r2's first, maybe after their children (ready: no parent listed) were read.
        until(
            lambda: (
                replicas.metric("r2", "pulse_stream_failures_total", reason="shard_trimmed") == 2
            ),
            timeout=20.0,
        )
        log = replicas.processes["r2"].logs()
        assert log.count("shard trimmed from the stream before it was read to its end") == 2
        assert stream.report(lost).lost == len(lost)  # lost, and said so above
        assert stream.report(read + later).exact
        # The ended parents' leases go too: their children have leases.
        until(lambda: {i["leaseKey"]["S"] for i in stream.leases()} == stream.listed())
        assert replicas.stop() == {"r2": 0}
    finally:
        replicas.close()


def test_a_reader_whose_closed_shard_disappears_ends_it(
    stack_env: dict[str, str], stream: Stream, tmp_path: Path
) -> None:
    """A replica frozen (SIGSTOP) while it holds two shards that close and are trimmed
    away meanwhile: its lease outlives the pause, and when it runs again its readers find
    their shards gone (ResourceNotFoundException) and end them, so the children start."""
    replicas = StreamReplicas(stack_env, tmp_path, failover_seconds=120.0)
    try:
        replicas.start("r1")
        stream.wait_held("r1")
        read = stream.script.create(4)
        stream.wait_delivered(read)

        replicas.pause("r1")
        lost = stream.script.create(6)
        parents = stream.listed()
        stream.split()
        stream.split()
        until(lambda: not parents & stream.listed(), timeout=RETENTION + 20)
        replicas.resume("r1")

        later = stream.script.create(6)
        stream.wait_delivered(later)
        # The children may start before both readers have ended their parents: a parent the
        # stream no longer lists holds nothing back. Each reader ends its own on its next try.
        until(
            lambda: (
                replicas.metric("r1", "pulse_stream_failures_total", reason="shard_trimmed") == 2
            ),
            timeout=30.0,
        )
        log = replicas.processes["r1"].logs()
        assert log.count("shard no longer in the stream; treating it as ended") == 2
        assert stream.report(lost).lost == len(lost)
        assert stream.report(read + later).exact
        assert replicas.stop() == {"r1": 0}
    finally:
        replicas.close()


def test_an_open_shard_whose_checkpoint_was_trimmed_resumes_at_the_trim_horizon(
    stack_env: dict[str, str], stream: Stream, tmp_path: Path
) -> None:
    replicas = StreamReplicas(stack_env, tmp_path)
    try:
        replicas.start("r1")
        stream.wait_held("r1")
        read = stream.script.create(4)
        stream.wait_delivered(read)
        assert replicas.stop() == {"r1": 0}

        lost = stream.script.create(6)  # written after the checkpoints, trimmed unread
        until(lambda: _all_trimmed(stream), timeout=RETENTION + 20)

        replicas.start("r2")
        later = stream.script.create(6)
        stream.wait_delivered(later)
        assert replicas.metric("r2", "pulse_stream_failures_total", reason="trimmed") >= 1
        log = replicas.processes["r2"].logs()
        assert "records trimmed from the stream before they were read (lost)" in log
        assert stream.report(lost).lost == len(lost)
        assert stream.report(read + later).exact
        assert replicas.stop() == {"r2": 0}
    finally:
        replicas.close()


def _all_trimmed(stream: Stream) -> bool:
    """Whether a read from the trim horizon of every shard finds nothing now."""
    for shard_id in stream.listed():
        iterator = stream.streams.get_shard_iterator(
            StreamArn=stream.arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        try:
            if stream.streams.get_records(ShardIterator=iterator)["Records"]:
                return False
        except stream.streams.exceptions.TrimmedDataAccessException:
            return False  # trimmed between the two calls: still trimming
    return True
