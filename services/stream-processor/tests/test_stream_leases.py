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
