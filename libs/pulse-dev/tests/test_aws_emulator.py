"""The emulator Pulse runs (moto behind waitress) answers like moto, only faster."""

import base64
import http.client
import json
from datetime import datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st
from moto.core.parse import JSONParser
from moto.core.utils import get_service_model

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.aws_emulator import read_attribute_values_directly
from pulse_dev.stream_emulation import split_shards


def test_stream_records_keep_moto_s_wire_format(
    stack_settings: PulseSettings, topology: TopologyOutputs
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    streams = aws_client("dynamodbstreams", stack_settings)
    table = stack_settings.names.payments_table
    item = {
        "payment_id": {"S": "p-1"},
        "amount": {"S": "12.50"},
        "n": {"N": "3"},
        "metadata": {"M": {"k": {"S": "v"}}},
        "reasons": {"L": [{"S": "x"}]},
        "flag": {"BOOL": True},
        "nothing": {"NULL": True},
    }
    ddb.put_item(TableName=table, Item=item)
    ddb.update_item(
        TableName=table,
        Key={"payment_id": {"S": "p-1"}},
        UpdateExpression="SET amount = :a",
        ExpressionAttributeValues={":a": {"S": "1"}},
    )
    arn = topology.stream_arns[table]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]

    response = streams.get_records(ShardIterator=iterator, Limit=10)

    insert, modify = response["Records"]
    assert insert["eventName"] == "INSERT"
    assert insert["dynamodb"]["NewImage"] == item
    assert isinstance(insert["dynamodb"]["ApproximateCreationDateTime"], datetime)
    assert modify["eventName"] == "MODIFY"
    assert modify["dynamodb"]["OldImage"]["amount"] == {"S": "12.50"}
    assert modify["dynamodb"]["NewImage"]["amount"] == {"S": "1"}
    assert int(modify["dynamodb"]["SequenceNumber"]) > int(insert["dynamodb"]["SequenceNumber"])
    follow = streams.get_records(ShardIterator=response["NextShardIterator"], Limit=10)
    assert follow["Records"] == []


def test_connections_are_kept_alive(aws_endpoint: str) -> None:
    host, port = aws_endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    for _ in range(2):  # the same socket serves both requests
        conn.request("GET", "/moto-api/data.json")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("Connection", "").lower() != "close"
    conn.close()


_numbers = st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str)
_scalars = st.one_of(
    st.builds(lambda s: {"S": s}, st.text(max_size=8)),
    st.builds(lambda n: {"N": n}, _numbers),
    st.builds(lambda b: {"B": base64.b64encode(b).decode()}, st.binary(max_size=8)),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda s: {"SS": s}, st.lists(st.text(max_size=4), min_size=1, unique=True)),
    st.builds(lambda s: {"NS": s}, st.lists(_numbers, min_size=1, unique=True)),
    st.builds(
        lambda s: {"BS": [base64.b64encode(b).decode() for b in s]},
        st.lists(st.binary(max_size=4), min_size=1, unique=True),
    ),
    st.just({}),  # malformed values go through moto's own walk
    st.just({"S": "a", "N": "1"}),
    st.just({"S": None}),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.builds(lambda items: {"L": items}, st.lists(inner, max_size=3)),
        st.builds(lambda fields: {"M": fields}, st.dictionaries(st.text(max_size=4), inner)),
    ),
    max_leaves=10,
)
_items = st.dictionaries(st.text(min_size=1, max_size=6), _values, max_size=6)


class _DirectParser(JSONParser):
    """moto's JSON parser with the emulator's direct reading of attribute values."""


read_attribute_values_directly(_DirectParser)


@given(st.lists(_items, min_size=1, max_size=4))
def test_items_are_read_as_moto_s_model_walk_reads_them(items: list[dict[str, Any]]) -> None:
    operation = get_service_model("dynamodb").operation_model("BatchWriteItem")
    body = json.dumps({"RequestItems": {"t": [{"PutRequest": {"Item": i}} for i in items]}})
    request: Any = {"method": "POST", "values": {}, "headers": {}, "body": body.encode()}
    request |= {"url_path": "/", "url_params": {}}
    assert _DirectParser(operation).parse(request) == JSONParser(operation).parse(request)


def test_items_over_the_size_limit_are_still_refused(
    stack_settings: PulseSettings, topology: TopologyOutputs
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    table = stack_settings.names.payments_table
    ddb.put_item(TableName=table, Item={"payment_id": {"S": "big"}, "a": {"S": "x" * 300_000}})
    with pytest.raises(ClientError, match="Item size has exceeded"):
        ddb.put_item(
            TableName=table,
            Item={
                "payment_id": {"S": "too-big"},
                "a": {"S": "x" * 210_000},
                "b": {"S": "y" * 210_000},
            },
        )


def test_a_stream_keeps_one_open_shard_until_asked_to_split(
    aws_endpoint: str, stack_settings: PulseSettings, topology: TopologyOutputs
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    streams = aws_client("dynamodbstreams", stack_settings)
    table = stack_settings.names.payments_table
    arn = topology.stream_arns[table]
    ddb.put_item(TableName=table, Item={"payment_id": {"S": "p-1"}})
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    assert "EndingSequenceNumber" not in shard["SequenceNumberRange"]
    assert "ParentShardId" not in shard

    (split,) = split_shards(aws_endpoint, table=table, children=1)

    closed, child = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    assert closed["ShardId"] == split["parent"] == shard["ShardId"]
    assert "EndingSequenceNumber" in closed["SequenceNumberRange"]
    assert child["ParentShardId"] == shard["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=closed["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    answer = streams.get_records(ShardIterator=iterator)
    assert [r["dynamodb"]["Keys"] for r in answer["Records"]] == [{"payment_id": {"S": "p-1"}}]
    assert "NextShardIterator" not in answer
