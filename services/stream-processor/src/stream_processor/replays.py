"""Failed stream records, re-applied: the handler of the replay queue ``{prefix}stream-replays``.

``pulse dlq redrive stream-failures`` moves failure messages (:mod:`~stream_processor.failures`:
the whole record, the error) from the failure queue to the replay queue, which the processor
consumes with the shared SQS consumer (:mod:`pulse.consumer`). Each message's record becomes
its event again — the same event, its id derived from the record's ``eventID`` — and goes
through the same :class:`~stream_processor.effects.BatchEffects` as a record read from the
stream: channel appends and counters under their once-per-event guards, SNS (every
subscriber deduplicates on the event id), the audit row keyed by the sequence number. A
record replayed twice, or replayed although it was applied after all, changes nothing twice
(within ``PULSE_CHANNEL_GUARD_TTL_SECONDS`` of its first append).

The failure queue is the replay queue's dead-letter queue. A message that is no failure
record, or whose record can never become an event (malformed, or its images dropped for
size), is a :class:`~pulse.errors.PermanentError`: dead-lettered back there at once, with
the error. A record whose effects fail is retried with the consumer's backoff and, failing
on the last receive the queue allows (5), goes back there with its last error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from pulse.errors import PermanentError
from pulse.logging import event_context, get_logger
from stream_processor.effects import ProcessedEvent
from stream_processor.records import MALFORMED_ERRORS, MalformedRecordError

if TYPE_CHECKING:
    from pulse.consumer import SqsMessage
    from stream_processor.effects import BatchEffects

__all__ = ["FailureReplays", "failed_record"]


def _log() -> Any:
    return get_logger("stream_processor.replays")


def failed_record(body: bytes) -> dict[str, Any]:
    """The stream record a failure message carries; :class:`PermanentError` if it carries
    none."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PermanentError(f"not a stream failure message: {exc}") from exc
    record = message.get("record") if isinstance(message, dict) else None
    if not isinstance(record, dict):
        raise PermanentError("not a stream failure message: no record")
    return record


class FailureReplays:
    """Applies each replayed record through ``effects``, the stream's own."""

    def __init__(self, effects: BatchEffects) -> None:
        self._effects = effects

    async def handle(self, message: SqsMessage) -> None:
        record = failed_record(message.body)
        try:
            processed = ProcessedEvent.of_record(record)
        except MalformedRecordError:
            raise
        except MALFORMED_ERRORS as exc:
            raise MalformedRecordError(f"{type(exc).__name__}: {exc}") from exc
        event = processed.event
        with event_context(event.id, event.trace_id, payment_id=event.subject):
            await self._effects.apply([processed])
            _log().info(
                "stream record replayed", type=event.type, sequence_number=processed.sequence_number
            )
