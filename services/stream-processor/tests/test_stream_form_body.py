"""SNS bodies form-encoded in one pass are the bytes urlencode makes, and SNS reads them."""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
from hypothesis import given
from hypothesis import strategies as st

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from stream_processor.form_body import encode_form, encode_sns_forms_fast


@given(st.dictionaries(st.text(), st.text()))
def test_encode_form_is_urlencode(form: dict[str, str]) -> None:
    pairs = [(name.encode(), value.encode()) for name, value in form.items()]
    assert encode_form(form).decode() == urlencode(pairs, doseq=True)


def test_messages_published_with_the_fast_form_arrive_unchanged(
    stack_settings: PulseSettings, stack_prefix: str
) -> None:
    sns = encode_sns_forms_fast(aws_client("sns", stack_settings))
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
    sent: list[object] = []
    sns.meta.events.register(
        "request-created.sns.PublishBatch", lambda request, **_: sent.append(request.data)
    )
    reply = sns.publish_batch(
        TopicArn=topic,
        PublishBatchRequestEntries=[
            {
                "Id": f"e{i}",
                "Message": message,
                "MessageAttributes": {"type": {"DataType": "String", "StringValue": "créé"}},
            }
            for i, message in enumerate(messages)
        ],
    )
    assert len(reply["Successful"]) == len(messages)
    assert len(sent) == 1
    assert isinstance(sent[0], bytes)  # encoded by encode_form, not by botocore
    received: list[str] = []
    for _ in range(10):
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        ).get("Messages", [])
        received += [m["Body"] for m in batch]
        assert all(m["MessageAttributes"]["type"]["StringValue"] == "créé" for m in batch)
        if len(received) >= len(messages):
            break
    assert sorted(received) == sorted(messages)
