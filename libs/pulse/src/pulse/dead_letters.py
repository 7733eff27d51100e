"""The dead-letter queues of a Pulse stack, what their messages say, and how one is sent back.
Pure: no I/O (the SQS calls are :mod:`pulse.dead_letter_sqs`'s).

The catalogue comes from the topology (:func:`pulse.topology.pulse_spec`), never a list of
names: every queue's dead-letter queue is one, and its *source* is the queue it serves —
where a redrive sends its messages. That makes ``{prefix}stream-failures`` the dead-letter
queue of ``{prefix}stream-replays`` (the stream processor re-applies what arrives there) and
``{prefix}stream-failures-dlq`` that of ``{prefix}stream-failures``.

A message is described by what dead-lettering recorded on it: the consumer's ``error``,
``source_queue`` and ``receive_count`` attributes (:mod:`pulse.consumer.dead_letter`), or,
on the failure queue, the stream processor's body (:mod:`stream_processor.failures`: the
record, the error, the attempts) — and both when a replayed record failed again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson

from pulse.errors import PermanentError
from pulse.topology import StreamFailureNames, pulse_spec

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from pulse.consumer.message import SqsMessage
    from pulse.settings import ResourceNames

__all__ = [
    "MOVE_TASK_UNSUPPORTED_CODES",
    "DeadLetter",
    "DeadLetterQueue",
    "QueueState",
    "UnknownQueueError",
    "dead_letter_queues",
    "describe",
    "find_queue",
    "format_age",
    "lacks_action",
    "oldest_age_seconds",
    "resend_entry",
    "state_table",
]

Role = Literal["dlq", "failures"]
Kind = Literal["event", "stream-failure", "raw"]

# What an endpoint answers for an action it does not have: AWS's query and JSON protocols,
# and the local emulator (moto's missing actions, see pulse_dev.aws_emulator).
MOVE_TASK_UNSUPPORTED_CODES: Final = frozenset(
    {"InvalidAction", "UnknownOperationException", "UnknownOperation", "NotImplemented"}
)
_NOT_IMPLEMENTED: Final = 501
_RAW_BODY_CHARS: Final = 4_000


@dataclass(frozen=True)
class DeadLetterQueue:
    """One dead-letter queue: ``label`` is its name without the resource prefix (what the
    ``pulse dlq`` commands take), ``source`` the queue a redrive sends its messages to."""

    name: str
    label: str
    source: str
    role: Role

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")

    @property
    def source_label(self) -> str:
        """The source's name without the resource prefix."""
        return self.source.removeprefix(self.name.removesuffix(self.label))


class UnknownQueueError(PermanentError):
    """A name that is none of the stack's dead-letter queues; the message lists them."""


def dead_letter_queues(names: ResourceNames) -> list[DeadLetterQueue]:
    """Every dead-letter queue of the topology, in its order, with the queue it serves."""
    failures = StreamFailureNames.from_prefix(names.prefix).queue
    return [
        DeadLetterQueue(
            name=queue.dlq_name,
            label=queue.dlq_name.removeprefix(names.prefix),
            source=queue.name,
            role="failures" if queue.dlq_name == failures else "dlq",
        )
        for queue in pulse_spec(names).queues
    ]


def find_queue(queues: Sequence[DeadLetterQueue], name: str) -> DeadLetterQueue:
    """The queue called ``name`` (its label or full name); :class:`UnknownQueueError` naming
    the known ones otherwise."""
    for queue in queues:
        if name in {queue.label, queue.name}:
            return queue
    known = ", ".join(queue.label for queue in queues)
    raise UnknownQueueError(f"unknown queue {name!r}; known: {known}")


def lacks_action(error: BaseException) -> bool:
    """Whether a failed AWS call means the endpoint does not have the action at all (an
    emulator without ``StartMessageMoveTask``), as opposed to failing at it."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in MOVE_TASK_UNSUPPORTED_CODES or status == _NOT_IMPLEMENTED


def resend_entry(message: SqsMessage, entry_id: str, *, fifo: bool) -> dict[str, Any]:
    """The ``SendMessageBatch`` entry sending ``message`` back to its source, unchanged.

    Its String, Number and Binary attributes go with it (the dead-lettering ones included:
    a message that fails again gets new ones). To a FIFO queue it keeps its group, and its
    deduplication id is derived from its id in the dead-letter queue: sent again after an
    interrupted redrive, within SQS's five-minute window, it is dropped as a duplicate.
    """
    entry: dict[str, Any] = {
        "Id": entry_id,
        "MessageBody": message.body.decode(),
        "MessageAttributes": _sendable(message.message_attributes),
    }
    if fifo:
        entry["MessageGroupId"] = message.attributes.get("MessageGroupId") or "dead-letter"
        entry["MessageDeduplicationId"] = redrive_deduplication_id(message.message_id)
    return entry


def redrive_deduplication_id(message_id: str) -> str:
    """A FIFO deduplication id fixed by the dead-letter message's id."""
    return hashlib.sha256(f"redrive:{message_id}".encode()).hexdigest()


