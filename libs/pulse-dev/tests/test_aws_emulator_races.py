"""The emulator answers as AWS does when calls arrive at once, and parses forms as moto does.

moto is not thread-safe and the emulator serves it from a pool of threads: these tests send
concurrent calls over real sockets to the emulator the suite runs, and check what AWS
guarantees — a visible message goes to one receiver, a conditional write passes once.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.serialize import create_serializer
from hypothesis import given
from hypothesis import strategies as st
from moto.core.parse import QueryParser
from moto.core.utils import get_service_model

from pulse.clients import aws_client
from pulse_dev import aws_emulator
from pulse_dev.aws_emulator import has_params_under

if TYPE_CHECKING:
    from pulse.settings import PulseSettings

THREADS = 8


def _receive_all(sqs: Any, url: str, expected: int) -> list[str]:
    """Every message id received by THREADS concurrent receivers until ``expected`` arrived."""
    received: list[str] = []
    lock = threading.Lock()

    def receiver() -> None:
        empty = 0
        while empty < 3:  # three empty answers in a row: the queue is drained
            with lock:
                if len(received) >= expected:
                    return
            got = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=120, WaitTimeSeconds=0
            ).get("Messages", [])
            empty = 0 if got else empty + 1
            with lock:
                received.extend(m["MessageId"] for m in got)

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(receiver) for _ in range(THREADS)]:
            future.result()
    return received


def test_a_visible_message_goes_to_one_of_many_concurrent_receivers(
    stack_settings: PulseSettings,
) -> None:
    sqs = aws_client("sqs", stack_settings, max_pool=THREADS * 2)
    url = sqs.create_queue(
        QueueName=f"{stack_settings.resource_prefix}race-{uuid.uuid4().hex[:6]}"
    )["QueueUrl"]
    sent = 600
    for start in range(0, sent, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)],
        )
    try:
        received = _receive_all(sqs, url, sent)
    finally:
        sqs.delete_queue(QueueUrl=url)
    twice = [message for message, n in Counter(received).items() if n > 1]
    assert twice == []
    assert len(received) == sent


def test_a_conditional_put_passes_once_however_many_arrive_together(
    stack_settings: PulseSettings,
) -> None:
    ddb = aws_client("dynamodb", stack_settings, max_pool=THREADS * 2)
    table = f"{stack_settings.resource_prefix}race-{uuid.uuid4().hex[:6]}"
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    keys = [f"k{i}" for i in range(40)]
    barrier = threading.Barrier(THREADS)
    refusals: list[str] = []

    def writer(n: int) -> list[str]:
        won = []
        for key in keys:
            if key == keys[0]:
                barrier.wait()
            try:
                ddb.put_item(
                    TableName=table,
                    Item={"pk": {"S": key}, "writer": {"N": str(n)}},
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except ClientError as exc:
                refusals.append(exc.response["Error"]["Code"])
            else:
                won.append(key)
        return won

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            wins = [key for won in pool.map(writer, range(THREADS)) for key in won]
    finally:
        ddb.delete_table(TableName=table)
    assert sorted(wins) == sorted(keys)  # each key written by exactly one writer
    assert set(refusals) == {"ConditionalCheckFailedException"}
    assert len(refusals) == len(keys) * (THREADS - 1)


@given(
    keys=st.lists(st.text(alphabet="ab.1", max_size=6), max_size=12),
    prefix=st.text(alphabet="ab.1", max_size=4),
)
def test_the_bisection_answers_as_a_walk_over_every_key(keys: list[str], prefix: str) -> None:
    assert has_params_under(sorted(keys), prefix) == any(k.startswith(prefix) for k in keys)


def _publish_batch_form() -> tuple[Any, dict[str, str]]:
    """A PublishBatch as botocore puts it on the wire: ten entries, five attributes each."""
    wire_model = botocore.session.get_session().get_service_model("sns")
    model = wire_model.operation_model("PublishBatch")
    entries = [
        {
            "Id": f"e{i}",
            "Message": f'{{"n":{i}}}',
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": f"{name}-{i}"}
                for name in ("type", "event_type", "event_id", "account_id", "traceparent")
            },
        }
        for i in range(10)
    ]
    params = {
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
        "PublishBatchRequestEntries": entries,
    }
    body = create_serializer("query").serialize_to_request(params, model)["body"]
    return model, {str(k): str(v) for k, v in body.items()}


def test_publish_batch_forms_parse_as_moto_parses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    wire_model, form = _publish_batch_form()
    model = get_service_model("sns").operation_model("PublishBatch")  # moto's, as it parses
    assert model.name == wire_model.name
    # QueryParser reads only "values" of the request dict (a form, as moto gives it)
    moto_parsed = QueryParser(model).parse({"values": form})  # type: ignore[typeddict-item]
    monkeypatch.setattr(QueryParser, "_gonna_recurse", QueryParser._gonna_recurse)  # restored
    aws_emulator._parse_query_forms_by_bisection()  # the patch under test
    parsed = QueryParser(model).parse({"values": form})  # type: ignore[typeddict-item]
    assert parsed == moto_parsed
    assert len(parsed["PublishBatchRequestEntries"]) == 10
    assert parsed["PublishBatchRequestEntries"][9]["MessageAttributes"]["traceparent"] == {
        "DataType": "String",
        "StringValue": "traceparent-9",
    }
