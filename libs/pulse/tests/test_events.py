import orjson
import pytest
from pydantic import ValidationError

from pulse.events import PAYMENT_CREATED, CloudEvent, new_event, new_traceparent, stable_event_id


def test_stable_ids_depend_only_on_their_parts() -> None:
    assert stable_event_id("rec-1") == stable_event_id("rec-1")
    assert stable_event_id("rec-1") != stable_event_id("rec-2")
    assert stable_event_id("rec-1", "decision") != stable_event_id("rec-1")


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
