"""The emulator Pulse runs (moto behind waitress) answers like moto, only faster."""

import http.client
from datetime import datetime

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs


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
