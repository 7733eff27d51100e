"""The emulator's sharded stream, without a server: routing, splits, iterators, trimming."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pulse_dev.stream_store import (
    HASH_SPACE,
    ExpiredIteratorError,
    ResourceNotFoundError,
    ShardedStream,
    StreamError,
    StreamShape,
    TrimmedDataAccessError,
    ValidationError,
    partition_hash,
)

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-01T00:00:00"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def stream(clock: Clock | None = None, **shape: Any) -> ShardedStream:
    return ShardedStream(ARN, StreamShape(**shape), clock=clock or Clock())


def write(target: ShardedStream, key: str) -> int:
    """Append a record for partition key ``key``; its sequence number."""

    def record(number: int) -> dict[str, Any]:
        return {"key": key, "dynamodb": {"SequenceNumber": str(number)}}

    return target.append(partition_hash({"S": key}), record)


def owner(target: ShardedStream, key: str) -> str:
    """The open shard that holds ``key``'s hash."""
    hashed = partition_hash({"S": key})
    (shard,) = (s for s in target.shards() if not s.closed and s.low <= hashed < s.high)
    return shard.shard_id


def keys_in(target: ShardedStream, shard_id: str) -> list[str]:
    (shard,) = (s for s in target.shards() if s.shard_id == shard_id)
    return [r["key"] for r in shard.records]


def read_all(target: ShardedStream, shard_id: str, **start: str) -> dict[str, Any]:
    token = target.iterator(shard_id, start.pop("kind", "TRIM_HORIZON"), **start)
    return target.records(token)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_the_first_shards_cover_the_hash_space_in_equal_ranges(count: int) -> None:
    shards = stream(shards=count).shards()
    assert len(shards) == count
    assert shards[0].low == 0
    assert shards[-1].high == HASH_SPACE
    assert all(a.high == b.low for a, b in itertools.pairwise(shards))
    widths = {s.high - s.low for s in shards[:-1]}
    assert len(widths) <= 1
    assert all(s.parent_id is None and not s.closed for s in shards)
    assert [s.shard_id for s in shards] == sorted(s.shard_id for s in shards)


def test_a_key_s_records_go_to_one_shard_and_keys_spread_over_all() -> None:
    target = stream(shards=4)
    keys = [f"p-{i}" for i in range(200)]
    for key in keys * 2:
        write(target, key)
    for shard in target.shards():
        held = keys_in(target, shard.shard_id)
        assert held, "every shard gets some of 200 keys"
        assert all(held.count(k) == 2 for k in held)
        assert all(shard.low <= partition_hash({"S": k}) < shard.high for k in held)
    assert sum(len(s.records) for s in target.shards()) == 400


def test_partition_hash_tells_types_apart_and_is_stable() -> None:
    assert partition_hash({"S": "1"}) == partition_hash({"S": "1"})
    assert partition_hash({"S": "1"}) != partition_hash({"N": "1"})
    assert 0 <= partition_hash({"S": "x"}) < HASH_SPACE


def test_a_split_closes_the_parent_and_its_children_take_the_halves() -> None:
    target = stream(shards=2)
    before = [write(target, f"p-{i}") for i in range(50)]
    parent = target.shards()[0]
    left, right = target.split(parent.shard_id)
    after = [write(target, f"p-{i}") for i in range(50)]

    assert parent.closed
    assert parent.ending is not None
    assert parent.ending >= max(int(r["dynamodb"]["SequenceNumber"]) for r in parent.records)
    assert (left.low, left.high, right.low, right.high) == (
        parent.low,
        parent.low + (parent.high - parent.low) // 2,
        parent.low + (parent.high - parent.low) // 2,
        parent.high,
    )
    assert left.parent_id == right.parent_id == parent.shard_id
    assert left.starting > parent.ending
    assert min(after) > max(before)
    # The parent took nothing after it closed; its keys went on in the children.
    assert len(parent.records) == sum(
        partition_hash({"S": f"p-{i}"}) < parent.high for i in range(50)
    )
    assert set(keys_in(target, left.shard_id) + keys_in(target, right.shard_id)) == set(
        keys_in(target, parent.shard_id)
    )
    described = {s["ShardId"]: s for s in target.describe()[0]}
    assert described[left.shard_id]["ParentShardId"] == parent.shard_id
    assert described[parent.shard_id]["SequenceNumberRange"]["EndingSequenceNumber"] == str(
        parent.ending
    )
    assert "EndingSequenceNumber" not in described[left.shard_id]["SequenceNumberRange"]


def test_a_roll_over_opens_one_child_with_the_whole_range() -> None:
    target = stream()
    (first,) = target.shards()
    (child,) = target.split(children=1)
    assert (child.low, child.high, child.parent_id) == (first.low, first.high, first.shard_id)


