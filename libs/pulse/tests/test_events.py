import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pulse.events import PAYMENT_CREATED, CloudEvent, new_event, new_traceparent, stable_event_id


def test_stable_ids_depend_only_on_their_parts() -> None:
    assert stable_event_id("rec-1") == stable_event_id("rec-1")
    assert stable_event_id("rec-1") != stable_event_id("rec-2")
    assert stable_event_id("rec-1", "decision") != stable_event_id("rec-1")


@given(st.lists(st.text(), min_size=1, max_size=3))
def test_stable_ids_are_the_version_5_uuids_of_their_parts(parts: list[str]) -> None:
    namespace = uuid.UUID("6f1c9c1e-8d55-4c0b-9a7e-5b0f3c2d4e11")  # ids already issued
    assert stable_event_id(*parts) == str(uuid.uuid5(namespace, "/".join(parts)))


def test_envelope_is_cloudevents_structured_json() -> None:
    tp = new_traceparent()
    event = new_event(
        type=PAYMENT_CREATED,
        source="/pulse/test",
        subject="p1",
        data={"amount": "1.00"},
        traceparent=tp,
    )
    doc = orjson.loads(event.to_json())
    assert doc["specversion"] == "1.0"
    assert doc["datacontenttype"] == "application/json"
    assert doc["time"].endswith("Z")
    assert {"id", "source", "type", "subject", "time", "data"} <= doc.keys()
    assert CloudEvent.from_json(event.to_json()) == event
    assert event.trace_id == tp.split("-")[1]


def test_event_without_traceparent_has_no_trace_id_field() -> None:
    event = new_event(type=PAYMENT_CREATED, source="/s", data={})
    assert "traceparent" not in orjson.loads(event.to_json())
    assert event.trace_id is None


@pytest.mark.parametrize("raw", [b"{}", b'{"id":"","source":"s","type":"t","time":"x","data":{}}'])
def test_invalid_envelopes_are_refused(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        CloudEvent.from_json(raw)
