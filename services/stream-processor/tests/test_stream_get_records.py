"""GetRecords read with orjson gives the processor what botocore's parser gives it."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer
from hypothesis import given
from hypothesis import strategies as st

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.load import random_payment_item
from stream_processor.get_records import read_records_with_orjson
from stream_processor.records import event_from_record, image_values

_DESERIALIZER = TypeDeserializer()

_numbers = st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str)
_names = st.text(min_size=1, max_size=8)
_scalars = st.one_of(
    st.builds(lambda s: {"S": s}, st.text(max_size=20)),
    st.builds(lambda n: {"N": n}, _numbers),
    st.builds(lambda b: {"B": b}, st.binary(max_size=16)),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda s: {"SS": s}, st.lists(st.text(max_size=5), min_size=1, unique=True)),
    st.builds(lambda s: {"NS": s}, st.lists(_numbers, min_size=1, unique=True)),
    st.builds(lambda s: {"BS": s}, st.lists(st.binary(max_size=5), min_size=1, unique=True)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.builds(lambda items: {"L": items}, st.lists(inner, max_size=4)),
        st.builds(lambda fields: {"M": fields}, st.dictionaries(_names, inner, max_size=4)),
    ),
    max_leaves=12,
)
_images = st.dictionaries(_names, _values, max_size=8)


def _as_wire(value: dict[str, Any]) -> dict[str, Any]:
    """An attribute value as it is on the wire: binary values as base64 text."""
    ((kind, raw),) = value.items()
    if kind == "B":
        return {"B": base64.b64encode(raw).decode()}
    if kind == "BS":
        return {"BS": [base64.b64encode(b).decode() for b in raw]}
    if kind == "L":
        return {"L": [_as_wire(v) for v in raw]}
    if kind == "M":
        return {"M": {k: _as_wire(v) for k, v in raw.items()}}
    return value


def _outcome(convert: Callable[[], Any]) -> Any:
    """What ``convert`` returns, or the type of what it raises (numbers past DynamoDB's
    38 digits are refused by boto3's decimal context)."""
    try:
        return convert()
    except Exception as exc:  # the outcome compared is the type
        return type(exc)


@given(_images)
def test_image_values_are_what_the_type_deserializer_gives(image: dict[str, Any]) -> None:
    expected = _outcome(lambda: {n: _DESERIALIZER.deserialize(v) for n, v in image.items()})
    assert _outcome(lambda: image_values(image)) == expected
    wire = {name: _as_wire(value) for name, value in image.items()}
    assert _outcome(lambda: image_values(wire)) == expected  # binary as read with orjson


@pytest.mark.parametrize("value", [{}, {"X": "1"}])
def test_image_values_refuse_what_the_type_deserializer_refuses(value: dict[str, Any]) -> None:
    with pytest.raises(Exception) as expected:  # noqa: PT011 - whatever boto3 raises
        _DESERIALIZER.deserialize(value)  # type: ignore[arg-type]  # deliberately malformed
    with pytest.raises(expected.type):
        image_values({"a": value})


def test_numbers_keep_dynamodb_precision() -> None:
    assert image_values({"n": {"N": "12.50"}}) == {"n": Decimal("12.50")}
    assert image_values({"b": {"B": b"\x00\x01"}}) == {"b": Binary(b"\x00\x01")}


def _read(streams: Any, arn: str) -> dict[str, Any]:
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    answer: dict[str, Any] = streams.get_records(ShardIterator=iterator, Limit=100)
    return answer


def test_records_read_with_orjson_make_the_same_events(
    stack_settings: PulseSettings, topology: TopologyOutputs
) -> None:
    table = stack_settings.names.payments_table
    ddb = aws_client("dynamodb", stack_settings)
    rng = random.Random(7)
    items = [random_payment_item(rng) for _ in range(5)]
    for item in items:
        ddb.put_item(TableName=table, Item=item)
    ddb.update_item(
        TableName=table,
        Key={"payment_id": items[0]["payment_id"]},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "AUTHORIZED"}},
    )
    ddb.delete_item(TableName=table, Key={"payment_id": items[1]["payment_id"]})
    arn = topology.stream_arns[table]
    plain = _read(aws_client("dynamodbstreams", stack_settings), arn)
    fast_client = read_records_with_orjson(aws_client("dynamodbstreams", stack_settings))
    fast = _read(fast_client, arn)

    assert len(fast["Records"]) == len(plain["Records"]) == 7
    assert ("NextShardIterator" in fast) == ("NextShardIterator" in plain)
    for mine, theirs in zip(fast["Records"], plain["Records"], strict=True):
        assert event_from_record(mine) == event_from_record(theirs)
        assert mine["eventName"] == theirs["eventName"]
        change, expected = mine["dynamodb"], theirs["dynamodb"]
        assert change["SequenceNumber"] == expected["SequenceNumber"]
        assert change["ApproximateCreationDateTime"] == expected["ApproximateCreationDateTime"]
        for which in ("Keys", "NewImage", "OldImage"):
            assert (which in change) == (which in expected)
            if which in change:
                assert image_values(change[which]) == image_values(expected[which])
