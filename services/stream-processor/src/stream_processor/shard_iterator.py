"""Reading one shard: its iterator, GetRecords, the read ahead, and what a failed read means.

An iterator is opened after the checkpoint (or at the trim horizon for a shard never
checkpointed, :func:`~stream_processor.lineage.iterator_start`) and advanced by each
GetRecords' ``NextShardIterator``. While a shard is behind (a full batch came back) the
reader starts the next GetRecords at once (:meth:`ShardIterator.read_ahead`), so it runs
while the current batch is applied.

A read that fails says what the reader does next (:class:`ReadFailure`):

- ``ExpiredIteratorException`` — re-open the iterator from the checkpoint, at once;
- ``TrimmedDataAccessException`` — the checkpoint is older than the stream's retention and
  those records are gone: resume at the trim horizon (logged as an error and counted: data
  loss, never silent);
- ``ResourceNotFoundException`` — the stream does not have the shard (any more): the reader
  treats a closed shard, or one no longer listed, as ended
  (:class:`~stream_processor.shard_reader.ShardReader`), and otherwise backs off and has the
  shards listed again;
- anything else — back off, then re-open from the checkpoint.

The three codes are steps of the Streams protocol, read with
:func:`pulse.aws_errors.aws_error_code`; every other AWS error is just a failed read.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from typing import TYPE_CHECKING, Any

from pulse.aws_errors import AWS_ERRORS, aws_error_code
from pulse.logging import get_logger
from stream_processor.lineage import iterator_start
from stream_processor.metrics import FAILURES
from stream_processor.records import record_time

if TYPE_CHECKING:
    from stream_processor.metrics import IteratorAges

__all__ = ["ReadFailure", "ShardIterator", "consume_outcome"]


def _log() -> Any:
    # The reader's logger: these lines are the shard reader's, whichever module writes them.
    return get_logger("stream_processor.shard_reader")


class ReadFailure(enum.Enum):
    """A failed read, by what follows it (the value is its ``pulse_stream_failures_total``
    reason)."""

    EXPIRED = "iterator_expired"  # re-open from the checkpoint at once
    TRIMMED = "trimmed"  # resume at the trim horizon
    NOT_FOUND = "shard_not_found"  # ended if closed or unlisted; else back off and relist
    FAILED = "read"  # back off, then re-open from the checkpoint


_PROTOCOL_STEPS = {
    "ExpiredIteratorException": ReadFailure.EXPIRED,
    "TrimmedDataAccessException": ReadFailure.TRIMMED,
    "ResourceNotFoundException": ReadFailure.NOT_FOUND,
}


def consume_outcome(task: asyncio.Task[Any]) -> None:
    """Retrieve a dropped task's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()


class ShardIterator:
    """GetRecords over one shard, with at most one read ahead of the batch being applied."""

    def __init__(
        self, *, shard_id: str, stream_arn: str, streams: Any, batch_size: int, ages: IteratorAges
    ) -> None:
        self.shard_id = shard_id
        self._stream_arn = stream_arn
        self._streams = streams
        self._batch_size = batch_size
        self._ages = ages
        # A GetRecords already started for the iterator that follows the batch being applied.
        self._ahead: tuple[str, asyncio.Task[dict[str, Any] | ReadFailure]] | None = None

    async def read(
        self, iterator: str | None, checkpoint: str | None
    ) -> dict[str, Any] | ReadFailure:
        """The GetRecords result at ``iterator`` (read ahead already, or read now); with no
        iterator, one is opened after ``checkpoint`` first."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead_iterator, task = ahead
            if ahead_iterator == iterator:
                return await task
            task.cancel()
            task.add_done_callback(consume_outcome)
        return await self._get_records(iterator, checkpoint)

    def read_ahead(self, iterator: str, checkpoint: str | None) -> None:
        """Start reading at ``iterator`` now; :meth:`read` of the same iterator takes it."""
        self.cancel_read_ahead()
        task = asyncio.create_task(
            self._get_records(iterator, checkpoint), name=f"read {self.shard_id}"
        )
        self._ahead = (iterator, task)

    def cancel_read_ahead(self) -> None:
        if self._ahead is not None:
            _iterator, task = self._ahead
            task.cancel()
            task.add_done_callback(consume_outcome)
            self._ahead = None

    async def _get_records(
        self, iterator: str | None, checkpoint: str | None
    ) -> dict[str, Any] | ReadFailure:
        try:
            if iterator is None:
                iterator = await self._open_iterator(checkpoint)
            response: dict[str, Any] = await asyncio.to_thread(
                self._streams.get_records, ShardIterator=iterator, Limit=self._batch_size
            )
        except AWS_ERRORS as exc:
            return self._read_failed(exc, checkpoint)
        self._note_age(response.get("Records", []))
        return response

    async def _open_iterator(self, checkpoint: str | None) -> str:
        start = iterator_start(checkpoint)
        response = await asyncio.to_thread(
            self._streams.get_shard_iterator, **start.request(self._stream_arn, self.shard_id)
        )
        _log().debug(
            "iterator opened",
            shard_id=self.shard_id,
            iterator_type=start.iterator_type,
            checkpoint=checkpoint,
        )
        return str(response["ShardIterator"])

    def _read_failed(self, exc: Exception, checkpoint: str | None) -> ReadFailure:
        code = aws_error_code(exc)
        failure = _PROTOCOL_STEPS.get(code, ReadFailure.FAILED)
        FAILURES.labels(failure.value).inc()
        if failure is ReadFailure.EXPIRED:
            _log().info("iterator expired; re-opening from checkpoint", shard_id=self.shard_id)
        elif failure is ReadFailure.TRIMMED:
            _log().error(
                "records trimmed from the stream before they were read (lost); resuming at "
                "the trim horizon",
                shard_id=self.shard_id,
                checkpoint=checkpoint,
            )
        elif failure is ReadFailure.NOT_FOUND:
            _log().warning("shard not found in the stream", shard_id=self.shard_id)
        else:
            _log().warning("read failed", shard_id=self.shard_id, error=str(exc), code=code)
        return failure

    def _note_age(self, records: list[dict[str, Any]]) -> None:
        newest = record_time(records[-1]) if records else None
        if newest is None:
            self._ages.caught_up(self.shard_id)
        else:
            self._ages.newest_read(self.shard_id, newest.timestamp())
