"""Stream record to CloudEvent conversion and the shapes of SNS entries and audit rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from pulse.events import CloudEvent, stable_event_id
from stream_processor.effects import publish_entries
from stream_processor.leases import lease_from_item
from stream_processor.metrics import IteratorAges
from stream_processor.records import (
    MalformedRecordError,
    audit_item,
    channels_for,
    event_from_record,
    pad_sequence_number,
    sns_attributes,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
WHEN = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)


def _image(status: str = "PENDING", **extra: Any) -> dict[str, Any]:
    image: dict[str, Any] = {
        "payment_id": {"S": "pay_1"},
        "account_id": {"S": "acct-1"},
        "amount": {"S": "12.5"},
        "currency": {"S": "EUR"},
        "merchant_id": {"S": "m-1"},
        "status": {"S": status},
        "created_at": {"S": "2026-01-01T12:00:00.000Z"},
        "updated_at": {"S": "2026-01-01T12:00:00.000Z"},
        "request_hash": {"S": "abc"},
        "traceparent": {"S": TRACEPARENT},
    }
    image.update(extra)
    return image


def _record(name: str, *, new: Any = None, old: Any = None, seq: str = "123") -> dict[str, Any]:
    ddb: dict[str, Any] = {
        "ApproximateCreationDateTime": WHEN,
        "SequenceNumber": seq,
        "Keys": {"payment_id": {"S": "pay_1"}},
    }
    if new is not None:
        ddb["NewImage"] = new
    if old is not None:
        ddb["OldImage"] = old
    return {"eventID": f"ev-{name}", "eventName": name, "dynamodb": ddb}


def test_insert_becomes_created_with_the_public_payment() -> None:
    event = event_from_record(_record("INSERT", new=_image()))
    assert event.type == "pulse.payment.created"
    assert event.id == stable_event_id("ev-INSERT")
    assert event.source == "/pulse/stream-processor"
    assert event.subject == "pay_1"
    assert event.time == "2026-01-01T12:00:05.000Z"
    assert event.traceparent == TRACEPARENT
    assert event.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert event.data["amount"] == "12.50"  # two-place decimal string
    assert event.data["status"] == "PENDING"
    assert "request_hash" not in event.data
    assert "traceparent" not in event.data


def test_the_same_record_always_yields_the_same_event() -> None:
    record = _record("INSERT", new=_image())
    assert event_from_record(record) == event_from_record(record)
    other = {**record, "eventID": "ev-other"}
    assert event_from_record(other).id != event_from_record(record).id


def test_modify_carries_old_and_new_status() -> None:
    fraud = {"fraud_score": {"N": "87"}, "fraud_reasons": {"L": [{"S": "amount"}]}}
    event = event_from_record(
        _record("MODIFY", new=_image("DECLINED", **fraud), old=_image("PENDING"))
    )
    assert event.type == "pulse.payment.updated"
    assert (event.data["old_status"], event.data["status"]) == ("PENDING", "DECLINED")
    assert event.data["fraud_score"] == 87
    assert event.data["fraud_reasons"] == ["amount"]


def test_modify_without_a_status_change_is_still_an_update() -> None:
    event = event_from_record(_record("MODIFY", new=_image("REVIEW"), old=_image("REVIEW")))
    assert event.type == "pulse.payment.updated"
    assert event.data["old_status"] == event.data["status"] == "REVIEW"


def test_remove_becomes_deleted_with_the_old_image() -> None:
    event = event_from_record(_record("REMOVE", old=_image("APPROVED")))
    assert event.type == "pulse.payment.deleted"
    assert event.data["status"] == "APPROVED"
    assert event.traceparent == TRACEPARENT


def test_epoch_creation_time_and_missing_traceparent() -> None:
    image = _image()
    del image["traceparent"]
    record = _record("INSERT", new=image)
    record["dynamodb"]["ApproximateCreationDateTime"] = 1767268805
    event = event_from_record(record)
    assert event.time == "2026-01-01T12:00:05.000Z"
    assert event.traceparent is None
    assert "traceparent" not in sns_attributes(event)
    assert b"traceparent" not in event.to_json()


@pytest.mark.parametrize(
    "record",
    [
        _record("INSERT"),  # no NewImage (a KEYS_ONLY stream)
        _record("MODIFY", new=_image()),
        _record("REMOVE", new=_image()),
        _record("TRUNCATE", new=_image()),
        {**_record("INSERT", new=_image()), "eventID": ""},
    ],
)
def test_records_that_cannot_become_events(record: dict[str, Any]) -> None:
    with pytest.raises(MalformedRecordError):
        event_from_record(record)


def test_channels_are_payments_and_the_account() -> None:
    event = event_from_record(_record("INSERT", new=_image()))
    assert channels_for(event) == ["payments", "account:acct-1"]
    odd = event_from_record(_record("INSERT", new=_image(account_id={"S": "has space"})))
    assert channels_for(odd) == ["payments"]


def test_sns_attributes_follow_the_contract() -> None:
    for name, new, old, kind in (
        ("INSERT", _image(), None, "created"),
        ("MODIFY", _image("APPROVED"), _image(), "updated"),
        ("REMOVE", None, _image(), "deleted"),
    ):
        event = event_from_record(_record(name, new=new, old=old))
        attributes = sns_attributes(event)
        assert {k: v["StringValue"] for k, v in attributes.items()} == {
            "type": kind,
            "event_type": event.type,
            "event_id": event.id,
            "account_id": "acct-1",
            "traceparent": TRACEPARENT,
        }
        assert {v["DataType"] for v in attributes.values()} == {"String"}


def test_publish_entries_carry_the_cloudevent_and_unique_ids() -> None:
    events = [
        event_from_record({**_record("INSERT", new=_image()), "eventID": f"e{i}"})
        for i in range(10)
    ]
    entries = publish_entries(events)
    assert len({e["Id"] for e in entries}) == 10
    assert [CloudEvent.from_json(e["Message"]) for e in entries] == events
    with pytest.raises(ValueError, match="at most 10"):
        publish_entries([*events, events[0]])


@pytest.mark.parametrize(
    ("sequence", "padded"),
    [
        ("1", "0" * 39 + "1"),
        ("1100000000017454423013", "0" * 18 + "1100000000017454423013"),
        ("9" * 40, "9" * 40),
    ],
)
def test_sequence_numbers_are_padded_to_40_digits(sequence: str, padded: str) -> None:
    assert pad_sequence_number(sequence) == padded


def test_padded_sequence_numbers_sort_as_numbers() -> None:
    numbers = ["99", "100", "1100000000017454423013", "7"]
    assert sorted(numbers, key=pad_sequence_number) == sorted(numbers, key=int)


@pytest.mark.parametrize("bad", ["", "12a", "-1", "1" * 41])
def test_invalid_sequence_numbers_are_refused(bad: str) -> None:
    with pytest.raises(MalformedRecordError):
        pad_sequence_number(bad)


def test_audit_item_is_keyed_by_payment_and_stream_position() -> None:
    event = event_from_record(_record("INSERT", new=_image(), seq="42"))
    item = audit_item(event, "42", expires_at=1_800_000_000)
    assert item["payment_id"] == {"S": "pay_1"}
    assert item["sk"] == {"S": "0" * 38 + "42"}
    assert item["event_id"] == {"S": event.id}
    assert item["type"] == {"S": "pulse.payment.created"}
    assert item["time"] == {"S": event.time}
    assert orjson.loads(item["event"]["S"]) == orjson.loads(event.to_json())
    assert item["expires_at"] == {"N": "1800000000"}
    # in the index of the account's events by time (webhook replays read it)
    assert item["account_id"] == {"S": "acct-1"}


def test_lease_items_are_read_in_kcl_layout() -> None:
    lease = lease_from_item(
        {
            "leaseKey": {"S": "shard-1"},
            "checkpoint": {"S": "SHARD_END"},
            "leaseOwner": {"S": "host-1"},
            "leaseCounter": {"N": "3"},
            "parentShardIds": {"L": [{"S": "shard-0"}]},
        }
    )
    assert (lease.checkpoint, lease.owner, lease.counter) == ("SHARD_END", "host-1", 3)
    assert lease.parent_shard_ids == ("shard-0",)
    bare = lease_from_item({"leaseKey": {"S": "shard-2"}})
    assert (bare.checkpoint, bare.counter, bare.parent_shard_ids) == (None, 0, ())


def test_iterator_age_is_the_largest_across_shards() -> None:
    ages = IteratorAges()
    assert ages.max() == 0.0
    ages.newest_read("a", created_epoch=100.0, now=102.5)
    ages.newest_read("b", created_epoch=100.0, now=100.5)
    assert ages.max() == 2.5
    ages.caught_up("a")
    assert ages.max() == 0.5
    ages.forget("b")
    assert ages.max() == 0.0


def test_iterator_age_per_shard_is_exported_until_the_shard_is_forgotten() -> None:
    def exported(shard: str) -> float | None:
        return REGISTRY.get_sample_value(
            "pulse_stream_shard_iterator_age_seconds", {"shard": shard}
        )

    ages = IteratorAges()
    ages.newest_read("shard-x", created_epoch=10.0, now=10.25)
    assert exported("shard-x") == 0.25
    ages.caught_up("shard-x")
    assert exported("shard-x") == 0.0
    ages.forget("shard-x")
    assert exported("shard-x") is None
