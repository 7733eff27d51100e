"""Reads one shard from its checkpoint to its end, applying and checkpointing each batch.

A batch (one GetRecords result) is published live first — Redis channels and counters, the
hot path users see — and then sent on to SNS and the audit table. Those slower writes run in
the background while the next batch is read and published live, up to
``max_batches_in_flight`` batches at a time; checkpoints follow strictly in stream order,
each only once every effect of its batch and of all batches before it succeeded. Live
publishes of consecutive batches never overlap, so one item's events reach Redis in order.

If any effect fails, nothing after the last good batch is checkpointed: the batches still in
flight are dropped, the iterator is re-opened after the stored checkpoint and the same
records are read and applied again (each effect is idempotent), one batch at a time until
the failing batch succeeds or is set aside (retries, then the failure queue). An expired
iterator is re-opened the same way, once the batches in flight are checkpointed. When
GetRecords returns no ``NextShardIterator`` the shard is closed and fully read: it is
checkpointed ``SHARD_END`` so its children may start.

On shutdown (``stopping`` set) the batches already read are finished — effects and
checkpoints — and no further read starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pulse.errors import RetryableError
from pulse.events import stable_event_id
from pulse.logging import event_context, get_logger
from pulse.service import sleep_unless_stopped
from stream_processor.effects import ProcessedEvent
from stream_processor.failures import failure_message
from stream_processor.leases import LeaseLostError
from stream_processor.lineage import SHARD_END, iterator_start, last_sequence_number
from stream_processor.metrics import (
    BATCH_DURATION,
    CHECKPOINTS,
    DEAD_LETTERS,
    FAILURES,
    RECORDS_PROCESSED,
    STAGE,
    IteratorAges,
)
from stream_processor.records import MalformedRecordError, event_from_record, record_time

if TYPE_CHECKING:
    from stream_processor.effects import BatchEffects
    from stream_processor.failures import FailureQueue
    from stream_processor.leases import HeldLease, LeaseTable
    from stream_processor.settings import StreamProcessorSettings

__all__ = ["ShardOutcome", "ShardReader"]


def _log() -> Any:
    return get_logger("stream_processor.shard_reader")


class ShardOutcome(enum.Enum):
    ENDED = "ended"  # read to SHARD_END and checkpointed so
    STOPPED = "stopped"  # the process is shutting down
    LOST = "lost"  # another worker owns the shard now


def _event_fields(event_id: str, trace_id: str | None, payment_id: str | None) -> dict[str, str]:
    """The log fields :func:`~pulse.logging.event_context` would bind (None left out)."""
    fields = {"event_id": event_id}
    if trace_id is not None:
        fields["trace_id"] = trace_id
    if payment_id is not None:
        fields["payment_id"] = payment_id
    return fields


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


@dataclass
class _InFlight:
    """A batch published live whose SNS and audit writes and checkpoint (``task``, see
    :meth:`ShardReader._finish`) may still be running."""

    processed: list[ProcessedEvent]
    count: int  # records read, malformed ones included
    checkpoint: str | None  # the batch's last sequence number
    started: float
    task: asyncio.Task[None] | None = None
    propagated: bool = False  # its SNS and audit writes succeeded
    settled: bool = False  # counted out of the in-progress gauge
    next: _InFlight | None = None  # the batch read after it


class _BatchFailedError(Exception):
    """An effect of a batch failed (``cause``); the batch holds ``count`` records."""

    def __init__(self, cause: Exception, count: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.count = count


def _consume_outcome(task: asyncio.Task[Any]) -> None:
    """Retrieve a dropped task's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()


