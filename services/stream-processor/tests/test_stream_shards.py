"""Integration: stream-processor replicas on a stream of several shards that split.

Real processes against the emulator (four shards to start with, iterators that expire after
a second) and Redis. Three replicas read while payments are written and moved on; shards
split five times, one replica is killed (SIGKILL) and a fourth joins. Every payment's events
must be in the channels' history once each, in the payment's order; no shard may be read
before its parent ended; the three live replicas' lease counts end at most one apart. With
listings an hour apart, children still start as soon as their parent ends. A worker whose
listing came just before a split, and whose lease scan just after another worker made the
children's leases, reads those children rather than taking them for trimmed shards.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from pulse.channels import ChannelPublisher
from pulse.clients import aws_client, redis_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.emulators import WHOLE_RUN_HISTORY_ENV
from pulse_dev.split_run import SplitRunHooks, run_through_splits, split_run_problems
from pulse_dev.stream_emulation import emulator_fixture, split_shards
from pulse_dev.stream_scaling import (
    StackStream,
    StreamReplicas,
    delivery_report,
    described_shards,
    lease_counts,
    lease_imbalance,
    lineage_violations,
    unread_leases,
)
from pulse_dev.stream_store import StreamShape
from pulse_dev.testing import until
from stream_processor.effects import AuditTrail, BatchEffects, TopicPublisher
from stream_processor.leases import LeaseTable
from stream_processor.processor import StreamProcessor, list_shards
from stream_processor.settings import StreamProcessorSettings

pytestmark = pytest.mark.timeout(180)

STEPS = 3  # updates after its creation each payment goes through


# This module's own emulator: a stream of four shards, iterators living one second.
aws_endpoint = emulator_fixture(StreamShape(shards=4, iterator_seconds=1.0))


class Run(StackStream):
    """Payments written straight into the table, split and checked through this test's
    stack."""

    def write(self) -> None:
        self.script.create(4)
        self.script.advance([p for p, marks in self.script.marks.items() if len(marks) <= STEPS])

    def delivered(self) -> bool:
        report = delivery_report(self.history("payments"), self.script.marks)
        return report.delivered == report.expected


def test_replicas_share_a_splitting_stream_through_a_crash_and_a_join(
    stack_env: dict[str, str],
    stack_settings: PulseSettings,
    topology: TopologyOutputs,
    redis_url: str,
    tmp_path: Path,
) -> None:
    run = Run(stack_settings, topology, redis_url)
    replicas = StreamReplicas({**stack_env, **WHOLE_RUN_HISTORY_ENV}, tmp_path)
    hooks = SplitRunHooks(
        run.write, run.split, lambda: len(run.shards()), run.leases, run.delivered
    )
    try:
        outcome = run_through_splits(replicas, hooks, seconds=12.0, settle=60.0)
        payments = delivery_report(run.history("payments"), run.script.marks)
        assert payments.exact, payments
        assert payments.expected > 100
        for account, marks in run.script.by_account().items():
            report = delivery_report(run.history(f"account:{account}"), marks)
            assert report.exact, (account, report)
        live = ["r1", "r3", "r4"]
        assert split_run_problems(outcome, first_shards=4, workers=live) == []
        # Every open shard is read by a live replica.
        assert sum(outcome.counts.values()) == 4 + outcome.splits
        assert replicas.stop() == dict.fromkeys(live, 0)
    finally:
        replicas.close()
        run.redis.close()


def test_children_start_when_their_parent_ends_without_waiting_for_a_listing(
    stack_env: dict[str, str],
    stack_settings: PulseSettings,
    topology: TopologyOutputs,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Shards listed once an hour: after every shard splits, the children are read only
    because a reader that reaches a shard's end lists the shards at once, and the other
    replica lists again when the lease table shows it shards it has not seen."""
    run = Run(stack_settings, topology, redis_url)
    replicas = StreamReplicas(stack_env, tmp_path, shard_refresh_seconds=3600.0)
    live = ["r1", "r2"]
    try:
        for worker in live:
            replicas.start(worker)
        until(lambda: sum(lease_counts(run.leases(), live).values()) == 4, timeout=30.0)
        run.write()
        for _ in range(4):  # the widest open shard each time: every first shard splits
            run.split()
            run.write()
        for _ in range(5):
            run.write()
        until(run.delivered, timeout=60.0)
        assert delivery_report(run.history("payments"), run.script.marks).exact

        def every_child_read_and_balanced() -> bool:
            items = run.leases()
            counts = lease_counts(items, live)
            return not unread_leases(items, live) and lease_imbalance(counts) <= 1

        until(every_child_read_and_balanced, timeout=30.0)
        items = run.leases()
        assert len(run.shards()) == 12
        assert sum(lease_counts(items, live).values()) == 8  # the children, all held
        assert lineage_violations(items) == []
        assert replicas.stop() == dict.fromkeys(live, 0)
    finally:
        replicas.close()
        run.redis.close()


ROLLED_OVER = 600  # closed shards a stream lists after some days of roll-overs
FAILOVER = 3.0


