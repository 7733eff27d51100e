"""The emulator's SendMessage shortcut keeps moto's answers: same attributes, same dedup,
same counts, same fan-out from SNS."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.sqs.models import Queue, sqs_backends

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.aws_emulator import QueueAttributesView

ACCOUNT = "123456789012"


def _queue(name: str, **attributes: str) -> Queue:
    """A queue of an in-process moto backend (moto's own models, no server)."""
    backend = sqs_backends[ACCOUNT]["us-east-1"]
    suffix = ".fifo" if attributes.get("FifoQueue") else ""
    return backend.create_queue(f"{name}-{uuid.uuid4().hex[:8]}{suffix}", tags=None, **attributes)


REDRIVE = {"deadLetterTargetArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:dlq", "maxReceiveCount": 3}


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        pytest.param("plain", {}, id="standard"),
        pytest.param(
            "with-redrive",
            {
                "RedrivePolicy": json.dumps(REDRIVE),
                "Policy": json.dumps({"Version": "2012-10-17", "Statement": []}),
                "VisibilityTimeout": "45",
            },
            id="redrive-and-policy",
        ),
        pytest.param(
            "ordered", {"FifoQueue": "true", "ContentBasedDeduplication": "true"}, id="fifo"
        ),
        pytest.param("secret", {"KmsMasterKeyId": "alias/pulse"}, id="kms"),
    ],
)
def test_the_view_holds_what_moto_s_attributes_hold(name: str, attributes: dict[str, str]) -> None:
    sqs_backends[ACCOUNT]["us-east-1"].create_queue("dlq")
    queue = _queue(name, **attributes)
    view = QueueAttributesView(queue)
    assert dict(view) == queue.attributes
    assert view.get("ContentBasedDeduplication") == queue.attributes.get(
        "ContentBasedDeduplication"
    )
    assert view.get("NoSuchAttribute") is None


def _send(sqs: Any, url: str, body: str, **extra: Any) -> None:
    sqs.send_message(QueueUrl=url, MessageBody=body, **extra)


def test_sends_count_and_deduplicate_as_moto_does(stack_settings: PulseSettings) -> None:
    sqs = aws_client("sqs", stack_settings)
    prefix = stack_settings.resource_prefix
    plain = sqs.create_queue(QueueName=f"{prefix}plain")["QueueUrl"]
    for i in range(5):
        _send(sqs, plain, f"m{i}")
    attributes = sqs.get_queue_attributes(QueueUrl=plain, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "5"

    deduped = sqs.create_queue(
        QueueName=f"{prefix}deduped.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    for _ in range(3):
        _send(sqs, deduped, "same body", MessageGroupId="g")
    attributes = sqs.get_queue_attributes(QueueUrl=deduped, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "1"

    strict = sqs.create_queue(
        QueueName=f"{prefix}strict.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"},
    )["QueueUrl"]
    with pytest.raises(ClientError, match="ContentBasedDeduplication"):
        _send(sqs, strict, "no deduplication id", MessageGroupId="g")


def test_the_topic_still_fans_out_to_its_filtered_queues(
    stack_settings: PulseSettings, topology: TopologyOutputs
) -> None:
    sns = aws_client("sns", stack_settings)
    sqs = aws_client("sqs", stack_settings)
    names = stack_settings.names
    event_id = uuid.uuid4().hex
    sns.publish(
        TopicArn=topology.topic_arn,
        Message='{"kind": "created"}',
        MessageAttributes={
            "type": {"DataType": "String", "StringValue": "created"},
            "event_id": {"DataType": "String", "StringValue": event_id},
        },
    )
    fraud = sqs.receive_message(
        QueueUrl=topology.queue_urls[names.fraud_queue],
        MessageAttributeNames=["All"],
        WaitTimeSeconds=2,
    )["Messages"]
    assert [m["Body"] for m in fraud] == ['{"kind": "created"}']  # raw delivery
    assert fraud[0]["MessageAttributes"]["event_id"]["StringValue"] == event_id
    notify = sqs.receive_message(
        QueueUrl=topology.queue_urls[names.notify_queue], WaitTimeSeconds=0
    ).get("Messages", [])
    assert notify == []  # filtered out: it takes "updated" only


def test_an_action_moto_lacks_answers_not_implemented_at_once(
    stack_settings: PulseSettings, queue_topology: TopologyOutputs
) -> None:
    """501 NotImplemented, not moto's bare 500: a client tells a missing action from a fault,
    and botocore does not retry it (pulse dlq redrive then moves the messages itself)."""
    sqs = aws_client("sqs", stack_settings)
    dlq_arn = queue_topology.queue_arns[stack_settings.names.fraud_dlq]
    with pytest.raises(ClientError) as caught:
        sqs.list_message_move_tasks(SourceArn=dlq_arn)
    response = caught.value.response
    assert response["Error"]["Code"] == "NotImplemented"
    assert "list_message_move_tasks" in response["Error"]["Message"]
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert response["ResponseMetadata"]["RetryAttempts"] == 0
    # an action of a query-protocol service is answered in XML the same way
    with pytest.raises(ClientError) as xml:
        aws_client("sns", stack_settings).get_data_protection_policy(
            ResourceArn=queue_topology.topic_arn
        )
    assert xml.value.response["Error"]["Code"] == "NotImplemented"
