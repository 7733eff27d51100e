"""Reads one shard from its checkpoint to its end, applying and checkpointing each batch.

A batch (one GetRecords result) is applied in order — SNS, Redis, audit rows — and only
then checkpointed. If any effect fails, nothing moves: the iterator is re-opened after the
stored checkpoint and the same records are read and applied again (each effect is
idempotent). An expired iterator is re-opened the same way. When GetRecords returns no
``NextShardIterator`` the shard is closed and fully read: it is checkpointed ``SHARD_END``
so its children may start.

On shutdown (``stopping`` set) a batch already read is finished — effects and checkpoint —
and no further read starts.
"""

from __future__ import annotations

import asyncio
import enum
import time
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


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


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

    async def run(self) -> ShardOutcome:
        iterator: str | None = None
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if self._lease.lost:
                return self._lost()
            read_started = loop.time()
            response = await self._get_records(iterator)
            if response is None:
                iterator = None
                continue
            records: list[dict[str, Any]] = response.get("Records", [])
            next_iterator: str | None = response.get("NextShardIterator")
            try:
                await self._settle(records, ended=next_iterator is None)
            except LeaseLostError:
                return self._lost()
            except Exception as exc:
                iterator = None
                await self._batch_failed(exc, len(records))
                continue
            if next_iterator is None:
                _log().info("shard ended", shard_id=self.shard_id)
                return ShardOutcome.ENDED
            iterator = next_iterator
            self._failures = 0
            self._retries = 0
            if len(records) < self._settings.batch_size:
                # The interval is a period, as Lambda's four polls a second: time spent
                # applying the batch counts towards it.
                elapsed = loop.time() - read_started
                await self._pause(max(self._settings.poll_interval_seconds - elapsed, 0.0))
        return ShardOutcome.STOPPED

    # -- reading ------------------------------------------------------------------------
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
        started = time.perf_counter()
        processed, malformed = self._events(records)
        for record, error in malformed:
            await self._dead_letter(record, error, reason="malformed", attempts=1)
        STAGE.in_progress.inc(len(processed))
        try:
            await self._effects.apply(processed)
            checkpoint = last_sequence_number(records)
            if checkpoint is not None:
                await self._store_checkpoint(checkpoint)
        except BaseException:
            for _ in processed:
                STAGE.observe("retry", time.perf_counter() - started)
            raise
        finally:
            STAGE.in_progress.dec(len(processed))
        elapsed = time.perf_counter() - started
        BATCH_DURATION.observe(elapsed)
        now = time.time()
        for p in processed:
            RECORDS_PROCESSED.labels(p.event_name).inc()
            STAGE.observe("success", elapsed)
            if p.created_epoch is not None:
                STAGE.observe_age(now - p.created_epoch)
            with event_context(
                p.event.id, p.event.trace_id, payment_id=p.event.subject, shard_id=self.shard_id
            ):
                _log().info("event processed", type=p.event.type, sequence_number=p.sequence_number)

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
