"""Integration: stream-processor replicas on a stream of several shards that split.

Real processes against the emulator (four shards to start with, iterators that expire after
a second) and Redis. Three replicas read while payments are written and moved on; shards
split five times, one replica is killed (SIGKILL) and a fourth joins. Every payment's events
must be in the channels' history once each, in the payment's order; no shard may be read
before its parent ended; the three live replicas' lease counts end at most one apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.emulators import free_port, stop_process
from pulse_dev.stream_emulation import split_shards, start_emulator
from pulse_dev.stream_scaling import (
    PaymentScript,
    SplitRunHooks,
    StreamReplicas,
    delivery_report,
    lease_items,
    run_through_splits,
)
from pulse_dev.stream_store import StreamShape
from pulse_dev.testing import channel_history

pytestmark = pytest.mark.timeout(180)

STEPS = 3  # updates after its creation each payment goes through


@pytest.fixture(scope="module")
def aws_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own emulator: a stream of four shards, iterators living one second."""
    port = free_port()
    shape = StreamShape(shards=4, iterator_seconds=1.0)
    proc = start_emulator(port, tmp_path_factory.mktemp("moto") / "moto.log", shape)
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


class Run:
    """Payments written straight into the table, split and checked through this test's
    stack."""

    def __init__(self, settings: PulseSettings, topology: TopologyOutputs, redis_url: str):
        self.settings = settings
        self.ddb = aws_client("dynamodb", settings)
        self.streams = aws_client("dynamodbstreams", settings)
        self.redis = redis.Redis.from_url(redis_url)
        self.arn = topology.stream_arns[settings.names.payments_table]
        self.script = PaymentScript(self.ddb, settings.names.payments_table)

    def write(self) -> None:
        self.script.create(4)
        self.script.advance([p for p, marks in self.script.marks.items() if len(marks) <= STEPS])

    def split(self) -> None:
        split_shards(self.settings.aws_endpoint_url or "", table=self.settings.names.payments_table)

    def shards(self) -> int:
        count, kwargs = 0, {"StreamArn": self.arn}
        while True:
            page = self.streams.describe_stream(**kwargs)["StreamDescription"]
            count += len(page["Shards"])
            if "LastEvaluatedShardId" not in page:
                return count
            kwargs["ExclusiveStartShardId"] = page["LastEvaluatedShardId"]

    def leases(self) -> list[dict[str, Any]]:
        return lease_items(self.ddb, self.settings.names.leases_table)

    def history(self, channel: str) -> list[dict[str, Any]]:
        return channel_history(self.redis, self.settings.redis_prefix, channel)

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
    replicas = StreamReplicas(stack_env, tmp_path)
    hooks = SplitRunHooks(run.write, run.split, run.shards, run.leases, run.delivered)
    try:
        outcome = run_through_splits(replicas, hooks, seconds=12.0, settle=60.0)
        assert outcome.delivered
        payments = delivery_report(run.history("payments"), run.script.marks)
        assert payments.exact, payments
        assert payments.expected > 100
        for account, marks in run.script.by_account().items():
            report = delivery_report(run.history(f"account:{account}"), marks)
            assert report.exact, (account, report)
        assert outcome.violations == []
        assert outcome.shards == 4 + 2 * outcome.splits
        assert sorted(outcome.counts) == ["r1", "r3", "r4"]
        assert outcome.imbalance <= 1, outcome.counts
        # Every open shard is read by a live replica.
        assert outcome.unread == []
        assert sum(outcome.counts.values()) == 4 + outcome.splits
        assert replicas.stop() == {"r1": 0, "r3": 0, "r4": 0}
    finally:
        replicas.close()
