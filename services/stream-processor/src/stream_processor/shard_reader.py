"""Reads one shard from its checkpoint to its end, applying and checkpointing each batch.

A batch (one GetRecords result, :mod:`stream_processor.shard_iterator`) is published live
first — Redis channels and counters, the hot path users see — and then sent on to SNS and
the audit table. Those slower writes run in the background while the next batch is read and
published live, up to ``max_batches_in_flight`` batches at a time; checkpoints follow
strictly in stream order, each only once every effect of its batch and of all batches before
it succeeded (:mod:`stream_processor.checkpoint_window` decides which checkpoint may be
written, and when the reader must wait). Live publishes of consecutive batches never
overlap, so one item's events reach Redis in order.

If any effect fails, nothing after the last good batch is checkpointed: the batches still in
flight are dropped, the iterator is re-opened after the stored checkpoint and the same
records are read and applied again (each effect is idempotent), one batch at a time until
the failing batch succeeds or is set aside (:mod:`stream_processor.retry_policy`: retries
with backoff, then record by record, then the failure queue). An expired iterator is
re-opened the same way, once the batches in flight are checkpointed. When GetRecords
returns no ``NextShardIterator`` the shard is closed and fully read: it is checkpointed
``SHARD_END`` so its children may start. A shard the stream does not have any more
(``ResourceNotFoundException`` for a shard that is closed or no longer listed: trimmed away)
is ended the same way, logged and counted (``shard_trimmed``).

The reader stops at once when its lease is lost: before every read and before applying what
a read returned, it checks that the lease was neither refused at renewal nor left unrenewed
past its deadline (:mod:`stream_processor.lease_renewal`); the processor also cancels a
reader whose lease the renewer gave up, wherever it is waiting.

On shutdown (``stopping`` set) the batches already read are finished — effects and
checkpoints — and no further read starts.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pulse.errors import RetryableError
from pulse.logging import get_logger
from pulse.service import sleep_unless_stopped
from stream_processor.checkpoint_window import CheckpointWindow, InFlightBatch
from stream_processor.leases import LeaseExpiredError, LeaseLostError
from stream_processor.lineage import SHARD_END, last_sequence_number
from stream_processor.metrics import CHECKPOINTS, FAILURES, LIVE_PUBLISH_DURATION, STAGE
from stream_processor.record_outcomes import RecordOutcomes
from stream_processor.records import record_time
from stream_processor.retry_policy import IsolateRecords, RetryBatch, RetryPolicy
from stream_processor.shard_iterator import ReadFailure, ShardIterator, consume_outcome

if TYPE_CHECKING:
    from collections.abc import Callable

    from stream_processor.effects import BatchEffects, ProcessedEvent
    from stream_processor.failures import FailureQueue
    from stream_processor.leases import HeldLease, LeaseTable
    from stream_processor.lineage import Shard
    from stream_processor.settings import StreamProcessorSettings
    from stream_processor.shard_health import ShardHealth

__all__ = ["ShardOutcome", "ShardReader"]


def _log() -> Any:
    return get_logger("stream_processor.shard_reader")


class ShardOutcome(enum.Enum):
    ENDED = "ended"  # read to SHARD_END and checkpointed so
    STOPPED = "stopped"  # the process is shutting down
    LOST = "lost"  # another worker owns the shard now


@dataclass(eq=False)
class _Batch:
    """A batch in the checkpoint window: its events, counted once it is checkpointed."""

    processed: list[ProcessedEvent]
    count: int  # records read, malformed ones included
    started: float
    settled: bool = False  # counted out of the in-progress gauge


class _BatchFailedError(Exception):
    """An effect of a batch failed (``cause``); the batch holds ``count`` records."""

    def __init__(self, cause: Exception, count: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.count = count


def _record_ages(records: list[dict[str, Any]]) -> list[float]:
    now = time.time()
    return [now - t.timestamp() for r in records if (t := record_time(r)) is not None]


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
        health: ShardHealth,
        settings: StreamProcessorSettings,
        stopping: asyncio.Event,
        shard: Callable[[], Shard | None],
        relist: Callable[[], None],
        failures: FailureQueue | None = None,
    ) -> None:
        """``shard()`` is the shard as last listed (None: no longer listed); ``relist()``
        asks for the shards to be listed again; ``health`` gets the shard's iterator age
        and the records applied."""
        self.shard_id = lease.shard_id
        self._shard = shard
        self._relist = relist
        self.checkpoint = lease.checkpoint
        self._lease = lease
        self._leases = leases
        self._effects = effects
        self._settings = settings
        self._stopping = stopping
        self._iterator = ShardIterator(
            shard_id=self.shard_id,
            stream_arn=stream_arn,
            streams=streams,
            batch_size=settings.batch_size,
            ages=health.ages,
        )
        self._outcomes = RecordOutcomes(
            shard_id=self.shard_id, stream_arn=stream_arn, failures=failures, health=health
        )
        self._policy = RetryPolicy.from_settings(settings)
        self._failures = 0  # consecutive failed reads or batches (the backoff's exponent)
        self._retries = 0  # consecutive failed attempts of the batch at the checkpoint
        self._window: CheckpointWindow[_Batch] = CheckpointWindow()
        self._window_changed = asyncio.Event()  # a batch was checkpointed or failed
        self._tasks: set[asyncio.Task[None]] = set()  # SNS, audit and checkpoint writes

    async def run(self) -> ShardOutcome:
        try:
            return await self._read()
        except LeaseLostError as exc:
            return self._lost(exc)
        finally:
            self._iterator.cancel_read_ahead()
            self._drop_in_flight()  # nothing is left after a clean end or stop

    async def _read(self) -> ShardOutcome:
        iterator: str | None = None
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            self._check_lease()
            read_started = loop.time()
            try:
                step = await self._step(iterator)
            except LeaseLostError:
                raise
            except Exception as exc:
                iterator = None
                self._iterator.cancel_read_ahead()
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
        response = await self._iterator.read(iterator, self.checkpoint)
        self._check_lease()  # the read may have taken long: is what it returned still ours?
        if isinstance(response, ReadFailure):
            if not await self._read_failed(response):
                return None
            await self._commit(keep=0)  # the shard is gone: end it after what was read
            await self._store_checkpoint(SHARD_END)
            return 0, None
        records: list[dict[str, Any]] = response.get("Records", [])
        next_iterator: str | None = response.get("NextShardIterator")
        if next_iterator is not None and not self._retries:
            if len(records) >= self._settings.batch_size:
                # Catching up: the next read runs while this batch is applied.
                self._iterator.read_ahead(next_iterator, self.checkpoint)
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

    async def _read_failed(self, failure: ReadFailure) -> bool:
        """Act on a failed read; True if the shard is gone and so has ended."""
        if failure is ReadFailure.TRIMMED:
            self.checkpoint = None  # those records are gone: resume at the trim horizon
        elif failure is ReadFailure.NOT_FOUND:
            shard = self._shard()
            if shard is None or shard.closed:
                FAILURES.labels("shard_trimmed").inc()
                _log().warning(
                    "shard no longer in the stream; treating it as ended",
                    shard_id=self.shard_id,
                    checkpoint=self.checkpoint,
                    listed=shard is not None,
                )
                return True
            self._relist()  # open as last listed: the listing may be behind
            await self._backoff(None)
        elif failure is ReadFailure.FAILED:
            await self._backoff(None)
        return False

    # -- pipelined: batches in flight ---------------------------------------------------
    async def _submit(self, records: list[dict[str, Any]]) -> None:
        """Publish ``records`` live and start their SNS and audit writes in the background.

        Waits while ``max_batches_in_flight`` are in flight. If the live publish fails, the
        batches before it are still finished and checkpointed first.
        """
        if records:
            started = time.perf_counter()
            processed = await self._outcomes.events_or_set_aside(records)
            STAGE.in_progress.inc(len(processed))
            checkpoint = last_sequence_number(records)
            assert checkpoint is not None  # records is not empty
            batch = self._window.read(_Batch(processed, len(records), started), checkpoint)
            try:
                await self._effects.publish_live(processed)
            except Exception as exc:
                self._window.failed(batch, exc)
                self._settle_metrics(batch.item, succeeded=False)
                await self._commit(keep=0)  # the batches before it finish (or fail) first
                raise _BatchFailedError(exc, len(records)) from exc
            LIVE_PUBLISH_DURATION.observe(time.perf_counter() - started)
            self._window.published(batch)
            task = asyncio.create_task(
                self._propagate(batch), name=f"finish batch of {self.shard_id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._commit(keep=self._settings.max_batches_in_flight - 1)

    async def _propagate(self, batch: InFlightBatch[_Batch]) -> None:
        """SNS and audit writes of ``batch``; then the checkpoints the window allows."""
        try:
            await self._effects.propagate(batch.item.processed)
        except Exception as exc:
            self._window.failed(batch, exc)
            self._window_changed.set()
            return
        self._window.propagated(batch)
        await self._write_checkpoints()

    async def _write_checkpoints(self) -> None:
        """Write what the window says is due until nothing is (one write at a time: batches
        that propagate while a write runs are covered by the next one)."""
        while (write := self._window.begin_write()) is not None:
            try:
                await self._store_checkpoint(write.checkpoint)
            except Exception as exc:  # LeaseLostError included: the reader raises it
                self._window.write_failed(write, exc)
                self._window_changed.set()
                return
            for batch in self._window.written(write):
                self._settle_metrics(batch.item, succeeded=True)
            self._window_changed.set()

    async def _commit(self, *, keep: int) -> None:
        """Wait until at most ``keep`` batches are in flight (all checkpointed, for 0).

        :class:`_BatchFailedError` if the oldest batch failed (the window keeps it for the
        caller to drop), :class:`LeaseLostError` if the lease was taken.
        """
        while True:
            failed = self._window.failure()
            if failed is not None:
                error = failed.error
                assert error is not None  # a failed batch has its error
                if isinstance(error, LeaseLostError):
                    raise error
                raise _BatchFailedError(error, failed.item.count) from error
            if not self._window.must_wait(keep):
                return
            self._window_changed.clear()
            await self._window_changed.wait()

    def _drop_in_flight(self) -> None:
        """Give up on the batches in flight (read again from the checkpoint, if at all)."""
        for task in list(self._tasks):
            task.cancel()
            task.add_done_callback(consume_outcome)
        for batch in self._window.drop():
            self._settle_metrics(batch.item, succeeded=False)

    def _settle_metrics(self, batch: _Batch, *, succeeded: bool) -> None:
        """Count ``batch`` out of the stage's in-progress gauge, once, as done or retried."""
        if batch.settled:
            return
        batch.settled = True
        STAGE.in_progress.dec(len(batch.processed))
        if succeeded:
            self._outcomes.processed(batch.processed, batch.started)
        else:
            STAGE.observe("retry", time.perf_counter() - batch.started, len(batch.processed))

    # -- one batch at a time: the shard's last batch, and retries ------------------------
    async def _settle(self, records: list[dict[str, Any]], *, ended: bool) -> None:
        """Apply the batch; once the retry policy says so, record by record."""
        try:
            await self._apply(records, ended=ended)
        except LeaseLostError:
            raise
        except Exception:
            decision = self._policy.after_failure(self._retries, _record_ages(records))
            if isinstance(decision, RetryBatch):
                raise
            await self._isolate(records, decision, ended=ended)

    async def _apply(self, records: list[dict[str, Any]], *, ended: bool) -> None:
        """Apply and checkpoint ``records``; then ``SHARD_END`` if the shard has ended."""
        if records:
            await self._process(records)
        if ended:
            await self._store_checkpoint(SHARD_END)

    async def _process(self, records: list[dict[str, Any]]) -> None:
        """Apply every effect of ``records`` and checkpoint them, before returning."""
        started = time.perf_counter()
        processed = await self._outcomes.events_or_set_aside(records)
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
        self._outcomes.processed(processed, started)

    async def _isolate(
        self, records: list[dict[str, Any]], isolation: IsolateRecords, *, ended: bool
    ) -> None:
        """Apply a batch that kept failing one record at a time; a record that fails alone
        goes, whole, to the failure queue. Each record is checkpointed when done, so the
        shard moves on past the failure and never past a record whose effects failed."""
        _log().warning(
            "batch keeps failing; applying its records one by one",
            shard_id=self.shard_id,
            records=len(records),
            reason=isolation.reason,
            attempts=isolation.attempts,
        )
        for record in records:
            try:
                await self._process([record])
            except LeaseLostError:
                raise
            except Exception as exc:
                await self._outcomes.set_aside(record, exc, isolation.set_aside())
                sequence_number = record.get("dynamodb", {}).get("SequenceNumber")
                if sequence_number is not None:
                    await self._store_checkpoint(str(sequence_number))
        if ended:
            await self._store_checkpoint(SHARD_END)

    # -- the lease, failures, waiting ---------------------------------------------------
    async def _store_checkpoint(self, checkpoint: str) -> None:
        """Conditional on our owner and lease counter: :class:`LeaseLostError` if taken."""
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

    def _check_lease(self) -> None:
        """:class:`LeaseLostError` if the lease was lost, :class:`LeaseExpiredError` if it
        was not renewed in time."""
        if self._lease.lost:
            raise LeaseLostError(f"lease {self.shard_id} was lost")
        if self._lease.expired(time.monotonic(), self._settings.failover_seconds):
            raise LeaseExpiredError(f"lease {self.shard_id} was not renewed in time")

    def _lost(self, exc: LeaseLostError) -> ShardOutcome:
        if self._lease.lose():  # else counted where the renewal was refused or overdue
            expired = isinstance(exc, LeaseExpiredError)
            FAILURES.labels("lease_expired" if expired else "lease_lost").inc()
        _log().warning("lease lost; stopping the shard", shard_id=self.shard_id, reason=str(exc))
        return ShardOutcome.LOST

    async def _backoff(self, delay: float | None) -> None:
        self._failures += 1
        await self._pause(self._policy.pause(self._failures, delay))

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` or until shutdown is requested."""
        await sleep_unless_stopped(self._stopping, seconds)
