"""Integration: two stream-processor replicas share the stream through the leases table.

Real processes against moto and Redis. The emulator's stream has one shard, so one replica
reads while the other stands by: killing the reader (SIGKILL, a crash) must hand the shard
over within the failover time with nothing lost and nothing applied twice; a SIGTERM must
hand it over at once. Fencing is checked on the lease table itself.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis

from pulse.channels import ChannelKeys
from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import (
    ServiceProcess,
    channel_history,
    free_port,
    pending_payment,
    put_payment,
)
from stream_processor.leases import Lease, LeaseLostError, LeaseTable
from stream_processor.lineage import Shard
from stream_processor.stats import StatsKeys

pytestmark = pytest.mark.timeout(90)

FAILOVER = 1.5


@dataclass
class Replicas:
    settings: PulseSettings
    topology: TopologyOutputs
    ddb: Any
    redis: redis.Redis
    service_process: Callable[..., ServiceProcess]
    ports: dict[str, int] = field(default_factory=dict)

    def metrics(self, worker_id: str) -> str:
        url = f"http://127.0.0.1:{self.ports[worker_id]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def start(self, worker_id: str, failover: float = FAILOVER) -> ServiceProcess:
        port = self.ports[worker_id] = free_port()
        return self.service_process(
            "stream_processor",
            PULSE_HTTP_PORT=str(port),
            PULSE_WORKER_ID=worker_id,
            PULSE_POLL_INTERVAL_SECONDS="0.05",
            PULSE_SHARD_REFRESH_SECONDS="1",
            PULSE_FAILOVER_SECONDS=str(failover),
            PULSE_SHUTDOWN_GRACE_SECONDS="5",
        ).start(wait_port=port)

    def put_payment(self, account_id: str, amount: str = "3.10", currency: str = "EUR") -> str:
        payment = pending_payment(account_id=account_id, amount=amount, currency=currency)
        return put_payment(self.ddb, self.settings.names.payments_table, payment)["payment_id"]

    def history(self, channel: str) -> list[dict[str, Any]]:
        return channel_history(self.redis, self.settings.redis_prefix, channel)

    def wait_history(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(events := self.history("payments")) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return events

    def owner(self) -> str | None:
        items = self.ddb.scan(TableName=self.settings.names.leases_table, ConsistentRead=True)
        owners = [item.get("leaseOwner", {}).get("S") for item in items["Items"]]
        return owners[0] if owners else None

    def wait_owner(self, predicate: Any, timeout: float = 20.0) -> str | None:
        deadline = time.monotonic() + timeout
        while not predicate(owner := self.owner()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return owner

    def lease_key(self) -> str:
        items = self.ddb.scan(TableName=self.settings.names.leases_table, ConsistentRead=True)
        (item,) = items["Items"]
        return str(item["leaseKey"]["S"])

    def checkpoint(self) -> str | None:
        items = self.ddb.scan(TableName=self.settings.names.leases_table, ConsistentRead=True)
        (item,) = items["Items"]
        checkpoint: str | None = item.get("checkpoint", {}).get("S")
        return checkpoint

    def audit_rows(self, payment_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.ddb.query(
            TableName=self.settings.names.events_table,
            KeyConditionExpression="payment_id = :p",
            ExpressionAttributeValues={":p": {"S": payment_id}},
            ConsistentRead=True,
        )["Items"]
        return items


@pytest.fixture
def replicas(
    topology: TopologyOutputs, stack_settings: PulseSettings, service_process: Any, redis_url: str
) -> Iterator[Replicas]:
    client = redis.Redis.from_url(redis_url)
    yield Replicas(
        stack_settings, topology, aws_client("dynamodb", stack_settings), client, service_process
    )
    client.close()


def test_a_killed_replica_hands_its_shard_over_and_nothing_is_lost_or_doubled(
    replicas: Replicas,
) -> None:
    processes = {name: replicas.start(name) for name in ("replica-a", "replica-b")}
    first = [replicas.put_payment(f"acct-{i % 3}") for i in range(10)]
    reader = replicas.wait_owner(lambda owner: owner in processes)
    assert reader is not None
    assert len(replicas.wait_history(10)) >= 10
    standby = next(name for name in processes if name != reader)

    # Writes keep arriving while the reader crashes.
    second = [replicas.put_payment(f"acct-{i % 3}") for i in range(5)]
    processes[reader].kill()
    killed_at = time.monotonic()
    third = [replicas.put_payment(f"acct-{i % 3}") for i in range(10)]
    assert replicas.wait_owner(lambda owner: owner == standby) == standby
    takeover = time.monotonic() - killed_at
    # Expiry is noticed on the standby's next scan after the failover time.
    assert takeover < FAILOVER * 2 + 1.0, takeover

    payment_ids = first + second + third
    events = replicas.wait_history(len(payment_ids))
    time.sleep(0.5)  # long enough for a duplicate to show up
    events = replicas.history("payments")
    assert Counter(e["subject"] for e in events) == Counter(payment_ids)
    account_events = [
        e
        for account in ("acct-0", "acct-1", "acct-2")
        for e in replicas.history(f"account:{account}")
    ]
    assert Counter(e["subject"] for e in account_events) == Counter(payment_ids)
    for payment_id in payment_ids:
        rows = replicas.audit_rows(payment_id)
        assert len(rows) == 1, payment_id
    assert processes[standby].stop() == 0
    # SIGTERM released the lease.
    assert replicas.owner() is None


def test_sigterm_hands_the_shard_over_at_once(replicas: Replicas) -> None:
    slow_failover = 9.0
    first = replicas.start("replica-a", failover=slow_failover)
    assert replicas.wait_owner(lambda owner: owner == "replica-a") == "replica-a"
    second = replicas.start("replica-b", failover=slow_failover)
    payment_id = replicas.put_payment("acct-x")
    assert [e["subject"] for e in replicas.wait_history(1)] == [payment_id]

    assert first.stop() == 0
    stopped_at = time.monotonic()
    assert replicas.wait_owner(lambda owner: owner == "replica-b") == "replica-b"
    assert time.monotonic() - stopped_at < slow_failover / 2
    later = replicas.put_payment("acct-x")
    assert [e["subject"] for e in replicas.wait_history(2)] == [payment_id, later]
    # The counters move after the checkpoint, a moment after the history append.
    processed = 'pulse_stream_records_processed_total{event_name="INSERT"} 1.0'
    deadline = time.monotonic() + 5
    while processed not in (metrics := replicas.metrics("replica-b")):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert "pulse_stream_leases_held 1.0" in metrics
    assert 'pulse_stream_leases_taken_total{how="taken"} 1.0' in metrics
    assert processed in metrics
    assert "pulse_stream_shard_iterator_age_seconds{shard=" in metrics
    assert "pulse_stream_checkpoints_total" in metrics
    assert second.stop() == 0


def test_a_replica_whose_lease_was_taken_cannot_checkpoint(
    topology: TopologyOutputs, stack_settings: PulseSettings
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    table = stack_settings.names.leases_table
    old = LeaseTable(ddb, table, "old-owner")
    new = LeaseTable(ddb, table, "new-owner")
    old.ensure(Shard("shard-fenced"))
    held = old.take(Lease("shard-fenced"))
    old.checkpoint(held, "100")

    # The new owner takes the lease over (as it would after the failover time).
    (observed,) = (lease for lease in new.leases().values() if lease.shard_id == "shard-fenced")
    taken = new.take(observed)
    assert taken.checkpoint == "100"

    with pytest.raises(LeaseLostError):
        old.checkpoint(held, "200")
    with pytest.raises(LeaseLostError):
        old.renew(held)
    new.checkpoint(taken, "150")
    (stored,) = (lease for lease in new.leases().values() if lease.shard_id == "shard-fenced")
    assert (stored.owner, stored.checkpoint) == ("new-owner", "150")
    # A stale take (the counter moved since it was observed) loses too.
    with pytest.raises(LeaseLostError):
        old.take(observed)


def _totals(replicas: Replicas) -> dict[str, int]:
    key = StatsKeys(replicas.settings.redis_prefix).totals
    totals = replicas.redis.hgetall(key)
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in totals.items()}


def test_counters_are_exact_after_a_crash_and_a_full_replay(replicas: Replicas) -> None:
    pubsub = replicas.redis.pubsub()
    pubsub.ssubscribe(ChannelKeys(replicas.settings.redis_prefix).live("stats"))
    amounts = [("10.01", "EUR"), ("0.99", "EUR"), ("250.00", "USD"), ("7.35", "EUR")]
    payment_ids = [replicas.put_payment("acct-s", a, c) for a, c in amounts]
    for payment_id, status in ((payment_ids[0], "APPROVED"), (payment_ids[2], "DECLINED")):
        replicas.ddb.update_item(
            TableName=replicas.settings.names.payments_table,
            Key={"payment_id": {"S": payment_id}},
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": status}},
        )
    expected = {
        "events:created": 4,
        "events:updated": 2,
        "created:EUR": 3,
        "created_amount:EUR": 1001 + 99 + 735,
        "created:USD": 1,
        "created_amount:USD": 25000,
        "count:PENDING:EUR": 2,
        "amount:PENDING:EUR": 99 + 735,
        "count:PENDING:USD": 0,
        "amount:PENDING:USD": 0,
        "count:APPROVED:EUR": 1,
        "amount:APPROVED:EUR": 1001,
        "count:DECLINED:USD": 1,
        "amount:DECLINED:USD": 25000,
    }
    first = replicas.start("replica-a")
    assert len(replicas.wait_history(6)) == 6
    deadline = time.monotonic() + 10
    while _totals(replicas) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _totals(replicas) == expected

    # The live stats event carries the same figures.
    stats: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            stats = orjson.loads(message["data"])["event"]
            if stats["data"]["events"]["updated"] == 2:
                break
    assert stats["type"] == "pulse.stats"
    assert stats["data"]["by_status"]["APPROVED"]["EUR"] == {
        "count": 1,
        "amount": "10.01",
        "amount_minor": 1001,
    }
    assert stats["data"]["created"]["USD"]["amount"] == "250.00"
    assert sum(minute["events"] for minute in stats["data"]["series"]) >= 6

    # A crash that loses the checkpoint: the next replica reads the stream from the start.
    first.kill()
    replicas.ddb.update_item(
        TableName=replicas.settings.names.leases_table,
        Key={"leaseKey": {"S": replicas.lease_key()}},
        UpdateExpression="REMOVE #c, leaseOwner",
        ExpressionAttributeNames={"#c": "checkpoint"},
    )
    second = replicas.start("replica-b")
    assert replicas.wait_owner(lambda owner: owner == "replica-b") == "replica-b"
    deadline = time.monotonic() + 15
    while replicas.checkpoint() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert replicas.checkpoint() is not None
    time.sleep(0.5)
    assert _totals(replicas) == expected
    assert len(replicas.history("payments")) == 6
    # Throttled: a handful of stats events, not one per payment event and replay.
    assert 1 <= len(replicas.history("stats")) <= 6
    assert second.stop() == 0
