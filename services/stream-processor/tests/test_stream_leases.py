"""Integration: the leases table against the real emulator — how its AWS failures come out
(:mod:`pulse.aws_errors`). Fencing across replicas is in ``test_stream_replicas.py``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pulse.clients import aws_client
from pulse.errors import ConditionFailedError, ResourceNotFoundError
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from stream_processor.leases import HeldLease, Lease, LeaseLostError, LeaseTable
from stream_processor.lineage import Shard

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def table(topology: TopologyOutputs, stack_settings: PulseSettings) -> LeaseTable:
    """The leases table of an applied topology, as worker ``w``."""
    return LeaseTable(
        aws_client("dynamodb", stack_settings), stack_settings.names.leases_table, "w"
    )


def test_creating_a_lease_that_exists_is_a_no_op(table: LeaseTable) -> None:
    table.ensure(Shard("shard-twice"))
    held = table.take(Lease("shard-twice"))
    table.checkpoint(held, "42")
    table.ensure(Shard("shard-twice"))  # the condition fails: the item is left as it is
    assert table.leases()["shard-twice"] == Lease("shard-twice", "42", "w", 1, ())


def test_a_lost_lease_is_a_failed_condition(table: LeaseTable) -> None:
    table.ensure(Shard("shard-lost"))
    with pytest.raises(LeaseLostError, match="not ours") as raised:
        table.renew(HeldLease("shard-lost", counter=7))  # never taken at that counter
    assert isinstance(raised.value, ConditionFailedError)


@pytest.mark.parametrize(
    ("operation", "what"),
    [
        (LeaseTable.leases, "scan leases"),
        (lambda table: table.ensure(Shard("shard-1")), "create lease shard-1"),
        (lambda table: table.take(Lease("shard-1")), "update lease shard-1"),
        (lambda table: table.checkpoint(HeldLease("shard-1", 1), "9"), "update lease shard-1"),
        (lambda table: table.delete_ended("shard-1"), "delete lease shard-1"),
    ],
)
def test_a_missing_leases_table_is_retryable_not_found(
    stack_settings: PulseSettings, operation: Callable[[LeaseTable], object], what: str
) -> None:
    """Before the topology is applied: the processor's round fails and is tried again."""
    ddb = aws_client("dynamodb", stack_settings)
    table = LeaseTable(ddb, f"{stack_settings.resource_prefix}no-leases", "w")
    with pytest.raises(ResourceNotFoundError, match=f"^{what}: ") as raised:
        operation(table)
    assert raised.value.delay == 1.0


def test_a_renewal_refused_because_its_retry_found_it_landed_is_kept(table: LeaseTable) -> None:
    """botocore retries a request whose answer was lost; the retry of a renewal that did
    land is refused (the counter moved — by us). The item tells the two apart."""
    table.ensure(Shard("shard-retried"))
    held = table.take(Lease("shard-retried"))
    table.renew(held)
    held.counter -= 1  # as if the answer to that renewal never arrived
    table.renew(held)  # refused, then recognised as ours: no LeaseLostError
    stored = table.leases()["shard-retried"]
    assert (stored.owner, stored.counter) == ("w", held.counter)
    table.renew(held)  # and the lease goes on
    assert table.leases()["shard-retried"].counter == held.counter == 3


def test_a_renewal_refused_because_another_worker_took_the_lease_is_lost(
    table: LeaseTable, stack_settings: PulseSettings
) -> None:
    table.ensure(Shard("shard-taken"))
    held = table.take(Lease("shard-taken"))
    other = LeaseTable(
        aws_client("dynamodb", stack_settings), stack_settings.names.leases_table, "other"
    )
    other.take(other.leases()["shard-taken"])
    with pytest.raises(LeaseLostError):
        table.renew(held)
    held.lose()
    with pytest.raises(LeaseLostError):  # refused locally: nothing is sent
        table.checkpoint(held, "5")


def test_ending_a_trimmed_shard_fences_its_holder_and_frees_it(table: LeaseTable) -> None:
    table.ensure(Shard("shard-trimmed"))
    held = table.take(Lease("shard-trimmed"))
    table.checkpoint(held, "41")
    table.end_unread(table.leases()["shard-trimmed"])
    assert table.leases()["shard-trimmed"] == Lease("shard-trimmed", "SHARD_END", None, 2, ())
    with pytest.raises(LeaseLostError):
        table.checkpoint(held, "42")  # the holder that had not noticed cannot undo it
    with pytest.raises(LeaseLostError):
        table.end_unread(Lease("shard-trimmed", counter=1))  # as observed before: stale


def test_only_finished_leases_are_deleted(table: LeaseTable) -> None:
    for shard_id in ("shard-open", "shard-done"):
        table.ensure(Shard(shard_id))
    held = table.take(Lease("shard-done"))
    table.checkpoint(held, "SHARD_END")
    assert table.delete_ended("shard-open") is False
    assert table.delete_ended("shard-done") is True
    assert table.delete_ended("shard-done") is False  # another worker was first
    assert set(table.leases()) == {"shard-open"}