def _sendable(attributes: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name, value in attributes.items():
        if not isinstance(value, dict) or "DataType" not in value:
            continue
        for field in ("StringValue", "BinaryValue"):
            if field in value:
                kept[name] = {"DataType": value["DataType"], field: value[field]}
                break
    return kept


def oldest_age_seconds(messages: Iterable[SqsMessage], now: datetime) -> float | None:
    """Seconds since the earliest ``SentTimestamp`` among ``messages`` (None: none had one)."""
    sent = [m.sent_at for m in messages if m.sent_at is not None]
    return max(0.0, (now - min(sent)).total_seconds()) if sent else None


@dataclass(frozen=True)
class QueueState:
    """A dead-letter queue's depth (visible), in-flight messages, and the age of the oldest
    message sampled (None when it is empty or none could be sampled)."""

    queue: DeadLetterQueue
    visible: int
    in_flight: int
    oldest_age_s: float | None


def format_age(seconds: float | None) -> str:
    """A wait as a person says it: ``-`` (unknown), ``42s``, ``3m 05s``, ``2h 07m``,
    ``3d 04h`` (a clock a little ahead reads as ``0s``, never negative)."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    minutes, secs = divmod(whole, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    if days:
        return f"{days}d {hrs:02d}h"
    if hours:
        return f"{hours}h {mins:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def state_table(states: Sequence[QueueState]) -> list[str]:
    """The lines of ``pulse dlq list``: a header, then one aligned row per queue."""
    rows = [("QUEUE", "ROLE", "REDRIVES TO", "DEPTH", "IN FLIGHT", "OLDEST")]
    rows += [
        (
            s.queue.label,
            s.queue.role,
            s.queue.source_label,
            str(s.visible),
            str(s.in_flight),
            format_age(s.oldest_age_s),
        )
        for s in states
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = {3, 4, 5}
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


@dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter queue, decoded for people.

    ``error`` is the last recorded error (the consumer's attribute, else the failure
    record's); ``first_error`` the failure record's when a replay failed again.
    ``receive_count`` is the receives before it was dead-lettered, as recorded (None when
    SQS's redrive policy moved it: it records nothing). ``body`` is the parsed JSON, or
    None when the body is not JSON (``raw`` holds it then).
    """

    message_id: str
    sent_at: datetime | None
    kind: Kind
    error: str | None
    first_error: str | None
    source_queue: str | None
    receive_count: int | None
    summary: str
    body: Any
    raw: str

    def to_json(self) -> dict[str, Any]:
        """What ``pulse dlq show --json`` prints for it."""
        return {
            "message_id": self.message_id,
            "sent_at": _iso(self.sent_at),
            "kind": self.kind,
            "error": self.error,
            "first_error": self.first_error,
            "source_queue": self.source_queue,
            "receive_count": self.receive_count,
            "summary": self.summary,
            "body": self.body if self.body is not None else self.raw,
        }

    def lines(self, now: datetime) -> list[str]:
        """The text ``pulse dlq show`` prints for it: a header, the error, the body."""
        sent = "unknown" if self.sent_at is None else _iso(self.sent_at)
        age = None if self.sent_at is None else (now - self.sent_at).total_seconds()
        ago = "" if age is None else f" ({format_age(age)} ago)"
        tries = "not recorded" if self.receive_count is None else str(self.receive_count)
        out = [
            f"message {self.message_id}",
            f"  sent:     {sent}{ago}",
            f"  what:     {self.summary}",
            f"  error:    {self.error or 'not recorded (moved by the queue redrive policy)'}",
        ]
        if self.first_error:
            out.append(f"  first:    {self.first_error}")
        if self.source_queue:
            out.append(f"  from:     {self.source_queue}")
        out.append(f"  receives: {tries}")
        if self.body is not None:
            pretty = orjson.dumps(self.body, option=orjson.OPT_INDENT_2)
            out += ["  " + line for line in pretty.decode().splitlines()]
        else:
            raw = self.raw
            if len(raw) > _RAW_BODY_CHARS:
                raw = f"{raw[:_RAW_BODY_CHARS]}… ({len(self.raw) - _RAW_BODY_CHARS} more chars)"
            out.append(f"  body:     {raw!r}")
        return out


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe(message: SqsMessage) -> DeadLetter:
    """``message`` as :class:`DeadLetter`: its kind, recorded error and a one-line summary."""
    raw = message.body.decode(errors="replace")
    try:
        body: Any = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        body = None
    attribute_error = message.string_attribute("error")
    count = message.string_attribute("receive_count")
    kind: Kind = "raw"
    summary = "not JSON" if body is None else "JSON, not a CloudEvent"
    failure_error: str | None = None
    if isinstance(body, dict) and isinstance(body.get("record"), dict) and "reason" in body:
        kind = "stream-failure"
        summary, failure_error = _failure_summary(body)
    elif isinstance(body, dict) and body.get("specversion") and body.get("type"):
        kind = "event"
        summary = f"{body.get('type')} {body.get('id')} (subject {body.get('subject')})"
    error = attribute_error or failure_error
    return DeadLetter(
        message_id=message.message_id,
        sent_at=message.sent_at,
        kind=kind,
        error=error,
        first_error=failure_error if attribute_error and failure_error else None,
        source_queue=message.string_attribute("source_queue"),
        receive_count=int(count) if count is not None and count.isdigit() else None,
        summary=summary,
        body=body,
        raw=raw,
    )


def _failure_summary(body: dict[str, Any]) -> tuple[str, str]:
    """The summary of a stream-failure record, and the error it recorded."""
    record = body["record"]
    dynamodb = record.get("dynamodb") or {}
    image = dynamodb.get("NewImage") or dynamodb.get("OldImage") or dynamodb.get("Keys") or {}
    payment = (image.get("payment_id") or {}).get("S", "?")
    summary = (
        f"stream record {record.get('eventName')} of payment {payment} "
        f"(sequence {body.get('sequence_number')}, shard {body.get('shard_id')}), "
        f"{body.get('reason')} after {body.get('attempts')} attempt(s)"
    )
    if body.get("truncated"):
        summary += f"; images dropped ({', '.join(body['truncated'])}): cannot be replayed"
    error = body.get("error") or {}
    return summary, f"{error.get('type')}: {error.get('message')} (at {body.get('failed_at')})"
