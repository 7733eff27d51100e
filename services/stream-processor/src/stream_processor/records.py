"""Stream records to CloudEvents, and the shapes each effect needs. Pure: no I/O.

A record of the payments table's stream (``NEW_AND_OLD_IMAGES``) becomes one event:

- ``INSERT`` → ``pulse.payment.created``; data = the new image's public payment;
- ``MODIFY`` → ``pulse.payment.updated``; data = the new image's payment plus ``old_status``
  and ``status`` (emitted even when the status did not change);
- ``REMOVE`` → ``pulse.payment.deleted``; data = the old image's payment.

The id is :func:`~pulse.events.stable_event_id` of the record's ``eventID``, so a record
read twice (after a crash, or a retried batch) yields the same event and every receiver
can deduplicate.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from boto3.dynamodb.types import DYNAMODB_CONTEXT, Binary

from pulse.audit_positions import position_attributes
from pulse.channels import PAYMENTS, account_channel, is_valid_channel
from pulse.errors import PermanentError
from pulse.events import (
    PAYMENT_CREATED,
    PAYMENT_DELETED,
    PAYMENT_UPDATED,
    CloudEvent,
    new_event,
    stable_event_id,
)
from pulse.payments import payment_from_item

if TYPE_CHECKING:
    from collections.abc import Callable

    from pulse.channels import ChannelPosition

__all__ = [
    "EVENT_NAMES",
    "MALFORMED_ERRORS",
    "SNS_TYPES",
    "SOURCE",
    "MalformedRecordError",
    "account_channel_of",
    "audit_item",
    "channels_for",
    "event_from_record",
    "image_values",
    "pad_sequence_number",
    "record_time",
    "sns_attributes",
]

SOURCE: Final = "/pulse/stream-processor"
EVENT_NAMES: Final = ("INSERT", "MODIFY", "REMOVE")
# The ``type`` message attribute the SNS subscriptions filter on.
SNS_TYPES: Final = {
    PAYMENT_CREATED: "created",
    PAYMENT_UPDATED: "updated",
    PAYMENT_DELETED: "deleted",
}
SEQUENCE_DIGITS: Final = 40


class MalformedRecordError(PermanentError):
    """A stream record this processor cannot turn into an event (never will, on retry)."""


# What turning a record into its event raises for a record that can never become one (a
# number that is no number, a missing or mistyped field): retrying cannot fix its content.
MALFORMED_ERRORS: Final = (MalformedRecordError, ArithmeticError, ValueError, KeyError, TypeError)


def _record_time(value: Any) -> datetime | None:
    """``ApproximateCreationDateTime``: a datetime from boto3, epoch seconds in raw JSON,
    ISO-8601 text in a failure message (:mod:`~stream_processor.failures`)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float | Decimal):
        return datetime.fromtimestamp(float(value), UTC)
    return None


def record_time(record: dict[str, Any]) -> datetime | None:
    """When the change happened, as far as the stream knows (second precision on AWS)."""
    return _record_time(record.get("dynamodb", {}).get("ApproximateCreationDateTime"))


def _bytes(raw: bytes | str) -> bytes:
    return base64.b64decode(raw) if isinstance(raw, str) else raw


_DECIMAL = DYNAMODB_CONTEXT.create_decimal


def _attribute_value(value: dict[str, Any]) -> Any:
    """One DynamoDB attribute value as boto3's ``TypeDeserializer`` gives it (first key)."""
    for kind, raw in value.items():
        convert = _CONVERTERS.get(kind)
        if convert is None:
            raise TypeError(f"Dynamodb type {kind} is not supported")
        return convert(raw)
    raise TypeError("Value must be a nonempty dictionary whose key is a valid dynamodb type.")


_CONVERTERS: Final[dict[str, Callable[[Any], Any]]] = {
    "S": lambda raw: raw,
    "N": _DECIMAL,
    "M": lambda raw: {k: _attribute_value(v) for k, v in raw.items()},
    "L": lambda raw: [_attribute_value(v) for v in raw],
    "BOOL": lambda raw: raw,
    "NULL": lambda _raw: None,
    "SS": set,
    "NS": lambda raw: {_DECIMAL(v) for v in raw},
    "B": lambda raw: Binary(_bytes(raw)),
    "BS": lambda raw: {Binary(_bytes(v)) for v in raw},
}


def image_values(image: dict[str, Any]) -> dict[str, Any]:
    """A stream image (``{"attr": {"S": …}}``) as plain Python values: what boto3's
    ``TypeDeserializer`` returns (Decimal numbers, sets, ``Binary``) in a fraction of its
    time — it runs for every record read. Binary values may be bytes (botocore's parser)
    or base64 text (the wire form, see :mod:`~stream_processor.get_records`)."""
    return {name: _attribute_value(value) for name, value in image.items()}


