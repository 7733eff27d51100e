"""The emulator's streams through boto3, as the stream processor meets them: several shards,
splits on request and on a schedule, expiring iterators, trimmed records."""

from __future__ import annotations

import argparse
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from pulse_dev.emulators import AWS_TEST_CREDENTIALS
from pulse_dev.stream_emulation import (
    add_stream_arguments,
    emulator_fixture,
    shape_argv,
    shape_from_arguments,
    split_shards,
)
from pulse_dev.stream_store import StreamShape

pytestmark = pytest.mark.timeout(90)


four_shards = emulator_fixture(StreamShape(shards=4))
splitting = emulator_fixture(StreamShape(shards=2, split_seconds=1, iterator_seconds=1))
RETENTION = 1.5
trimming = emulator_fixture(StreamShape(retention_seconds=RETENTION))


class Stream:
    """A fresh table with a stream on the emulator at ``endpoint``."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        config = Config(retries={"mode": "standard", "max_attempts": 2})
        session = boto3.session.Session(
            region_name=AWS_TEST_CREDENTIALS["AWS_REGION"],
            aws_access_key_id=AWS_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        self.ddb: Any = session.client("dynamodb", endpoint_url=endpoint, config=config)
        self.streams: Any = session.client("dynamodbstreams", endpoint_url=endpoint, config=config)
        self.table = f"items-{uuid.uuid4().hex[:8]}"
        self.ddb.create_table(
            TableName=self.table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        self.arn = self.ddb.describe_table(TableName=self.table)["Table"]["LatestStreamArn"]

    def put(self, item_id: str, version: int = 1) -> None:
        self.ddb.put_item(
            TableName=self.table, Item={"id": {"S": item_id}, "version": {"N": str(version)}}
        )

    def shards(self, limit: int = 100) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": self.arn, "Limit": limit}
        while True:
            page = self.streams.describe_stream(**kwargs)["StreamDescription"]
            shards += page["Shards"]
            if "LastEvaluatedShardId" not in page:
                return shards
            kwargs["ExclusiveStartShardId"] = page["LastEvaluatedShardId"]

    def iterator(self, shard_id: str, kind: str = "TRIM_HORIZON", **more: str) -> str:
        answer = self.streams.get_shard_iterator(
            StreamArn=self.arn, ShardId=shard_id, ShardIteratorType=kind, **more
        )
        return str(answer["ShardIterator"])

    def read_shard(self, shard_id: str) -> tuple[list[dict[str, Any]], bool]:
        """Every record of the shard, and whether it ended (no NextShardIterator)."""
        records: list[dict[str, Any]] = []
        iterator: str | None = self.iterator(shard_id)
        while iterator is not None:
            answer = self.streams.get_records(ShardIterator=iterator, Limit=7)
            records += answer["Records"]
            iterator = answer.get("NextShardIterator")
            if iterator is not None and not answer["Records"]:
                return records, False  # open, read to its end for now
        return records, True

    def read_in_lineage_order(self) -> list[dict[str, Any]]:
        """Every record, each shard read after its parent."""
        shards = self.shards()
        listed = {s["ShardId"] for s in shards}
        done: set[str] = set()
        records: list[dict[str, Any]] = []
        while len(done) < len(shards):
            for shard in shards:
                parent = shard.get("ParentShardId")
                if shard["ShardId"] in done or (parent in listed and parent not in done):
                    continue
                got, ended = self.read_shard(shard["ShardId"])
                assert ended == ("EndingSequenceNumber" in shard["SequenceNumberRange"])
                records += got
                done.add(shard["ShardId"])
        return records


def _versions(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    versions: dict[str, list[int]] = defaultdict(list)
    for record in records:
        image = record["dynamodb"]["NewImage"]
        versions[image["id"]["S"]].append(int(image["version"]["N"]))
    return versions


def test_writes_spread_over_four_shards_and_a_split_closes_one_into_two(four_shards: str) -> None:
    stream = Stream(four_shards)
    first = stream.shards()
    assert len(first) == 4
    assert all("ParentShardId" not in s for s in first)
    for i in range(60):
        stream.put(f"item-{i}")
    per_shard = [len(stream.read_shard(s["ShardId"])[0]) for s in first]
    assert sum(per_shard) == 60
    assert all(per_shard), per_shard  # 60 keys reach every shard

    (split,) = split_shards(four_shards, table=stream.table)
    for i in range(60):
        stream.put(f"item-{i}", 2)

    shards = {s["ShardId"]: s for s in stream.shards(limit=2)}  # three pages
    assert len(shards) == 6
    parent = shards[split["parent"]]
    assert int(parent["SequenceNumberRange"]["EndingSequenceNumber"]) >= int(
        parent["SequenceNumberRange"]["StartingSequenceNumber"]
    )
    for child in split["children"]:
        assert shards[child]["ParentShardId"] == split["parent"]
        assert "EndingSequenceNumber" not in shards[child]["SequenceNumberRange"]
    parent_records, ended = stream.read_shard(split["parent"])
    assert ended
    parent_items = {r["dynamodb"]["Keys"]["id"]["S"] for r in parent_records}
    child_items = {
        r["dynamodb"]["Keys"]["id"]["S"]
        for child in split["children"]
        for r in stream.read_shard(child)[0]
    }
    assert child_items == parent_items  # the parent's keys went on in its children
    assert _versions(stream.read_in_lineage_order()) == {f"item-{i}": [1, 2] for i in range(60)}


def test_items_written_through_splits_are_read_once_each_in_order(four_shards: str) -> None:
    stream = Stream(four_shards)
    items = [f"item-{i}" for i in range(40)]
    rounds = 12
    stop = threading.Event()

    def write(chosen: list[str]) -> None:
        for version in range(1, rounds + 1):
            for item_id in chosen:
                stream.put(item_id, version)

    def split_while_writing() -> None:
        while not stop.is_set():
            split_shards(four_shards, table=stream.table)
            time.sleep(0.05)

    writers = [threading.Thread(target=write, args=(items[i::4],)) for i in range(4)]
    splitter = threading.Thread(target=split_while_writing)
    splitter.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    splitter.join()

    assert len(stream.shards()) > 8
    assert _versions(stream.read_in_lineage_order()) == {
        item_id: list(range(1, rounds + 1)) for item_id in items
    }


def test_iterators_of_every_type_and_their_errors(four_shards: str) -> None:
    stream = Stream(four_shards)
    (split,) = split_shards(four_shards, table=stream.table, children=1)
    (child,) = split["children"]
    for version in range(3):
        stream.put("only", version)
    owner = next(s["ShardId"] for s in stream.shards() if stream.read_shard(s["ShardId"])[0])
    records, _ = stream.read_shard(owner)
    numbers = [r["dynamodb"]["SequenceNumber"] for r in records]
    for kind, at, expected in (
        ("AT_SEQUENCE_NUMBER", numbers[1], numbers[1:]),
        ("AFTER_SEQUENCE_NUMBER", numbers[1], numbers[2:]),
        ("LATEST", None, []),
    ):
        more = {} if at is None else {"SequenceNumber": at}
        answer = stream.streams.get_records(ShardIterator=stream.iterator(owner, kind, **more))
        assert [r["dynamodb"]["SequenceNumber"] for r in answer["Records"]] == expected
    # A roll-over's parent, closed with nothing in it, ends at once.
    parent = stream.streams.get_records(ShardIterator=stream.iterator(split["parent"]))
    assert parent["Records"] == []
    assert "NextShardIterator" not in parent
    assert child in {s["ShardId"] for s in stream.shards()}

    def code(call: Any, **kwargs: Any) -> str:
        with pytest.raises(ClientError) as raised:
            call(**kwargs)
        return str(raised.value.response["Error"]["Code"])

    assert code(stream.iterator, shard_id="shardId-00000000000000000001-00000000") == (
        "ResourceNotFoundException"
    )
    assert code(stream.iterator, shard_id=owner, kind="AT_SEQUENCE_NUMBER") == (
        "ValidationException"
    )
    assert code(stream.streams.get_records, ShardIterator="x" * 30) == "ValidationException"


def test_the_split_route_refuses_what_it_cannot_do(four_shards: str) -> None:
    stream = Stream(four_shards)
    some_shard = stream.shards()[0]["ShardId"]
    (split,) = split_shards(four_shards, shard_id=some_shard)
    assert split["table"] == stream.table
    assert split["parent"] == some_shard
    for kwargs, status in (
        ({"table": "no-such-table"}, 404),
        ({"table": stream.table, "shard_id": some_shard}, 404),  # closed now
        ({"table": stream.table, "children": 3}, 400),
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            split_shards(four_shards, **kwargs)
        refused.value.close()
        assert refused.value.code == status
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{four_shards}/_pulse/streams/split", timeout=5)  # noqa: S310
    refused.value.close()
    assert refused.value.code == 405


def test_shards_split_on_schedule_and_iterators_expire(splitting: str) -> None:
    stream = Stream(splitting)
    assert len(stream.shards()) == 2
    deadline = time.monotonic() + 15
    while len(listed := stream.shards()) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(listed) >= 6  # two splits, each closing one shard into two
    closed = {s["ShardId"] for s in listed if "EndingSequenceNumber" in s["SequenceNumberRange"]}
    assert len(closed) == (len(listed) - 2) // 2
    assert {s.get("ParentShardId") for s in listed} - {None} == closed

    open_shard = next(s["ShardId"] for s in listed if s["ShardId"] not in closed)
    token = stream.iterator(open_shard)
    following = stream.streams.get_records(ShardIterator=token)["NextShardIterator"]
    time.sleep(1.2)
    for old in (token, following):
        with pytest.raises(ClientError) as raised:
            stream.streams.get_records(ShardIterator=old)
        assert raised.value.response["Error"]["Code"] == "ExpiredIteratorException"
    assert stream.streams.get_records(ShardIterator=stream.iterator(open_shard))["Records"] == []


def test_records_and_closed_shards_go_after_the_retention_window(trimming: str) -> None:
    stream = Stream(trimming)
    (shard,) = stream.shards()
    shard_id = shard["ShardId"]
    stream.put("early")
    (early,) = stream.read_shard(shard_id)[0]
    horizon = stream.iterator(shard_id)
    time.sleep(RETENTION + 0.2)
    stream.put("late")

    with pytest.raises(ClientError) as raised:
        stream.streams.get_records(ShardIterator=horizon)
    assert raised.value.response["Error"]["Code"] == "TrimmedDataAccessException"
    number = early["dynamodb"]["SequenceNumber"]
    with pytest.raises(ClientError) as raised:
        stream.iterator(shard_id, "AT_SEQUENCE_NUMBER", SequenceNumber=number)
    assert raised.value.response["Error"]["Code"] == "TrimmedDataAccessException"
    # After the last trimmed record nothing is missing; the trim horizon is the first kept.
    for token in (
        stream.iterator(shard_id, "AFTER_SEQUENCE_NUMBER", SequenceNumber=number),
        stream.iterator(shard_id),
    ):
        records = stream.streams.get_records(ShardIterator=token)["Records"]
        assert [r["dynamodb"]["Keys"]["id"]["S"] for r in records] == ["late"]

    (split,) = split_shards(trimming, table=stream.table, children=1)
    time.sleep(RETENTION + 0.2)
    (child,) = stream.shards()  # the parent is gone; its child still names it
    assert child["ShardId"] == split["children"][0]
    assert child["ParentShardId"] == shard_id


@pytest.mark.parametrize(
    "shape",
    [
        StreamShape(),
        StreamShape(shards=4, split_seconds=2.5, iterator_seconds=3, retention_seconds=9),
    ],
)
def test_the_flags_carry_a_shape_to_the_emulator(shape: StreamShape) -> None:
    parser = argparse.ArgumentParser()
    add_stream_arguments(parser)
    assert shape_from_arguments(parser.parse_args(shape_argv(shape))) == shape


def test_the_flags_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_EMULATOR_STREAM_SHARDS", "3")
    monkeypatch.setenv("PULSE_EMULATOR_STREAM_SPLIT_SECONDS", "7")
    parser = argparse.ArgumentParser()
    add_stream_arguments(parser)
    assert shape_from_arguments(parser.parse_args([])) == StreamShape(shards=3, split_seconds=7)
    assert shape_from_arguments(parser.parse_args(["--stream-shards", "5"])).shards == 5


def test_transactions_write_to_the_stream(four_shards: str) -> None:
    stream = Stream(four_shards)
    stream.ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": stream.table, "Item": {"id": {"S": f"t-{i}"}}}} for i in range(3)
        ]
    )
    records = stream.read_in_lineage_order()
    assert sorted(r["dynamodb"]["Keys"]["id"]["S"] for r in records) == ["t-0", "t-1", "t-2"]
