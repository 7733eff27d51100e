"""SNS bodies built and form-encoded here are the bytes botocore and urlencode make, and SNS
reads them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus, urlencode

import botocore.session
import orjson
from botocore.serialize import create_serializer
from hypothesis import given
from hypothesis import strategies as st

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from stream_processor.form_body import (
    encode_entries,
    encode_form,
    encode_sns_forms_fast,
    form_value,
)

_PUBLISH_BATCH = (
    botocore.session.get_session().get_service_model("sns").operation_model("PublishBatch")
)

_attributes = st.dictionaries(
    st.text(min_size=1),
    st.fixed_dictionaries({"DataType": st.text()}, optional={"StringValue": st.text()}),
    max_size=5,
)
_entries = st.lists(
    st.fixed_dictionaries(
        {"Id": st.text(), "Message": st.text()},
        optional={"Subject": st.text(), "MessageAttributes": _attributes},
    ),
    min_size=1,
    max_size=10,
)


@given(st.text())
def test_form_value_is_quote_plus(text: str) -> None:
    assert form_value(text) == quote_plus(text, safe="")


@given(st.dictionaries(st.text(), st.text()))
def test_encode_form_is_urlencode(form: dict[str, str]) -> None:
    pairs = [(name.encode(), value.encode()) for name, value in form.items()]
    assert encode_form(form) == urlencode(pairs, doseq=True)


@given(_entries)
def test_entries_are_flattened_as_botocore_serialises_them(entries: list[dict[str, Any]]) -> None:
    serialised = create_serializer("query", include_validation=False).serialize_to_request(
        {"PublishBatchRequestEntries": entries}, _PUBLISH_BATCH
    )["body"]
    fields = {k: v for k, v in serialised.items() if k not in {"Action", "Version"}}
    assert encode_entries(entries) == urlencode(fields, doseq=True)


def test_messages_published_with_the_fast_form_arrive_unchanged(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    sns = encode_sns_forms_fast(aws_client("sns", stack_settings, parameter_validation=False))
    plain = aws_client("sns", stack_settings)
    sqs = aws_client("sqs", stack_settings)
    topic = sns.create_topic(Name=f"{stack_prefix}form")["TopicArn"]
    url = sqs.create_queue(QueueName=f"{stack_prefix}form")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    messages = [
        orjson.dumps({"n": i, "text": 'é & = + % ~ 😀 "quoted" a b\n'}).decode() for i in range(3)
    ]
    entries = [
        {
            "Id": f"e{i}",
            "Message": message,
            "MessageAttributes": {
                "type": {"DataType": "String", "StringValue": "créé"},
                "n": {"DataType": "Number", "StringValue": str(i)},
            },
        }
        for i, message in enumerate(messages)
    ]
    serialised: list[set[str]] = []  # what botocore's serialiser was left with
    sns.meta.events.register_first(
        "before-call.sns.PublishBatch", lambda params, **_: serialised.append(set(params["body"]))
    )
    sent: list[object] = []
    sns.meta.events.register(
        "request-created.sns.PublishBatch", lambda request, **_: sent.append(request.data)
    )
    plain.meta.events.register(
        "request-created.sns.PublishBatch",
        lambda request, **_: sent.append(urlencode(request.data, doseq=True).encode()),
    )
    reply = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
    plain.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
    assert len(reply["Successful"]) == len(messages)
    assert serialised == [{"Action", "Version", "TopicArn"}]
    assert len(sent) == 2
    fast, reference = sent
    assert isinstance(fast, bytes)  # built here, not by botocore
    assert fast == reference
    received: list[str] = []
    for _ in range(10):
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        ).get("Messages", [])
        received += [m["Body"] for m in batch]
        assert all(m["MessageAttributes"]["type"]["StringValue"] == "créé" for m in batch)
        if len(received) >= 2 * len(messages):
            break
    assert sorted(received) == sorted(messages * 2)


def test_entries_botocore_must_serialise_are_left_to_it(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    sns = encode_sns_forms_fast(aws_client("sns", stack_settings, parameter_validation=False))
    topic = sns.create_topic(Name=f"{stack_prefix}binary")["TopicArn"]
    sent: list[object] = []
    sns.meta.events.register(
        "request-created.sns.PublishBatch", lambda request, **_: sent.append(request.data)
    )
    binary = {"DataType": "Binary", "BinaryValue": b"\x00\xff"}
    reply = sns.publish_batch(
        TopicArn=topic,
        PublishBatchRequestEntries=[
            {"Id": "b", "Message": "m", "MessageAttributes": {"blob": binary}}
        ],
    )
    assert [ok["Id"] for ok in reply["Successful"]] == ["b"]
    assert isinstance(sent[0], bytes)
    assert b"BinaryValue=AP8%3D" in sent[0]  # base64 by botocore, then encoded here