class ShardReader:
    """One shard's read loop; :meth:`run` returns how it ended."""

    def __init__(
        self,
        *,
        lease: HeldLease,
        stream_arn: str,
        streams: Any,
        leases: LeaseTable,
        effects: BatchEffects,
        ages: IteratorAges,
        settings: StreamProcessorSettings,
        stopping: asyncio.Event,
        failures: FailureQueue | None = None,
    ) -> None:
        self.shard_id = lease.shard_id
        self.checkpoint = lease.checkpoint
        self._lease = lease
        self._stream_arn = stream_arn
        self._streams = streams
        self._leases = leases
        self._effects = effects
        self._ages = ages
        self._settings = settings
        self._stopping = stopping
        self._failure_queue = failures
        self._failures = 0  # consecutive failed reads or batches (the backoff's exponent)
        self._retries = 0  # consecutive failed attempts of the batch at the checkpoint
        self._in_flight: deque[_InFlight] = deque()  # oldest first
        # A GetRecords already started for the iterator that follows the batch being applied.
        self._ahead: tuple[str, asyncio.Task[dict[str, Any] | None]] | None = None

    async def run(self) -> ShardOutcome:
        try:
            return await self._read()
        except LeaseLostError:
            return self._lost()
        finally:
            self._cancel_read_ahead()
            self._drop_in_flight()  # nothing is left after a clean end or stop

    async def _read(self) -> ShardOutcome:
        iterator: str | None = None
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if self._lease.lost:
                raise LeaseLostError(f"lease {self.shard_id} was lost")
            read_started = loop.time()
            try:
                step = await self._step(iterator)
            except LeaseLostError:
                raise
            except Exception as exc:
                iterator = None
                self._cancel_read_ahead()
                self._drop_in_flight()
                if isinstance(exc, _BatchFailedError):
                    await self._batch_failed(exc.cause, exc.count)
                else:
                    await self._batch_failed(exc, 0)
                continue
            if step is None:  # the read failed; re-open the iterator
                iterator = None
                continue
            count, iterator = step
            if iterator is None:
                _log().info("shard ended", shard_id=self.shard_id)
                return ShardOutcome.ENDED
            self._failures = 0
            self._retries = 0
            if count < self._settings.batch_size:
                # The interval is a period, as Lambda's four polls a second: time spent
                # applying the batch counts towards it.
                elapsed = loop.time() - read_started
                await self._pause(max(self._settings.poll_interval_seconds - elapsed, 0.0))
        try:
            await self._commit(keep=0)
        except _BatchFailedError as exc:
            _log().warning(
                "batch failed while stopping; the next owner reads it again",
                shard_id=self.shard_id,
                checkpoint=self.checkpoint,
                error=f"{type(exc.cause).__name__}: {exc.cause}",
            )
        return ShardOutcome.STOPPED

    async def _step(self, iterator: str | None) -> tuple[int, str | None] | None:
        """Read and apply one batch: (records read, next iterator), or None if the read failed.

        The next iterator is None once the shard ended (and is checkpointed ``SHARD_END``).
        """
        if iterator is None:
            # A (re-)opened iterator starts after the checkpoint: bring the checkpoint level
            # with what was read so far, or the same records would be applied twice.
            await self._commit(keep=0)
        response = await self._read_batch(iterator)
        if response is None:
            return None
        records: list[dict[str, Any]] = response.get("Records", [])
        next_iterator: str | None = response.get("NextShardIterator")
        if next_iterator is not None and not self._retries:
            if len(records) >= self._settings.batch_size:
                # Catching up: the next read runs while this batch is applied.
                self._read_ahead(next_iterator)
            await self._submit(records)
            return len(records), next_iterator
        # The shard's last batch, or a retry: one batch at a time, start to end.
        await self._commit(keep=0)
        try:
            await self._settle(records, ended=next_iterator is None)
        except LeaseLostError:
            raise
        except Exception as exc:
            raise _BatchFailedError(exc, len(records)) from exc
        return len(records), next_iterator

    # -- reading ------------------------------------------------------------------------
    async def _read_batch(self, iterator: str | None) -> dict[str, Any] | None:
        """The GetRecords result at ``iterator``: read ahead already, or read now."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead_iterator, task = ahead
            if ahead_iterator == iterator:
                return await task
            task.cancel()
            task.add_done_callback(_consume_outcome)
        return await self._get_records(iterator)

    def _read_ahead(self, iterator: str) -> None:
        self._cancel_read_ahead()
        task = asyncio.create_task(self._get_records(iterator), name=f"read {self.shard_id}")
        self._ahead = (iterator, task)

    def _cancel_read_ahead(self) -> None:
        if self._ahead is not None:
            _iterator, task = self._ahead
            task.cancel()
            task.add_done_callback(_consume_outcome)
            self._ahead = None

    async def _get_records(self, iterator: str | None) -> dict[str, Any] | None:
        """One GetRecords result (opening an iterator first if needed); None if it failed."""
        try:
            if iterator is None:
                iterator = await self._open_iterator()
            response: dict[str, Any] = await asyncio.to_thread(
                self._streams.get_records, ShardIterator=iterator, Limit=self._settings.batch_size
            )
        except (ClientError, BotoCoreError) as exc:
            await self._read_failed(exc)
            return None
        self._note_age(response.get("Records", []))
        return response

    async def _open_iterator(self) -> str:
        start = iterator_start(self.checkpoint)
        response = await asyncio.to_thread(
            self._streams.get_shard_iterator, **start.request(self._stream_arn, self.shard_id)
        )
        _log().debug(
            "iterator opened",
            shard_id=self.shard_id,
            iterator_type=start.iterator_type,
            checkpoint=self.checkpoint,
        )
        return str(response["ShardIterator"])

    async def _read_failed(self, exc: Exception) -> None:
        code = _error_code(exc)
        if code == "ExpiredIteratorException":
            FAILURES.labels("iterator_expired").inc()
            _log().info("iterator expired; re-opening from checkpoint", shard_id=self.shard_id)
            return
        if code == "TrimmedDataAccessException":
            # The checkpoint is older than the stream's retention: those records are gone.
            FAILURES.labels("trimmed").inc()
            _log().error(
                "checkpoint trimmed from the stream; resuming at the trim horizon",
                shard_id=self.shard_id,
                checkpoint=self.checkpoint,
            )
            self.checkpoint = None
            return
        FAILURES.labels("read").inc()
        _log().warning("read failed", shard_id=self.shard_id, error=str(exc), code=code)
        await self._backoff(None)

    def _note_age(self, records: list[dict[str, Any]]) -> None:
        newest = record_time(records[-1]) if records else None
        if newest is None:
            self._ages.caught_up(self.shard_id)
        else:
            self._ages.newest_read(self.shard_id, newest.timestamp())

    # -- applying -----------------------------------------------------------------------
    def _events(
        self, records: list[dict[str, Any]]
    ) -> tuple[list[ProcessedEvent], list[tuple[dict[str, Any], Exception]]]:
        """The events of ``records``, and the records that can never become one."""
        processed: list[ProcessedEvent] = []
        malformed: list[tuple[dict[str, Any], Exception]] = []
        for record in records:
            STAGE.received.inc()
            sequence_number = str(record.get("dynamodb", {}).get("SequenceNumber", ""))
            try:
                event = event_from_record(record)
            except (MalformedRecordError, ArithmeticError, ValueError, KeyError, TypeError) as exc:
                # Retrying cannot fix a record's content: it goes to the failure queue now.
                FAILURES.labels("malformed").inc()
                _log().error(
                    "malformed stream record",
                    shard_id=self.shard_id,
                    sequence_number=sequence_number,
                    error=f"{type(exc).__name__}: {exc}",
                )
                malformed.append((record, exc))
                continue
            created = record_time(record)
            processed.append(
                ProcessedEvent(
                    event,
                    sequence_number,
                    str(record.get("eventName")),
                    created.timestamp() if created else None,
                )
            )
        return processed, malformed

    async def _settle(self, records: list[dict[str, Any]], *, ended: bool) -> None:
        """Apply the batch; once it failed past the retry budget, record by record."""
        try:
            await self._apply(records, ended=ended)
        except LeaseLostError:
            raise
        except Exception:
            reason = self._give_up_reason(records)
            if reason is None:
                raise
            await self._isolate(records, reason, ended=ended)

    async def _apply(self, records: list[dict[str, Any]], *, ended: bool) -> None:
        """Apply and checkpoint ``records``; then ``SHARD_END`` if the shard has ended."""
        if records:
            await self._process(records)
        if ended:
            await self._store_checkpoint(SHARD_END)

    async def _process(self, records: list[dict[str, Any]]) -> None:
        """Apply every effect of ``records`` and checkpoint them, before returning."""
        started = time.perf_counter()
        processed = await self._dead_letter_malformed(records)
        STAGE.in_progress.inc(len(processed))
        try:
            await self._effects.apply(processed)
            checkpoint = last_sequence_number(records)
            if checkpoint is not None:
                await self._store_checkpoint(checkpoint)
        except BaseException:
            STAGE.observe("retry", time.perf_counter() - started, len(processed))
            raise
        finally:
            STAGE.in_progress.dec(len(processed))
        self._count_done(processed, started)

    async def _submit(self, records: list[dict[str, Any]]) -> None:
        """Publish ``records`` live and start finishing them (:meth:`_finish`) in the background.

        Waits for the oldest batch in flight when ``max_batches_in_flight`` are. If the live
        publish fails, the batches before it are still finished and checkpointed first.
        """
        if records:
            started = time.perf_counter()
            processed = await self._dead_letter_malformed(records)
            STAGE.in_progress.inc(len(processed))
            batch = _InFlight(processed, len(records), last_sequence_number(records), started)
            try:
                await self._effects.publish_live(processed)
            except Exception as exc:
                self._settle_metrics(batch, succeeded=False)
                await self._commit(keep=0)
                raise _BatchFailedError(exc, len(records)) from exc
            previous = self._in_flight[-1].task if self._in_flight else None
            if self._in_flight:
                self._in_flight[-1].next = batch
            batch.task = asyncio.create_task(
                self._finish(batch, previous), name=f"finish batch of {self.shard_id}"
            )
            self._in_flight.append(batch)
        await self._commit(keep=self._settings.max_batches_in_flight - 1)

    async def _finish(self, batch: _InFlight, previous: asyncio.Task[None] | None) -> None:
        """SNS and audit writes of ``batch``; then, once the batch before it is checkpointed
        (``previous``: its own ``_finish``), its checkpoint. A failure of the batch before
        fails this one too: the checkpoint never passes a batch whose effects failed.

        When the next batch's writes are already done, its checkpoint (written right after,
        in its own ``_finish``) covers this one too, and this one's is not written: while a
        shard catches up, checkpoint writes do not queue one behind the other.
        """
        await self._effects.propagate(batch.processed)
        batch.propagated = True
        if previous is not None:
            await previous
        covered = batch.next is not None and batch.next.propagated
        if batch.checkpoint is not None and not covered:
            await self._store_checkpoint(batch.checkpoint)
        self._settle_metrics(batch, succeeded=True)

    async def _commit(self, *, keep: int) -> None:
        """Take finished batches off the front; wait until at most ``keep`` are in flight.

        :class:`_BatchFailedError` if the oldest batch failed (it stays in flight for the
        caller to drop), :class:`LeaseLostError` if the lease was taken.
        """
        while self._in_flight:
            batch = self._in_flight[0]
            assert batch.task is not None  # set before the batch is queued
            if len(self._in_flight) <= keep and not batch.task.done():
                return
            try:
                await batch.task
            except LeaseLostError:
                raise
            except Exception as exc:
                raise _BatchFailedError(exc, batch.count) from exc
            self._in_flight.popleft()

    def _drop_in_flight(self) -> None:
        """Give up on the batches in flight (read again from the checkpoint, if at all)."""
        while self._in_flight:
            batch = self._in_flight.popleft()
            if batch.task is not None:
                batch.task.cancel()
                batch.task.add_done_callback(_consume_outcome)
            self._settle_metrics(batch, succeeded=False)

    def _settle_metrics(self, batch: _InFlight, *, succeeded: bool) -> None:
        """Count ``batch`` out of the stage's in-progress gauge, once, as done or retried."""
        if batch.settled:
            return
        batch.settled = True
        STAGE.in_progress.dec(len(batch.processed))
        if succeeded:
            self._count_done(batch.processed, batch.started)
        else:
            STAGE.observe("retry", time.perf_counter() - batch.started, len(batch.processed))

    async def _dead_letter_malformed(self, records: list[dict[str, Any]]) -> list[ProcessedEvent]:
        """The events of ``records``; records that can never be one go to the failure queue."""
        processed, malformed = self._events(records)
        for record, error in malformed:
            await self._dead_letter(record, error, reason="malformed", attempts=1)
        return processed

    def _count_done(self, processed: list[ProcessedEvent], started: float) -> None:
        """Metrics and log lines of events whose effects all succeeded and are checkpointed."""
        elapsed = time.perf_counter() - started
        BATCH_DURATION.observe(elapsed)
        now = time.time()
        by_name = Counter(p.event_name for p in processed)
        for name, count in by_name.items():
            RECORDS_PROCESSED.labels(name).inc(count)
        STAGE.observe("success", elapsed, len(processed))
        for p in processed:
            if p.created_epoch is not None:
                STAGE.observe_age(now - p.created_epoch)
        # One logger for the batch, the event's ids passed as fields (what event_context
        # would bind): per record, only the line itself is left — nothing at all when the
        # level is above info.
        log = _log()
        if not log.is_enabled_for(logging.INFO):
            return
        for p in processed:
            event = p.event
            log.info(
                "event processed",
                type=event.type,
                sequence_number=p.sequence_number,
                **_event_fields(event.id, event.trace_id, event.subject),
                shard_id=self.shard_id,
            )

    def _give_up_reason(self, records: list[dict[str, Any]]) -> str | None:
        """Why a failed batch is not retried as a whole any more (None: retry it)."""
        if self._retries >= self._settings.max_retries:
            return "retries_exhausted"
        oldest = min(
            (t.timestamp() for r in records if (t := record_time(r)) is not None), default=None
        )
        if oldest is not None and time.time() - oldest > self._settings.max_record_age_seconds:
            return "record_too_old"
        return None

    async def _isolate(self, records: list[dict[str, Any]], reason: str, *, ended: bool) -> None:
        """Apply a batch that kept failing one record at a time; a record that fails alone
        goes, whole, to the failure queue. Each record is checkpointed when done, so the
        shard moves on past the failure and never past a record whose effects failed."""
        _log().warning(
            "batch keeps failing; applying its records one by one",
            shard_id=self.shard_id,
            records=len(records),
            reason=reason,
            attempts=self._retries + 1,
        )
        for record in records:
            try:
                await self._process([record])
            except LeaseLostError:
                raise
            except Exception as exc:
                await self._dead_letter(record, exc, reason=reason, attempts=self._retries + 2)
                sequence_number = record.get("dynamodb", {}).get("SequenceNumber")
                if sequence_number is not None:
                    await self._store_checkpoint(str(sequence_number))
        if ended:
            await self._store_checkpoint(SHARD_END)

    async def _dead_letter(
        self, record: dict[str, Any], error: BaseException, *, reason: str, attempts: int
    ) -> None:
        """Send ``record`` with ``error`` to the failure queue (logged only if there is none)."""
        body = failure_message(
            record,
            error,
            reason=reason,
            shard_id=self.shard_id,
            stream_arn=self._stream_arn,
            attempts=attempts,
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

    async def _store_checkpoint(self, checkpoint: str) -> None:
        """Conditional on our owner and lease counter: :class:`LeaseLostError` if taken."""
        async with self._lease.lock:
            if self._lease.lost:
                raise LeaseLostError(f"lease {self.shard_id} was lost")
            await asyncio.to_thread(self._leases.checkpoint, self._lease, checkpoint)
        self.checkpoint = checkpoint
        CHECKPOINTS.inc()

    async def _batch_failed(self, exc: Exception, count: int) -> None:
        FAILURES.labels("batch").inc()
        self._retries += 1
        _log().warning(
            "batch failed; retrying from the checkpoint",
            shard_id=self.shard_id,
            records=count,
            checkpoint=self.checkpoint,
            error=f"{type(exc).__name__}: {exc}",
        )
        await self._backoff(exc.delay if isinstance(exc, RetryableError) else None)

    def _lost(self) -> ShardOutcome:
        if not self._lease.lost:  # else counted where the renewal was refused
            FAILURES.labels("lease_lost").inc()
            self._lease.lost = True
        _log().warning("lease lost; stopping the shard", shard_id=self.shard_id)
        return ShardOutcome.LOST

    # -- waiting ------------------------------------------------------------------------
    async def _backoff(self, delay: float | None) -> None:
        self._failures += 1
        exponential = 0.2 * 2 ** min(self._failures - 1, 10)
        await self._pause(min(delay or exponential, self._settings.max_retry_delay_seconds))

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` or until shutdown is requested."""
        await sleep_unless_stopped(self._stopping, seconds)