def test_a_long_shard_list_does_not_hold_up_lease_renewals(
    stack_env: dict[str, str],
    stack_settings: PulseSettings,
    topology: TopologyOutputs,
    aws_endpoint: str,
    tmp_path: Path,
) -> None:
    """Renewals come every ``failover / 3``; a round that writes to the leases table for
    every listed shard takes longer than that once the stream lists hundreds of shards,
    and a holder whose counter stands still for the failover time loses its leases while
    it is alive."""
    ddb = aws_client("dynamodb", stack_settings)
    leases = stack_settings.names.leases_table
    table = stack_settings.names.payments_table
    for _ in range(ROLLED_OVER):
        split_shards(aws_endpoint, table=table, children=1)
    listed = described_shards(
        aws_client("dynamodbstreams", stack_settings), topology.stream_arns[table]
    )
    opened = [
        s["ShardId"] for s in listed if "EndingSequenceNumber" not in s["SequenceNumberRange"]
    ]
    # Every closed shard was read to its end long ago.
    for shard in listed:
        if shard["ShardId"] in opened:
            continue
        parent = shard.get("ParentShardId")
        item = {
            "leaseKey": {"S": shard["ShardId"]},
            "leaseCounter": {"N": "3"},
            "checkpoint": {"S": "SHARD_END"},
            "parentShardIds": {"L": [{"S": parent}] if parent else []},
        }
        ddb.put_item(TableName=leases, Item=item)
    replicas = StreamReplicas(stack_env, tmp_path, failover_seconds=FAILOVER)
    try:
        replicas.start("r1")
        gaps = _renewal_gaps(ddb, leases, opened, seconds=4 * FAILOVER)
    finally:
        replicas.close()
    assert len(opened) == 4
    # At most one round late: never near the failover time.
    assert max(gaps.values()) < FAILOVER * 2 / 3, gaps


def _renewal_gaps(
    ddb: Any, table: str, shard_ids: list[str], *, seconds: float
) -> dict[str, float]:
    """The longest wait between two moves of each lease's counter, watched for ``seconds``
    from the moment all of them are held."""

    def counters() -> dict[str, tuple[str | None, int]]:
        got = {}
        for shard_id in shard_ids:
            item = ddb.get_item(
                TableName=table, Key={"leaseKey": {"S": shard_id}}, ConsistentRead=True
            ).get("Item", {})
            owner = item.get("leaseOwner", {}).get("S")
            got[shard_id] = (owner, int(item.get("leaseCounter", {}).get("N", "0")))
        return got

    deadline = time.monotonic() + 60
    while any(owner is None for owner, _ in counters().values()):
        assert time.monotonic() < deadline, "the replica never took every open shard"
        time.sleep(0.1)
    seen = counters()
    moved = dict.fromkeys(shard_ids, time.monotonic())
    longest = dict.fromkeys(shard_ids, 0.0)
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        for shard_id, counter in counters().items():
            if counter != seen[shard_id]:
                seen[shard_id] = counter
                longest[shard_id] = max(longest[shard_id], now - moved[shard_id])
                moved[shard_id] = now
        time.sleep(0.05)
    return {s: max(longest[s], time.monotonic() - moved[s]) for s in shard_ids}


class SplitsAfterListing:
    """A DynamoDB Streams client whose first complete listing is followed at once by a split
    and by another worker listing the stream and making the new shards' leases: all of it
    before the listing worker scans the lease table."""

    def __init__(self, streams: Any, race: Any) -> None:
        self._streams = streams
        self._race = race

    def __getattr__(self, name: str) -> Any:
        return getattr(self._streams, name)

    def describe_stream(self, **kwargs: Any) -> dict[str, Any]:
        described: dict[str, Any] = self._streams.describe_stream(**kwargs)
        race, self._race = self._race, None
        if race is not None and not described["StreamDescription"].get("LastEvaluatedShardId"):
            race()
        return described


def _trimmed_count() -> float:
    return (
        REGISTRY.get_sample_value("pulse_stream_failures_total", {"reason": "shard_trimmed"}) or 0.0
    )


async def test_children_split_between_a_listing_and_the_lease_scan_are_read_not_ended(
    stack_settings: PulseSettings, topology: TopologyOutputs, redis_url: str
) -> None:
    run = Run(stack_settings, topology, redis_url)
    settings = StreamProcessorSettings(
        poll_interval_seconds=0.05, failover_seconds=3, worker_id="late-lister"
    )
    ddb = aws_client("dynamodb", settings)
    streams = aws_client("dynamodbstreams", settings)
    other = LeaseTable(ddb, settings.names.leases_table, "other-worker")

    def race() -> None:
        run.split()
        for shard in list_shards(streams, run.arn):  # parents before their children
            other.ensure(shard)
        run.write()  # events in the children too

    run.write()
    redis = redis_client(settings)
    stopping = asyncio.Event()
    trimmed = _trimmed_count()
    processor = StreamProcessor(
        settings,
        ddb=ddb,
        streams=SplitsAfterListing(streams, race),
        leases=LeaseTable(ddb, settings.names.leases_table, settings.worker_id),
        effects=BatchEffects(
            TopicPublisher(aws_client("sns", settings), topology.topic_arn),
            ChannelPublisher(redis, settings.redis_prefix),
            AuditTrail(ddb, settings.names.events_table, ttl_days=1),
        ),
        stopping=stopping,
    )
    task = asyncio.create_task(processor.run())
    try:
        deadline = time.monotonic() + 40
        while not run.delivered() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        report = delivery_report(run.history("payments"), run.script.marks)
        assert report.exact, report
        assert _trimmed_count() == trimmed  # no shard was given up as trimmed
        assert lineage_violations(run.leases()) == []
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)
        await redis.aclose()
        run.redis.close()
