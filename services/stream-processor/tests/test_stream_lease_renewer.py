"""Integration: lease renewals on their own schedule, and a replica that cannot renew.

Real stream-processor processes against the emulator (one shard) and Redis. Record
processing that stalls (its Redis frozen) must not cost the replica its lease; a replica
frozen past its lease's failover time must, once it runs again, read nothing more of the
shard another replica took meanwhile; a replica whose renewal is refused stops reading the
shard before the lease can come back to anyone.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.emulators import free_port, start_redis, stop_process
from pulse_dev.stream_scaling import StreamReplicas, lease_items
from pulse_dev.testing import channel_history, pending_payment, put_payment, until
from stream_processor.leases import LeaseTable, lease_from_item

pytestmark = pytest.mark.timeout(120)

FAILOVER = 1.5


class Shard:
    """The stream's one shard as the test sees it: payments in, history out, its lease."""

    def __init__(self, settings: PulseSettings, redis_url: str) -> None:
        self.settings = settings
        self.ddb = aws_client("dynamodb", settings)
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=10)
        self.payment_ids: list[str] = []

    def put(self, count: int) -> None:
        for i in range(count):
            payment = pending_payment(account_id=f"acct-{i % 3}")
            put_payment(self.ddb, self.settings.names.payments_table, payment)
            self.payment_ids.append(payment["payment_id"])

    def delivered(self) -> Counter[str]:
        history = channel_history(self.redis, self.settings.redis_prefix, "payments")
        return Counter(event["subject"] for event in history)

    def wait_delivered(self) -> None:
        """Every payment put so far is in the history, once each (after a breath for a
        duplicate to show up)."""
        until(lambda: set(self.delivered()) >= set(self.payment_ids), timeout=40.0)
        time.sleep(0.3)
        assert self.delivered() == Counter(self.payment_ids)

    def lease(self) -> dict[str, Any]:
        (item,) = lease_items(self.ddb, self.settings.names.leases_table)
        return item

    def owner(self) -> str | None:
        """The lease's owner (None while free, or before the lease exists)."""
        items = lease_items(self.ddb, self.settings.names.leases_table)
        return lease_from_item(items[0]).owner if items else None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[signal.Signals], None]]]:
    """A Redis server of this test's own (its URL, and a way to signal it), so it can be
    frozen without freezing anyone else's."""
    port = free_port()
    proc = start_redis(port, tmp_path)
    yield f"redis://127.0.0.1:{port}/0", proc.send_signal
    proc.send_signal(signal.SIGCONT)
    stop_process(proc)


def _start_holder_and_standby(replicas: StreamReplicas, shard: Shard) -> None:
    replicas.start("r1")
    until(lambda: shard.owner() == "r1", timeout=30.0)
    replicas.start("r2")


def test_record_processing_stalled_on_redis_does_not_cost_the_lease(
    stack_env: dict[str, str],
    stack_settings: PulseSettings,
    topology: TopologyOutputs,
    own_redis: tuple[str, Callable[[signal.Signals], None]],
    tmp_path: Path,
) -> None:
    redis_url, signal_redis = own_redis
    shard = Shard(stack_settings, redis_url)
    replicas = StreamReplicas({**stack_env, "REDIS_URL": redis_url}, tmp_path)
    try:
        _start_holder_and_standby(replicas, shard)
        shard.put(5)
        shard.wait_delivered()

        signal_redis(signal.SIGSTOP)  # every live publish of r1 now hangs
        shard.put(10)
        counter_before = int(shard.lease()["leaseCounter"]["N"])
        owners = set()
        deadline = time.monotonic() + 3 * FAILOVER
        while time.monotonic() < deadline:
            owners.add(shard.owner())
            time.sleep(0.1)
        counter_after = int(shard.lease()["leaseCounter"]["N"])
        signal_redis(signal.SIGCONT)

        shard.wait_delivered()
        assert owners == {"r1"}  # the standby never took the shard
        assert counter_after - counter_before >= 3  # renewed all along
        for reason in ("lease_lost", "lease_expired"):
            assert replicas.metric("r1", "pulse_stream_failures_total", reason=reason) == 0
        assert replicas.metric("r2", "pulse_stream_leases_taken_total", how="taken") == 0
        assert replicas.stop() == {"r1": 0, "r2": 0}
    finally:
        replicas.close()
        shard.redis.close()


def test_a_replica_frozen_past_its_lease_reads_nothing_more_of_the_shard(
    stack_env: dict[str, str],
    stack_settings: PulseSettings,
    topology: TopologyOutputs,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """A stop-the-world pause (SIGSTOP) longer than the failover time: the standby takes
    the shard over; when the frozen replica runs again, it must not read the shard even
    once more — its lease expired before the standby could take it."""
    shard = Shard(stack_settings, redis_url)
    replicas = StreamReplicas(stack_env, tmp_path)

    def received(worker: str) -> float:
        return replicas.metric(worker, "pulse_stage_received_total", stage="stream")

    try:
        _start_holder_and_standby(replicas, shard)
        shard.put(5)
        shard.wait_delivered()
        until(lambda: received("r1") == 5)
        read_by_r1 = received("r1")

        replicas.pause("r1")
        shard.put(5)
        until(lambda: shard.owner() == "r2", timeout=30.0)
        shard.wait_delivered()
        replicas.resume("r1")

        def r1_gave_up() -> bool:
            expired = replicas.metric("r1", "pulse_stream_failures_total", reason="lease_expired")
            return expired == 1 and replicas.metric("r1", "pulse_stream_leases_held") == 0

        until(r1_gave_up)
        shard.put(3)
        shard.wait_delivered()
        assert shard.owner() == "r2"
        assert received("r1") == read_by_r1  # not one record read after the pause
        assert replicas.stop() == {"r1": 0, "r2": 0}
    finally:
        replicas.close()
        shard.redis.close()


def test_a_replica_whose_renewal_is_refused_stops_reading_the_shard(
    stack_env: dict[str, str],
    stack_settings: PulseSettings,
    topology: TopologyOutputs,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Another worker takes the lease (fenced on the counter it saw) and never renews it:
    the holder's next renewal is refused and it drops the shard while the taker still holds
    it; once that lease expires the shard is taken back and nothing is lost or doubled."""
    failover = 4.0  # room between the refused renewal and the taker's lease expiring
    shard = Shard(stack_settings, redis_url)
    replicas = StreamReplicas(stack_env, tmp_path, failover_seconds=failover)
    intruder = LeaseTable(shard.ddb, stack_settings.names.leases_table, "intruder")
    try:
        replicas.start("r1")
        until(lambda: shard.owner() == "r1", timeout=30.0)
        shard.put(5)
        shard.wait_delivered()

        intruder.take(lease_from_item(shard.lease()))
        shard.put(5)

        def r1_dropped_the_shard() -> bool:
            lost = replicas.metric("r1", "pulse_stream_failures_total", reason="lease_lost")
            return lost == 1 and replicas.metric("r1", "pulse_stream_shards_owned") == 0

        until(r1_dropped_the_shard, timeout=failover)
        assert shard.owner() == "intruder"  # dropped before the lease could come back

        until(lambda: shard.owner() == "r1", timeout=30.0)  # the intruder's lease expired
        shard.wait_delivered()
        assert replicas.metric("r1", "pulse_stream_leases_taken_total", how="taken") == 2
        assert replicas.stop() == {"r1": 0}
    finally:
        replicas.close()
        shard.redis.close()