def _image(record: dict[str, Any], which: str) -> dict[str, Any]:
    image = record.get("dynamodb", {}).get(which)
    if not image:
        raise MalformedRecordError(
            f"{record.get('eventName')} record {record.get('eventID')} has no {which}"
        )
    return image_values(image)


def event_from_record(record: dict[str, Any]) -> CloudEvent:
    """The CloudEvent of one stream record; raises :class:`MalformedRecordError`."""
    name = record.get("eventName")
    event_id = record.get("eventID")
    if not event_id:
        raise MalformedRecordError("stream record without eventID")
    if name == "INSERT":
        item = _image(record, "NewImage")
        event_type, data = PAYMENT_CREATED, payment_from_item(item)
    elif name == "MODIFY":
        item = _image(record, "NewImage")
        old = _image(record, "OldImage")
        event_type = PAYMENT_UPDATED
        data = {
            **payment_from_item(item),
            "old_status": old.get("status"),
            "status": item.get("status"),
        }
    elif name == "REMOVE":
        item = _image(record, "OldImage")
        event_type, data = PAYMENT_DELETED, payment_from_item(item)
    else:
        raise MalformedRecordError(f"record {event_id} has unknown eventName {name!r}")
    payment_id = item.get("payment_id")
    if not isinstance(payment_id, str) or not payment_id:
        raise MalformedRecordError(f"record {event_id} has no payment_id")
    traceparent = item.get("traceparent")
    return new_event(
        id=stable_event_id(str(event_id)),
        type=event_type,
        source=SOURCE,
        subject=payment_id,
        data=data,
        time=record_time(record),
        traceparent=traceparent if isinstance(traceparent, str) and traceparent else None,
    )


def _account_id(event: CloudEvent) -> str | None:
    account = event.data.get("account_id")
    return account if isinstance(account, str) and account else None


def account_channel_of(event: CloudEvent) -> str | None:
    """The payment's account channel; None if the event names no account or its id is not
    a valid channel name."""
    account = _account_id(event)
    if account is None or not is_valid_channel(account_channel(account)):
        return None
    return account_channel(account)


def channels_for(event: CloudEvent) -> list[str]:
    """``payments`` and the payment's account channel (left out if the id is not a valid name)."""
    account = account_channel_of(event)
    return [PAYMENTS] if account is None else [PAYMENTS, account]


def sns_attributes(event: CloudEvent) -> dict[str, dict[str, str]]:
    """The SNS MessageAttributes of ``event`` (String values; empty ones are left out)."""
    values = {
        "type": SNS_TYPES.get(event.type, event.type),
        "event_type": event.type,
        "event_id": event.id,
        "account_id": _account_id(event),
        "traceparent": event.traceparent,
    }
    return {
        name: {"DataType": "String", "StringValue": value}
        for name, value in values.items()
        if value
    }


def pad_sequence_number(sequence_number: str) -> str:
    """A stream sequence number left-padded to 40 digits, so strings sort as numbers do."""
    if not sequence_number.isdigit() or len(sequence_number) > SEQUENCE_DIGITS:
        raise MalformedRecordError(f"invalid sequence number {sequence_number!r}")
    return sequence_number.zfill(SEQUENCE_DIGITS)


def audit_item(
    event: CloudEvent,
    sequence_number: str,
    *,
    expires_at: int,
    event_json: bytes | None = None,
    position: ChannelPosition | None = None,
) -> dict[str, Any]:
    """The events-table row (attribute-value form) recording ``event``; its ``account_id``
    (when the event names one) puts it in the index of an account's events by time that
    webhook replays read (:data:`pulse.topology.AUDIT_ACCOUNT_INDEX`), and ``position`` —
    where the event is in its account channel — in the index of an account's events in
    channel order that the gateway recovers from (:mod:`pulse.audit_positions`).

    ``event_json``: ``event.to_json()``, if the caller made it already.
    """
    item = {
        "payment_id": {"S": event.subject or ""},
        "sk": {"S": pad_sequence_number(sequence_number)},
        "event_id": {"S": event.id},
        "type": {"S": event.type},
        "time": {"S": event.time},
        "event": {"S": (event.to_json() if event_json is None else event_json).decode()},
        "expires_at": {"N": str(expires_at)},
    }
    account = _account_id(event)
    if account is not None:
        item["account_id"] = {"S": account}
        if position is not None:
            item.update(position_attributes(position))
    return item
