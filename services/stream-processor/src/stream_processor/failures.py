"""The on-failure destination: stream records that could not be applied, whole, with the error.

Lambda's on-failure destination receives only a record's shard and sequence numbers;
here the SQS queue ``{resource prefix}stream-failures`` receives the **whole record** (its
images included), the error, and where it came from, so it can be inspected and replayed.
The queue belongs to the shared topology (:class:`pulse.topology.StreamFailureNames`): the
processor only looks up its URL, and waits at start until it exists. SQS errors are raised
as their Pulse errors (:mod:`pulse.aws_errors`).
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import orjson

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.events import stable_event_id

if TYPE_CHECKING:
    from stream_processor.retry_policy import FailureReason

__all__ = [
    "FAILURE_REASONS",
    "MAX_BODY_BYTES",
    "FailureQueue",
    "failure_message",
]

FAILURE_REASONS: Final[tuple[FailureReason, ...]] = (
    "malformed",  # the record can never become an event: sent at once
    "retries_exhausted",  # its effects kept failing for the configured retries
    "record_too_old",  # its effects failed and it is older than the maximum record age
)
# SQS takes at most 256 KiB per message; leave room for the attributes.
MAX_BODY_BYTES: Final = 250 * 1024
_IMAGES: Final = ("NewImage", "OldImage")


def _default(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def failure_message(
    record: dict[str, Any],
    error: BaseException,
    *,
    reason: str,
    shard_id: str,
    stream_arn: str,
    attempts: int,
    now: float | None = None,
) -> bytes:
    """The JSON body sent for a failed record (binary attributes as base64).

    A record too large for an SQS message loses its images (``truncated`` lists them).
    """
    event_id = record.get("eventID")
    failed_at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    body = {
        "reason": reason,
        "error": {"type": type(error).__name__, "message": str(error)},
        "attempts": attempts,
        "failed_at": failed_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "stream_arn": stream_arn,
        "shard_id": shard_id,
        "sequence_number": record.get("dynamodb", {}).get("SequenceNumber"),
        "event_id": stable_event_id(str(event_id)) if event_id else None,
        "record": record,
    }
    encoded = orjson.dumps(body, default=_default)
    if len(encoded) <= MAX_BODY_BYTES:
        return encoded
    # Too large for SQS (images of items near DynamoDB's 400 KB): keep the record's keys and
    # stream position, drop the images — the item can still be read from the table.
    dynamodb = {k: v for k, v in record.get("dynamodb", {}).items() if k not in _IMAGES}
    body["record"] = {**record, "dynamodb": dynamodb}
    body["truncated"] = [i for i in _IMAGES if i in record.get("dynamodb", {})]
    return orjson.dumps(body, default=_default)


class FailureQueue:
    """Sends failed records to the failure queue (declared in the topology, never created here)."""

    def __init__(self, sqs: Any, queue_name: str) -> None:
        self._sqs = sqs
        self.queue_name = queue_name
        self._url: str | None = None

    def url(self) -> str:
        """The queue's URL (looked up once); :class:`~pulse.errors.ResourceNotFoundError` (a
        :class:`~pulse.errors.RetryableError`) while it does not exist."""
        if self._url is None:
            try:
                response = self._sqs.get_queue_url(QueueName=self.queue_name)
            except AWS_ERRORS as exc:
                what = (
                    f"failure queue {self.queue_name} not found (apply the topology)"
                    if classify_aws_error(exc) is AwsErrorKind.NOT_FOUND
                    else f"GetQueueUrl {self.queue_name}"
                )
                raise as_pulse_error(exc, what, delay=5.0) from exc
            self._url = str(response["QueueUrl"])
        return self._url

    def send(self, body: bytes, *, reason: str, event_id: str | None) -> None:
        """Send one failure message; :class:`~pulse.errors.RetryableError` if SQS failed (a
        :class:`~pulse.errors.PermanentError` if it refused the message)."""
        attributes = {"reason": {"DataType": "String", "StringValue": reason}}
        if event_id:
            attributes["event_id"] = {"DataType": "String", "StringValue": event_id}
        try:
            self._sqs.send_message(
                QueueUrl=self.url(), MessageBody=body.decode(), MessageAttributes=attributes
            )
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"SendMessage {self.queue_name}", delay=1.0) from exc
