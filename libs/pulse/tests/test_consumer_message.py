"""SqsMessage: one received message, decoded from ReceiveMessage's shape."""

from __future__ import annotations

from typing import Any

import pytest

from pulse.consumer import SqsMessage
from pulse.errors import PermanentError


def test_message_is_decoded_from_the_sqs_shape() -> None:
    message = SqsMessage.from_sqs(
        {
            "MessageId": "m1",
            "ReceiptHandle": "rh",
            "Body": '{"a":"é"}',
            "Attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1700000000000"},
            "MessageAttributes": {"type": {"DataType": "String", "StringValue": "created"}},
        }
    )
    assert message.body == '{"a":"é"}'.encode()
    assert message.receive_count == 3
    assert message.sent_at is not None
    assert message.sent_at.timestamp() == 1_700_000_000
    assert message.string_attribute("type") == "created"
    assert message.string_attribute("missing") is None
    assert message.age_seconds(now=1_700_000_005) == 5


@pytest.mark.parametrize(
    ("attributes", "receive_count", "sent"),
    [
        ({}, 1, False),  # no attributes asked for: a first receive, age unknown
        ({"ApproximateReceiveCount": "7"}, 7, False),
        ({"ApproximateReceiveCount": "x", "SentTimestamp": "soon"}, 1, False),
        ({"SentTimestamp": "1700000000000"}, 1, True),
    ],
)
def test_missing_or_odd_attributes_fall_back(
    attributes: dict[str, str], receive_count: int, sent: bool
) -> None:
    raw: dict[str, Any] = {"MessageId": "m", "ReceiptHandle": "rh", "Attributes": attributes}
    message = SqsMessage.from_sqs(raw)
    assert message.body == b""
    assert message.receive_count == receive_count
    assert (message.sent_at is not None) is sent
    assert (message.age_seconds() is not None) is sent


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"DataType": "String", "StringValue": "created"}, "created"),
        ({"DataType": "Number", "StringValue": "42"}, "42"),
        ({"DataType": "Binary", "BinaryValue": b"\x00"}, None),
        ("not an attribute", None),
    ],
)
def test_string_attribute_reads_string_and_number_values(value: Any, expected: str | None) -> None:
    message = SqsMessage("m", "rh", b"", message_attributes={"a": value})
    assert message.string_attribute("a") == expected


_EVENT = (
    b'{"specversion":"1.0","id":"e1","source":"pulse/ingest","type":"pulse.payment.created",'
    b'"time":"2026-01-01T00:00:00Z","data":{}}'
)


@pytest.mark.parametrize(
    ("body", "types", "error"),
    [
        (_EVENT, ("pulse.payment.created",), None),
        (_EVENT, (), None),  # any type
        (_EVENT, ("pulse.payment.updated",), "unexpected event type"),
        (b"this is not json", (), "not a CloudEvent"),
        (b'{"id": "no specversion"}', (), "not a CloudEvent"),
    ],
)
def test_cloud_event_refuses_for_good_what_is_not_the_expected_event(
    body: bytes, types: tuple[str, ...], error: str | None
) -> None:
    message = SqsMessage("m", "rh", body)
    if error is None:
        assert message.cloud_event(*types).id == "e1"
    else:
        with pytest.raises(PermanentError, match=error):
            message.cloud_event(*types)
