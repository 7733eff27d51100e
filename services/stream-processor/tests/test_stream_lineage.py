"""Shard lineage decisions on recorded multi-shard DescribeStream pages, and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_processor.lineage import (
    SHARD_END,
    GoneShards,
    IteratorStart,
    Shard,
    gone_shards,
    iterator_start,
    last_sequence_number,
    plan_shards,
    shards_from_pages,
)

PAGES = json.loads((Path(__file__).parent / "data" / "describe_stream_pages.json").read_text())[
    "pages"
]
A = "shardId-00000001763800000000-aaaaaaaa"
B = "shardId-00000001763814400000-bbbbbbbb"
C = "shardId-00000001763828800000-cccccccc"
P = "shardId-00000001763790000000-pppppppp"
S1 = "shardId-00000001763805000000-51515151"
S2 = "shardId-00000001763805000000-52525252"
T = "shardId-00000001763830000000-tttttttt"
A_PARENT = "shardId-00000001763780000000-10001000"  # trimmed: no longer listed
T_PARENT = "shardId-00000001763700000000-09990999"  # trimmed too
GONE = "shardId-00000001763700000000-00000000"  # trimmed, no listed child


@pytest.fixture
def shards() -> list[Shard]:
    return shards_from_pages(PAGES)


def test_pages_are_merged_in_order_keeping_the_latest_description(shards: list[Shard]) -> None:
    assert [s.shard_id for s in shards] == [A, B, C, P, S1, S2, T]
    by_id = {s.shard_id: s for s in shards}
    assert by_id[B].closed  # open on page 1, closed on page 2
    assert by_id[B].ending_sequence_number == "200000000000000000004444"
    assert by_id[A].parent_shard_id == "shardId-00000001763780000000-10001000"
    assert by_id[P].parent_shard_id is None
    assert not by_id[C].closed


def test_fresh_start_reads_roots_and_orphans_only(shards: list[Shard]) -> None:
    plan = plan_shards(shards, {})
    # A's and T's parents were trimmed, P has none: they start; every child waits.
    assert plan.ready == [A, P, T]
    assert plan.blocked == {B: A, C: B, S1: P, S2: P}
    assert plan.done == []


def test_a_chain_advances_one_generation_per_shard_end(shards: list[Shard]) -> None:
    plan = plan_shards(shards, {A: SHARD_END, B: "200000000000000000000100"})
    assert B in plan.ready
    assert plan.blocked[C] == B
    assert A in plan.done

    plan = plan_shards(shards, {A: SHARD_END, B: SHARD_END})
    assert C in plan.ready
    assert {A, B} <= set(plan.done)


def test_both_children_of_a_split_start_when_the_parent_ends(shards: list[Shard]) -> None:
    assert {S1, S2}.isdisjoint(plan_shards(shards, {P: "150000000000000000000700"}).ready)
    plan = plan_shards(shards, {P: SHARD_END})
    assert [s for s in plan.ready if s in {S1, S2}] == [S1, S2]


def test_a_checkpointed_but_unfinished_shard_is_still_read(shards: list[Shard]) -> None:
    plan = plan_shards(shards, {T: "400000000000000000000050"})
    assert T in plan.ready


def test_leases_of_shards_no_longer_listed_are_ignored(shards: list[Shard]) -> None:
    plan = plan_shards(shards, {"shardId-gone": SHARD_END, A: SHARD_END})
    assert "shardId-gone" not in plan.ready + plan.done + list(plan.blocked)


# The lease table's checkpoints (a lease each) against the recorded listing -> what becomes
# of the leases of shards it no longer lists.
EVERY_LISTED = dict.fromkeys([A, B, C, P, S1, S2, T], "100")
GONE_SHARDS = [
    pytest.param(EVERY_LISTED, GoneShards(), id="every lease listed: nothing to do"),
    pytest.param(
        {**EVERY_LISTED, A_PARENT: SHARD_END, T_PARENT: SHARD_END, GONE: SHARD_END},
        GoneShards(retired=[GONE, T_PARENT, A_PARENT]),
        id="finished, trimmed, children leased: deleted",
    ),
    pytest.param(
        {A_PARENT: SHARD_END, T_PARENT: SHARD_END, T: None},
        GoneShards(retired=[T_PARENT]),
        id="a child without its lease yet keeps its parent's",
    ),
    pytest.param(
        {**EVERY_LISTED, A_PARENT: "100000000000000000000042", T_PARENT: None},
        GoneShards(unfinished=[T_PARENT, A_PARENT]),
        id="trimmed before its end was read: unfinished",
    ),
    pytest.param(
        {A: SHARD_END, B: SHARD_END, P: SHARD_END},
        GoneShards(),
        id="finished but still listed: kept (it unblocks the children)",
    ),
]


@pytest.mark.parametrize(("checkpoints", "expected"), GONE_SHARDS)
def test_leases_of_shards_no_longer_listed(
    shards: list[Shard], checkpoints: dict[str, str | None], expected: GoneShards
) -> None:
    assert gone_shards(shards, checkpoints) == expected


def test_an_empty_listing_decides_nothing() -> None:
    assert gone_shards([], {A: SHARD_END, B: "100"}) == GoneShards()


def test_everything_done() -> None:
    shards = [Shard("a"), Shard("b", parent_shard_id="a")]
    plan = plan_shards(shards, {"a": SHARD_END, "b": SHARD_END})
    assert plan.ready == []
    assert plan.done == ["a", "b"]


def test_iterator_resumes_after_the_checkpoint_or_at_the_trim_horizon() -> None:
    assert iterator_start(None) == IteratorStart("TRIM_HORIZON")
    start = iterator_start("1100000000017454423013")
    assert start.request("arn:s", "shard-1") == {
        "StreamArn": "arn:s",
        "ShardId": "shard-1",
        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
        "SequenceNumber": "1100000000017454423013",
    }
    assert "SequenceNumber" not in iterator_start(None).request("arn:s", "shard-1")
    with pytest.raises(ValueError, match="end"):
        iterator_start(SHARD_END)


def test_a_batch_checkpoints_at_its_highest_sequence_number() -> None:
    records = [{"dynamodb": {"SequenceNumber": n}} for n in ("98", "99", "100")]
    assert last_sequence_number(records) == "100"  # numerically, not as strings
    assert last_sequence_number([]) is None