@pytest.mark.parametrize(
    ("splits", "open_widths"),
    [
        # The widest open shard splits first; of equal ones the oldest.
        (1, [HASH_SPACE // 2, HASH_SPACE // 2]),
        (2, [HASH_SPACE // 2, HASH_SPACE // 4, HASH_SPACE // 4]),
        (3, [HASH_SPACE // 4] * 4),
        (4, [HASH_SPACE // 4] * 3 + [HASH_SPACE // 8] * 2),
    ],
)
def test_splits_without_a_shard_take_the_widest_open_one(
    splits: int, open_widths: list[int]
) -> None:
    target = stream()
    for _ in range(splits):
        target.split()
    opened = sorted((s for s in target.shards() if not s.closed), key=lambda s: s.low)
    assert sorted(s.high - s.low for s in opened) == sorted(open_widths)
    assert opened[0].low == 0
    assert opened[-1].high == HASH_SPACE
    assert all(a.high == b.low for a, b in itertools.pairwise(opened))


@pytest.mark.parametrize(
    ("shard", "children", "error"),
    [
        ("closed", 2, ResourceNotFoundError),
        ("shardId-00000000000000000000-00000000", 2, ResourceNotFoundError),
        (None, 3, ValidationError),
        (None, 0, ValidationError),
    ],
)
def test_splits_that_cannot_be_made(shard: str | None, children: int, error: type) -> None:
    target = stream()
    closed = target.shards()[0].shard_id
    target.split()
    with pytest.raises(error):
        target.split(closed if shard == "closed" else shard, children=children)


@pytest.mark.parametrize(
    ("kind", "at", "first"),
    [
        ("TRIM_HORIZON", None, 0),
        ("AT_SEQUENCE_NUMBER", 2, 2),
        ("AFTER_SEQUENCE_NUMBER", 2, 3),
        ("AFTER_SEQUENCE_NUMBER", 4, None),  # after the last record: nothing yet
        ("LATEST", None, None),
    ],
)
def test_each_iterator_type_starts_where_dynamodb_s_does(
    kind: str, at: int | None, first: int | None
) -> None:
    target = stream()
    numbers = [write(target, f"p-{i}") for i in range(5)]
    shard_id = target.shards()[0].shard_id
    start = {} if at is None else {"sequence_number": str(numbers[at])}
    answer = target.records(target.iterator(shard_id, kind, **start))
    got = [int(r["dynamodb"]["SequenceNumber"]) for r in answer["Records"]]
    assert got == ([] if first is None else numbers[first:])
    assert "NextShardIterator" in answer  # the shard is open
    later = write(target, "p-later")
    follow = target.records(answer["NextShardIterator"])
    assert [int(r["dynamodb"]["SequenceNumber"]) for r in follow["Records"]] == [later]


def test_a_closed_shard_read_to_its_end_has_no_next_iterator() -> None:
    target = stream()
    for i in range(5):
        write(target, f"p-{i}")
    shard_id = target.shards()[0].shard_id
    token = target.iterator(shard_id, "TRIM_HORIZON")
    target.split()
    first = target.records(token, 3)
    assert len(first["Records"]) == 3
    rest = target.records(first["NextShardIterator"], 3)
    assert len(rest["Records"]) == 2
    assert "NextShardIterator" not in rest
    # A closed shard with nothing in it, and LATEST on a closed shard, end at once.
    empty = target.split()[0].shard_id
    target.split(empty)
    for kind in ("TRIM_HORIZON", "LATEST"):
        assert target.records(target.iterator(empty, kind)) == {"Records": []}


def test_an_empty_read_of_an_open_shard_keeps_its_place() -> None:
    target = stream()
    shard_id = target.shards()[0].shard_id
    answer = target.records(target.iterator(shard_id, "TRIM_HORIZON"))
    assert answer["Records"] == []
    number = write(target, "p-1")
    got = target.records(answer["NextShardIterator"])["Records"]
    assert [int(r["dynamodb"]["SequenceNumber"]) for r in got] == [number]


def test_iterators_expire_and_each_next_iterator_has_its_own_lifetime() -> None:
    clock = Clock()
    target = stream(clock, iterator_seconds=60)
    write(target, "p-1")
    shard_id = target.shards()[0].shard_id
    token = target.iterator(shard_id, "TRIM_HORIZON")
    clock.now += 59
    following = target.records(token)["NextShardIterator"]
    clock.now += 2
    with pytest.raises(ExpiredIteratorError):
        target.records(token)
    assert target.records(following)["Records"] == []


def test_records_older_than_the_retention_are_trimmed() -> None:
    clock = Clock()
    target = stream(clock, retention_seconds=100, iterator_seconds=1000)
    old = [write(target, f"p-{i}") for i in range(3)]
    shard_id = target.shards()[0].shard_id
    horizon = target.iterator(shard_id, "TRIM_HORIZON")
    clock.now += 60
    kept = [write(target, f"q-{i}") for i in range(2)]
    clock.now += 41  # the first three are 101 s old, the others 41 s

    with pytest.raises(TrimmedDataAccessError):
        target.records(horizon)
    with pytest.raises(TrimmedDataAccessError):
        target.iterator(shard_id, "AT_SEQUENCE_NUMBER", str(old[-1]))
    # After the last trimmed record nothing is missing: that position is still readable.
    after = target.iterator(shard_id, "AFTER_SEQUENCE_NUMBER", str(old[-1]))
    for token in (after, target.iterator(shard_id, "TRIM_HORIZON")):
        got = target.records(token)["Records"]
        assert [int(r["dynamodb"]["SequenceNumber"]) for r in got] == kept


def test_a_shard_closed_longer_than_the_retention_is_no_longer_listed() -> None:
    clock = Clock()
    target = stream(clock, retention_seconds=100)
    parent = target.shards()[0].shard_id
    target.split()
    clock.now += 99
    assert parent in {s["ShardId"] for s in target.describe()[0]}
    clock.now += 2
    listed = target.describe()[0]
    assert parent not in {s["ShardId"] for s in listed}
    assert {s["ParentShardId"] for s in listed} == {parent}  # the children name it still
    with pytest.raises(ResourceNotFoundError):
        target.iterator(parent, "TRIM_HORIZON")


def test_describe_pages_follow_the_last_evaluated_shard() -> None:
    target = stream()
    target.split()
    target.split()  # five shards listed
    ids = [s.shard_id for s in target.shards()]
    pages, start = [], None
    while True:
        page, start = target.describe(2, start)
        pages.append([s["ShardId"] for s in page])
        if start is None:
            break
    assert pages == [ids[:2], ids[2:4], ids[4:]]
    # A start shard that is gone (trimmed) still pages on from its place.
    assert target.describe(100, ids[1][:-1] + "g")[0][0]["ShardId"] == ids[2]


def test_the_schedule_splits_the_widest_shard_every_interval() -> None:
    clock = Clock()
    target = stream(clock, shards=2, split_seconds=10)
    clock.now += 9.9
    assert target.split_if_due() == []
    clock.now += 0.1
    assert len(target.split_if_due()) == 2
    assert target.split_if_due() == []
    clock.now += 10
    assert len(target.split_if_due()) == 2
    assert len([s for s in target.shards() if not s.closed]) == 4
    assert stream(clock).split_if_due() == []  # 0: never


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda t, s: t.iterator(s, "AT_TIMESTAMP"), ValidationError),
        (lambda t, s: t.iterator(s, "AT_SEQUENCE_NUMBER"), ValidationError),
        (lambda t, s: t.iterator(s, "AFTER_SEQUENCE_NUMBER", "12x"), ValidationError),
        (lambda t, s: t.iterator(s, "AT_SEQUENCE_NUMBER", "1"), ValidationError),
        (lambda t, s: t.iterator(s, "AT_SEQUENCE_NUMBER", str(10**30)), ValidationError),
        (lambda t, _: t.iterator("shardId-nope", "TRIM_HORIZON"), ResourceNotFoundError),
        (lambda t, s: t.records(t.iterator(s, "LATEST"), 0), ValidationError),
        (lambda t, s: t.records(t.iterator(s, "LATEST"), 1001), ValidationError),
        (lambda t, _: t.records(ARN + "|1|!!!"), ValidationError),
        (lambda t, s: t.records(ARN + "x|1|" + t.iterator(s, "LATEST")), ResourceNotFoundError),
        (lambda t, _: t.describe(0), ValidationError),
        (lambda t, _: t.describe(101), ValidationError),
    ],
)
def test_bad_requests_get_dynamodb_s_errors(call: Any, error: type[StreamError]) -> None:
    target = stream()
    write(target, "p-1")
    with pytest.raises(error) as raised:
        call(target, target.shards()[0].shard_id)
    assert raised.value.code.endswith("Exception")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"shards": 0}, "at least one shard"),
        ({"split_seconds": -1}, "split interval"),
        ({"iterator_seconds": 0}, "positive"),
        ({"retention_seconds": -5}, "positive"),
    ],
)
def test_shapes_that_make_no_stream_are_refused(shape: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamShape(**shape)
