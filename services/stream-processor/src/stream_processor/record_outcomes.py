"""What becomes of a shard's records, counted and logged: an event, processed, or set aside.

- :meth:`RecordOutcomes.events` turns each record into its event
  (:class:`~stream_processor.effects.ProcessedEvent`); a record that can never become one
  (no image, no ``payment_id``, an amount that is not a number) is *malformed*: counted,
  logged, and sent to the failure queue at once (:meth:`~RecordOutcomes.events_or_set_aside`).
- :meth:`~RecordOutcomes.processed`: events whose effects all succeeded and are
  checkpointed — ``pulse_stream_records_processed_total``, the batch duration, the stage
  metrics, the shard's count in the health report, and one ``event processed`` line per
  event (at debug).
- :meth:`~RecordOutcomes.set_aside`: a record sent whole to the failure queue
  (:mod:`stream_processor.failures`) with the error, as the retry policy decided
  (:mod:`stream_processor.retry_policy`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from pulse.events import stable_event_id
from pulse.logging import event_context, get_logger
from stream_processor.effects import ProcessedEvent
from stream_processor.failures import failure_message
from stream_processor.metrics import (
    BATCH_DURATION,
    DEAD_LETTERS,
    FAILURES,
    RECORDS_PROCESSED,
    STAGE,
)
from stream_processor.records import MALFORMED_ERRORS
from stream_processor.retry_policy import MALFORMED

if TYPE_CHECKING:
    from stream_processor.failures import FailureQueue
    from stream_processor.retry_policy import SetAside
    from stream_processor.shard_health import ShardHealth

__all__ = ["RecordOutcomes"]

Malformed = tuple[dict[str, Any], Exception]  # a record and why it is no event


def _log() -> Any:
    # The reader's logger: these lines are the shard reader's, whichever module writes them.
    return get_logger("stream_processor.shard_reader")


def _event_fields(event_id: str, trace_id: str | None, payment_id: str | None) -> dict[str, str]:
    """The log fields :func:`~pulse.logging.event_context` would bind (None left out)."""
    fields = {"event_id": event_id}
    if trace_id is not None:
        fields["trace_id"] = trace_id
    if payment_id is not None:
        fields["payment_id"] = payment_id
    return fields


class RecordOutcomes:
    """The outcomes of one shard's records; ``failures`` is None where there is no queue
    (records set aside are then only logged), ``health`` where nothing reports them."""

    def __init__(
        self,
        *,
        shard_id: str,
        stream_arn: str,
        failures: FailureQueue | None,
        health: ShardHealth | None = None,
    ) -> None:
        self.shard_id = shard_id
        self._stream_arn = stream_arn
        self._failure_queue = failures
        self._health = health
        # Positions of this shard's malformed records already sent (few: one per poison record)
        self._malformed_sent: set[str] = set()

    def events(self, records: list[dict[str, Any]]) -> tuple[list[ProcessedEvent], list[Malformed]]:
        """The events of ``records``, and the records that can never become one."""
        processed: list[ProcessedEvent] = []
        malformed: list[Malformed] = []
        for record in records:
            STAGE.received.inc()
            try:
                processed.append(ProcessedEvent.of_record(record))
            except MALFORMED_ERRORS as exc:
                # Retrying cannot fix a record's content: it goes to the failure queue now.
                FAILURES.labels("malformed").inc()
                _log().error(
                    "malformed stream record",
                    shard_id=self.shard_id,
                    sequence_number=record.get("dynamodb", {}).get("SequenceNumber"),
                    error=f"{type(exc).__name__}: {exc}",
                )
                malformed.append((record, exc))
        return processed, malformed

    async def events_or_set_aside(self, records: list[dict[str, Any]]) -> list[ProcessedEvent]:
        """The events of ``records``; records that can never be one go to the failure queue,
        once: a batch read again after its effects failed does not send them again."""
        processed, malformed = self.events(records)
        for record, error in malformed:
            position = str(record.get("dynamodb", {}).get("SequenceNumber", ""))
            if position and position in self._malformed_sent:
                continue
            await self.set_aside(record, error, MALFORMED)
            if position:
                self._malformed_sent.add(position)
        return processed

    def processed(self, processed: list[ProcessedEvent], started: float) -> None:
        """Metrics and log lines of events whose effects all succeeded and are checkpointed;
        ``started`` is the batch's ``time.perf_counter()`` when it was read."""
        elapsed = time.perf_counter() - started
        BATCH_DURATION.observe(elapsed)
        now = time.time()
        by_name = Counter(p.event_name for p in processed)
        for name, count in by_name.items():
            RECORDS_PROCESSED.labels(name).inc(count)
        STAGE.observe("success", elapsed, len(processed))
        if self._health is not None:
            self._health.applied(self.shard_id, len(processed))
        for p in processed:
            if p.created_epoch is not None:
                STAGE.observe_age(now - p.created_epoch)
        # One logger for the batch, the event's ids passed as fields (what event_context
        # would bind): per record, only the line itself is left — nothing at all when the
        # level is above debug.
        log = _log()
        if not log.is_enabled_for(logging.DEBUG):
            return
        for p in processed:
            event = p.event
            log.debug(
                "event processed",
                type=event.type,
                sequence_number=p.sequence_number,
                **_event_fields(event.id, event.trace_id, event.subject),
                shard_id=self.shard_id,
            )

    async def set_aside(
        self, record: dict[str, Any], error: BaseException, verdict: SetAside
    ) -> None:
        """Send ``record`` with ``error`` to the failure queue (logged only if there is none);
        :class:`~pulse.errors.RetryableError` if the queue refused it."""
        reason = verdict.reason
        body = failure_message(
            record,
            error,
            reason=reason,
            shard_id=self.shard_id,
            stream_arn=self._stream_arn,
            attempts=verdict.attempts,
        )
        event_id = record.get("eventID")
        stable_id = stable_event_id(str(event_id)) if event_id else None
        if self._failure_queue is not None:
            await asyncio.to_thread(
                self._failure_queue.send, body, reason=reason, event_id=stable_id
            )
        DEAD_LETTERS.labels(reason).inc()
        STAGE.observe("dlq", 0.0)
        with event_context(stable_id, None, shard_id=self.shard_id):
            _log().error(
                "stream record sent to the failure queue"
                if self._failure_queue is not None
                else "stream record skipped (no failure queue)",
                reason=reason,
                sequence_number=record.get("dynamodb", {}).get("SequenceNumber"),
                error=f"{type(error).__name__}: {error}",
            )
