"""The checks of a scaled-out stream run: delivery reports and lease-table readings."""

from __future__ import annotations

from typing import Any

import pytest

from pulse_dev.payments_fixtures import CREATED_AT
from pulse_dev.split_run import SplitRunOutcome, split_run_problems
from pulse_dev.stream_scaling import (
    SHARD_END,
    ExpectedEvents,
    delivery_report,
    lease_counts,
    lease_imbalance,
    lineage_violations,
    step_mark,
    type_mark,
    unread_leases,
)


def event(payment_id: str, mark: str, kind: str = "pulse.payment.updated") -> dict[str, Any]:
    return {"type": kind, "data": {"payment_id": payment_id, "updated_at": mark}}


M0, M1, M2 = step_mark(0), step_mark(1), step_mark(2)


@pytest.mark.parametrize(
    ("history", "lost", "duplicated", "out_of_order", "unexpected"),
    [
        ([("p", M0), ("q", M0), ("p", M1), ("q", M1), ("p", M2)], 0, 0, [], 0),
        ([("p", M0), ("p", M2), ("q", M0), ("q", M1)], 1, 0, [], 0),  # p's M1 lost
        ([("p", M0), ("p", M1), ("p", M1), ("p", M2), ("q", M0), ("q", M1)], 0, 1, [], 0),
        ([("p", M0), ("p", M2), ("p", M1), ("q", M0), ("q", M1)], 0, 0, ["p"], 0),
        ([("p", M0), ("p", M1), ("p", M0), ("p", M2), ("q", M0), ("q", M1)], 0, 1, [], 0),
        ([("p", M0), ("p", M1), ("p", M2), ("q", M1), ("q", M0)], 0, 0, ["q"], 0),
        ([("p", M0), ("p", M1), ("p", M2), ("q", M0), ("q", M1), ("q", M2)], 0, 0, [], 1),
        ([("x", M0), ("p", M0), ("p", M1), ("p", M2), ("q", M0), ("q", M1)], 0, 0, [], 0),
        ([], 5, 0, [], 0),
    ],
)
def test_a_history_is_held_to_each_payment_s_marks(
    history: list[tuple[str, str]],
    lost: int,
    duplicated: int,
    out_of_order: list[str],
    unexpected: int,
) -> None:
    expected = {"p": [M0, M1, M2], "q": [M0, M1]}
    report = delivery_report([event(p, m) for p, m in history], expected)
    assert (report.lost, report.duplicated, report.out_of_order, report.unexpected) == (
        lost,
        duplicated,
        out_of_order,
        unexpected,
    )
    assert report.expected == 5
    assert report.delivered == 5 - lost
    assert report.exact == (not (lost or duplicated or out_of_order or unexpected))


def test_events_can_be_marked_by_their_type() -> None:
    created, updated = "pulse.payment.created", "pulse.payment.updated"
    history = [event("p", "t1", updated), event("p", "t0", created)]
    report = delivery_report(history, {"p": [created, updated]}, type_mark)
    assert report.out_of_order == ["p"]
    assert report.lost == 0


def test_expected_events_split_by_account() -> None:
    expected = ExpectedEvents()
    expected.record("p", "a", [M0])
    expected.record("q", "b", [M0, M1])
    expected.record("r", "a", [M0])
    assert expected.by_account() == {"a": {"p": [M0], "r": [M0]}, "b": {"q": [M0, M1]}}


@pytest.mark.parametrize(("step", "mark"), [(0, CREATED_AT), (7, "2025-01-01T00:00:07.000Z")])
def test_step_marks_sort_in_step_order(step: int, mark: str) -> None:
    assert step_mark(step) == mark
    assert step_mark(step) < step_mark(step + 1)


@pytest.mark.parametrize("step", [-1, 60])
def test_step_marks_stop_at_a_minute(step: int) -> None:
    with pytest.raises(ValueError, match="steps"):
        step_mark(step)


def lease(
    key: str, owner: str | None = None, checkpoint: str | None = None, parent: str | None = None
) -> dict[str, Any]:
    item: dict[str, Any] = {"leaseKey": {"S": key}, "leaseCounter": {"N": "1"}}
    if owner is not None:
        item["leaseOwner"] = {"S": owner}
    if checkpoint is not None:
        item["checkpoint"] = {"S": checkpoint}
    item["parentShardIds"] = {"L": [{"S": parent}] if parent else []}
    return item


LEASES = [
    lease("s1", "r1", "100"),
    lease("s2", "r1", SHARD_END),  # finished: no longer counts
    lease("s3", "r3"),
    lease("s4", "r2", "7"),  # r2 is dead
    lease("s5"),  # free
    lease("s6", "r1", None),
]


def test_lease_counts_are_unfinished_leases_of_live_workers() -> None:
    counts = lease_counts(LEASES, ["r1", "r3", "r4"])
    assert counts == {"r1": 2, "r3": 1, "r4": 0}
    assert lease_imbalance(counts) == 2
    assert lease_imbalance({}) == 0
    assert unread_leases(LEASES, ["r1", "r3", "r4"]) == ["s4", "s5"]


@pytest.mark.parametrize(
    ("items", "violations"),
    [
        ([lease("p", checkpoint=SHARD_END), lease("c", checkpoint="5", parent="p")], []),
        ([lease("p", checkpoint="9"), lease("c", checkpoint="5", parent="p")], ["c"]),
        ([lease("p"), lease("c", checkpoint="5", parent="p")], ["c"]),
        ([lease("p", checkpoint="9"), lease("c", parent="p")], []),  # not started
        ([lease("c", checkpoint="5", parent="trimmed")], []),
        (
            [
                lease("p", checkpoint=SHARD_END),
                lease("c", checkpoint=SHARD_END, parent="p"),
                lease("g", checkpoint="1", parent="c"),
            ],
            [],
        ),
    ],
)
def test_a_shard_read_before_its_parent_ended_is_a_violation(
    items: list[dict[str, Any]], violations: list[str]
) -> None:
    assert lineage_violations(items) == violations


def outcome(**changes: Any) -> SplitRunOutcome:
    fields: dict[str, Any] = {
        "shards": 14,
        "splits": 5,
        "counts": {"r1": 3, "r3": 3, "r4": 3},
        "imbalance": 0,
        "unread": [],
        "violations": [],
        "delivered": True,
        "drain_seconds": 1.0,
        "balance_seconds": 0.5,
    }
    return SplitRunOutcome(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({}, None),
        ({"delivered": False}, "not every event"),
        ({"violations": ["c"]}, "before their parent"),
        ({"shards": 13}, "13 shards listed"),
        ({"counts": {"r1": 5, "r3": 4}}, "leases held by"),
        ({"unread": ["s"]}, "no live replica"),
        ({"imbalance": 2}, "more than one apart"),
    ],
)
def test_a_run_s_problems_are_named(changes: dict[str, Any], problem: str | None) -> None:
    problems = split_run_problems(outcome(**changes), first_shards=4, workers=["r4", "r3", "r1"])
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problem in problems[0]
