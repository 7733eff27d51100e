"""The attributes a dead-lettered message carries: the reason, where from, how often tried."""

from __future__ import annotations

from typing import Any

import pytest

from pulse.consumer import SqsMessage
from pulse.consumer.dead_letter import dead_letter_attributes


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _values(attributes: dict[str, Any]) -> dict[str, str]:
    return {name: value["StringValue"] for name, value in attributes.items()}


OURS = {"error": "bad amount", "source_queue": "pulse-fraud", "receive_count": "3"}


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ({}, OURS),
        ({"type": _string("created")}, {"type": "created", **OURS}),
        # ours win over an original attribute of the same name
        ({"error": _string("old"), "type": _string("created")}, {"type": "created", **OURS}),
        # Binary values do not travel (SendMessage would need their bytes re-encoded)
        ({"blob": {"DataType": "Binary", "BinaryValue": b"\x00"}}, OURS),
        (
            {"n": {"DataType": "Number", "StringValue": "42", "StringListValues": []}},
            {"n": "42", **OURS},
        ),
        # SQS allows 10 attributes: 7 originals fit beside our 3, the rest are dropped
        (
            {f"a{i}": _string(str(i)) for i in range(12)},
            {**{f"a{i}": str(i) for i in range(7)}, **OURS},
        ),
    ],
)
def test_dead_letter_attributes(original: dict[str, Any], expected: dict[str, str]) -> None:
    message = SqsMessage("m", "rh", b"body", message_attributes=original, receive_count=3)
    attributes = dead_letter_attributes(message, "bad amount", "pulse-fraud")
    assert _values(attributes) == expected
    assert attributes["receive_count"]["DataType"] == "Number"


def test_a_long_reason_is_cut_to_a_thousand_characters() -> None:
    message = SqsMessage("m", "rh", b"body")
    attributes = dead_letter_attributes(message, "x" * 5_000, "pulse-fraud")
    assert attributes["error"]["StringValue"] == "x" * 1_000
